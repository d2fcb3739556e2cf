package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
)

// keptCheckpoint is one line of "chat audit checkpoints --json": the
// newest checkpoint of a relay's audit log that this home proved
// consistent with every one before it. Two people's lines for one relay
// must be consistent (the smaller a prefix of the larger); a relay's
// export (relay audit export) must contain it. The signed note is the
// evidence: it is what a gossip of checkpoints between clients would
// carry, signed by the relay, so that a fork shown to two people is
// proof by itself.
type keptCheckpoint struct {
	Relay  string `json:"relay"`  // the relay's key fingerprint
	Origin string `json:"origin"` // the log's name, from the relay's key
	Size   int64  `json:"size"`   // records in the log
	Root   string `json:"root"`   // the tree's root hash, base64
	Note   string `json:"note"`   // the relay's signed checkpoint
}

// audit runs "chat audit checkpoints".
func (c *cli) audit(args []string) int {
	fs := c.flags("audit")
	asJSON := fs.Bool("json", false, "print one JSON object a line")
	if err := c.parse(fs, args, 1); err != nil {
		return c.usageError(err)
	}
	if c.args[0] != "checkpoints" {
		return c.usageError(fmt.Errorf("audit: unknown command %q (want checkpoints)", c.args[0]))
	}
	ctx := context.Background()
	cl, err := c.session(ctx, true)
	if err != nil {
		return c.fail(err)
	}
	defer cl.Close()
	kept, err := cl.KeptCheckpoints(ctx)
	if err != nil {
		return c.fail(err)
	}
	lines := make([]keptCheckpoint, 0, len(kept))
	for _, k := range kept {
		line, err := parseKept(k.Relay, string(k.Note))
		if err != nil {
			return c.fail(err)
		}
		lines = append(lines, line)
	}
	if *asJSON {
		for _, l := range lines {
			if code := c.printJSON(l); code != exitOK {
				return code
			}
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RELAY\tSIZE\tROOT")
	for _, l := range lines {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", l.Relay, l.Size, l.Root)
	}
	tw.Flush()
	return exitOK
}

// parseKept reads the text of a kept checkpoint note: its origin, size
// and root lines. The note was checked against the relay's key when it
// was kept.
func parseKept(relay, note string) (keptCheckpoint, error) {
	text, _, _ := strings.Cut(note, "\n\n")
	f := strings.Split(text, "\n")
	if len(f) < 3 {
		return keptCheckpoint{}, fmt.Errorf("audit: the checkpoint kept for %s does not parse", relay)
	}
	size, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return keptCheckpoint{}, fmt.Errorf("audit: the checkpoint kept for %s: size %q: %w", relay, f[1], err)
	}
	return keptCheckpoint{Relay: relay, Origin: f[0], Size: size, Root: f[2], Note: note}, nil
}

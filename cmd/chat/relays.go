package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/parleychat/parley/client"
)

// foundRelayJSON is one line of chat relays --json.
type foundRelayJSON struct {
	Fingerprint string `json:"fingerprint"`
	Address     string `json:"address,omitempty"` // FINGERPRINT@HOST:PORT, as it gave it
	Trust       string `json:"trust"`             // given, vouched, unknown, refused
	VouchedBy   string `json:"vouched_by,omitempty"`
	Trusted     bool   `json:"trusted"` // given or vouched: may be added as a relay
	Why         string `json:"why"`
	Error       string `json:"error,omitempty"`
}

// relays prints the relays the DHT names for a room, and how far each is
// trusted. It changes no config: the person adds a relay with --relay or
// in config.toml.
func (c *cli) relays(args []string) int {
	fs, room, asJSON := c.roomFlags("relays")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to look")
	ctx, cl, done, code := c.parsedSession(func() error {
		if err := c.parse(fs, args, 0); err != nil {
			return err
		}
		return needRoom(*room)
	}, timeout)
	if cl == nil {
		return code
	}
	defer done()
	if err := resolveRoom(ctx, cl, room); err != nil {
		return c.fail(err)
	}
	found, err := cl.FindRelays(ctx, *room)
	if err != nil {
		return c.fail(err)
	}
	out := make([]foundRelayJSON, 0, len(found))
	for _, f := range found {
		out = append(out, foundRelayOf(f))
	}
	if *asJSON {
		return c.printJSON(out)
	}
	c.printFound(*room, out)
	return exitOK
}

// foundRelayOf says what f is, and why it is trusted or not.
func foundRelayOf(f client.FoundRelay) foundRelayJSON {
	j := foundRelayJSON{Fingerprint: f.Key.Fingerprint(), Address: f.Addr, Trust: f.Trust.String()}
	switch f.Trust {
	case client.TrustGiven:
		j.Trusted, j.Why = true, "its key is one of your configured relays"
	case client.TrustVouched:
		j.Trusted, j.VouchedBy = true, f.VouchedBy
		j.Why = "a relay you configured names it as one of its federation"
	case client.TrustRefused:
		j.Why = "no valid answer (unreachable, malformed, or naming another key than its own)"
		j.Error = f.Err.Error()
	default:
		j.Why = "anyone can announce on the DHT: no relay you trust vouches for it"
	}
	return j
}

// printFound prints the relays found, one a line, and how to use one.
func (c *cli) printFound(room string, found []foundRelayJSON) {
	if len(found) == 0 {
		fmt.Fprintf(c.stdout, "no relay announces %s\n", room)
		return
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	for _, f := range found {
		trust := f.Trust
		switch f.Trust {
		case "vouched":
			trust = "vouched by " + f.VouchedBy
		case "unknown", "refused":
			trust += ": not used"
		}
		addr := f.Address
		if addr == "" {
			addr = f.Fingerprint
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", addr, trust, f.Why)
	}
	tw.Flush()
	fmt.Fprintln(c.stdout, "Nothing was changed: to use a relay, give it with --relay or add it to relay in config.toml.")
}

package main

import (
	"flag"
	"fmt"
	"text/tabwriter"
)

// about is what "chat help CMD" and "chat CMD --help" print above the
// command's own flags: its synopsis, and what it does.
func about(cmd string) (string, bool) {
	switch cmd {
	case "id":
		return "chat id [--json]\n\nYour fingerprint, public key, libp2p peer ID, ssh form and key file.", true
	case "send":
		return "chat send --room R [--json] [--timeout D] TEXT\n\n" +
			"Send TEXT to room R. Exits 0 once delivered (a relay acknowledged it\n" +
			"after committing it, or a mesh peer has it stored) and prints the\n" +
			"message ID; exit 8 if no path confirmed it within --timeout (the\n" +
			"message is kept and sent again later). One --room only.", true
	case "msg":
		return "chat msg [--json] [--timeout D] PERSON TEXT\n\n" +
			"Send TEXT to PERSON alone, sealed end to end: their key (ed25519:...),\n" +
			"or the fingerprint prefix or nickname of a contact. The direct room of\n" +
			"the two of you is started on first use; read it with --room @PERSON\n" +
			"(history, listen, talk). Exits as send does.", true
	case "listen":
		return "chat listen --room R [--room R2 ...] [--json] [--count N] [--timeout D]\n\n" +
			"Print the rooms' messages as they arrive, what this home folder has\n" +
			"not shown yet first. --count N: exit after N (exit 8 if fewer came\n" +
			"within --timeout).", true
	case "talk":
		return "chat talk --room R [--json] [--timeout D]\n\n" +
			"Send each line of standard input to room R and print the room's\n" +
			"messages as they arrive, until the input ends. One --room only.", true
	case "history":
		return "chat history --room R [--search WORDS] [--limit N] [--json]\n\n" +
			"The room's stored messages, oldest first.", true
	case "rooms":
		return "chat rooms\n\nThe rooms joined in this home folder.", true
	case "status":
		return "chat status [--json] [--timeout D]\n\n" +
			"Start a session and say how it reaches the network: the relay's state,\n" +
			"the transport it connected over (quic or tcp) and the round trip;\n" +
			"the mesh node's peer ID and each connection to a peer, with its path\n" +
			"(direct, hole-punched, or circuit through a relay) and transport.\n" +
			"Waits up to --timeout for the relay and the configured peers.", true
	case "audit":
		return "chat audit checkpoints [--json]\n\n" +
			"The newest checkpoint of each relay's audit log that this home\n" +
			"proved consistent with every one before it: relay, size, root (and\n" +
			"the signed note, with --json). Compare it with the relay's export\n" +
			"(relay audit export) or with other people's: one relay's checkpoints\n" +
			"must all be consistent.", true
	case "contacts":
		return "chat contacts [--json]\n\nThe people you have seen, and how far you trust them: new, known,\n" +
			"verified, key changed.", true
	case "verify":
		return "chat verify FINGERPRINT\n\nMark the contact with this fingerprint verified, after comparing it\n" +
			"with them out of band.", true
	case "relays":
		return "chat relays --room R [--json] [--timeout D]\n\n" +
			"The relays the DHT names for room R, and how far each is trusted: given\n" +
			"(one of your relays), vouched for by one of your relays (its federation),\n" +
			"unknown or refused (not used). Changes nothing: add a relay with\n" +
			"--relay or in config.toml.", true
	case "redeem":
		return "chat redeem [--timeout D] TOKEN\n\n" +
			"Redeem an invite token from a relay's operator with the relay\n" +
			"(--relay, or relay in config.toml), which puts your key on its allow\n" +
			"list. --invite TOKEN before another command does the same first.", true
	case "room":
		return "chat room create NAME | invite NAME [--uses N] [--expires D] | invites NAME |\n" +
			"          revoke NAME INVITE | members NAME [--json] | leave NAME |\n" +
			"          remove NAME FINGERPRINT | admin NAME FINGERPRINT | unadmin NAME FINGERPRINT |\n" +
			"          rename NAME NEW-NAME\n\n" +
			"Private rooms: only their members can post in them or read their\n" +
			"history, on the mesh and on the relay alike. create makes one, with\n" +
			"you as its admin, and prints its ID and name; invite prints a code\n" +
			"that lets --uses people in until --expires (send it as you would a\n" +
			"password; joining needs no admin online); members lists who is in,\n" +
			"with admin and trust marks. NAME is the room's name or ID;\n" +
			"FINGERPRINT and INVITE the start of a fingerprint (see members,\n" +
			"invites).", true
	case "join":
		return "chat join [--timeout D] CODE\n\n" +
			"Join the private room of an invite code, and print its ID and name\n" +
			"once its member list has you in it.", true
	case "version":
		return "chat version\n\nThe version of chat, and the Go it was built with (also chat --version).", true
	case "check-config":
		return "chat check-config\n\n" +
			"Check config.toml in the home folder, with the global flags over it,\n" +
			"and say \"config ok: PATH\" (exit 0) or what is wrong (exit 2). Starts\n" +
			"no network and creates nothing (also chat --check-config).", true
	}
	return "", false
}

// commandHelp prints the help of the command whose flags are fs: what
// about says, and the flags that are its own.
func (c *cli) commandHelp(fs *flag.FlagSet) int {
	text, ok := about(fs.Name())
	if !ok {
		text = "chat " + fs.Name()
	}
	fmt.Fprintf(c.stdout, "Usage: %s\n", text)
	own := ownFlags(fs)
	if len(own) > 0 {
		fmt.Fprintln(c.stdout, "\nFlags:")
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		for _, f := range own {
			fmt.Fprintln(tw, flagLine(f))
		}
		tw.Flush()
	}
	fmt.Fprintln(c.stdout, "\nThe global flags (--home, --identity, --nick, --mode, --relay, ...) work")
	fmt.Fprintln(c.stdout, "with every command: see chat help.")
	return exitOK
}

// ownFlags are fs's flags that are not global ones.
func ownFlags(fs *flag.FlagSet) []*flag.Flag {
	global := flag.NewFlagSet("", flag.ContinueOnError)
	new(globals).register(global)
	var own []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if global.Lookup(f.Name) == nil {
			own = append(own, f)
		}
	})
	return own
}

// flagLine is "  --name TYPE<tab>usage (default V)".
func flagLine(f *flag.Flag) string {
	typ, usage := flag.UnquoteUsage(f)
	if typ == "value" { // a flag type of our own: all of them hold strings
		typ = "string"
	}
	line := "  --" + f.Name
	if typ != "" {
		line += " " + typ
	}
	line += "\t" + usage
	switch f.DefValue {
	case "", "0", "false", "0s", "[]":
	default:
		line += fmt.Sprintf(" (default %s)", f.DefValue)
	}
	return line
}

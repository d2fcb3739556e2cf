package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/lockfile"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/roster"
	"golang.org/x/term"
)

// Exit codes, documented in the README and in "chat help".
const (
	exitOK          = 0
	exitError       = 1 // anything not listed below
	exitUsage       = 2 // unknown command or flag, wrong arguments, bad config
	exitKey         = 3 // the identity key cannot be used: permissions, passphrase, format
	exitLocked      = 4 // another process is using the home folder
	exitRelayDown   = 5 // the relay cannot be reached (in relay mode)
	exitWrongRelay  = 6 // the relay's key is not the one in its address
	exitRefused     = 7 // the relay refused us (not allowed, banned, over a limit), or a private room did (not a member, not an admin, invite not valid)
	exitUndelivered = 8 // send: no path confirmed delivery; listen: fewer than --count in --timeout
	exitAudit       = 9 // SECURITY: the relay's audit log does not check out
)

const usage = `chat: Parley, secure messaging from the terminal.

Usage:
  chat [global flags] [command] [flags]

Commands:
  (none)               on a terminal: the chat screen [--room R];
                       otherwise show who you are and how to start
  id [--json]          your fingerprint, public key and peer ID
  send --room R TEXT   send TEXT to room R (one --room); exits 0 once
                       delivered (a relay acknowledged it, or a mesh peer
                       has it) and prints the message ID [--json]
                       [--timeout D]
  msg PERSON TEXT      a direct message, sealed end to end, to PERSON (a
                       key, or a contact's fingerprint or nickname); read
                       the conversation with --room @PERSON [--json]
  listen --room R      print messages as they arrive (--room repeatable)
                       [--json] [--count N] [--timeout D]
  talk --room R        send each line of standard input, and print
                       messages as they arrive [--json], until input ends
                       (one --room)
  history --room R     the room's stored messages [--search WORDS]
                       [--limit N] [--json]
  rooms                the rooms joined in this home folder
  status               how the relay and the mesh peers are reached: the
                       relay's transport (QUIC or TCP), each peer's path
                       (direct, hole-punched, circuit) [--json]
                       [--timeout D]
  relays --room R      the relays the DHT names for the room: given,
                       vouched by a relay you gave, or unknown (not
                       used); changes nothing [--json] [--timeout D]
  room create NAME     make a private room (you its admin); also: room
                       invite NAME [--uses N] [--expires D], invites,
                       revoke, members [--json], leave, remove, admin,
                       unadmin, rename (chat help room)
  join CODE            join a private room with an invite code
  audit checkpoints    the newest audit checkpoint kept for each relay, to
                       compare with its export or other people's [--json]
  contacts [--json]    the people you have seen, and how far you trust them
  verify FINGERPRINT   mark the contact with this fingerprint as verified,
                       after comparing it with them out of band
  redeem TOKEN         redeem a relay's invite token with the relay
                       (--relay or config.toml), which puts you on its
                       allow list [--timeout D]
  check-config         check config.toml with the flags over it: "config
                       ok: PATH" or what is wrong (exit 2); creates nothing
  version              the version of chat and of Go
  help [COMMAND]       this text, or a command's flags (also chat COMMAND
                       --help)

Global flags (before or after the command; they override config.toml in
the home folder):
  --home DIR           home folder (default $PARLEY_HOME, else the user
                       config folder's "parley")
  --identity FILE      use this OpenSSH Ed25519 key, such as ~/.ssh/id_ed25519;
                       remembered in config.toml (identity)
  --nick NAME          the nickname on your messages (a-z 0-9 - _ .);
                       remembered in config.toml (nick)
  --mode MODE          auto (mesh, and relay if set), p2p, or relay
  --relay ADDR         a relay: FINGERPRINT@HOST:PORT; repeat it, or separate
                       addresses with commas, to use several relays
  --relay-transport T  reach the relay over auto (QUIC and TCP together,
                       QUIC preferred), quic, or tcp (for networks that
                       block UDP); config.toml: relay_transport
  --invite TOKEN       redeem this invite with the relay before the command
  --peer MULTIADDR     a mesh peer to dial (repeatable)
  --listen MULTIADDR   where the mesh node listens (repeatable)
  --no-mdns            do not look for peers on the local network
  --verbose            log what the paths do, on standard error
  --version            print the version and exit (before the command)
  --check-config       check the configuration and exit (before the command)

Exit codes: 0 ok, 1 error, 2 usage or config, 3 the identity key cannot be
used or is missing, 4 the home folder is in use by another process, 5 the
relay cannot be reached, 6 the relay's key is not the one in its address,
7 the relay refused us, 8 not delivered (send) or not received (listen
--count) in time, 9 SECURITY: the relay's audit log does not check out.
`

type globals struct {
	home    string
	keyFile string
	nick    string
	mode    string
	relay   client.RelayList
	via     string // --relay-transport
	invite  string
	peers   multiFlag
	listen  multiFlag
	noMDNS  bool
	verbose bool
}

// multiFlag is a flag that may be given several times.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.home, "home", g.home, "home folder")
	fs.StringVar(&g.keyFile, "identity", g.keyFile, "OpenSSH Ed25519 key file to use")
	fs.StringVar(&g.nick, "nick", g.nick, "nickname")
	fs.StringVar(&g.mode, "mode", g.mode, "auto, p2p or relay")
	fs.Var(&g.relay, "relay", "relay address (repeatable, or a comma-separated list)")
	fs.StringVar(&g.via, "relay-transport", g.via, "reach the relay over auto (QUIC and TCP together), quic or tcp")
	fs.StringVar(&g.invite, "invite", g.invite, "invite token to redeem with the relay first")
	fs.Var(&g.peers, "peer", "mesh peer multiaddr (repeatable)")
	fs.Var(&g.listen, "listen", "mesh listen multiaddr (repeatable)")
	fs.BoolVar(&g.noMDNS, "no-mdns", g.noMDNS, "no mDNS discovery")
	fs.BoolVar(&g.verbose, "verbose", g.verbose, "log to standard error")
}

type cli struct {
	stdin          *os.File
	stdout, stderr io.Writer
	g              globals
	args           []string      // a command's positional arguments, set by parse
	fs             *flag.FlagSet // the flags being parsed: the command's, for its help
	relayOnly      bool          // the session's one path is the relay (relay mode)
	logTo          io.Writer     // the UI's log file; nil: standard error
	room           string        // chat --room R: the room the UI opens on
}

func run(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	fs := c.flags("chat")
	version := fs.Bool("version", false, "print the version")
	check := fs.Bool("check-config", false, "check the configuration")
	fs.StringVar(&c.room, "room", "", "the room the terminal UI opens on")
	if err := fs.Parse(args); err != nil {
		return c.usageError(err)
	}
	args = fs.Args()
	switch {
	case *version:
		return c.version(args)
	case *check:
		return c.checkConfig(args)
	}
	cmd := ""
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	return c.command(cmd, args)
}

// command runs the command cmd with its arguments.
func (c *cli) command(cmd string, args []string) int {
	switch cmd {
	case "":
		if c.onTerminal() {
			return c.ui(c.room)
		}
		if c.room != "" {
			return c.usageError(errors.New("--room without a command opens the terminal UI, which needs a terminal"))
		}
		return c.welcome()
	case "id":
		return c.id(args)
	case "contacts":
		return c.contacts(args)
	case "verify":
		return c.verify(args)
	case "send":
		return c.send(args)
	case "msg":
		return c.msg(args)
	case "listen":
		return c.listen(args)
	case "talk":
		return c.talk(args)
	case "history":
		return c.history(args)
	case "rooms":
		return c.rooms(args)
	case "status":
		return c.status(args)
	case "relays":
		return c.relays(args)
	case "audit":
		return c.audit(args)
	case "redeem":
		return c.redeem(args)
	case "room":
		return c.roomCommand(args)
	case "join":
		return c.join(args)
	case "version":
		return c.version(args)
	case "check-config":
		return c.checkConfig(args)
	case "help", "-h", "--help":
		return c.help(args)
	}
	return c.usageError(fmt.Errorf("unknown command %q", cmd))
}

// help prints the overall usage, or with a command's name that command's
// help: its flags, with what they do.
func (c *cli) help(args []string) int {
	switch {
	case len(args) == 0 || args[0] == "help":
		fmt.Fprint(c.stdout, usage)
		return exitOK
	case len(args) > 1:
		return c.usageError(fmt.Errorf("help takes at most 1 argument, got %d", len(args)))
	}
	if _, ok := about(args[0]); !ok {
		return c.usageError(fmt.Errorf("no help for %q: not a command", args[0]))
	}
	// Every command parses its flags first, and --help stops it there.
	return c.command(args[0], []string{"--help"})
}

func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.g.register(fs)
	c.fs = fs
	return fs
}

func (c *cli) usageError(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		if c.fs != nil && c.fs.Name() != "chat" {
			return c.commandHelp(c.fs)
		}
		fmt.Fprint(c.stdout, usage)
		return exitOK
	}
	fmt.Fprintf(c.stderr, "chat: %v (see chat help)\n", err)
	return exitUsage
}

func (c *cli) fail(err error) int {
	fmt.Fprintf(c.stderr, "chat: %v%s\n", oneLine(err), hint(err))
	var refused *wire.RelayError
	switch {
	case errors.Is(err, relay.ErrAuditLog):
		return exitAudit
	case errors.Is(err, lockfile.ErrLocked):
		return exitLocked
	case errors.Is(err, relay.ErrWrongRelay):
		return exitWrongRelay
	case errors.Is(err, client.ErrConfig):
		return exitUsage
	case errors.Is(err, relay.ErrVersion):
		return exitRefused // no relay protocol version in common
	case errors.As(err, &refused) && refused.Code != wire.CodeUnknownCursor:
		return exitRefused // the relay said no: before "not delivered", which it explains
	case errors.Is(err, client.ErrNotMember), errors.Is(err, client.ErrNotAdmin), errors.Is(err, client.ErrJoinRefused):
		return exitRefused
	case errors.Is(err, roster.ErrBadCode):
		return exitUsage
	case c.relayOnly && errors.Is(err, client.ErrRelayUnreachable):
		return exitRelayDown // in relay mode, the reason nothing was delivered
	case errors.Is(err, client.ErrNoPath), errors.Is(err, errNotReceived), errors.Is(err, errRanOut):
		return exitUndelivered
	case errors.Is(err, client.ErrRelayUnreachable):
		return exitRelayDown
	case errors.Is(err, errNoKey), errors.Is(err, client.ErrIdentityMissing), errors.Is(err, identity.ErrKeyPermissions), errors.Is(err, identity.ErrPassphraseRequired),
		errors.Is(err, identity.ErrWrongPassphrase), errors.Is(err, identity.ErrMalformedKey),
		errors.Is(err, identity.ErrNotEd25519):
		return exitKey
	}
	return exitError
}

// hint is what to do about err, when the error alone does not say it: a
// relay that tells a newcomer to redeem an invite.
func hint(err error) string {
	var refused *wire.RelayError
	if errors.As(err, &refused) && refused.Code == wire.CodeNotAllowed && strings.Contains(refused.Message, "redeem an invite") {
		return " (with a token from the relay's operator: chat redeem TOKEN)"
	}
	return ""
}

// homeDir is the home folder named by --home, else the default.
func (c *cli) homeDir() (string, error) {
	if c.g.home != "" {
		return c.g.home, nil
	}
	return client.DefaultHomeDir()
}

// open opens the home folder named by the global flags. A --nick is
// remembered in its config file, as OpenHome remembers an --identity;
// an --invite is redeemed with the relay.
func (c *cli) open() (*client.Home, error) {
	dir, err := c.homeDir()
	if err != nil {
		return nil, err
	}
	h, err := client.OpenHome(dir, client.HomeOptions{KeyFile: c.g.keyFile, Passphrase: c.passphrase})
	if err != nil && c.g.keyFile != "" && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: --identity %s: %w", errNoKey, c.g.keyFile, err)
	}
	if err != nil {
		return nil, err
	}
	if c.g.nick != "" {
		if err := h.RememberNick(c.g.nick); err != nil {
			return nil, err
		}
	}
	if c.g.invite != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		addr, err := c.redeemWith(ctx, h, c.g.invite)
		if err != nil {
			return nil, fmt.Errorf("--invite: %w", err)
		}
		fmt.Fprintf(c.stderr, "chat: invite redeemed: the relay %s has you on its allow list\n", addr)
	}
	return h, nil
}

// errNoKey: the key file named by --identity does not exist.
var errNoKey = errors.New("the identity key cannot be used")

// passphrase asks for the key's passphrase on the terminal. Without a
// terminal there is no one to ask, and the key cannot be used.
func (c *cli) passphrase() ([]byte, error) {
	fd := int(c.stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, fmt.Errorf("%w, and standard input is not a terminal to ask for it", identity.ErrPassphraseRequired)
	}
	fmt.Fprint(c.stderr, "Passphrase for the identity key: ")
	defer fmt.Fprintln(c.stderr)
	return term.ReadPassword(fd)
}

// parseMin is parse for a command that takes at least nargs arguments.
func (c *cli) parseMin(fs *flag.FlagSet, args []string, nargs int) error {
	err := c.parse(fs, args, -1)
	if err == nil && len(c.args) < nargs {
		err = fmt.Errorf("%s takes at least %d argument(s), got %d", fs.Name(), nargs, len(c.args))
	}
	return err
}

// parse parses a command's flags, which may be mixed with the global ones,
// and checks the number of arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string, nargs int) error {
	// Accept flags after positional arguments too: chat verify FP --home X.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if nargs >= 0 && len(pos) != nargs {
		return fmt.Errorf("%s takes %d argument(s), got %d", fs.Name(), nargs, len(pos))
	}
	c.args = pos
	return nil
}

func (c *cli) welcome() int {
	// The first run sets the whole home folder up: identity, config file
	// and store, so that no separate setup step exists.
	cl, err := c.session(context.Background(), true)
	if err != nil {
		return c.fail(err)
	}
	h := cl.Home()
	if err := cl.Close(); err != nil {
		return c.fail(err)
	}
	if h.Created {
		fmt.Fprintf(c.stdout, "Created your identity in %s.\n", h.KeyFile)
	}
	pk := h.Key.Public()
	fmt.Fprintf(c.stdout, "You are %s (home: %s).\n\n", pk.Fingerprint(), h.Dir)
	fmt.Fprintln(c.stdout, "Share your fingerprint with the people you talk to, and compare theirs")
	fmt.Fprintln(c.stdout, "out of band. On a terminal, chat opens the chat screen (chat --room R")
	fmt.Fprintln(c.stdout, "opens on room R). From scripts and pipes:")
	fmt.Fprintln(c.stdout, "  chat talk --room lobby                  type lines to send, see replies")
	fmt.Fprintln(c.stdout, "  chat send --room lobby 'hello'          send one message")
	fmt.Fprintln(c.stdout, "  chat msg ed25519:KEY 'hi'               a direct message, sealed end to end")
	fmt.Fprintln(c.stdout, "  chat listen --room lobby                print messages as they arrive")
	fmt.Fprintln(c.stdout, "  chat history --room lobby --search hi   search what you have")
	fmt.Fprintln(c.stdout, "Add --relay FINGERPRINT@HOST:PORT to go through a relay (chat help).")
	return exitOK
}

type idJSON struct {
	Fingerprint string             `json:"fingerprint"`
	Short       string             `json:"short"`
	PublicKey   identity.PublicKey `json:"public_key"`
	PeerID      string             `json:"peer_id"`
	SSH         string             `json:"ssh"`
	KeyFile     string             `json:"key_file"`
}

func (c *cli) id(args []string) int {
	fs := c.flags("id")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := c.parse(fs, args, 0); err != nil {
		return c.usageError(err)
	}
	h, err := c.open()
	if err != nil {
		return c.fail(err)
	}
	pk := h.Key.Public()
	v := idJSON{pk.Fingerprint(), pk.ShortFingerprint(), pk, pk.PeerID(), pk.SSHAuthorizedKey(), h.KeyFile}
	if *asJSON {
		return c.printJSON(v)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "fingerprint\t%s\n", v.Fingerprint)
	fmt.Fprintf(tw, "public key\t%s\n", v.PublicKey)
	fmt.Fprintf(tw, "peer ID\t%s\n", v.PeerID)
	fmt.Fprintf(tw, "ssh\t%s\n", v.SSH)
	fmt.Fprintf(tw, "key file\t%s\n", v.KeyFile)
	tw.Flush()
	return exitOK
}

func (c *cli) printJSON(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "%s\n", b)
	return exitOK
}

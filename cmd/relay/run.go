package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/lockfile"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/server"
	"github.com/parleychat/parley/relay/wire"
)

// Exit codes, documented in "relay help" and docs/operations.md.
const (
	exitOK     = 0
	exitError  = 1 // anything not listed below
	exitUsage  = 2 // unknown command or flag, wrong arguments
	exitKey    = 3 // the relay's key cannot be used
	exitConfig = 4 // the configuration is invalid, or the folder has no relay
	exitLocked = 5 // another relay process uses the data folder
	exitAudit  = 6 // the audit log does not verify
)

const usage = `relay: Parley's relay: client-server fallback, store-and-forward,
policy, and a bridge to the peer-to-peer mesh.

Usage:
  relay [--data DIR] command [flags]

Commands:
  init [--policy open|allowlist|invite]
                     create the relay's identity and a commented config
                     file in the data folder, and print its address
  addr [--key|--mesh] print the address clients use: FINGERPRINT@HOST:PORT
                     (and the relay's public key, ed25519:..., on standard
                     error); --key: the public key only; --mesh: the mesh
                     addresses, for the other relays' federation.relays
  serve [flags]      run the relay until SIGTERM or SIGINT
      --listen HOST:PORT      QUIC (UDP) address for clients
      --listen-tcp HOST:PORT  TCP address of the relay over TLS, for
                              clients whose network blocks UDP (default:
                              the QUIC address and port; "off": none)
      --p2p-listen MULTIADDR  the mesh node's address (repeatable;
                              "none" runs no mesh node)
      --admin HOST:PORT       /metrics, /healthz and /debug/pprof/
                              ("" turns it off)
      --log-level LEVEL       debug, info, warn or error
      --log-format FORMAT     text (default) or json: one JSON object a line
      --check-config          check the configuration and exit
  allow KEY [--note TEXT]    put an identity on the allow list. KEY is
                             its public key (ed25519:..., as "chat id"
                             prints it) or its fingerprint (SHA256:...,
                             as logs and audit records print it) if the
                             relay has seen the key
  deny KEY                   take it off the allow list
  ban KEY [--note TEXT]      ban an identity
  unban KEY                  lift a ban
  invite [--ttl 168h] [--uses 1] [--note TEXT]
                             make an invite token (invite policy)
  invite list [--json]       list the invites: ID, expiry, uses left
  invite revoke TOKEN|ID     delete an invite, named by its token or by
                             its ID (or the first 6 or more digits of it)
  acl [--json]               list the allow and ban lists
  reload                     make the running relay read config.toml again
                             and apply its policy and limits (as SIGHUP
                             does); the rest takes effect at the next start
  audit verify               check the whole audit log against its signed
                             checkpoints; name the first bad record
  audit verify --file F --key KEY
                             check an exported log, with only the relay's
                             public key (ed25519:..., "relay audit export"
                             prints it)
  audit show [--since T] [--identity FINGERPRINT] [--room R] [--kind K]
             [--limit N] [--json]
                             list audit records (T: RFC 3339 or a duration
                             back from now, such as 24h)
  audit export [--out F]     write the log and its checkpoints to F
                             (default standard output)
  version                    the version of relay and of Go (also --version)
  help                       this text

The admin commands (allow ... acl) act on a running relay at once,
through its admin socket, or on the data folder of a stopped one.

Global flags:
  --data DIR         data folder (default $PARLEY_RELAY_DATA, else
                     $XDG_DATA_HOME/parley-relay, else
                     ~/.local/share/parley-relay)
  --version          print the version and exit

Exit codes: 0 ok, 1 error, 2 usage, 3 the relay's key cannot be used,
4 bad configuration or no relay in the folder, 5 the data folder is in
use by another relay process, 6 the audit log does not verify.
`

type cli struct {
	stdout, stderr io.Writer
	data           string
	cmd            string // the command whose flags are parsed, for its help
}

func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	fs := c.flags("relay")
	version := fs.Bool("version", false, "print the version")
	if err := fs.Parse(args); err != nil {
		return c.usageError(err)
	}
	args = fs.Args()
	if *version {
		args = append([]string{"version"}, args...)
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "init":
		return c.init(args)
	case "addr":
		return c.addr(args)
	case "serve":
		return c.serve(args)
	case "allow", "deny", "ban", "unban", "invite", "acl", "reload":
		return c.admin(cmd, args)
	case "audit":
		return c.audit(args)
	case "version":
		return c.version(args)
	case "help", "-h", "--help":
		if len(args) > 0 {
			return c.help(strings.Join(args, " "))
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	return c.usageError(fmt.Errorf("unknown command %q", cmd))
}

// help prints what the usage says of one command ("serve", "audit
// verify", "invite"), with the global flags: for "relay help CMD" and
// "relay CMD --help".
func (c *cli) help(cmd string) int {
	part, ok := commandUsage(cmd)
	if !ok {
		return c.usageError(fmt.Errorf("no command %q", cmd))
	}
	fmt.Fprintf(c.stdout, "Usage: relay [--data DIR] %s\n\n%s\nrelay help lists every command, the global flags and the exit codes.\n", cmd, part)
	return exitOK
}

// commandUsage is the part of the usage's command list about cmd: its
// lines, and those of its subcommands.
func commandUsage(cmd string) (string, bool) {
	list := usage[strings.Index(usage, "Commands:\n"):strings.Index(usage, "\nThe admin commands")]
	var b strings.Builder
	in := false
	for _, l := range strings.Split(list, "\n") {
		if rest, isCmd := strings.CutPrefix(l, "  "); isCmd && rest != "" && rest[0] != ' ' {
			in = rest == cmd || strings.HasPrefix(rest, cmd+" ")
		}
		if in {
			b.WriteString(l + "\n")
		}
	}
	return b.String(), b.Len() > 0
}

func (c *cli) version(args []string) int {
	if len(args) > 0 {
		return c.usageError(fmt.Errorf("version takes no arguments, got %d", len(args)))
	}
	fmt.Fprintln(c.stdout, versionLine("relay"))
	// The wire versions it speaks (docs/protocol.md, "Versions and
	// upgrades").
	fmt.Fprintf(c.stdout, "envelope version %d, relay protocol %s\n", protocol.Version, wire.Current)
	return exitOK
}

// versionLine is "NAME VERSION GOVERSION": the module's version, else the
// commit it was built from ("(modified)" if the tree had changes), else
// "(devel)".
func versionLine(name string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return name + " (devel), no build information"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			modified = " (modified)"
		}
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "(devel)"
		if rev != "" {
			v = rev[:min(12, len(rev))]
		}
	}
	if strings.HasSuffix(v, "+dirty") {
		modified = "" // the version says it already
	}
	return fmt.Sprintf("%s %s%s %s", name, v, modified, bi.GoVersion)
}

func (c *cli) flags(name string) *flag.FlagSet {
	if name != "relay" {
		c.cmd = name
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.data, "data", c.data, "data folder")
	return fs
}

// parse parses a command's flags, which may come before or after its
// positional arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func (c *cli) usageError(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		if c.cmd != "" {
			return c.help(c.cmd)
		}
		fmt.Fprint(c.stdout, usage)
		return exitOK
	}
	fmt.Fprintf(c.stderr, "relay: %v (see relay help)\n", err)
	return exitUsage
}

func (c *cli) fail(err error) int {
	if p := (*audit.Problem)(nil); errors.Is(err, server.ErrAuditCheck) && errors.As(err, &p) {
		fmt.Fprintf(c.stderr, "relay: audit log does NOT verify: %v\n", strings.TrimPrefix(p.Error(), "audit: "))
		fmt.Fprintf(c.stderr, "relay: it does not check out against its newest signed checkpoint, so the relay will not serve on it; relay audit verify checks it all (docs/audit.md)\n")
		return exitAudit
	}
	msg := strings.TrimPrefix(err.Error(), "relay: ")
	fmt.Fprintf(c.stderr, "relay: %v\n", msg)
	switch {
	case errors.Is(err, lockfile.ErrLocked):
		return exitLocked
	case errors.Is(err, server.ErrNotInitialized), errors.Is(err, server.ErrInitialized), errors.Is(err, server.ErrConfig):
		return exitConfig
	case errors.Is(err, identity.ErrKeyPermissions), errors.Is(err, identity.ErrPassphraseRequired),
		errors.Is(err, identity.ErrMalformedKey), errors.Is(err, identity.ErrNotEd25519):
		return exitKey
	}
	return exitError
}

func (c *cli) dir() (string, error) {
	if c.data != "" {
		return c.data, nil
	}
	return server.DefaultDataDir()
}

func (c *cli) init(args []string) int {
	fs := c.flags("init")
	policy := fs.String("policy", "open", "open, allowlist or invite")
	pos, err := c.parse(fs, args)
	if err != nil {
		return c.usageError(err)
	}
	if len(pos) != 0 {
		return c.usageError(fmt.Errorf("init takes no arguments"))
	}
	mode, err := wire.ParsePolicyMode(*policy)
	if err != nil {
		return c.usageError(err)
	}
	dir, err := c.dir()
	if err != nil {
		return c.fail(err)
	}
	res, err := server.Init(dir, server.InitOptions{Policy: mode})
	if err != nil {
		return c.fail(err)
	}
	key := res.Key
	cfg, err := server.LoadDirConfig(dir)
	if err != nil {
		return c.fail(err)
	}
	addr, guessed := server.ShareAddr(key, cfg)
	if res.Completed {
		fmt.Fprintf(c.stderr, "relay: %s had the relay's identity but no %s: wrote a new %s (policy %s) and kept the identity; edit it, then run: relay serve\n", dir, server.ConfigFile, server.ConfigFile, mode)
	} else {
		fmt.Fprintf(c.stderr, "relay: created in %s (policy %s); edit %s/%s, then run: relay serve\n", dir, mode, dir, server.ConfigFile)
	}
	fmt.Fprintf(c.stderr, "relay: mDNS (finding mesh peers on the local network) is off; for a relay on a LAN, set mdns = true in %s\n", server.ConfigFile)
	if guessed {
		fmt.Fprintf(c.stderr, "relay: the host name in the address is this machine's name; set advertise in %s if clients use another\n", server.ConfigFile)
	}
	fmt.Fprintf(c.stderr, "relay: its public key (for relay audit verify --key): %s\n", key)
	fmt.Fprintln(c.stdout, addr)
	return exitOK
}

func (c *cli) addr(args []string) int {
	fs := c.flags("addr")
	onlyKey := fs.Bool("key", false, "print the public key only")
	meshOnly := fs.Bool("mesh", false, "print the mesh addresses only (for the other relays' federation.relays)")
	pos, err := c.parse(fs, args)
	if err != nil {
		return c.usageError(err)
	}
	if len(pos) != 0 {
		return c.usageError(fmt.Errorf("addr takes no arguments"))
	}
	dir, err := c.dir()
	if err != nil {
		return c.fail(err)
	}
	key, err := server.LoadKey(dir)
	if err != nil {
		return c.fail(err)
	}
	cfg, err := server.LoadDirConfig(dir)
	if err != nil {
		return c.fail(err)
	}
	if *onlyKey {
		fmt.Fprintln(c.stdout, key.Public())
		return exitOK
	}
	if *meshOnly {
		addrs, err := server.MeshAddrs(key.Public(), cfg)
		if err != nil {
			return c.fail(err)
		}
		for _, a := range addrs {
			fmt.Fprintln(c.stdout, a)
		}
		return exitOK
	}
	addr, _ := server.ShareAddr(key.Public(), cfg)
	fmt.Fprintf(c.stderr, "relay: its public key (for relay audit verify --key): %s\n", key.Public())
	fmt.Fprintln(c.stdout, addr)
	return exitOK
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

// serveFlags are the flags of relay serve.
type serveFlags struct {
	listen    string
	listenTCP string
	admin     string // "\x00" if not given: "" turns the admin listener off
	p2p       multi
	level     slog.Level
	format    string
	check     bool
}

func (c *cli) serve(args []string) int {
	f, err := c.parseServe(args)
	if err != nil {
		return c.usageError(err)
	}
	dir, err := c.dir()
	if err != nil {
		return c.fail(err)
	}
	cfg, err := f.config(dir)
	if err != nil {
		return c.fail(err)
	}
	if f.check {
		fmt.Fprintf(c.stdout, "relay: configuration of %s is valid\n", dir)
		return exitOK
	}
	if err := c.runRelay(dir, cfg, f.logger(c.stderr)); err != nil {
		return c.fail(err)
	}
	return exitOK
}

// parseServe reads serve's flags; every error is a usage error.
func (c *cli) parseServe(args []string) (serveFlags, error) {
	fs := c.flags("serve")
	var f serveFlags
	var level string
	fs.StringVar(&f.listen, "listen", "", "QUIC address")
	fs.StringVar(&f.listenTCP, "listen-tcp", "", "TCP address (off: none)")
	fs.Var(&f.p2p, "p2p-listen", "mesh multiaddr")
	fs.StringVar(&f.admin, "admin", "\x00", "metrics and health address")
	fs.StringVar(&level, "log-level", "info", "log level")
	fs.StringVar(&f.format, "log-format", "text", "text or json")
	fs.BoolVar(&f.check, "check-config", false, "check the configuration and exit")
	pos, err := c.parse(fs, args)
	if err != nil {
		return f, err
	}
	if len(pos) != 0 {
		return f, fmt.Errorf("serve takes no arguments")
	}
	if err := f.level.UnmarshalText([]byte(level)); err != nil {
		return f, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	if f.format != "text" && f.format != "json" {
		return f, fmt.Errorf("--log-format %q: want text or json", f.format)
	}
	return f, nil
}

// config is the data folder's configuration with the flags' changes,
// checked, as is the relay's key.
func (f serveFlags) config(dir string) (server.Config, error) {
	cfg, err := server.LoadDirConfig(dir)
	if err != nil {
		return cfg, err
	}
	if f.listen != "" {
		cfg.Listen = f.listen
	}
	if f.listenTCP != "" {
		cfg.ListenTCP = f.listenTCP
	}
	if f.admin != "\x00" {
		cfg.Admin = f.admin
	}
	switch {
	case len(f.p2p) == 1 && f.p2p[0] == "none":
		cfg.P2PListen = nil
	case len(f.p2p) > 0:
		cfg.P2PListen = f.p2p
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	if _, err := server.LoadKey(dir); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// logger logs to w at the flags' level, in their format.
func (f serveFlags) logger(w io.Writer) *slog.Logger {
	var h slog.Handler = slog.NewTextHandler(w, &slog.HandlerOptions{Level: f.level})
	if f.format == "json" {
		h = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: f.level})
	}
	return slog.New(h)
}

// runRelay runs the relay of dir until SIGTERM or SIGINT, reloading its
// config on SIGHUP, and prints the addresses it serves on.
func (c *cli) runRelay(dir string, cfg server.Config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	reload, stopReloads := reloadOnSIGHUP()
	defer stopReloads()
	return server.Run(ctx, server.RunOptions{Dir: dir, Config: cfg, Log: log, Reload: reload, Ready: func(addr relay.Addr, mesh []string) {
		fmt.Fprintf(c.stdout, "serving %s\n", addr)
		for _, m := range mesh {
			fmt.Fprintf(c.stdout, "mesh %s\n", m)
		}
	}})
}

// reloadOnSIGHUP asks for a reload on the channel it returns at each
// SIGHUP, until stop is called.
func reloadOnSIGHUP() (reload <-chan struct{}, stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	asks := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case asks <- struct{}{}:
			default: // one is pending already
			}
		}
	}()
	return asks, func() { signal.Stop(hup); close(hup) }
}

func (c *cli) admin(cmd string, args []string) int {
	req, asJSON, err := c.parseAdmin(cmd, args)
	if err != nil {
		return c.usageError(err)
	}
	dir, err := c.dir()
	if err != nil {
		return c.fail(err)
	}
	resp, err := server.RunAdmin(context.Background(), dir, req)
	if err != nil {
		return c.fail(err)
	}
	if resp.Error != "" {
		fmt.Fprintf(c.stderr, "relay: %s\n", resp.Error)
		return exitError
	}
	c.printAdmin(req.Cmd, resp, asJSON)
	return exitOK
}

// parseAdmin reads an admin command's flags and arguments into its
// request ("invite list" and "invite revoke" become the commands
// invite-list and invite-revoke); every error is a usage error.
func (c *cli) parseAdmin(cmd string, args []string) (req server.AdminRequest, asJSON bool, err error) {
	fs := c.flags(cmd)
	if cmd == "invite" && len(args) > 0 && (args[0] == "list" || args[0] == "revoke") {
		cmd, args = "invite-"+args[0], args[1:]
	}
	req.Cmd = cmd
	switch cmd {
	case "allow", "ban", "invite":
		fs.StringVar(&req.Note, "note", "", "note")
	}
	if cmd == "invite" {
		fs.StringVar(&req.TTL, "ttl", "168h", "how long the invite is valid")
		fs.IntVar(&req.Uses, "uses", 1, "how many identities may redeem it")
	}
	if cmd == "acl" || cmd == "invite-list" {
		fs.BoolVar(&asJSON, "json", false, "JSON output")
	}
	pos, err := c.parse(fs, args)
	if err != nil {
		return req, asJSON, err
	}
	switch cmd {
	case "allow", "deny", "ban", "unban":
		if len(pos) != 1 {
			return req, asJSON, fmt.Errorf("%s takes one identity: its public key (ed25519:...) or fingerprint (SHA256:...)", cmd)
		}
		req.Key = pos[0]
	case "invite-revoke":
		if len(pos) != 1 {
			return req, asJSON, fmt.Errorf("invite revoke takes one invite: its token or its ID, as invite list shows it")
		}
		req.Invite = pos[0]
	default:
		if len(pos) != 0 {
			return req, asJSON, fmt.Errorf("%s takes no arguments", cmd)
		}
	}
	return req, asJSON, nil
}

// printAdmin prints the answer to admin command cmd.
func (c *cli) printAdmin(cmd string, resp server.AdminResponse, asJSON bool) {
	switch {
	case cmd == "invite":
		fmt.Fprintln(c.stdout, resp.Token)
		fmt.Fprintf(c.stderr, "relay: invite %s (policy version %d)\n", resp.Message, resp.PolicyVersion)
	case (cmd == "invite-list" || cmd == "acl") && asJSON:
		json.NewEncoder(c.stdout).Encode(resp)
	case cmd == "invite-list":
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tEXPIRES\tUSES LEFT\tSTATE\tNOTE")
		for _, e := range resp.Invites {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", e.ID, e.Expires.UTC().Format("2006-01-02 15:04"), e.Uses, e.State, e.Note)
		}
		tw.Flush()
		fmt.Fprintf(c.stderr, "relay: policy version %d\n", resp.PolicyVersion)
	case cmd == "acl":
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "LIST\tFINGERPRINT\tADDED\tNOTE")
		for _, e := range resp.Entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.List, e.Fingerprint, e.Added.UTC().Format("2006-01-02 15:04"), e.Note)
		}
		tw.Flush()
		fmt.Fprintf(c.stderr, "relay: policy version %d\n", resp.PolicyVersion)
	default:
		where := "data folder (relay not running)"
		if resp.Running {
			where = "running relay"
		}
		fmt.Fprintf(c.stdout, "%s (policy version %d, %s)\n", resp.Message, resp.PolicyVersion, where)
	}
}

// auditFlags are the flags of relay audit's commands; each has some.
type auditFlags struct {
	file, key              string // verify
	since, who, room, kind string // show
	limit                  int
	asJSON                 bool
	out                    string // export
}

func (c *cli) audit(args []string) int {
	if len(args) == 0 {
		return c.usageError(fmt.Errorf("audit wants verify, show or export"))
	}
	sub, args := args[0], args[1:]
	f, err := c.parseAudit(sub, args)
	if err != nil {
		return c.usageError(err)
	}
	ctx := context.Background()
	switch sub {
	case "verify":
		return c.auditVerify(ctx, f.file, f.key)
	case "show":
		return c.auditShow(ctx, f)
	default:
		return c.auditExport(ctx, f.out)
	}
}

// parseAudit reads the flags of audit command sub; every error is a
// usage error.
func (c *cli) parseAudit(sub string, args []string) (auditFlags, error) {
	fs := c.flags("audit " + sub)
	var f auditFlags
	switch sub {
	case "verify":
		fs.StringVar(&f.file, "file", "", "an exported log")
		fs.StringVar(&f.key, "key", "", "the relay's public key")
	case "show":
		fs.StringVar(&f.since, "since", "", "records from this time on")
		fs.StringVar(&f.who, "identity", "", "records of this fingerprint")
		fs.StringVar(&f.room, "room", "", "records of this room")
		fs.StringVar(&f.kind, "kind", "", "records of this kind")
		fs.IntVar(&f.limit, "limit", 0, "the newest N records")
		fs.BoolVar(&f.asJSON, "json", false, "one JSON object a line")
	case "export":
		fs.StringVar(&f.out, "out", "", "file to write")
	default:
		return f, fmt.Errorf("unknown audit command %q", sub)
	}
	pos, err := c.parse(fs, args)
	if err != nil {
		return f, err
	}
	if len(pos) != 0 {
		return f, fmt.Errorf("audit %s takes no arguments", sub)
	}
	return f, nil
}

// auditVerify verifies an exported log file against the relay's key, or
// if neither is given, the log of the data folder.
func (c *cli) auditVerify(ctx context.Context, file, key string) int {
	var res audit.Result
	if file != "" || key != "" {
		if file == "" || key == "" {
			return c.usageError(fmt.Errorf("audit verify --file and --key go together"))
		}
		k, err := identity.ParsePublicKey(key)
		if err != nil {
			return c.usageError(fmt.Errorf("--key: %w", err))
		}
		f, err := os.Open(file)
		if err != nil {
			return c.fail(err)
		}
		defer f.Close()
		res, err = server.VerifyExport(f, k)
		if err != nil {
			return c.auditFail(err)
		}
	} else {
		dir, err := c.dir()
		if err != nil {
			return c.fail(err)
		}
		if res, err = server.AuditVerify(ctx, dir); err != nil {
			return c.auditFail(err)
		}
	}
	fmt.Fprintf(c.stdout, "audit log ok: %d records, %d signed checkpoints, the newest of size %d\n", res.Records, res.Checkpoints, res.Newest.Size)
	return exitOK
}

// auditShow prints the data folder's audit records that f selects.
func (c *cli) auditShow(ctx context.Context, f auditFlags) int {
	dir, err := c.dir()
	if err != nil {
		return c.fail(err)
	}
	filter, err := f.filter()
	if err != nil {
		return c.usageError(err)
	}
	views, err := server.AuditShow(ctx, dir, filter)
	if err != nil {
		return c.fail(err)
	}
	if f.asJSON {
		enc := json.NewEncoder(c.stdout)
		for _, v := range views {
			enc.Encode(v)
		}
		return exitOK
	}
	c.printAuditTable(views)
	return exitOK
}

// filter is the selection of audit show's flags; its errors are usage
// errors.
func (f auditFlags) filter() (server.AuditFilter, error) {
	filter := server.AuditFilter{Identity: f.who, Room: f.room, Limit: f.limit}
	if f.since != "" {
		if d, err := time.ParseDuration(f.since); err == nil {
			filter.Since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, f.since); err == nil {
			filter.Since = t
		} else {
			return filter, fmt.Errorf("--since %q: want RFC 3339 or a duration", f.since)
		}
	}
	if f.kind != "" {
		var err error
		if filter.Kind, err = audit.ParseKind(f.kind); err != nil {
			return filter, err
		}
	}
	return filter, nil
}

// printAuditTable prints audit records as a table, one a line.
func (c *cli) printAuditTable(views []audit.View) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tTIME\tKIND\tIDENTITY\tROOM\tDETAIL")
	for _, v := range views {
		detail := v.Detail
		if v.Message != "" {
			detail = strings.TrimSpace(fmt.Sprintf("%s %s %s", v.Message[:16], v.Path, detail))
		}
		if v.Code != "" {
			detail = v.Code + ": " + detail
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", v.Index, v.Time, v.Kind, v.Identity, v.Room, detail)
	}
	tw.Flush()
}

// auditExport writes the data folder's audit log to the file out, or to
// stdout if out is "".
func (c *cli) auditExport(ctx context.Context, out string) int {
	dir, err := c.dir()
	if err != nil {
		return c.fail(err)
	}
	w := c.stdout
	if out != "" {
		f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return c.fail(err)
		}
		defer f.Close()
		w = f
	}
	n, err := server.AuditExport(ctx, dir, w)
	if err != nil {
		return c.fail(err)
	}
	key, err := server.LoadKey(dir)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stderr, "relay: exported %d audit records; check them anywhere with: relay audit verify --file FILE --key %s\n", n, key.Public())
	return exitOK
}

// auditFail reports a log that does not verify.
func (c *cli) auditFail(err error) int {
	var p *audit.Problem
	if errors.As(err, &p) {
		fmt.Fprintf(c.stderr, "relay: audit log does NOT verify: %v\n", strings.TrimPrefix(p.Error(), "audit: "))
		return exitAudit
	}
	return c.fail(err)
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
)

var errNotReceived = errors.New("not received in time")

// errRanOut: --timeout passed before the session had even started (a slow
// disk, a relay slow to answer): nothing was sent or received.
var errRanOut = errors.New("--timeout ran out")

// ranOut names err as the timeout running out if ctx's deadline passed:
// the error it caused (a store read) is only a symptom. A relay that did
// not answer in time stays that (exit 5): it says more.
// timedSession opens a silent session for a command bounded by timeout
// and ended by SIGINT or SIGTERM: what arrives meanwhile is kept for
// listen. It returns the command's context, the client, and what to call
// when the command is done.
func (c *cli) timedSession(timeout time.Duration, offline bool) (context.Context, *client.Client, func(), error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	cl, err := c.session(ctx, offline, true)
	if err != nil {
		err = ranOut(ctx, timeout, err)
		cancel()
		stop()
		return nil, nil, nil, err
	}
	return ctx, cl, func() { cl.Close(); cancel(); stop() }, nil
}

// parsedSession parses a command's flags and arguments (parse), checks
// its --timeout, and opens a session bounded by it. With no session (nil
// client) the command ends with code: the error shown, or exitOK after
// --help.
func (c *cli) parsedSession(parse func() error, timeout *time.Duration) (context.Context, *client.Client, func(), int) {
	if err := parse(); err != nil {
		return nil, nil, nil, c.usageError(err)
	}
	if err := positive(*timeout); err != nil {
		return nil, nil, nil, c.usageError(err)
	}
	ctx, cl, done, err := c.timedSession(*timeout, false)
	if err != nil {
		return nil, nil, nil, c.fail(err)
	}
	return ctx, cl, done, exitOK
}

func ranOut(ctx context.Context, timeout time.Duration, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, client.ErrRelayUnreachable) {
		return fmt.Errorf("%w (%v) while starting: %w", errRanOut, timeout, err)
	}
	return err
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line (without its newline) of at most max bytes. A
// longer line is read to its end and dropped, with errLineTooLong; the
// next call reads the next line.
func readLine(r *bufio.Reader, max int) (string, error) {
	var line []byte
	over := false
	for {
		chunk, err := r.ReadSlice('\n')
		if !over {
			line = append(line, chunk...)
			over = len(bytes.TrimSuffix(line, []byte("\n"))) > max
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		switch {
		case over:
			return "", errLineTooLong
		case err != nil && len(line) == 0:
			return "", err // io.EOF after the last line
		}
		return string(bytes.TrimSuffix(line, []byte("\n"))), nil
	}
}

// oneLine keeps an error on one line: joined errors are separated by "; ".
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// config is the home folder's config file with the global flags over it.
func (c *cli) config(h *client.Home) (client.Config, error) {
	cfg, err := h.Config()
	if err != nil {
		return cfg, err
	}
	g := c.g
	if g.nick != "" {
		cfg.Nick = g.nick
	}
	if g.mode != "" {
		cfg.Mode = g.mode
	}
	if len(g.relay) > 0 {
		cfg.Relays = g.relay
	}
	if g.via != "" {
		cfg.RelayTransport = g.via
	}
	if len(g.peers) > 0 {
		cfg.Peers = g.peers
	}
	if len(g.listen) > 0 {
		cfg.Listen = g.listen
	}
	if g.noMDNS {
		cfg.MDNS = false
	}
	return cfg, cfg.Validate()
}

// session opens the home folder and a client session on it. offline
// sessions (history, rooms) start no network.
func (c *cli) session(ctx context.Context, offline bool, silent ...bool) (*client.Client, error) {
	h, err := c.open()
	if err != nil {
		return nil, err
	}
	cfg, err := c.config(h)
	if err != nil {
		return nil, err
	}
	// What the person must know arrives as the session's events and is
	// shown as such; the logs are for --verbose, but for errors.
	cl, err := client.Open(ctx, h, client.Options{Config: cfg, Logger: c.sessionLog(), Offline: offline, Silent: len(silent) > 0 && silent[0]})
	if err != nil {
		return nil, err
	}
	c.relayOnly = cl.Node() == nil && !offline
	if err := cl.RelayError(); err != nil {
		var refused *wire.RelayError
		if errors.Is(err, relay.ErrWrongRelay) || errors.As(err, &refused) {
			// Never carry on quietly past a relay that is not the one
			// named, or one that turned us away.
			cl.Close()
			return nil, err
		}
		carry := "the mesh carries on alone"
		if c.relayOnly {
			carry = "trying again in the background"
		}
		if c.logTo != nil { // the UI shows the relay's state
			c.sessionLog().Warn("relay", "err", err)
		} else {
			fmt.Fprintf(c.stderr, "chat: warning: %v; %s\n", oneLine(err), carry)
		}
	}
	return cl, nil
}

func (c *cli) roomFlags(name string) (*flag.FlagSet, *string, *bool) {
	fs := c.flags(name)
	room := onceString(fs, "room", "room name (once)")
	asJSON := fs.Bool("json", false, "JSON output")
	return fs, room, asJSON
}

// positive checks a --timeout's value.
func positive(timeout time.Duration) error {
	if timeout <= 0 {
		return fmt.Errorf("--timeout %v: must be positive", timeout)
	}
	return nil
}

// needRoom checks that --room was given. Its value is a room ID or the
// name of a private room, which the session resolves (resolveRoom).
func needRoom(room string) error {
	if room == "" {
		return errors.New("--room is required")
	}
	return nil
}

// resolveRoom turns --room's value into the room's ID.
func resolveRoom(ctx context.Context, cl *client.Client, room *string) error {
	id, err := cl.ResolveRoom(ctx, *room)
	if err != nil {
		return err
	}
	*room = id
	return nil
}

type ackJSON struct {
	Status  string       `json:"status"`
	Pos     uint64       `json:"pos"`
	Time    string       `json:"time"` // RFC 3339, as the relay's clock said (any year: a string, not time.Time, whose JSON stops at 9999)
	Receipt *receiptJSON `json:"receipt,omitempty"`
}

type receiptJSON struct {
	Index         uint64 `json:"index"`
	PolicyVersion uint64 `json:"policy_version"`
	Checkpoint    string `json:"checkpoint"`
	ProofHashes   int    `json:"proof_hashes"`
	Verified      bool   `json:"verified"`
}

type sentJSON struct {
	ID        string   `json:"id"`
	Delivered bool     `json:"delivered"`
	Room      string   `json:"room"`
	Time      string   `json:"time"`
	Via       []string `json:"via"`
	Ack       *ackJSON `json:"ack,omitempty"`
	MeshPeer  string   `json:"mesh_peer,omitempty"`
	Failed    []string `json:"failed,omitempty"`
}

func (c *cli) sentJSON(room string, s client.Sent, checkpoint []byte) sentJSON {
	v := sentJSON{ID: s.ID.String(), Delivered: s.Delivered(), Room: room, Time: s.Time.UTC().Format(time.RFC3339Nano), Via: s.Via, MeshPeer: s.MeshPeer}
	if v.Via == nil {
		v.Via = []string{}
	}
	for _, err := range s.Failed {
		v.Failed = append(v.Failed, oneLine(err))
	}
	if a := s.Ack; a != nil {
		status := "stored"
		if a.Status != wire.AckStored {
			status = "duplicate"
		}
		v.Ack = &ackJSON{Status: status, Pos: a.Pos, Time: time.UnixMilli(a.Time).UTC().Format(time.RFC3339Nano)}
		if r := a.Receipt; r != nil {
			cp := r.Checkpoint
			if len(cp) == 0 {
				cp = checkpoint
			}
			// The client library checked the receipt before Send returned:
			// an unchecked one is an audit error, never an Ack.
			v.Ack.Receipt = &receiptJSON{Index: r.Index, PolicyVersion: r.PolicyVersion,
				Checkpoint: string(cp), ProofHashes: len(r.Proof), Verified: true}
		}
	}
	return v
}

func (c *cli) send(args []string) int {
	fs, room, asJSON := c.roomFlags("send")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := c.parseMin(fs, args, 1); err != nil {
		return c.usageError(err)
	}
	if err := needRoom(*room); err != nil {
		return c.usageError(err)
	}
	if err := positive(*timeout); err != nil {
		return c.usageError(err)
	}
	text := strings.Join(c.args, " ")
	// send shows nothing: what arrives meanwhile is kept for listen.
	ctx, cl, done, err := c.timedSession(*timeout, false)
	if err != nil {
		return c.fail(err)
	}
	defer done()
	if err := resolveRoom(ctx, cl, room); err != nil {
		return c.fail(ranOut(ctx, *timeout, err))
	}
	return c.sendText(ctx, cl, *room, text, *asJSON, *timeout)
}

// sendText sends text to room in session cl and prints what became of
// it, for send and msg.
func (c *cli) sendText(ctx context.Context, cl *client.Client, room, text string, asJSON bool, timeout time.Duration) int {
	sent, err := cl.Send(ctx, room, text)
	if err != nil && sent.ID == (protocol.ID{}) {
		return c.fail(ranOut(ctx, timeout, err))
	}
	var cp []byte
	if r := cl.Relay(); r != nil {
		cp = r.Checkpoint()
	}
	if asJSON {
		c.printJSON(c.sentJSON(room, sent, cp))
	} else if err == nil {
		fmt.Fprintln(c.stdout, sent.ID)
	}
	if err != nil {
		if !client.IsAuditError(err) {
			// Not on stdout, which names delivered messages only.
			err = fmt.Errorf("message %s: %w", sent.ID, err)
		}
		return c.fail(err)
	}
	if err := cl.Close(); err != nil {
		return c.fail(err)
	}
	return exitOK
}

type messageJSON struct {
	ID      string `json:"id"`
	Room    string `json:"room"`
	Sender  string `json:"sender"`
	Nick    string `json:"nick"`
	Lamport uint64 `json:"lamport"`
	Time    string `json:"time"`
	Text    string `json:"text"`
	Via     string `json:"via"`
	Trust   string `json:"trust"`
	Gap     bool   `json:"gap,omitempty"`
	// Sealed: sealed end to end; Waiting: its key has not arrived (no
	// text yet); Never: why it will never open (no text).
	Sealed  bool   `json:"sealed,omitempty"`
	Waiting bool   `json:"waiting,omitempty"`
	Never   string `json:"never,omitempty"`
	// Receipt is a relay's audit receipt of our own message (history):
	// the first of Receipts, one per relay that acknowledged it.
	Receipt  *storedReceiptJSON  `json:"receipt,omitempty"`
	Receipts []storedReceiptJSON `json:"receipts,omitempty"`
}

type storedReceiptJSON struct {
	Relay      string `json:"relay"`
	Pos        uint64 `json:"pos"`
	Index      uint64 `json:"index"`
	Checkpoint string `json:"checkpoint"`
}

func trustName(m client.Message) string {
	if m.Own {
		return "self"
	}
	return m.Trust.String()
}

func (c *cli) printMessage(m client.Message, asJSON bool) {
	if asJSON {
		v := messageJSON{
			ID: m.ID.String(), Room: m.Room, Sender: m.Sender.Fingerprint(), Nick: m.Nick,
			Lamport: m.Lamport, Time: m.Time.UTC().Format(time.RFC3339Nano), Text: m.Text,
			Via: m.Via, Trust: trustName(m), Gap: m.Gap, Sealed: m.Sealed, Waiting: m.Waiting, Never: m.Never,
		}
		for _, r := range m.Receipts {
			v.Receipts = append(v.Receipts, storedReceiptJSON{r.Relay, r.Pos, r.Index, string(r.Checkpoint)})
		}
		if len(v.Receipts) > 0 {
			v.Receipt = &v.Receipts[0]
		}
		c.printJSON(v)
		return
	}
	mark := ""
	switch {
	case m.Own:
	case m.Trust == identity.TrustKeyChanged && m.Claims != nil:
		mark = " [KEY CHANGED: not the verified key of " + m.Nick + ", " + m.Claims.Key.Fingerprint() + "]"
	case m.Trust == identity.TrustKeyChanged:
		mark = " [KEY CHANGED: not the verified key of " + m.Nick + "]"
	case m.Trust == identity.TrustNew:
		mark = " [new]"
	case m.Trust == identity.TrustVerified:
		mark = " [verified]"
	}
	gap := ""
	if m.Gap {
		gap = " (messages of " + m.Nick + " before this one are missing)"
	}
	via := m.Via
	for _, r := range m.Receipts {
		if len(m.Receipts) == 1 {
			via += fmt.Sprintf("; audit record %d", r.Index)
		} else {
			via += fmt.Sprintf("; audit record %d of %s", r.Index, r.Relay)
		}
	}
	fmt.Fprintf(c.stdout, "%s #%s <%s>%s %s%s  (%s)\n", m.Time.Local().Format("2006-01-02 15:04:05"),
		m.Room, nickOf(m), mark, textOf(m), gap, via)
}

// nickOf is the nickname a message is shown with: a sealed message not
// open has none yet, and shows its sender's short fingerprint.
func nickOf(m client.Message) string {
	if m.Nick == "" {
		return m.Sender.ShortFingerprint()
	}
	return m.Nick
}

// textOf is a message's text as shown: a sealed message not open says
// so, and why.
func textOf(m client.Message) string {
	switch {
	case m.Waiting:
		return "[waiting for key]"
	case m.Never != "":
		return "[cannot be opened: " + m.Never + "]"
	}
	return m.Text
}

// screen shows a session's events on standard output (messages) and
// standard error (what became of ours, warnings, and with --verbose the
// paths' state), for listen and talk.
type screen struct {
	c       *cli
	cl      *client.Client
	asJSON  bool
	mu      sync.Mutex // one line at a time
	stopped stopped    // in relay mode, the relays that stopped serving each room (show's only)
}

// stopped is, by room, the relays whose path stopped for good in it.
type stopped map[string][]string

// add notes that relay stopped serving room, and returns how many of the
// session's relays have.
func (st stopped) add(room, relay string) int {
	if !slices.Contains(st[room], relay) {
		st[room] = append(st[room], relay)
	}
	return len(st[room])
}

// printf writes a line on standard error.
func (s *screen) printf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.c.stderr, format, args...)
}

// show shows one event. It reports an exit code and true when the
// session must end: the relay's audit log failed its checks, or the only
// path stopped for good.
func (s *screen) show(e client.Event) (int, bool) {
	switch e := e.(type) {
	case *client.MessageEvent:
		s.mu.Lock()
		s.c.printMessage(e.Message, s.asJSON)
		s.mu.Unlock()
		s.cl.Shown(e.ID)
	case *client.OpenedEvent:
		// A message shown as waiting for its key, again: open now, or
		// never to open.
		s.mu.Lock()
		s.c.printMessage(e.Message, s.asJSON)
		s.mu.Unlock()
	case *client.AlarmEvent:
		switch e.Kind {
		case client.AlarmAuditLog:
			return s.fail(e.Err), true
		case client.AlarmEquivocation:
			s.printf("chat: SECURITY: %s signed two different messages with one number in #%s; the second is kept as evidence and not shown\n",
				e.Sender.Fingerprint(), e.Room)
		}
	case *client.PathEvent:
		others := "the mesh carries on"
		if s.cl.Node() == nil {
			if s.stopped.add(e.Room, e.Relay) >= len(s.cl.Relays()) {
				return s.fail(e.Err), true // relay mode: no relay serves the room any more
			}
			others = "the other relays carry on"
		}
		s.printf("chat: warning: %v; %s\n", oneLine(e.Err), others)
	case *client.RelayEvent:
		switch {
		case !s.c.g.verbose:
		case e.Connected:
			s.printf("chat: relay %s connected over %s (round trip %v)\n", e.Relay, e.Transport, e.RTT.Round(time.Millisecond))
		default:
			s.printf("chat: relay %s not connected: %v\n", e.Relay, oneLine(e.Err))
		}
	case *client.PathsEvent:
		if s.c.g.verbose {
			s.printf("chat: mesh peers reached: %d direct, %d hole-punched, %d through a circuit\n", e.Direct, e.HolePunched, e.Circuit)
		}
	case *client.PeerEvent:
		if s.c.g.verbose {
			what := "left"
			if e.Joined {
				what = "joined"
			}
			s.printf("chat: peer %s %s #%s (%d in the room)\n", e.Peer, what, e.Room, e.Peers)
		}
	}
	return exitOK, false
}

func (s *screen) fail(err error) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.fail(err)
}

// auditError is the relay's audit error, if it has one: checked last, in
// case the alarm is still on its way.
func auditError(cl *client.Client) error { return cl.AuditError() }

func (c *cli) listen(args []string) int {
	fs := c.flags("listen")
	var rooms multiFlag
	fs.Var(&rooms, "room", "room name (repeatable)")
	asJSON := fs.Bool("json", false, "JSON output")
	count := fs.Int("count", 0, "exit after this many messages (0: no limit)")
	timeout := fs.Duration("timeout", 0, "exit after this long (0: no limit)")
	if err := c.parse(fs, args, 0); err != nil {
		return c.usageError(err)
	}
	if len(rooms) == 0 {
		return c.usageError(needRoom(""))
	}
	for _, r := range rooms {
		if err := needRoom(r); err != nil {
			return c.usageError(err)
		}
	}
	if *count < 0 || *timeout < 0 {
		return c.usageError(errors.New("--count and --timeout must not be negative"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	cl, err := c.session(ctx, false)
	if err != nil {
		return c.fail(ranOut(ctx, *timeout, err))
	}
	defer cl.Close()
	for i := range rooms {
		if err := resolveRoom(ctx, cl, &rooms[i]); err != nil {
			return c.fail(ranOut(ctx, *timeout, err))
		}
	}
	for _, r := range rooms {
		if err := cl.Join(ctx, r); err != nil {
			return c.fail(ranOut(ctx, *timeout, err))
		}
	}
	scr := &screen{c: c, cl: cl, asJSON: *asJSON, stopped: stopped{}}
	got := 0
	for *count == 0 || got < *count {
		select {
		case e, ok := <-cl.Events():
			if !ok {
				return c.fail(errors.New("the session ended"))
			}
			if _, isMsg := e.(*client.MessageEvent); isMsg {
				got++
			}
			if code, end := scr.show(e); end {
				return code
			}
		case <-ctx.Done():
			if err := auditError(cl); err != nil {
				return c.fail(err)
			}
			if *count > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return c.fail(fmt.Errorf("%w: %d of %d messages in %v", errNotReceived, got, *count, *timeout))
			}
			return exitOK
		}
	}
	if err := auditError(cl); err != nil {
		return c.fail(err)
	}
	if err := cl.Close(); err != nil {
		return c.fail(err)
	}
	return exitOK
}

// posted is a line of talk's input: sent (delivered or not yet), or not
// sent at all (err, and no ID).
type posted struct {
	sent client.Sent
	err  error
}

// talk sends each line of standard input and prints messages as they
// arrive, until the input ends and every line is delivered or its
// --timeout has passed.
func (c *cli) talk(args []string) int {
	fs, room, asJSON := c.roomFlags("talk")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on a message after this long")
	if err := c.parse(fs, args, 0); err != nil {
		return c.usageError(err)
	}
	if err := positive(*timeout); err != nil {
		return c.usageError(err)
	}
	if err := needRoom(*room); err != nil {
		return c.usageError(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cl, err := c.session(ctx, false)
	if err != nil {
		return c.fail(err)
	}
	defer cl.Close()
	if err := resolveRoom(ctx, cl, room); err != nil {
		return c.fail(err)
	}
	if err := cl.Join(ctx, *room); err != nil {
		return c.fail(err)
	}
	t := &talker{screen: screen{c: c, cl: cl, asJSON: *asJSON, stopped: stopped{}}, room: *room, timeout: *timeout,
		pending: make(map[protocol.ID]time.Time), confirmed: make(map[protocol.ID]bool)}
	lines := make(chan posted)
	rctx, stopReading := context.WithCancel(ctx)
	defer stopReading() // the reader ends with talk
	go t.read(rctx, lines)
	return t.run(ctx, lines)
}

// talker is talk's state: the lines sent and not yet delivered.
type talker struct {
	screen
	room      string
	timeout   time.Duration
	pending   map[protocol.ID]time.Time // sent, not confirmed: until when talk waits for the outbox
	confirmed map[protocol.ID]bool      // confirmed by a late DeliveryEvent, maybe before Send said otherwise
	failed    int                       // lines that were not sent, or whose time ran out
}

// read sends each line of standard input, and closes lines at its end.
func (t *talker) read(ctx context.Context, lines chan<- posted) {
	defer close(lines)
	in := bufio.NewReader(t.c.stdin)
	for ctx.Err() == nil {
		line, err := readLine(in, protocol.MaxTextLen)
		switch {
		case errors.Is(err, errLineTooLong):
			err = fmt.Errorf("a line of more than %d bytes (the longest message); the next lines are", protocol.MaxTextLen)
		case errors.Is(err, io.EOF):
			return
		case err != nil:
			lines <- posted{err: fmt.Errorf("reading standard input: %w", err)}
			return
		case strings.TrimSpace(line) == "":
			continue
		default:
			// One line at a time, each sent once the one before is
			// confirmed or its time ran out: the room sees them in the
			// order they were typed.
			pctx, cancel := context.WithTimeout(ctx, t.timeout)
			sent, err := t.cl.Send(pctx, t.room, line)
			cancel()
			if sent.ID != (protocol.ID{}) {
				select {
				case lines <- posted{sent: sent, err: err}:
				case <-ctx.Done():
				}
				continue
			}
		}
		select {
		case lines <- posted{err: err}:
		case <-ctx.Done():
		}
	}
}

func (t *talker) run(ctx context.Context, lines <-chan posted) int {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case p, ok := <-lines:
			switch {
			case !ok:
				lines = nil // the input ended: what is pending still counts
			case p.sent.ID == (protocol.ID{}):
				t.failed++
				t.printf("chat: not sent: %v\n", oneLine(p.err))
			case client.IsAuditError(p.err):
				return t.fail(p.err)
			case p.sent.Delivered():
				t.printf("sent %s via %s\n", p.sent.ID, strings.Join(p.sent.Via, ","))
			case t.confirmed[p.sent.ID]:
				t.printf("sent %s (confirmed late)\n", p.sent.ID)
			default:
				// The outbox sends it again while talk runs.
				t.pending[p.sent.ID] = time.Now().Add(t.timeout)
				t.printf("chat: not delivered yet: %s: %v\n", p.sent.ID, oneLine(p.err))
			}
		case e, ok := <-t.cl.Events():
			if !ok {
				return t.fail(errors.New("the session ended"))
			}
			if d, isDelivery := e.(*client.DeliveryEvent); isDelivery {
				t.delivered(d)
			} else if code, end := t.show(e); end {
				return code
			}
		case <-tick.C:
			t.expire()
		case <-ctx.Done():
			// Interrupted: what is not delivered stays in the outbox.
			t.failed += len(t.pending)
			return t.finish()
		}
		if lines == nil && len(t.pending) == 0 {
			return t.finish()
		}
	}
}

// delivered notes that the outbox delivered a line that was not delivered
// when it was sent.
func (t *talker) delivered(d *client.DeliveryEvent) {
	if !d.Done || !d.Sent.Delivered() {
		return
	}
	if _, ours := t.pending[d.Sent.ID]; ours {
		delete(t.pending, d.Sent.ID)
		t.printf("sent %s via %s (again)\n", d.Sent.ID, strings.Join(d.Sent.Via, ","))
		return
	}
	// Perhaps a line whose Send has not returned yet, and will say it
	// was not confirmed in time.
	t.confirmed[d.Sent.ID] = true
}

// expire gives up on the lines whose time has run out.
func (t *talker) expire() {
	now := time.Now()
	for id, until := range t.pending {
		if now.After(until) {
			delete(t.pending, id)
			t.failed++
			t.printf("chat: not delivered in %v: %s (kept in the outbox)\n", t.timeout, id)
		}
	}
}

func (t *talker) finish() int {
	if err := auditError(t.cl); err != nil {
		return t.fail(err)
	}
	if t.failed > 0 {
		err := fmt.Errorf("%w: %d message(s)", client.ErrNoPath, t.failed)
		if why := t.cl.RelayError(); why != nil && t.c.relayOnly {
			err = fmt.Errorf("%w: %w", err, why) // exit 5: the reason
		}
		return t.fail(err)
	}
	if err := t.cl.Close(); err != nil {
		return t.fail(err)
	}
	return exitOK
}

func (c *cli) history(args []string) int {
	fs, room, asJSON := c.roomFlags("history")
	search := fs.String("search", "", "only messages with every one of these words")
	limit := fs.Int("limit", 50, "at most this many, the newest")
	if err := c.parse(fs, args, 0); err != nil {
		return c.usageError(err)
	}
	if err := needRoom(*room); err != nil {
		return c.usageError(err)
	}
	if *limit < 1 {
		return c.usageError(fmt.Errorf("--limit %d: must be at least 1", *limit))
	}
	ctx := context.Background()
	cl, err := c.session(ctx, true)
	if err != nil {
		return c.fail(err)
	}
	defer cl.Close()
	if err := resolveRoom(ctx, cl, room); err != nil {
		return c.fail(err)
	}
	msgs, err := cl.History(ctx, *room, *search, *limit)
	if err != nil {
		return c.fail(err)
	}
	for _, m := range msgs {
		c.printMessage(m, *asJSON)
	}
	if err := cl.Close(); err != nil {
		return c.fail(err)
	}
	return exitOK
}

func (c *cli) rooms(args []string) int {
	fs := c.flags("rooms")
	if err := c.parse(fs, args, 0); err != nil {
		return c.usageError(err)
	}
	ctx := context.Background()
	cl, err := c.session(ctx, true)
	if err != nil {
		return c.fail(err)
	}
	defer cl.Close()
	rooms, err := cl.Rooms(ctx)
	if err != nil {
		return c.fail(err)
	}
	for _, r := range rooms {
		if protocol.IsPrivateRoom(r) {
			fmt.Fprintf(c.stdout, "%s\t%s (private)\n", r, cl.RoomName(r))
			continue
		}
		fmt.Fprintln(c.stdout, r)
	}
	return exitOK
}

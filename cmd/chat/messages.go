package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
)

var errNotReceived = errors.New("not received in time")

// errRanOut: --timeout passed before the session had even started (a slow
// disk, a relay slow to answer): nothing was sent or received.
var errRanOut = errors.New("--timeout ran out")

// ranOut names err as the timeout running out if ctx's deadline passed:
// the error it caused (a store read) is only a symptom. A relay that did
// not answer in time stays that (exit 5): it says more.
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
	if g.relay != "" {
		cfg.Relay = g.relay
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
	level := slog.LevelWarn // what the person should know: a lost cursor, an equivocation
	if c.g.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
	cl, err := client.Open(ctx, h, client.Options{Config: cfg, Logger: log, Offline: offline, Silent: len(silent) > 0 && silent[0]})
	if err != nil {
		return nil, err
	}
	if err := cl.RelayError(); err != nil {
		var refused *protocol.RelayError
		if errors.Is(err, relay.ErrWrongRelay) || errors.As(err, &refused) {
			// Never carry on quietly past a relay that is not the one
			// named, or one that turned us away.
			cl.Close()
			return nil, err
		}
		fmt.Fprintf(c.stderr, "chat: warning: %v; the mesh carries on alone\n", oneLine(err))
	}
	return cl, nil
}

// pathFailed reports a path that stopped for good: the end in relay mode,
// where no other path is left, and a warning otherwise.
func (c *cli) pathFailed(cl *client.Client, err error) int {
	if cl.Node() == nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stderr, "chat: warning: %v; the mesh carries on\n", oneLine(err))
	return exitOK
}

func (c *cli) roomFlags(name string) (*flag.FlagSet, *string, *bool) {
	fs := c.flags(name)
	room := fs.String("room", "", "room name")
	asJSON := fs.Bool("json", false, "JSON output")
	return fs, room, asJSON
}

func needRoom(room string) error {
	if room == "" {
		return errors.New("--room is required")
	}
	return protocol.ValidRoom(room)
}

type ackJSON struct {
	Status  string       `json:"status"`
	Pos     uint64       `json:"pos"`
	Time    time.Time    `json:"time"`
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
	ID       string   `json:"id"`
	Room     string   `json:"room"`
	Time     string   `json:"time"`
	Via      []string `json:"via"`
	Ack      *ackJSON `json:"ack,omitempty"`
	MeshPeer string   `json:"mesh_peer,omitempty"`
	Failed   []string `json:"failed,omitempty"`
}

func (c *cli) sentJSON(room string, s client.Sent, checkpoint []byte) sentJSON {
	v := sentJSON{ID: s.ID.String(), Room: room, Time: s.Time.UTC().Format(time.RFC3339Nano), Via: s.Via, MeshPeer: s.MeshPeer}
	if v.Via == nil {
		v.Via = []string{}
	}
	for _, err := range s.Failed {
		v.Failed = append(v.Failed, oneLine(err))
	}
	if a := s.Ack; a != nil {
		status := "stored"
		if a.Status != protocol.AckStored {
			status = "duplicate"
		}
		v.Ack = &ackJSON{Status: status, Pos: a.Pos, Time: time.UnixMilli(a.Time).UTC()}
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
	if *timeout <= 0 {
		return c.usageError(fmt.Errorf("--timeout %v: must be positive", *timeout))
	}
	text := strings.Join(c.args, " ")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// send shows nothing: what arrives meanwhile is kept for listen.
	cl, err := c.session(ctx, false, true)
	if err != nil {
		return c.fail(ranOut(ctx, *timeout, err))
	}
	defer cl.Close()
	sent, err := cl.Send(ctx, *room, text)
	if err != nil && sent.ID == (protocol.ID{}) {
		return c.fail(ranOut(ctx, *timeout, err))
	}
	var cp []byte
	if r := cl.Relay(); r != nil {
		cp = r.Checkpoint()
	}
	if *asJSON {
		c.printJSON(c.sentJSON(*room, sent, cp))
	} else {
		fmt.Fprintln(c.stdout, sent.ID)
	}
	if err != nil {
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
	// Receipt is the relay's audit receipt of our own message (history).
	Receipt *storedReceiptJSON `json:"receipt,omitempty"`
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
			Via: m.Via, Trust: trustName(m), Gap: m.Gap,
		}
		if r := m.Receipt; r != nil {
			v.Receipt = &storedReceiptJSON{r.Relay, r.Pos, r.Index, string(r.Checkpoint)}
		}
		c.printJSON(v)
		return
	}
	mark := ""
	switch {
	case m.Own:
	case m.Trust == identity.TrustKeyChanged:
		mark = " [KEY CHANGED: not the key first seen as " + m.Nick + "]"
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
	if m.Receipt != nil {
		via += fmt.Sprintf("; audit record %d", m.Receipt.Index)
	}
	fmt.Fprintf(c.stdout, "%s #%s <%s>%s %s%s  (%s)\n", m.Time.Local().Format("2006-01-02 15:04:05"),
		m.Room, m.Nick, mark, m.Text, gap, via)
}

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
	for _, r := range rooms {
		if err := cl.Join(ctx, r); err != nil {
			return c.fail(ranOut(ctx, *timeout, err))
		}
	}
	got := 0
	watch := time.NewTicker(time.Second)
	defer watch.Stop()
	for *count == 0 || got < *count {
		select {
		case m, ok := <-cl.Messages():
			if !ok {
				return c.fail(errors.New("the session ended"))
			}
			c.printMessage(m, *asJSON)
			cl.Shown(m.ID)
			got++
		case err := <-cl.Failed():
			if code := c.pathFailed(cl, err); code != exitOK {
				return code
			}
		case <-watch.C:
			if err := cl.AuditError(); err != nil {
				return c.fail(err)
			}
		case <-ctx.Done():
			if err := cl.AuditError(); err != nil {
				return c.fail(err)
			}
			if *count > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return c.fail(fmt.Errorf("%w: %d of %d messages in %v", errNotReceived, got, *count, *timeout))
			}
			return exitOK
		}
	}
	if err := cl.AuditError(); err != nil {
		return c.fail(err)
	}
	if err := cl.Close(); err != nil {
		return c.fail(err)
	}
	return exitOK
}

// talk sends each line of standard input and prints messages as they
// arrive, until the input ends and the last send is done.
func (c *cli) talk(args []string) int {
	fs, room, asJSON := c.roomFlags("talk")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on a message after this long")
	if err := c.parse(fs, args, 0); err != nil {
		return c.usageError(err)
	}
	if *timeout <= 0 {
		return c.usageError(fmt.Errorf("--timeout %v: must be positive", *timeout))
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
	if err := cl.Join(ctx, *room); err != nil {
		return c.fail(err)
	}
	var (
		mu      sync.Mutex // one line at a time on stderr and stdout
		failed  int
		done    = make(chan struct{})
		closing bool           // interrupted: no more sends
		sending sync.WaitGroup // the send under way
	)
	go func() {
		defer close(done)
		in := bufio.NewReader(c.stdin)
		for {
			line, err := readLine(in, protocol.MaxTextLen)
			if errors.Is(err, errLineTooLong) {
				mu.Lock()
				failed++
				fmt.Fprintf(c.stderr, "chat: not sent: a line of more than %d bytes (the longest message); the next lines are\n", protocol.MaxTextLen)
				mu.Unlock()
				continue
			}
			if err != nil {
				if err != io.EOF {
					mu.Lock()
					failed++
					fmt.Fprintf(c.stderr, "chat: reading standard input: %v\n", err)
					mu.Unlock()
				}
				return
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			mu.Lock()
			if closing {
				mu.Unlock()
				return
			}
			sending.Add(1)
			mu.Unlock()
			sctx, cancel := context.WithTimeout(ctx, *timeout)
			sent, err := cl.Send(sctx, *room, line)
			cancel()
			sending.Done()
			mu.Lock()
			if err != nil {
				failed++
				fmt.Fprintf(c.stderr, "chat: not sent: %v\n", oneLine(err))
			} else {
				fmt.Fprintf(c.stderr, "sent %s via %s\n", sent.ID, strings.Join(sent.Via, ","))
			}
			mu.Unlock()
			if ctx.Err() != nil || client.IsAuditError(err) {
				return
			}
		}
	}()
	watch := time.NewTicker(time.Second)
	defer watch.Stop()
	for {
		select {
		case m, ok := <-cl.Messages():
			if !ok {
				return c.fail(errors.New("the session ended"))
			}
			mu.Lock()
			c.printMessage(m, *asJSON)
			mu.Unlock()
			cl.Shown(m.ID)
		case err := <-cl.Failed():
			mu.Lock()
			code := c.pathFailed(cl, err)
			mu.Unlock()
			if code != exitOK {
				return code
			}
		case <-watch.C:
			if err := cl.AuditError(); err != nil {
				return c.fail(err)
			}
		case <-done:
			if err := cl.AuditError(); err != nil {
				return c.fail(err)
			}
			if failed > 0 {
				return c.fail(fmt.Errorf("%w: %d message(s)", client.ErrNoPath, failed))
			}
			if err := cl.Close(); err != nil {
				return c.fail(err)
			}
			return exitOK
		case <-ctx.Done():
			// Interrupted: the send under way ends with ctx; the session
			// closes after it, never under it.
			mu.Lock()
			closing = true
			mu.Unlock()
			sending.Wait()
			return exitOK
		}
	}
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
		fmt.Fprintln(c.stdout, r)
	}
	return exitOK
}

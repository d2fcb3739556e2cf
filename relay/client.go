package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
	"github.com/quic-go/quic-go"
	"golang.org/x/mod/sumdb/tlog"
)

// Client is a connection to one relay, authenticated with the person's
// identity key. It reconnects when the connection drops: a publish is
// resent (the relay acknowledges a resent envelope as a duplicate), and a
// subscription resumes after the last envelope it delivered. A
// connection from which nothing has come for a keep-alive interval and a
// few seconds more is taken for dead and replaced (a relay killed and
// started again does not answer it). It is safe for concurrent use.
//
// Dial makes a client whose first connection is up; it dials again when a
// request needs a connection. Start makes one that dials in the
// background, whether or not the relay is up yet.
type Client struct {
	addr      Addr
	tls       *tls.Config
	log       *slog.Logger
	keepAlive time.Duration
	tr        *quic.Transport

	// life ends when Close is called, before Close takes mu: a dial in
	// progress, which holds mu, ends with it.
	life context.Context
	end  context.CancelFunc

	mu     sync.Mutex
	conn   *quic.Conn
	pub    *pubStream
	closed bool
	done   chan struct{}
	relay  identity.PublicKey // the key the relay proved

	background bool // made by Start: run dials, requests wait for it
	onState    func(State)
	notify     chan struct{} // wakes notifyLoop
	ready      chan struct{} // closed at the first dial's outcome
	readyOnce  sync.Once
	readyErr   error

	// The connection state, under stMu; changed is closed and replaced
	// at each change of status or error.
	stMu        sync.Mutex
	state       State
	stateConn   *quic.Conn // the connection while connected
	dialFailed  bool       // down because the last dial failed, not merely lost
	changed     chan struct{}
	reportedRTT time.Duration // the RTT OnState was last told

	// The witness holds the relay to its audit log; checkLoop asks the
	// relay for the consistency proofs it needs.
	witness   *audit.Witness
	ckWake    chan struct{} // tells checkLoop that checkpoints wait
	ckTaken   chan struct{} // checkLoop took the waiting ones
	ckStopped chan struct{} // checkLoop ended
}

// ClientOptions configure Dial and Start.
type ClientOptions struct {
	Log *slog.Logger
	// KeepAlive is how often an idle connection is pinged. It also sets
	// how soon a relay that went away (killed, restarted, unreachable) is
	// noticed: when nothing has come from it for KeepAlive and 5 s more
	// (silenceGrace), the connection is dropped and dialled again. If
	// zero, 15 seconds.
	KeepAlive time.Duration
	// Transport, if not nil, carries the connection: many clients in one
	// process (a load generator) can share one UDP socket. If nil, each
	// connection has a socket of its own.
	Transport *quic.Transport
	// Checkpoint is the newest signed audit checkpoint of this relay that
	// the application kept from an earlier session (Client.Checkpoint):
	// the relay's log must be consistent with it.
	Checkpoint []byte
	// OnState, if not nil, is told each change of the connection state
	// (State), and a round-trip time that moved by a fifth or more. It is
	// called from a goroutine of the client's own, one call at a time,
	// in order, with the newest state: states that change while a call
	// runs are told as one. It must not block for long (a blocked call
	// delays only the next calls) and must not call Close. The last call
	// tells StatusClosed.
	OnState func(State)
}

// Dial connects to the relay at addr as key. It returns once the relay has
// admitted the identity: a refusal (not on the allow list, banned) is a
// *wire.RelayError saying why, and a relay whose key is not the one in
// addr is an error wrapping ErrWrongRelay.
func Dial(ctx context.Context, addr Addr, key identity.PrivateKey, opts ClientOptions) (*Client, error) {
	c, err := makeClient(addr, key, opts)
	if err != nil {
		return nil, err
	}
	c.setReady(nil)
	if _, err := c.connect(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.openKept(c.relayKey()); err != nil {
		c.Close()
		return nil, err
	}
	go c.checkLoop()
	// The relay refuses an identity it does not admit right after the
	// handshake; asking for its Info waits for that, or for the answer.
	if _, err := c.Info(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func makeClient(addr Addr, key identity.PrivateKey, opts ClientOptions) (*Client, error) {
	conf, err := clientTLS(key, addr)
	if err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 15 * time.Second
	}
	return newClient(addr, conf, opts), nil
}

func newClient(addr Addr, conf *tls.Config, opts ClientOptions) *Client {
	life, end := context.WithCancel(context.Background())
	c := &Client{addr: addr, tls: conf, log: opts.Log, keepAlive: opts.KeepAlive, tr: opts.Transport, life: life, end: end,
		done: make(chan struct{}), ckWake: make(chan struct{}, 1), ckTaken: make(chan struct{}, 1), ckStopped: make(chan struct{}),
		witness: audit.NewWitness(opts.Checkpoint), onState: opts.OnState, ready: make(chan struct{}), changed: make(chan struct{}),
		state: State{Status: StatusConnecting, Since: time.Now()}}
	if c.onState != nil {
		c.notify = make(chan struct{}, 1)
		go c.notifyLoop()
	}
	return c
}

// Addr is the relay's address.
func (c *Client) Addr() Addr { return c.addr }

// Close closes the connection; subscriptions end.
func (c *Client) Close() error {
	c.end()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	conn := c.conn
	c.mu.Unlock()
	c.setState(StatusClosed, nil, nil, false)
	c.setReady(errClientClosed)
	if conn != nil {
		return conn.CloseWithError(quic.ApplicationErrorCode(wire.CodeOK), "")
	}
	return nil
}

var errClientClosed = errors.New("relay: client is closed")

func quicConfig(keepAlive time.Duration) *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           5 * time.Second,
		MaxIdleTimeout:                 60 * time.Second,
		KeepAlivePeriod:                keepAlive,
		MaxIncomingStreams:             -1, // the relay opens none
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     64 << 10,
		MaxStreamReceiveWindow:         4 << 20,
		InitialConnectionReceiveWindow: 128 << 10,
		MaxConnectionReceiveWindow:     8 << 20,
	}
}

// connect returns the live connection. A client made by Dial dials a new
// one if the last one is gone; one made by Start waits for its dialler,
// or fails at once with ErrNotConnected if its last dial failed.
func (c *Client) connect(ctx context.Context) (*quic.Conn, error) {
	if c.background {
		return c.awaitConn(ctx, true)
	}
	return c.connectLazy(ctx)
}

// connectWait is connect for a subscription, which waits for a client
// made by Start to connect, however long it takes.
func (c *Client) connectWait(ctx context.Context) (*quic.Conn, error) {
	if c.background {
		return c.awaitConn(ctx, false)
	}
	return c.connectLazy(ctx)
}

func (c *Client) connectLazy(ctx context.Context) (*quic.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClientClosed
	}
	if c.conn != nil && c.conn.Context().Err() == nil {
		return c.conn, nil
	}
	// A relay that does not answer holds the dial, and mu, until the
	// handshake times out; Close ends it at once.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.life, cancel)
	defer stop()
	conn, err := c.dial(ctx)
	if err != nil {
		err = fmt.Errorf("relay: connect to %s: %w", c.addr.HostPort, wireError(err))
		// Dial's own first attempt returns its error and tells no one.
		if c.life.Err() == nil && ctx.Err() == nil && c.State().Status != StatusConnecting {
			if permanent(err) {
				c.setState(StatusRefused, err, nil, true)
			} else {
				c.setState(StatusDown, err, nil, true)
			}
		}
		return nil, err
	}
	if k, err := connIdentity(conn); err == nil {
		c.relay = k
	}
	c.conn, c.pub = conn, nil
	c.setState(StatusConnected, nil, conn, false)
	go c.watchLazy(conn)
	return conn, nil
}

func (c *Client) dial(ctx context.Context) (*quic.Conn, error) {
	return dialOn(ctx, c.tr, c.addr.HostPort, c.tls, c.keepAlive)
}

// dialOn dials hostPort on tr's socket, or on a socket of its own if tr
// is nil.
func dialOn(ctx context.Context, tr *quic.Transport, hostPort string, conf *tls.Config, keepAlive time.Duration) (*quic.Conn, error) {
	if tr == nil {
		return quic.DialAddr(ctx, hostPort, conf, quicConfig(keepAlive))
	}
	ua, err := net.ResolveUDPAddr("udp", hostPort)
	if err != nil {
		return nil, err
	}
	return tr.Dial(ctx, ua, conf, quicConfig(keepAlive))
}

// wireError turns the QUIC error that ended a connection or stream into
// the relay's error code, where there is one.
func wireError(err error) error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote {
		return &wire.RelayError{Code: wire.ErrorCode(ae.ErrorCode), Message: ae.ErrorMessage}
	}
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		return &wire.RelayError{Code: wire.ErrorCode(se.ErrorCode)}
	}
	return err
}

// retryable reports whether err is worth another try on a new
// connection: a lost or refused connection, or a relay that is stopping.
// A refusal by the relay's policy or checks, a relay with the wrong key,
// and a closed client are not.
func retryable(err error) bool {
	var re *wire.RelayError
	switch {
	case errors.As(err, &re):
		return re.Code == wire.CodeShuttingDown || re.Code == wire.CodeIdle || re.Code == wire.CodeOK
	case errors.Is(err, errClientClosed), errors.Is(err, ErrWrongRelay), errors.Is(err, ErrBadCertificate), errors.Is(err, ErrAuditLog), errors.Is(err, ErrNotConnected),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	var te *quic.TransportError
	if errors.As(err, &te) && te.ErrorCode.IsCryptoError() {
		return false // the TLS handshake failed: a wrong key, or an old relay
	}
	return true
}

// DialQUIC opens a bare QUIC connection to the relay at addr as key,
// speaking the relay protocol's ALPN, with the relay's key checked: for
// tools and tests that write frames themselves.
func DialQUIC(ctx context.Context, addr Addr, key identity.PrivateKey) (*quic.Conn, error) {
	return DialQUICOn(ctx, nil, addr, key)
}

// DialQUICOn is DialQUIC on the UDP socket of tr, which many connections
// may share; with tr nil it is DialQUIC.
func DialQUICOn(ctx context.Context, tr *quic.Transport, addr Addr, key identity.PrivateKey) (*quic.Conn, error) {
	conf, err := clientTLS(key, addr)
	if err != nil {
		return nil, err
	}
	conn, err := dialOn(ctx, tr, addr.HostPort, conf, 15*time.Second)
	if err != nil {
		return nil, fmt.Errorf("relay: connect to %s: %w", addr.HostPort, wireError(err))
	}
	return conn, nil
}

// request opens a stream, sends one frame and closes its side. The
// caller reads the answer and then calls done.
func (c *Client) request(ctx context.Context, t wire.FrameType, body []byte) (fr *wire.Reader, done func(), err error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("relay: open stream: %w", wireError(err))
	}
	// Ending ctx unblocks a read that waits for the answer.
	stop := context.AfterFunc(ctx, func() { str.CancelRead(0) })
	done = func() {
		stop()
		str.CancelRead(0)
	}
	if _, err := str.Write(wire.AppendFrame(nil, t, body)); err != nil {
		done()
		str.CancelWrite(0)
		return nil, nil, fmt.Errorf("relay: send %s: %w", t, wireError(err))
	}
	str.Close()
	return wire.NewReader(str, wire.MaxFrameBody), done, nil
}

// readFrame reads one frame, turning an Error frame into its error.
func readFrame(fr *wire.Reader) (wire.FrameType, []byte, error) {
	t, body, err := fr.Next()
	if err != nil {
		return t, nil, wireError(err)
	}
	if t == wire.FrameError {
		e, err := wire.ParseErrorFrame(body)
		if err != nil {
			return t, nil, err
		}
		return t, nil, e
	}
	return t, body, nil
}

// Info asks the relay for its versions, limits and policy.
func (c *Client) Info(ctx context.Context) (info *wire.Info, err error) {
	err = c.retry(ctx, "info", func() (err error) {
		info, err = c.infoOnce(ctx)
		return err
	})
	return info, err
}

func (c *Client) infoOnce(ctx context.Context) (*wire.Info, error) {
	fr, done, err := c.request(ctx, wire.FrameInfoRequest, nil)
	if err != nil {
		return nil, err
	}
	defer done()
	t, body, err := readFrame(fr)
	if err != nil {
		return nil, fmt.Errorf("relay: info: %w", err)
	}
	if t != wire.FrameInfo {
		return nil, fmt.Errorf("relay: info: answered with %s", t)
	}
	return wire.ParseInfo(body)
}

// Redeem joins the relay's allow list with an invite token.
func (c *Client) Redeem(ctx context.Context, token string) error {
	body, err := (&wire.Redeem{Token: token}).MarshalBinary()
	if err != nil {
		return err
	}
	fr, done, err := c.request(ctx, wire.FrameRedeem, body)
	if err != nil {
		return err
	}
	defer done()
	t, _, err := readFrame(fr)
	if err != nil {
		return fmt.Errorf("relay: redeem: %w", err)
	}
	if t != wire.FrameRedeemed {
		return fmt.Errorf("relay: redeem: answered with %s", t)
	}
	return nil
}

// Peers asks for the mesh addresses of peers in room.
func (c *Client) Peers(ctx context.Context, room string) (addrs []string, err error) {
	err = c.retry(ctx, "peers", func() (err error) {
		addrs, err = c.peersOnce(ctx, room)
		return err
	})
	return addrs, err
}

func (c *Client) peersOnce(ctx context.Context, room string) ([]string, error) {
	body, err := (&wire.PeersRequest{Room: room}).MarshalBinary()
	if err != nil {
		return nil, err
	}
	fr, done, err := c.request(ctx, wire.FramePeersRequest, body)
	if err != nil {
		return nil, err
	}
	defer done()
	t, b, err := readFrame(fr)
	if err != nil {
		return nil, fmt.Errorf("relay: peers: %w", err)
	}
	if t != wire.FramePeers {
		return nil, fmt.Errorf("relay: peers: answered with %s", t)
	}
	p, err := wire.ParsePeers(b)
	if err != nil {
		return nil, err
	}
	return p.Addrs, nil
}

// Envelope is an envelope the relay sent, checked.
type Envelope struct {
	ID  protocol.ID
	Env *protocol.Envelope
	Raw []byte
}

// parseEnvelopes parses and verifies envelopes the relay sent, their
// signatures in one batch (protocol.VerifyBatch). At the first that does
// not check out it returns those before it and the error.
func parseEnvelopes(raws [][]byte) ([]Envelope, error) {
	out := make([]Envelope, 0, len(raws))
	envs := make([]*protocol.Envelope, 0, len(raws))
	var perr error
	for _, raw := range raws {
		env, err := protocol.Parse(raw)
		if err != nil {
			perr = fmt.Errorf("relay: the relay sent an envelope that does not parse: %w", err)
			break
		}
		out, envs = append(out, Envelope{ID: protocol.IDOf(raw), Env: env, Raw: raw}), append(envs, env)
	}
	for i, err := range protocol.VerifyBatch(envs) {
		if err != nil {
			return out[:i], fmt.Errorf("relay: the relay sent an envelope that does not verify: %w", err)
		}
	}
	return out, perr
}

// subBuffer is the read buffer of a subscription: catching up, about 40
// envelopes of a few hundred bytes are read, and verified, at a time.
const subBuffer = 16 << 10

// fetch sends a fetch request and reads Envelope frames up to End.
func (c *Client) fetch(ctx context.Context, t wire.FrameType, body []byte) (out []Envelope, more bool, err error) {
	err = c.retry(ctx, "fetch", func() (err error) {
		out, more, err = c.fetchOnce(ctx, t, body)
		return err
	})
	return out, more, err
}

func (c *Client) fetchOnce(ctx context.Context, t wire.FrameType, body []byte) ([]Envelope, bool, error) {
	fr, done, err := c.request(ctx, t, body)
	if err != nil {
		return nil, false, err
	}
	defer done()
	var raws [][]byte
	for range wire.MaxFetchIDs + 1 {
		ft, b, err := readFrame(fr)
		if err != nil {
			return nil, false, fmt.Errorf("relay: fetch: %w", err)
		}
		switch ft {
		case wire.FrameEnvelope:
			raws = append(raws, bytes.Clone(b))
		case wire.FrameEnd:
			end, err := wire.ParseEnd(b)
			if err != nil {
				return nil, false, err
			}
			out, err := parseEnvelopes(raws)
			if err != nil {
				return nil, false, err
			}
			return out, end.More, nil
		default:
			return nil, false, fmt.Errorf("relay: fetch: unexpected %s frame", ft)
		}
	}
	return nil, false, errors.New("relay: fetch: more envelopes than asked for")
}

// FetchRange returns a room's envelopes with since <= time < until, in
// (time, ID) order, following the relay's pages up to max envelopes.
func (c *Client) FetchRange(ctx context.Context, room string, since, until int64, max int) ([]Envelope, error) {
	var out []Envelope
	req := wire.FetchRange{Room: room, Since: since, Until: until, Limit: wire.MaxFetchLimit}
	for len(out) < max {
		body, err := req.MarshalBinary()
		if err != nil {
			return nil, err
		}
		page, more, err := c.fetch(ctx, wire.FrameFetchRange, body)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if !more || len(page) == 0 {
			break
		}
		last := page[len(page)-1]
		req.Since, req.After = last.Env.Time, last.ID
	}
	if len(out) > max {
		out = out[:max]
	}
	return out, nil
}

// FetchIDs returns the envelopes with these IDs that the relay has.
func (c *Client) FetchIDs(ctx context.Context, ids ...protocol.ID) ([]Envelope, error) {
	body, err := (&wire.FetchIDs{IDs: ids}).MarshalBinary()
	if err != nil {
		return nil, err
	}
	out, _, err := c.fetch(ctx, wire.FrameFetchIDs, body)
	return out, err
}

// retry runs f until it succeeds, fails in a way another connection
// cannot help, or has failed 6 times, backing off in between.
func (c *Client) retry(ctx context.Context, what string, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || !retryable(err) || ctx.Err() != nil || attempt >= 5 {
			return err
		}
		c.log.Debug("retried", "what", what, "err", err)
		select {
		case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return errClientClosed
		}
	}
}

// Publish sends an envelope and returns the relay's acknowledgement, which
// it sends only once the envelope is committed to disk. A refusal is a
// *wire.RelayError. A lost connection is retried, within ctx, on a new
// one.
func (c *Client) Publish(ctx context.Context, raw []byte) (*wire.Ack, error) {
	id := protocol.IDOf(raw)
	var res pubResult
	err := c.retry(ctx, "publish", func() error {
		if err := c.witness.Err(); err != nil {
			return err // final: the relay's log does not check out
		}
		res = c.publishOnce(ctx, id, raw)
		return res.err
	})
	if err != nil {
		return nil, fmt.Errorf("relay: publish %s: %w", id, err)
	}
	ack := res.ack
	if err := res.receipt; err != nil {
		return ack, fmt.Errorf("relay: publish %s: %w", id, err)
	}
	return ack, nil
}

// checkAck checks an acknowledgement's receipt with the witness, which
// keeps a security error found, whether or not the publish still waits
// for it. A publish does not wait for the consistency check of the
// checkpoint: a round trip per checkpoint would stall pipelined
// publishing; but when the checks lag too far behind, it waits for them.
func (c *Client) checkAck(ack *wire.Ack, raw []byte) error {
	var r *audit.Receipt
	if ar := ack.Receipt; ar != nil {
		r = &audit.Receipt{Index: ar.Index, Time: ar.Time, PolicyVersion: ar.PolicyVersion, Checkpoint: ar.Checkpoint, Proof: ar.Proof}
	}
	if err := c.witness.CheckReceipt(ack.ID, ack.Status == wire.AckStored, r, raw); err != nil {
		return err
	}
	for c.witness.Pending() >= audit.MaxPending {
		select {
		case c.ckWake <- struct{}{}:
		default:
		}
		select {
		case <-c.ckTaken:
		case <-c.done:
			return errClientClosed
		}
	}
	select {
	case c.ckWake <- struct{}{}:
	default: // already woken
	}
	return nil
}

// relayKey is the key the relay proved.
func (c *Client) relayKey() identity.PublicKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.relay
}

// ErrAuditLog: the relay showed an audit receipt or checkpoint that does
// not check out, or a log inconsistent with one it showed before: it
// forked or rewrote its log (audit.ErrSecurity). This is a security
// error, for the user to see, not a failure to retry; once found, every
// publish fails with it.
var ErrAuditLog = audit.ErrSecurity

// Checkpoint returns the newest signed audit checkpoint proved
// consistent, for the application to keep (ClientOptions.Checkpoint) so
// that the next session holds the relay to it too. Nil before the first.
func (c *Client) Checkpoint() []byte { return c.witness.Checkpoint() }

// checkInterval is the least time between two consistency requests. The
// checkpoints seen meanwhile are proved in one request: at a few hundred
// commits a second, one request per commit cost the relay and the client
// more than all the receipts' own checks.
const checkInterval = 50 * time.Millisecond

// checkLoop checks the checkpoints seen against each other and the one
// kept, with consistency proofs from the relay: all those seen since the
// last request at once, so that its cost does not grow with the rate of
// commits.
func (c *Client) checkLoop() {
	defer close(c.ckStopped)
	var (
		last   time.Time
		b      backoff // between attempts at a check that could not be done
		warned string  // the last failure told, not told again
	)
	for {
		select {
		case <-c.ckWake:
		case <-c.done:
			return
		}
		if wait := checkInterval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return
			}
		}
		seen := c.witness.Take()
		select {
		case c.ckTaken <- struct{}{}:
		default:
		}
		for len(seen) > 0 {
			n := min(len(seen), wire.MaxProofs-1) // and the one kept
			ctx, cancel := context.WithTimeout(c.life, 30*time.Second)
			err := c.witness.Check(seen[:n:n], func(newSize int64, olds []int64) ([]tlog.TreeProof, error) {
				return c.proveTree(ctx, newSize, olds)
			})
			cancel()
			if err == nil || errors.Is(err, ErrAuditLog) {
				seen = seen[n:]
				b.reset()
				warned = ""
				if err != nil {
					c.log.Error("relay audit log", "relay", c.addr.String(), "err", err)
					return // final: nothing more to check
				}
				continue
			}
			if c.life.Err() != nil {
				// Closing: the checkpoints not proved are not kept
				// (Checkpoint returns the last one proved), and the
				// next session proves the relay's log from that one.
				return
			}
			// Not done, for want of a connection or an answer: these
			// checkpoints wait for the next try, after a reconnection.
			// A lost connection is told once, as a state change; a
			// relay that answers but does not prove is told here,
			// once until a check succeeds.
			c.witness.PutBack(seen)
			if c.State().Status == StatusConnected && errText(err) != warned {
				warned = errText(err)
				c.log.Warn("relay audit: consistency check failed; will try again", "relay", c.addr.String(), "err", err)
			} else {
				c.log.Debug("relay audit: consistency check waits", "relay", c.addr.String(), "err", err)
			}
			if !c.awaitRetry(&b) {
				return
			}
			select {
			case c.ckWake <- struct{}{}:
			default:
			}
			break
		}
		last = time.Now()
	}
}

// awaitRetry waits before another try at a consistency check: for a
// client made by Start, until it is connected, and then a backoff. It
// returns false once the client is closed.
func (c *Client) awaitRetry(b *backoff) bool {
	for c.background {
		c.stMu.Lock()
		changed, status := c.changed, c.state.Status
		c.stMu.Unlock()
		if status == StatusConnected {
			break
		}
		if status == StatusRefused {
			return false
		}
		select {
		case <-changed:
		case <-c.done:
			return false
		}
	}
	t := time.NewTimer(b.wait())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.done:
		return false
	}
}

// AuditError returns the security error found in the relay's audit log, if
// any: a fork or a rewrite, which the application must show to its user.
func (c *Client) AuditError() error { return c.witness.Err() }

// proveTree asks the relay for proofs that its log of newSize records
// extends its logs of the sizes in olds. A relay that will not prove
// sizes it signed is a security error (a log rolled back or restored from
// a backup looks like this); a lost connection is not.
func (c *Client) proveTree(ctx context.Context, newSize int64, olds []int64) ([]tlog.TreeProof, error) {
	req := &wire.ProveTree{New: uint64(newSize), Old: make([]uint64, len(olds))}
	for i, o := range olds {
		req.Old[i] = uint64(o)
	}
	body, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var proofs []tlog.TreeProof
	err = c.retry(ctx, "prove tree", func() error {
		fr, done, err := c.request(ctx, wire.FrameProveTree, body)
		if err != nil {
			return err
		}
		defer done()
		t, b, err := readFrame(fr)
		var re *wire.RelayError
		if errors.As(err, &re) && re.Code != wire.CodeShuttingDown && re.Code != wire.CodeIdle {
			return fmt.Errorf("%w: the relay will not prove its log of %d records: %w", ErrAuditLog, newSize, err)
		}
		if err != nil {
			return err
		}
		if t != wire.FrameTreeProof {
			return fmt.Errorf("relay: prove tree: answered with %s", t)
		}
		m, err := wire.ParseTreeProof(b)
		if err != nil {
			return err
		}
		if len(m.Proofs) != len(olds) {
			return fmt.Errorf("%w: %d consistency proofs for %d asked", ErrAuditLog, len(m.Proofs), len(olds))
		}
		proofs = make([]tlog.TreeProof, len(m.Proofs))
		for i, p := range m.Proofs {
			proofs[i] = make(tlog.TreeProof, len(p))
			for j, h := range p {
				proofs[i][j] = h
			}
		}
		return nil
	})
	return proofs, err
}

func (c *Client) publishOnce(ctx context.Context, id protocol.ID, raw []byte) pubResult {
	ps, err := c.publisher(ctx)
	if err != nil {
		return pubResult{err: err}
	}
	ch := ps.wait(id, raw)
	if err := ps.send(raw); err != nil {
		ps.fail(err)
	}
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		ps.forget(id, ch)
		return pubResult{err: ctx.Err()}
	}
}

// publisher returns the connection's publish stream, opening it if need be.
func (c *Client) publisher(ctx context.Context) (*pubStream, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pub != nil && c.conn == conn && !c.pub.dead() {
		return c.pub, nil
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("relay: open stream: %w", wireError(err))
	}
	ps := &pubStream{str: str, fw: wire.NewWriter(str), waiters: map[protocol.ID][]waiter{}, gone: make(chan struct{}),
		check: c.checkAck, witness: c.witness}
	go ps.read()
	c.pub = ps
	return ps, nil
}

type pubResult struct {
	ack     *wire.Ack
	err     error // the publish failed: refused, or the stream broke
	receipt error // acknowledged, but its audit receipt did not check out
}

// A waiter is a publish waiting for its answer.
type waiter struct {
	ch  chan pubResult
	raw []byte
}

// pubStream is the one stream a client publishes on; answers come back
// in order and are matched to waiters by envelope ID.
type pubStream struct {
	str *quic.Stream
	wmu sync.Mutex
	fw  *wire.Writer

	mu      sync.Mutex
	waiters map[protocol.ID][]waiter
	err     error
	gone    chan struct{}

	// check checks an acknowledgement's receipt against the publish. The
	// reader calls it, in the order the answers come: no lock is
	// contended by hundreds of pipelined publishes.
	check   func(ack *wire.Ack, raw []byte) error
	witness *audit.Witness // the one funnel of what read finds wrong in receipts
}

func (ps *pubStream) dead() bool {
	select {
	case <-ps.gone:
		return true
	default:
		return false
	}
}

func (ps *pubStream) wait(id protocol.ID, raw []byte) chan pubResult {
	ch := make(chan pubResult, 1)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.err != nil {
		ch <- pubResult{err: ps.err}
		return ch
	}
	ps.waiters[id] = append(ps.waiters[id], waiter{ch, raw})
	return ch
}

func (ps *pubStream) forget(id protocol.ID, ch chan pubResult) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	w := ps.waiters[id]
	for i, c := range w {
		if c.ch == ch {
			ps.waiters[id] = append(w[:i], w[i+1:]...)
			break
		}
	}
	if len(ps.waiters[id]) == 0 {
		delete(ps.waiters, id)
	}
}

func (ps *pubStream) send(raw []byte) error {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	if err := ps.fw.Raw(wire.FramePublish, raw); err != nil {
		return wireError(err)
	}
	return wireError(ps.fw.Flush())
}

// oldest takes the oldest waiter for id.
func (ps *pubStream) oldest(id protocol.ID) (waiter, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	w := ps.waiters[id]
	if len(w) == 0 {
		return waiter{}, false
	}
	if len(w) == 1 {
		delete(ps.waiters, id)
	} else {
		ps.waiters[id] = w[1:]
	}
	return w[0], true
}

// answer hands r to the oldest waiter for id.
func (ps *pubStream) answer(id protocol.ID, r pubResult) {
	if w, ok := ps.oldest(id); ok {
		w.ch <- r
	}
}

// acknowledged checks an acknowledgement's receipt and hands both to the
// oldest waiter for its ID.
func (ps *pubStream) acknowledged(a *wire.Ack) {
	if w, ok := ps.oldest(a.ID); ok {
		w.ch <- pubResult{ack: a, receipt: ps.check(a, w.raw)}
	}
}

// fail ends the stream: every waiter gets err.
func (ps *pubStream) fail(err error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.err != nil {
		return
	}
	ps.err = err
	for id, w := range ps.waiters {
		for _, c := range w {
			c.ch <- pubResult{err: err}
		}
		delete(ps.waiters, id)
	}
	close(ps.gone)
	ps.str.CancelRead(0)
	ps.str.CancelWrite(0)
}

func (ps *pubStream) read() {
	fr := wire.NewReader(ps.str, wire.MaxFrameBody)
	var (
		lastCheckpoint []byte     // receipts send it only when it changes
		lastProof      [][32]byte // and only the hashes not ending the previous proof
	)
	for {
		t, body, err := readFrame(fr)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			ps.fail(err)
			return
		}
		switch t {
		case wire.FrameAck:
			a, err := wire.ParseAck(body)
			if err != nil {
				ps.fail(err)
				return
			}
			if r := a.Receipt; r != nil {
				if r.Checkpoint == nil {
					if lastCheckpoint == nil {
						ps.fail(ps.witness.Fail(errors.New("a receipt that names no checkpoint")))
						return
					}
					r.Checkpoint = lastCheckpoint
				}
				lastCheckpoint = r.Checkpoint
				if int(r.Shared) > len(lastProof) {
					ps.fail(ps.witness.Fail(fmt.Errorf("a receipt that shares %d hashes with a proof of %d", r.Shared, len(lastProof))))
					return
				}
				if r.Shared > 0 {
					r.Proof = append(r.Proof, lastProof[len(lastProof)-int(r.Shared):]...)
					r.Shared = 0
				}
				lastProof = r.Proof
			}
			ps.acknowledged(a)
		case wire.FrameNack:
			n, err := wire.ParseNack(body)
			if err != nil {
				ps.fail(err)
				return
			}
			e := n.Err
			ps.answer(n.ID, pubResult{err: &e})
		default:
			ps.fail(fmt.Errorf("relay: unexpected %s frame on the publish stream", t))
			return
		}
	}
}

// Delivery is one envelope of a subscription, or a mark that what it
// delivered is committed.
type Delivery struct {
	Envelope
	// Live is false for history (sent before the relay's Live mark) and
	// true for envelopes that arrived while subscribed.
	Live bool
	// Committed marks, instead of an envelope, that every envelope the
	// subscription delivered up to and including ID is on the relay's
	// disk (Env and Raw are nil). Live envelopes go out before their
	// commit, and one whose commit fails may come again later in another
	// position: a cursor kept for a later session must be a committed ID,
	// never merely the last one delivered.
	Committed bool
}

// Subscription is a room's envelopes from a cursor on, across
// reconnections.
type Subscription struct {
	C <-chan Delivery
	// Live is closed once the relay has sent all history up to the
	// moment of subscribing.
	Live <-chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

// Close ends the subscription.
func (s *Subscription) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// Err returns why the subscription ended, once C is closed: nil after
// Close, the relay's refusal otherwise.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Subscribe delivers a room's envelopes after cursor (the zero ID: all
// the relay keeps), then new ones as they are committed. When the
// connection drops it reconnects and resumes after the last envelope
// delivered, so nothing is missed and nothing comes twice: at once when
// the relay ended the connection, and a keep-alive interval and a few
// seconds after a relay went silent (killed, restarted); it backs off
// from about 100 ms to at most 5 s between attempts, from the start again
// once an attempt got through. On a client made by Start it waits for the
// client to connect, however long. C closes when ctx ends, at Close, or
// at a refusal that retrying cannot help (Err says which).
func (c *Client) Subscribe(ctx context.Context, room string, cursor protocol.ID) (*Subscription, error) {
	if err := protocol.ValidRoom(room); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan Delivery, 256)
	live := make(chan struct{})
	s := &Subscription{C: ch, Live: live, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(ch)
		defer cancel()
		var liveOnce sync.Once
		st := &subState{cursor: cursor, given: map[protocol.ID]bool{}}
		var b backoff
		for {
			cursor, given := st.cursor, len(st.order)
			reached := false
			err := c.subscribeOnce(ctx, room, st, ch, func() {
				reached = true
				liveOnce.Do(func() { close(live) })
			})
			if reached || st.cursor != cursor || len(st.order) != given {
				b.reset() // it got somewhere: back off from the start again
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil && !retryable(err) && !errors.Is(err, &wire.RelayError{Code: wire.CodeSlowConsumer}) &&
				!errors.Is(err, &wire.RelayError{Code: wire.CodeInternal}) {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			c.log.Debug("subscription resumes", "room", room, "err", err)
			select {
			case <-time.After(b.wait()):
			case <-ctx.Done():
				return
			case <-c.done:
				return
			}
		}
	}()
	return s, nil
}

// subState is where a subscription stands across connections: the last
// envelope the relay confirmed as committed (the cursor to resume from),
// and the envelopes after it that were delivered already, in order, so
// that a resumed subscription does not deliver them again.
type subState struct {
	cursor protocol.ID
	given  map[protocol.ID]bool
	order  []protocol.ID
}

// committed moves the cursor to id and forgets what it covers.
func (s *subState) committed(id protocol.ID) {
	s.cursor = id
	for i, g := range s.order {
		if g == id {
			for _, d := range s.order[:i+1] {
				delete(s.given, d)
			}
			s.order = s.order[i+1:]
			return
		}
	}
}

func (c *Client) subscribeOnce(ctx context.Context, room string, st *subState, out chan<- Delivery, isLive func()) error {
	body, err := (&wire.Subscribe{Room: room, Cursor: st.cursor}).MarshalBinary()
	if err != nil {
		return err
	}
	conn, err := c.connectWait(ctx)
	if err != nil {
		return err
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return wireError(err)
	}
	defer str.CancelRead(0)
	stop := context.AfterFunc(ctx, func() { str.CancelRead(0); str.CancelWrite(0) })
	defer stop()
	// The write side stays open: closing it ends the subscription.
	if _, err := str.Write(wire.AppendFrame(nil, wire.FrameSubscribe, body)); err != nil {
		return wireError(err)
	}
	defer str.CancelWrite(0)
	fr := wire.NewReaderSize(str, wire.MaxFrameBody, subBuffer)
	live := false
	for {
		t, b, err := readFrame(fr)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		switch t {
		case wire.FrameEnvelope:
			// This and the envelopes already here after it, checked
			// together.
			raws := [][]byte{bytes.Clone(b)}
			for len(raws) < 64 {
				if t, ok := fr.BufferedType(); !ok || t != wire.FrameEnvelope {
					break
				}
				_, b, err := readFrame(fr)
				if err != nil {
					return err
				}
				raws = append(raws, bytes.Clone(b))
			}
			es, perr := parseEnvelopes(raws)
			for _, e := range es {
				if st.given[e.ID] {
					continue // delivered before the connection was lost
				}
				select {
				case out <- Delivery{Envelope: e, Live: live}:
					st.given[e.ID] = true
					st.order = append(st.order, e.ID)
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if perr != nil {
				return perr
			}
		case wire.FrameCommitted:
			m, err := wire.ParseCommitted(b)
			if err != nil {
				return err
			}
			st.committed(m.ID)
			select {
			case out <- Delivery{Envelope: Envelope{ID: m.ID}, Live: live, Committed: true}:
			case <-ctx.Done():
				return ctx.Err()
			}
		case wire.FrameLive:
			live = true
			isLive()
		default:
			return fmt.Errorf("relay: unexpected %s frame on a subscription", t)
		}
	}
}

package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/quic-go/quic-go"
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
	via       Via
	worked    atomic.Uint32 // the transport.Kind of the last connection made

	// life ends when Close is called: a dial in progress ends with it.
	life context.Context
	end  context.CancelFunc

	// mu is never held across network I/O: a dial or the opening of the
	// publish stream is done by one caller outside it (dialing, opening),
	// and the others wait for its outcome.
	mu      sync.Mutex
	conn    transport.Conn
	pub     *pubStream
	dialing chan struct{} // closed when the dial in progress ends; nil if none
	opening chan struct{} // likewise for the publish stream
	closed  bool
	done    chan struct{}
	relay   identity.PublicKey // the key the relay proved

	background bool // made by Start: run dials, requests wait for it
	onState    func(State)
	notify     chan struct{} // wakes notifyLoop
	notified   chan struct{} // closed when notifyLoop has told StatusClosed
	ready      chan struct{} // closed at the first dial's outcome
	readyOnce  sync.Once
	readyErr   error

	// The connection state, under stMu; changed is closed and replaced
	// at each change of status or error.
	stMu        sync.Mutex
	state       State
	stateConn   transport.Conn // the connection while connected
	dialFailed  bool           // down because the last dial failed, not merely lost
	changed     chan struct{}
	reportedRTT time.Duration // the RTT OnState was last told

	// The witness holds the relay to its audit log; checkLoop asks the
	// relay for the consistency proofs it needs.
	witness   *audit.Witness
	ckWake    chan struct{} // tells checkLoop that checkpoints wait
	ckTaken   chan struct{} // checkLoop took the waiting ones
	ckStopped chan struct{} // checkLoop ended
	checkMu   sync.Mutex    // held while checkpoints are proved (checkLoop, Settle)
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
	// Transport, if not nil, carries QUIC connections: many clients in
	// one process (a load generator) can share one UDP socket. If nil,
	// each connection has a socket of its own.
	Transport *quic.Transport
	// Via says which transports to reach the relay over: by default
	// QUIC and TCP together, QUIC preferred (ViaAuto).
	Via Via
	// Prefer is the transport ViaAuto tries first until one connects:
	// the one that reached this relay last time, which the application
	// kept (State.Transport). Zero: QUIC.
	Prefer transport.Kind
	// Checkpoint is the newest signed audit checkpoint of this relay that
	// the application kept from an earlier session (Client.Checkpoint):
	// the relay's log must be consistent with it.
	Checkpoint []byte
	// OnState, if not nil, is told each change of the connection state
	// (State), and a round-trip time that moved by a fifth or more. It is
	// called from a goroutine of the client's own, one call at a time,
	// in order, with the newest state: states that change while a call
	// runs are told as one. It must not block for long (a blocked call
	// delays only the next calls, and Close) and must not call Close. The
	// last call tells StatusClosed, and Close returns after it: once Close
	// returns, OnState is not called again.
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
	info, err := c.Info(ctx)
	if err == nil {
		err = acceptsOurs(info)
	}
	if err != nil {
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
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 15 * time.Second
	}
	return newClient(addr, conf, opts), nil
}

func newClient(addr Addr, conf *tls.Config, opts ClientOptions) *Client {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	life, end := context.WithCancel(context.Background())
	c := &Client{addr: addr, tls: conf, log: opts.Log, keepAlive: opts.KeepAlive, tr: opts.Transport, via: opts.Via, life: life, end: end,
		done: make(chan struct{}), ckWake: make(chan struct{}, 1), ckTaken: make(chan struct{}, 1), ckStopped: make(chan struct{}),
		witness: audit.NewWitness(opts.Checkpoint), onState: opts.OnState, ready: make(chan struct{}), changed: make(chan struct{}),
		state: State{Status: StatusConnecting, Since: time.Now()}}
	c.worked.Store(uint32(opts.Prefer))
	if c.onState != nil {
		c.notify = make(chan struct{}, 1)
		c.notified = make(chan struct{})
		go c.notifyLoop()
	}
	return c
}

// Addr is the relay's address.
func (c *Client) Addr() Addr { return c.addr }

// Close closes the connection; subscriptions end. It returns once OnState
// has been told StatusClosed.
func (c *Client) Close() error { return c.CloseFor(nil) }

// CloseFor closes the connection for a reason the state keeps (why the
// relay is not used, as State().Err says after): a relay that is not the
// one configured, say.
func (c *Client) CloseFor(why error) error {
	defer c.awaitNotified()
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
	c.setState(StatusClosed, why, nil, false)
	c.setReady(errClientClosed)
	if conn != nil {
		return conn.Close(wire.CodeOK, "")
	}
	return nil
}

// awaitNotified waits for notifyLoop to tell StatusClosed and end, so that
// no OnState runs after Close: one would act on an application that is
// closing too (its store, its event queue).
func (c *Client) awaitNotified() {
	if c.notified != nil {
		<-c.notified
	}
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
func (c *Client) connect(ctx context.Context) (transport.Conn, error) {
	if c.background {
		return c.awaitConn(ctx, true)
	}
	return c.connectLazy(ctx)
}

// connectWait is connect for a subscription, which waits for a client
// made by Start to connect, however long it takes.
func (c *Client) connectWait(ctx context.Context) (transport.Conn, error) {
	if c.background {
		return c.awaitConn(ctx, false)
	}
	return c.connectLazy(ctx)
}

// connectLazy returns the live connection, or dials one: one caller
// dials, outside mu, and the others wait for it.
func (c *Client) connectLazy(ctx context.Context) (transport.Conn, error) {
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return nil, errClientClosed
		case c.conn != nil && c.conn.Context().Err() == nil:
			conn := c.conn
			c.mu.Unlock()
			return conn, nil
		case c.dialing != nil:
			wait := c.dialing
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		c.dialing = make(chan struct{})
		c.mu.Unlock()
		conn, err := c.dialLazy(ctx)
		c.mu.Lock()
		close(c.dialing)
		c.dialing = nil
		c.mu.Unlock()
		return conn, err
	}
}

// dialLazy dials a connection for connectLazy, and makes it the client's.
func (c *Client) dialLazy(ctx context.Context) (transport.Conn, error) {
	// A relay that does not answer holds the dial until the handshake
	// times out; Close ends it at once.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.life, cancel)
	defer stop()
	conn, err := c.dial(ctx)
	if err != nil {
		err = fmt.Errorf("relay: connect to %s: %w", c.addr.HostPort, versionError(wireError(err)))
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
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close(wire.CodeOK, "")
		return nil, errClientClosed
	}
	if k, err := connIdentity(conn); err == nil {
		c.relay = k
	}
	c.conn, c.pub = conn, nil
	c.mu.Unlock()
	c.setState(StatusConnected, nil, conn, false)
	go c.watchLazy(conn)
	return conn, nil
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

// ErrVersion: the relay speaks none of the relay protocol versions this
// client speaks, and is too old to say which it does (a newer relay
// refuses such a client with a *wire.RelayError, code unsupported,
// naming both).
var ErrVersion = errors.New("relay: no relay protocol version in common")

func versionError(err error) error {
	if !transport.NoCommonVersion(err) {
		return err
	}
	return fmt.Errorf("%w: this client speaks relay protocol %s, the relay none of them; a relay that speaks other versions says which, so this one is older than version %d: upgrade the relay, or use an older client: %w",
		ErrVersion, wire.Current, wire.Current.Min, err)
}

// wireError turns the error that ended a connection or stream into the
// relay's error code, where there is one.
func wireError(err error) error { return transport.RemoteError(err) }

// retryable reports whether err is worth another try on a new
// connection: a lost or refused connection, or a relay that is stopping.
// A refusal by the relay's policy or checks, a relay with the wrong key,
// and a closed client are not.
func retryable(err error) bool {
	var re *wire.RelayError
	switch {
	case errors.As(err, &re):
		return re.Code == wire.CodeShuttingDown || re.Code == wire.CodeIdle || re.Code == wire.CodeOK
	case errors.Is(err, errClientClosed), errors.Is(err, ErrWrongRelay), errors.Is(err, ErrVersion), errors.Is(err, ErrBadCertificate), errors.Is(err, ErrAuditLog), errors.Is(err, ErrNotConnected),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	// A failed TLS handshake: a wrong key, or an old relay.
	return !transport.IsHandshakeError(err)
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
		return nil, fmt.Errorf("relay: connect to %s: %w", addr.HostPort, versionError(wireError(err)))
	}
	return conn, nil
}

// DialTCP opens a bare connection to the relay at addr over TCP with TLS
// as key, with the relay's key checked and its admission read: for tools
// and tests that write frames themselves, as DialQUIC is over QUIC.
func DialTCP(ctx context.Context, addr Addr, key identity.PrivateKey) (transport.Conn, error) {
	conf, err := clientTLS(key, addr)
	if err != nil {
		return nil, err
	}
	conn, err := transport.DialTCP(ctx, addr.HostPort, conf, transport.TCPOptions{})
	if err != nil {
		return nil, fmt.Errorf("relay: connect to %s over TCP: %w", addr.HostPort, versionError(err))
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
	str, err := conn.OpenStream(ctx)
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

// ErrUnsupported: the relay does not know a request, being older than
// this client. It answered the request's frame type as unknown.
var ErrUnsupported = errors.New("relay: the relay does not support this request")

// unsupported turns a relay's refusal of a frame type t it does not know
// into an error wrapping ErrUnsupported (and the relay's error). A relay
// refuses such a frame with Error 1 (bad frame) saying "unknown type N"
// (wire.ParseFrameHeader), and gives no other sign: its Info lists no
// requests.
func unsupported(t wire.FrameType, err error) error {
	var re *wire.RelayError
	if errors.As(err, &re) && re.Code == wire.CodeBadFrame && strings.Contains(re.Message, fmt.Sprintf("unknown type %d", uint8(t))) {
		return fmt.Errorf("%w: %s (the relay is older than this client): %w", ErrUnsupported, t, err)
	}
	return err
}

// PutKeyPackage gives the relay raw, the client's identity's newest key
// package (keypackage.Package, encoded), which it keeps in place of the
// one it had and serves to anyone who asks (KeyPackages). The relay
// refuses, with a *wire.RelayError, a package of another identity
// (wire.CodeNotSender), one that does not parse or verify
// (wire.CodeBadKeyPackage), an expired or future-dated one
// (wire.CodeExpired), and one that is not newer than the one it has
// (wire.CodeStale); putting the package it has already is a success. A
// relay older than this client gives an error wrapping ErrUnsupported.
func (c *Client) PutKeyPackage(ctx context.Context, raw []byte) error {
	body, err := (&wire.PutKeys{Package: raw}).MarshalBinary()
	if err != nil {
		return fmt.Errorf("relay: put key package: %w", err)
	}
	// Sending the same package again is harmless: a retry after a lost
	// answer finds it stored, and succeeds.
	return c.retry(ctx, "put keys", func() error {
		fr, done, err := c.request(ctx, wire.FramePutKeys, body)
		if err != nil {
			return fmt.Errorf("relay: put key package: %w", err)
		}
		defer done()
		t, b, err := readFrame(fr)
		if err != nil {
			return fmt.Errorf("relay: put key package: %w", unsupported(wire.FramePutKeys, err))
		}
		if t != wire.FrameKeysStored || len(b) != 0 {
			return fmt.Errorf("relay: put key package: answered with %s", t)
		}
		return nil
	})
}

// KeyPackages asks the relay for the newest key packages of keys, and
// returns, encoded, those it has that check out, at most one per key, in
// the order of keys. A key whose package the relay does not have (or has
// only expired) is left out.
//
// Each package is parsed again here (keypackage.Parse, which verifies
// its identity's signature), and one that does not parse, or is not of
// a key asked for, is dropped. A relay cannot forge a package, since its
// identity signs it; it can only withhold one, or serve an older one
// that has not expired. Whether a package is still valid when it is used
// (keypackage.Package.Valid) is for the caller to check.
func (c *Client) KeyPackages(ctx context.Context, keys []identity.PublicKey) ([][]byte, error) {
	// Each key once, the zero key never: the relay refuses either.
	asked := make(map[[32]byte]bool, len(keys))
	var uniq []identity.PublicKey
	for _, k := range keys {
		if !k.IsZero() && !asked[k.Array()] {
			asked[k.Array()] = true
			uniq = append(uniq, k)
		}
	}
	got := make(map[[32]byte]*keyPackage, len(uniq))
	for len(uniq) > 0 {
		batch := uniq[:min(len(uniq), wire.MaxGetKeys)]
		uniq = uniq[len(batch):]
		body, err := (&wire.GetKeys{Keys: batch}).MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("relay: key packages: %w", err)
		}
		var raws [][]byte
		err = c.retry(ctx, "get keys", func() (err error) {
			raws, err = c.keyPackagesOnce(ctx, body)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, raw := range raws {
			p, err := keypackage.Parse(raw)
			if err != nil {
				c.log.Warn("the relay sent a key package that does not check out", "relay", c.addr.String(), "err", err)
				continue
			}
			id := p.Identity.Array()
			if !asked[id] {
				c.log.Warn("the relay sent a key package not asked for", "relay", c.addr.String(), "identity", p.Identity.Fingerprint())
				continue
			}
			if old := got[id]; old == nil || p.Newer(old.p) {
				got[id] = &keyPackage{p, raw}
			}
		}
	}
	var out [][]byte
	for _, k := range keys {
		if kp := got[k.Array()]; kp != nil {
			out = append(out, kp.raw)
			delete(got, k.Array())
		}
	}
	return out, nil
}

type keyPackage struct {
	p   *keypackage.Package
	raw []byte
}

// keyPackagesOnce sends one GetKeys and reads the KeyPackage frames up
// to the End.
func (c *Client) keyPackagesOnce(ctx context.Context, body []byte) ([][]byte, error) {
	fr, done, err := c.request(ctx, wire.FrameGetKeys, body)
	if err != nil {
		return nil, fmt.Errorf("relay: key packages: %w", err)
	}
	defer done()
	var raws [][]byte
	for range wire.MaxGetKeys + 1 {
		t, b, err := readFrame(fr)
		if err != nil {
			return nil, fmt.Errorf("relay: key packages: %w", unsupported(wire.FrameGetKeys, err))
		}
		switch t {
		case wire.FrameKeyPackage:
			m, err := wire.ParseKeyPackage(b)
			if err != nil {
				return nil, fmt.Errorf("relay: key packages: %w", err)
			}
			raws = append(raws, m.Package)
		case wire.FrameEnd:
			if _, err := wire.ParseEnd(b); err != nil {
				return nil, fmt.Errorf("relay: key packages: %w", err)
			}
			return raws, nil
		default:
			return nil, fmt.Errorf("relay: key packages: unexpected %s frame", t)
		}
	}
	return nil, errors.New("relay: key packages: more packages than keys asked for")
}

// maxRoomPages bounds the pages PrivateRooms follows: wire.MaxRooms
// rooms each, 65,536 in all.
const maxRoomPages = 16

// PrivateRooms asks the relay for the private rooms the client's
// identity is a member of now, by the member lists the relay has: a
// direct room someone started with it, a room it was added to, while it
// was away. It returns their IDs in ascending order. The relay lists at
// most wire.MaxRooms rooms per answer; PrivateRooms asks for the next
// page after the last room, up to 65,536 rooms in all, past which the
// rest are left out (and a warning logged).
//
// Only private room IDs (protocol.IsPrivateRoom) are kept; anything
// else the relay sends is dropped. A relay can leave rooms out, or name
// rooms the client is not a member of: whether a room is one's is the
// member list's to say, which the client reads from the room. A relay
// older than this client gives an error wrapping ErrUnsupported.
func (c *Client) PrivateRooms(ctx context.Context) ([]string, error) {
	var out []string
	req := wire.RoomsRequest{}
	for range maxRoomPages {
		body, err := req.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("relay: private rooms: %w", err)
		}
		var (
			page []string
			more bool
		)
		err = c.retry(ctx, "private rooms", func() (err error) {
			page, more, err = c.privateRoomsOnce(ctx, body, req.After)
			return err
		})
		if err != nil {
			return nil, err
		}
		next := ""
		for _, r := range page {
			if protocol.IsPrivateRoom(r) {
				out = append(out, r)
				next = r
			}
		}
		if !more || next == "" {
			return out, nil
		}
		req.After = next // the relay sends rooms after it only
	}
	c.log.Warn("more private rooms than a client asks for; the rest are left out", "relay", c.addr.String(), "rooms", len(out))
	return out, nil
}

// privateRoomsOnce sends one RoomsRequest and reads the Rooms frames up
// to the End. The rooms must come in ascending order, after after.
func (c *Client) privateRoomsOnce(ctx context.Context, body []byte, after string) ([]string, bool, error) {
	fr, done, err := c.request(ctx, wire.FrameRoomsRequest, body)
	if err != nil {
		return nil, false, fmt.Errorf("relay: private rooms: %w", err)
	}
	defer done()
	var rooms []string
	last := after
	for range wire.MaxRooms/wire.MaxRoomsFrame + 2 {
		t, b, err := readFrame(fr)
		if err != nil {
			return nil, false, fmt.Errorf("relay: private rooms: %w", unsupported(wire.FrameRoomsRequest, err))
		}
		switch t {
		case wire.FrameRooms:
			m, err := wire.ParseRooms(b)
			if err != nil {
				return nil, false, fmt.Errorf("relay: private rooms: %w", err)
			}
			if len(rooms)+len(m.Rooms) > wire.MaxRooms {
				return nil, false, fmt.Errorf("relay: private rooms: more than %d rooms in one answer", wire.MaxRooms)
			}
			for _, r := range m.Rooms {
				if r <= last {
					return nil, false, fmt.Errorf("relay: private rooms: %q after %q, not in ascending order", r, last)
				}
				last = r
			}
			rooms = append(rooms, m.Rooms...)
		case wire.FrameEnd:
			end, err := wire.ParseEnd(b)
			if err != nil {
				return nil, false, fmt.Errorf("relay: private rooms: %w", err)
			}
			return rooms, end.More, nil
		default:
			return nil, false, fmt.Errorf("relay: private rooms: unexpected %s frame", t)
		}
	}
	return nil, false, errors.New("relay: private rooms: more Rooms frames than an answer holds")
}

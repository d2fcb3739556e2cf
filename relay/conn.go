package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
)

// Status is where a client's connection to its relay stands.
type Status int

const (
	// StatusConnecting: the first dial is under way.
	StatusConnecting Status = iota
	// StatusConnected: connected, and admitted by the relay.
	StatusConnected
	// StatusDown: no connection. State.Err says why: the last dial
	// failed, or the connection was lost. The client dials again.
	StatusDown
	// StatusRefused: refused for good (State.Err): not allowed, banned,
	// a relay whose key is not the one in its address, a bad
	// certificate, an audit log that does not check out. A client made
	// by Start dials no more.
	StatusRefused
	// StatusClosed: Close was called.
	StatusClosed
)

func (s Status) String() string {
	switch s {
	case StatusConnecting:
		return "connecting"
	case StatusConnected:
		return "connected"
	case StatusDown:
		return "down"
	case StatusRefused:
		return "refused"
	case StatusClosed:
		return "closed"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// State is a client's connection state, for a status line.
type State struct {
	Status Status
	// Err is why the client is down (the last dial's error, or what
	// ended the connection) or refused. Nil when connecting or connected.
	Err error
	// RTT is the connection's smoothed round-trip time while connected
	// (QUIC's estimate from its acknowledgements, RFC 9002), zero
	// otherwise.
	RTT time.Duration
	// Since is when Status last changed.
	Since time.Time
	// Transport is what the connection runs over while connected
	// (transport.QUIC or transport.TCP), zero otherwise.
	Transport transport.Kind
}

// ErrNotConnected: a client made by Start is not connected to its relay
// and its last dial failed. The error wraps the dial's error too.
var ErrNotConnected = errors.New("relay: not connected")

// errSilent: the relay sent nothing, not even an acknowledgement of a
// keep-alive, for longer than a live relay would.
var errSilent = errors.New("relay: the relay stopped answering")

// silenceGrace is how long past a keep-alive interval the client waits
// for any packet from the relay before it takes the connection for dead.
// A relay that restarted does not answer at all: its stateless reset only
// answers packets over 42 bytes (quic-go's MinStatelessResetSize), and a
// keep-alive PING is about 25. Without this the client would wait for the
// QUIC idle timeout (60 s).
const silenceGrace = 5 * time.Second

// Start makes a client of the relay at addr that dials it in the
// background: the relay need not be up. It dials at once, and after a
// failed dial or a lost connection again, backing off from about 100 ms
// to at most 5 s (reset once connected), until Close, or until the relay
// refuses the identity for good (StatusRefused: not allowed, banned,
// ErrWrongRelay, ErrBadCertificate, ErrAuditLog, a kept checkpoint that
// does not open), which ends the dialling. Each connection is admitted
// by the relay (an InfoRequest) before it counts as connected.
//
// Ready waits for the outcome of the first dial; State and
// ClientOptions.OnState tell the rest. While the client is down after a
// failed dial, Publish, Info, Peers, FetchRange, FetchIDs and Redeem fail
// at once with an error wrapping ErrNotConnected; a Subscription waits
// for the connection. The error is about the key or the address only.
func Start(addr Addr, key identity.PrivateKey, opts ClientOptions) (*Client, error) {
	c, err := makeClient(addr, key, opts)
	if err != nil {
		return nil, err
	}
	c.background = true
	go c.checkLoop()
	go c.run()
	return c, nil
}

// Ready waits for the outcome of the client's first dial: nil once it is
// connected and admitted; the refusal (see StatusRefused) if the relay
// refused it for good; an error wrapping ErrNotConnected and the dial's
// error if the relay could not be reached, in which case the client
// goes on dialling; ctx.Err() if ctx ends first. For a client made by
// Dial it returns nil.
func (c *Client) Ready(ctx context.Context) error {
	select {
	case <-c.ready:
		return c.readyErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// State returns the client's connection state now.
func (c *Client) State() State {
	c.stMu.Lock()
	st, conn := c.state, c.stateConn
	c.stMu.Unlock()
	if st.Status == StatusConnected && conn != nil {
		st.RTT = conn.Stats().RTT
		st.Transport = conn.Kind()
	}
	return st
}

// setState moves the client to status, with err; conn is the connection
// when connected. A status that does not change keeps its Since.
func (c *Client) setState(status Status, err error, conn transport.Conn, dialFailed bool) {
	c.stMu.Lock()
	old := c.state
	if old.Status == StatusClosed || (old.Status == StatusRefused && status != StatusClosed && c.background) {
		c.stMu.Unlock()
		return
	}
	st := State{Status: status, Err: err, Since: old.Since}
	if status != old.Status {
		st.Since = time.Now()
	}
	if conn != nil {
		st.RTT = conn.Stats().RTT
		st.Transport = conn.Kind()
		c.worked.Store(uint32(conn.Kind()))
	}
	c.state, c.stateConn, c.dialFailed = st, conn, dialFailed
	changed := status != old.Status || errText(err) != errText(old.Err)
	if changed {
		close(c.changed)
		c.changed = make(chan struct{})
		c.reportedRTT = st.RTT
	}
	c.stMu.Unlock()
	if !changed {
		return
	}
	c.wake()
	switch status {
	case StatusConnected:
		c.log.Info("relay connected", "relay", c.addr.String(), "transport", st.Transport.String(), "rtt", st.RTT.Round(time.Microsecond))
	case StatusDown:
		if old.Status != StatusDown {
			c.log.Warn("relay connection down", "relay", c.addr.String(), "err", err)
		} else {
			c.log.Debug("relay still down", "relay", c.addr.String(), "err", err)
		}
	case StatusRefused:
		c.log.Error("relay refused the connection", "relay", c.addr.String(), "err", err)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// rttChanged notes a new round-trip time, and tells OnState when it moved
// by a fifth or more since last told.
func (c *Client) rttChanged(rtt time.Duration) {
	c.stMu.Lock()
	d := rtt - c.reportedRTT
	if d < 0 {
		d = -d
	}
	tell := c.state.Status == StatusConnected && d >= time.Millisecond && 5*d >= c.reportedRTT
	if tell {
		c.reportedRTT = rtt
	}
	c.stMu.Unlock()
	if tell {
		c.wake()
	}
}

func (c *Client) wake() {
	if c.onState == nil {
		return
	}
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// notifyLoop calls OnState with the newest state whenever it changed,
// one call at a time; it ends after telling StatusClosed.
func (c *Client) notifyLoop() {
	defer close(c.notified)
	var last State
	for range c.notify {
		st := c.State()
		if st.Status == last.Status && st.Since.Equal(last.Since) && errText(st.Err) == errText(last.Err) && st.RTT == last.RTT && st.Transport == last.Transport {
			continue
		}
		last = st
		c.onState(st)
		if st.Status == StatusClosed {
			return
		}
	}
}

// permanent reports whether a failed dial or a lost connection is a
// refusal that dialling again cannot help.
func permanent(err error) bool {
	var re *wire.RelayError
	if errors.As(err, &re) {
		// Unsupported, for a connection: no relay protocol version in
		// common.
		return re.Code == wire.CodeNotAllowed || re.Code == wire.CodeBanned || re.Code == wire.CodeUnsupported
	}
	if errors.Is(err, ErrWrongRelay) || errors.Is(err, ErrVersion) || errors.Is(err, ErrBadCertificate) || errors.Is(err, ErrAuditLog) || errors.Is(err, errKeptCheckpoint) {
		return true
	}
	return transport.IsHandshakeError(err)
}

var errKeptCheckpoint = errors.New("relay: the kept checkpoint")

// backoff is the wait before the next dial: from about 100 ms, doubling,
// at most 5 s, each with up to a fifth less at random, so that the
// clients of a relay that restarted do not all come back at once.
type backoff struct{ next time.Duration }

func (b *backoff) reset() { b.next = 0 }

func (b *backoff) wait() time.Duration {
	const first, most = 100 * time.Millisecond, 5 * time.Second
	if b.next == 0 {
		b.next = first
	}
	d := b.next
	b.next = min(2*b.next, most)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// run keeps a client made by Start connected until Close or a refusal.
func (c *Client) run() {
	var b backoff
	first := true
	for {
		conn, err := c.establish(c.life)
		if c.life.Err() != nil {
			if conn != nil {
				conn.Close(wire.CodeOK, "")
			}
			c.setReady(errClientClosed)
			return
		}
		if err == nil {
			b.reset()
			c.setReady(nil)
			first = false
			err = c.watch(conn)
			if c.life.Err() != nil {
				return
			}
		}
		if permanent(err) {
			c.setState(StatusRefused, err, nil, true)
			c.setReady(err)
			return
		}
		dialFailed := conn == nil
		c.setState(StatusDown, err, nil, dialFailed)
		if first {
			c.setReady(fmt.Errorf("%w: %w", ErrNotConnected, err))
			first = false
		}
		t := time.NewTimer(b.wait())
		select {
		case <-t.C:
		case <-c.life.Done():
			t.Stop()
			return
		}
	}
}

func (c *Client) setReady(err error) {
	c.readyOnce.Do(func() {
		c.readyErr = err
		close(c.ready)
	})
}

// establish dials the relay, checks the kept checkpoint once the relay's
// key is known, and asks for the relay's Info: the relay refuses an
// identity it does not admit right after the handshake. It returns the
// connection, now the client's, or, on failure, a nil connection.
func (c *Client) establish(ctx context.Context) (transport.Conn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("relay: connect to %s: %w", c.addr.HostPort, wireError(err))
	}
	fail := func(err error) (transport.Conn, error) {
		conn.Close(wire.CodeOK, "")
		return nil, err
	}
	key, err := connIdentity(conn)
	if err != nil {
		return fail(err)
	}
	if err := c.openKept(key); err != nil {
		return fail(err)
	}
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = c.infoOn(ictx, conn)
	cancel()
	if err != nil {
		return fail(fmt.Errorf("relay: connect to %s: %w", c.addr.HostPort, err))
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fail(errClientClosed)
	}
	c.conn, c.pub, c.relay = conn, nil, key
	c.mu.Unlock()
	c.setState(StatusConnected, nil, conn, false)
	return conn, nil
}

// connIdentity is the key the relay proved; the TLS config checked it
// against the address.
func connIdentity(conn transport.Conn) (identity.PublicKey, error) {
	certs := conn.TLS().PeerCertificates
	if len(certs) != 1 {
		return identity.PublicKey{}, fmt.Errorf("%w: %d certificates", ErrBadCertificate, len(certs))
	}
	return CertIdentity(certs[0])
}

// openKept gives the witness the key the relay proved, with which it
// opens the checkpoint the application kept from an earlier session
// (ClientOptions.Checkpoint).
func (c *Client) openKept(key identity.PublicKey) error {
	if err := c.witness.SetRelay(key); err != nil {
		return fmt.Errorf("%w: %w", errKeptCheckpoint, err)
	}
	return nil
}

// infoOn asks for the relay's Info on conn.
func (c *Client) infoOn(ctx context.Context, conn transport.Conn) (*wire.Info, error) {
	str, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, wireError(err)
	}
	stop := context.AfterFunc(ctx, func() { str.CancelRead(0) })
	defer stop()
	defer str.CancelRead(0)
	if _, err := str.Write(wire.AppendFrame(nil, wire.FrameInfoRequest, nil)); err != nil {
		str.CancelWrite(0)
		return nil, wireError(err)
	}
	str.Close()
	t, body, err := readFrame(wire.NewReader(str, wire.MaxFrameBody))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("info: %w", err)
	}
	if t != wire.FrameInfo {
		return nil, fmt.Errorf("info: answered with %s", t)
	}
	info, err := wire.ParseInfo(body)
	if err != nil {
		return nil, err
	}
	return info, acceptsOurs(info)
}

// acceptsOurs checks that the relay takes the envelope version this
// client writes (its Info's versions): a relay that does not could only
// refuse every publish.
func acceptsOurs(info *wire.Info) error {
	if slices.Contains(info.Versions, protocol.Version) {
		return nil
	}
	older := "client"
	if slices.Max(info.Versions) < protocol.Version {
		older = "relay"
	}
	return fmt.Errorf("%w: the relay accepts envelope versions %v, this client writes version %d: upgrade the %s",
		ErrVersion, info.Versions, protocol.Version, older)
}

// watch watches a connection until it ends, and returns why. It ends the
// connection itself when the relay has sent nothing for a keep-alive
// interval and silenceGrace more (ten round trips, if more): a live relay
// acknowledges the keep-alive within a round trip, while a relay that
// restarted, or a path that broke, stays silent until the idle timeout.
// Meanwhile it follows the round-trip time.
func (c *Client) watch(conn transport.Conn) error {
	tick := min(time.Second, max(c.keepAlive/4, 20*time.Millisecond))
	t := time.NewTicker(tick)
	defer t.Stop()
	stats := conn.Stats()
	heard, last := time.Now(), stats.Received
	for {
		select {
		case <-conn.Context().Done():
			return wireError(context.Cause(conn.Context()))
		case <-c.life.Done():
			return errClientClosed
		case now := <-t.C:
			stats := conn.Stats()
			if stats.Received != last {
				heard, last = now, stats.Received
				c.rttChanged(stats.RTT)
				continue
			}
			limit := c.keepAlive + max(silenceGrace, 10*stats.RTT)
			if silent := now.Sub(heard); silent > limit {
				err := fmt.Errorf("%w: nothing from %s for %s", errSilent, c.addr.HostPort, silent.Round(100*time.Millisecond))
				conn.Close(wire.CodeOK, "no answer")
				return err
			}
		}
	}
}

// watchLazy watches a connection of a client made by Dial, which dials
// again when a request needs it: it only reports the state.
func (c *Client) watchLazy(conn transport.Conn) {
	err := c.watch(conn)
	if c.life.Err() != nil {
		return
	}
	c.mu.Lock()
	current := c.conn == conn
	c.mu.Unlock()
	if !current {
		return // a new connection has replaced it
	}
	if permanent(err) {
		c.setState(StatusRefused, err, nil, false)
	} else {
		c.setState(StatusDown, err, nil, false)
	}
}

// liveConn returns the client's connection if it is up, and the channel
// that the next state change closes.
func (c *Client) liveConn() (transport.Conn, State, bool, <-chan struct{}, error) {
	c.stMu.Lock()
	changed, st, dialFailed := c.changed, c.state, c.dialFailed
	c.stMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, st, dialFailed, changed, errClientClosed
	}
	if c.conn != nil && c.conn.Context().Err() == nil {
		return c.conn, st, dialFailed, changed, nil
	}
	return nil, st, dialFailed, changed, nil
}

// awaitConn returns the connection of a client made by Start, waiting
// within ctx for the background dialler. With failFast, a client whose
// last dial failed returns ErrNotConnected at once.
func (c *Client) awaitConn(ctx context.Context, failFast bool) (transport.Conn, error) {
	for {
		conn, st, dialFailed, changed, err := c.liveConn()
		switch {
		case err != nil:
			return nil, err
		case conn != nil:
			return conn, nil
		case st.Status == StatusRefused:
			return nil, st.Err
		case failFast && st.Status == StatusDown && dialFailed:
			return nil, fmt.Errorf("%w: %w", ErrNotConnected, st.Err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			return nil, errClientClosed
		}
	}
}

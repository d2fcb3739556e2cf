package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-yamux/v5"
	"github.com/parleychat/parley/relay/wire"
)

// Over TCP: TLS 1.3, then one frame from the relay (its admission), then
// yamux. A yamux GoAway carries the relay's error code plus goAwayBase,
// so that it never reads as one of yamux's own codes (1 and 2).
const goAwayBase = 0x1000

// preambleTimeout bounds the wait for the relay's admission frame after
// the handshake.
const preambleTimeout = 10 * time.Second

const (
	// acceptBacklog is how many streams a yamux session queues for
	// AcceptStream, and how many it opens unanswered at once.
	acceptBacklog = 32
	// pingBacklog is how many answers to pings yamux queues: pings come
	// from keep-alives and round-trip measurements, one at a time.
	pingBacklog = 4
)

// TCPOptions configure yamux on a connection.
type TCPOptions struct {
	// KeepAlive is how often an idle connection is pinged, which also
	// measures its round-trip time. If zero, 15 seconds.
	KeepAlive time.Duration
	// MaxStreams is how many streams the other end may have open at
	// once; more are reset. If zero, 1000.
	MaxStreams int
}

func (o TCPOptions) yamux() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	if o.KeepAlive > 0 {
		c.KeepAliveInterval = o.KeepAlive
	} else {
		c.KeepAliveInterval = 15 * time.Second
	}
	c.MeasureRTTInterval = c.KeepAliveInterval
	// Both ends hold a queue of acceptBacklog streams per connection:
	// an opener waits while that many it opened are not accepted yet,
	// so the other end's queue never overflows (which would reset the
	// stream). The relay accepts at once; the default, 256, is memory
	// an idle connection holds.
	c.AcceptBacklog = acceptBacklog
	c.PingBacklog = pingBacklog
	if o.MaxStreams > 0 {
		c.MaxIncomingStreams = uint32(o.MaxStreams)
		c.AcceptBacklog = min(c.AcceptBacklog, o.MaxStreams)
	}
	// TLS keeps the record it decrypted: a second buffer below yamux's
	// 12-byte header reads would only cost memory. And frameConn must
	// see only what yamux has read.
	c.ReadBufSize = 0
	return c
}

// countingConn counts the reads that returned data, for Stats.Received.
type countingConn struct {
	net.Conn
	reads atomic.Uint64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.reads.Add(1)
	}
	return n, err
}

// tcpConn is a Conn over TCP. On the relay's side the multiplexer starts
// when the relay admits the connection (its first AcceptStream); until
// then Close refuses it with a frame the client reads.
type tcpConn struct {
	tls    *tls.Conn
	raw    *countingConn // under tls
	frames *frameConn    // over tls, what yamux reads and writes
	opts   TCPOptions

	mu   sync.Mutex
	sess *yamux.Session // nil until admitted (relay) or dialled (client)
	// firstRTT is the client's round trip measured as it dialled, the
	// RTT until yamux has one of its own.
	firstRTT time.Duration
	closed   bool
	ctx      context.Context
	cancel   context.CancelCauseFunc
	watched  bool // a goroutine waits for sess to end, to end ctx
	// onClose, if set, is called once by Close or abort (the
	// listener's bookkeeping).
	onClose func(*tcpConn)
	forgot  sync.Once
}

func newTCPConn(raw *countingConn, t *tls.Conn, opts TCPOptions) *tcpConn {
	c := &tcpConn{tls: t, raw: raw, frames: &frameConn{Conn: t}, opts: opts}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	return c
}

// DialTCP connects to a relay over TCP with TLS conf, and waits for the
// relay's admission. A refusal is a *wire.RelayError with the relay's
// reason; a failed handshake wraps ErrHandshake.
func DialTCP(ctx context.Context, hostPort string, conf *tls.Config, opts TCPOptions) (Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", hostPort)
	if err != nil {
		return nil, err
	}
	raw := &countingConn{Conn: nc}
	tc := tls.Client(raw, conf)
	fail := func(err error) (Conn, error) {
		tc.Close()
		return nil, err
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(handshakeError(err))
	}
	if p := tc.ConnectionState().NegotiatedProtocol; !slices.Contains(conf.NextProtos, p) {
		return fail(fmt.Errorf("%w: the server speaks %q, not one of %q", ErrHandshake, p, conf.NextProtos))
	}
	if err := readAdmission(ctx, tc); err != nil {
		return fail(err)
	}
	c := newTCPConn(raw, tc, opts)
	sess, err := yamux.Client(c.frames, opts.yamux(), nil)
	if err != nil {
		return fail(fmt.Errorf("transport: yamux: %w", err))
	}
	c.sess = sess
	c.firstRTT = firstPing(ctx, sess)
	return c, nil
}

// firstPing measures one round trip on sess, or returns 0 if ctx ends
// first. yamux measures the session's round-trip time only in the
// background, so a connection reported at once as connected (chat status,
// the relay client's OnState) said 0 until then.
func firstPing(ctx context.Context, sess *yamux.Session) time.Duration {
	done := make(chan time.Duration, 1)
	go func() { // ends with Ping: answered, timed out, or the session closed
		rtt, err := sess.Ping()
		if err != nil {
			rtt = 0
		}
		done <- rtt
	}()
	select {
	case rtt := <-done:
		return rtt
	case <-ctx.Done():
		return 0
	}
}

// readAdmission reads the relay's first frame: CodeOK, or its refusal.
func readAdmission(ctx context.Context, tc *tls.Conn) error {
	dl := time.Now().Add(preambleTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	tc.SetReadDeadline(dl)
	defer tc.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { tc.SetReadDeadline(time.Now()) })
	defer stop()
	err := ReadAdmission(tc)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return handshakeError(err)
}

// ReadAdmission reads the relay's admission frame from r, and not a byte
// more (what follows is yamux's): nil if it admits the client (CodeOK),
// its refusal as a *wire.RelayError, an error wrapping ErrHandshake if
// the bytes are not an admission frame, or the read's error.
func ReadAdmission(r io.Reader) error {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	t, n, err := wire.ParseFrameHeader(hdr)
	if err != nil || t != wire.FrameError || n > 2+2+wire.MaxErrorMessage {
		return fmt.Errorf("%w: the relay's first frame is not its admission", ErrHandshake)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return err
	}
	e, err := wire.ParseErrorFrame(body)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	case e.Code != wire.CodeOK:
		return e
	case e.Message != "":
		// One encoding of an admission: a text with it would be read
		// by no one.
		return fmt.Errorf("%w: an admission with a text", ErrHandshake)
	}
	return nil
}

// handshakeError marks an alert from the other end (a certificate it
// refused, no common protocol) as ErrHandshake; other errors (a reset, a
// timeout) stay as they are, worth another try.
func handshakeError(err error) error {
	if err == nil {
		return nil
	}
	var ae tls.AlertError
	var re *net.OpError
	if errors.As(err, &ae) || (errors.As(err, &re) && re.Op == "remote error") {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return err
}

func (c *tcpConn) session() (*yamux.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed && c.sess == nil {
		return nil, net.ErrClosed
	}
	if c.sess != nil {
		return c.sess, nil
	}
	// The relay admits the connection: tell the client, and start the
	// multiplexer.
	ok, _ := wire.MarshalErrorFrame(&wire.RelayError{Code: wire.CodeOK})
	c.tls.SetWriteDeadline(time.Now().Add(preambleTimeout))
	_, err := c.tls.Write(wire.AppendFrame(nil, wire.FrameError, ok))
	c.tls.SetWriteDeadline(time.Time{})
	if err != nil {
		c.closed = true
		c.tls.Close()
		c.cancel(err)
		return nil, err
	}
	s, err := yamux.Server(c.frames, c.opts.yamux(), nil)
	if err != nil {
		c.closed = true
		c.tls.Close()
		c.cancel(err)
		return nil, fmt.Errorf("transport: yamux: %w", err)
	}
	c.sess = s
	return s, nil
}

func (c *tcpConn) OpenStream(ctx context.Context) (Stream, error) {
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	str, err := s.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	return &tcpStream{Stream: str, frames: c.frames}, nil
}

func (c *tcpConn) AcceptStream(ctx context.Context) (Stream, error) {
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	// yamux's accept has no context. When ctx ends (the relay shuts
	// down), the connection drains: the streams open end (their
	// handlers watch ctx too), then it closes with CodeShuttingDown,
	// which ends this wait.
	stop := context.AfterFunc(ctx, func() { c.drain(s) })
	defer stop()
	str, err := s.AcceptStream()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return &tcpStream{Stream: str, frames: c.frames}, nil
}

// drainTimeout bounds how long a shutting-down relay waits for a TCP
// connection's streams to end.
const drainTimeout = 10 * time.Second

func (c *tcpConn) drain(s *yamux.Session) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	deadline := time.NewTimer(drainTimeout)
	defer deadline.Stop()
	for s.NumStreams() > 0 {
		select {
		case <-t.C:
		case <-deadline.C:
			c.Close(wire.CodeShuttingDown, "the relay is shutting down")
			return
		case <-s.CloseChan():
			return
		}
	}
	c.Close(wire.CodeShuttingDown, "the relay is shutting down")
}

// Close ends the connection with code: before the relay admitted it,
// with a frame that gives the reason too; after, with a GoAway.
func (c *tcpConn) Close(code wire.ErrorCode, reason string) error {
	c.mu.Lock()
	sess, closed := c.sess, c.closed
	c.closed = true
	c.mu.Unlock()
	c.forget()
	if closed && sess == nil {
		return nil
	}
	err := &wire.RelayError{Code: code, Message: reason}
	if sess == nil {
		if body, merr := wire.MarshalErrorFrame(err); merr == nil {
			c.tls.SetWriteDeadline(time.Now().Add(time.Second))
			c.tls.Write(wire.AppendFrame(nil, wire.FrameError, body))
		}
		c.cancel(err)
		return c.tls.Close()
	}
	c.cancel(err)
	return sess.CloseWithError(goAwayBase + uint32(code))
}

// abort drops the connection without a word, as a killed process would.
func (c *tcpConn) abort() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.forget()
	c.cancel(net.ErrClosed)
	c.raw.Conn.Close()
}

func (c *tcpConn) forget() {
	if c.onClose != nil {
		c.forgot.Do(func() { c.onClose(c) })
	}
}

// Context ends with the session; the first call starts the goroutine
// that waits for that (clients call it; the relay does not).
func (c *tcpConn) Context() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil && !c.watched {
		c.watched = true
		s := c.sess
		go func() {
			select {
			case <-s.CloseChan():
				// A closed session answers every call with why it closed.
				_, err := s.OpenStream(context.Background())
				c.cancel(RemoteError(err))
			case <-c.ctx.Done():
			}
		}()
	}
	return c.ctx
}

func (c *tcpConn) RemoteAddr() net.Addr     { return c.raw.RemoteAddr() }
func (c *tcpConn) TLS() tls.ConnectionState { return c.tls.ConnectionState() }
func (c *tcpConn) Kind() Kind               { return TCP }

func (c *tcpConn) Stats() Stats {
	st := Stats{Received: c.raw.reads.Load()}
	c.mu.Lock()
	if c.sess != nil {
		st.RTT = c.sess.RTT()
	}
	if st.RTT == 0 {
		st.RTT = c.firstRTT
	}
	c.mu.Unlock()
	return st
}

type tcpStream struct {
	*yamux.Stream
	frames  *frameConn
	ctxOnce sync.Once
	ctx     context.Context
}

// Close ends the write side (yamux's Close would end both).
func (s *tcpStream) Close() error { return s.Stream.CloseWrite() }

// CancelRead stops reading. yamux does not tell the other end; every
// caller here resets the stream too, or is done with it.
func (s *tcpStream) CancelRead(wire.ErrorCode) {
	s.Stream.CloseRead()
	s.frames.unwatch(s)
}

func (s *tcpStream) CancelWrite(code wire.ErrorCode) {
	s.Stream.ResetWithError(goAwayBase + uint32(code))
	s.frames.unwatch(s)
}

// Context ends when the other end ends or resets the stream, or the
// connection ends, or this end cancels the stream: frameConn tells it,
// with no goroutine while nothing comes (watch.go). What the other end
// sends on the stream is read and discarded.
func (s *tcpStream) Context() context.Context {
	s.ctxOnce.Do(func() { s.ctx = s.frames.watch(s) })
	return s.ctx
}

func yamuxRemote(err error) *wire.RelayError {
	var ge *yamux.GoAwayError
	if errors.As(err, &ge) && ge.Remote {
		return &wire.RelayError{Code: codeOf(ge.ErrorCode)}
	}
	var se *yamux.StreamError
	if errors.As(err, &se) && se.Remote {
		return &wire.RelayError{Code: codeOf(se.ErrorCode)}
	}
	return nil
}

// codeOf is the relay's code in a yamux code; yamux's own codes (a
// protocol or internal error) read as CodeInternal.
func codeOf(c uint32) wire.ErrorCode {
	if c >= goAwayBase && c-goAwayBase <= 0xffff {
		return wire.ErrorCode(c - goAwayBase)
	}
	if c == 0 {
		return wire.CodeOK
	}
	return wire.CodeInternal
}

func isYamuxEnd(err error) bool {
	return errors.Is(err, yamux.ErrStreamReset) || errors.Is(err, yamux.ErrSessionShutdown) ||
		errors.Is(err, yamux.ErrRemoteGoAway) || errors.Is(err, yamux.ErrStreamClosed)
}

package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/hkdf"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/time/rate"
)

// How an envelope reached the relay (store.Record.Via).
const (
	viaRelay = "relay" // published by a client of this relay
	viaMesh  = "mesh"  // came in from the mesh through the bridge
)

// Storage is what the relay needs of its store; SQLiteStorage is the
// embedded one. A Batch's Commit must be durable when it returns.
type Storage interface {
	Begin(ctx context.Context) (Batch, error)
	// LastPos is the highest position stored, 0 if none.
	LastPos(ctx context.Context) (int64, error)
	// Heads calls f with each (sender, room)'s highest sequence number
	// stored, at most limit of them, and reports whether that was all.
	Heads(ctx context.Context, limit int, f func(store.Head)) (bool, error)
	After(ctx context.Context, room string, pos int64, limit int) ([]store.Record, error)
	Position(ctx context.Context, id protocol.ID) (string, int64, error)
	Get(ctx context.Context, id protocol.ID) (store.Record, error)
	Range(ctx context.Context, room string, since, until int64, after store.Cursor, limit int) ([]store.Record, error)
}

// Batch is one write transaction: appended envelopes have their positions
// at once and are durable after Commit.
type Batch interface {
	Append(ctx context.Context, recs []store.Record) ([]store.Appended, error)
	Commit() error
	Rollback()
	audit.Tx // the audit log's records go in the same transaction
}

// SQLiteStorage is the embedded store as the relay's Storage.
type SQLiteStorage struct{ *store.Store }

// Begin implements Storage.
func (s SQLiteStorage) Begin(ctx context.Context) (Batch, error) { return s.Store.Begin(ctx) }

// Bridge joins the relay to the mesh: the relay forwards what its clients
// publish and learns the mesh peers of a room. bridge.go has the mesh one.
type Bridge interface {
	// Join makes the bridge carry room both ways.
	Join(room string)
	// Forward passes a committed envelope from a client to the mesh. It
	// must not block.
	Forward(rec store.Record)
	// Peers returns mesh addresses of peers in room, each with /p2p/.
	Peers(room string) []string
}

// Options configure a Server.
type Options struct {
	Config   Config
	Key      identity.PrivateKey
	Store    *store.Store
	Log      *slog.Logger
	Registry prometheus.Registerer // nil: metrics are kept but not exported
	Now      func() time.Time      // nil: time.Now
}

// Server is a relay: a QUIC listener, the policy, the store and the hub.
type Server struct {
	cfg     Config
	key     identity.PrivateKey
	st      Storage
	policy  *Policy
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time
	hub     *hub
	seq     *sequencer
	bridge  Bridge
	// audit is the tamper-evident log, nil when auditing is off;
	// auditReader reads its committed hashes.
	audit       *audit.Log
	auditReader audit.Reader

	udp net.PacketConn // the socket tr reads, which tr does not close
	tr  *quic.Transport
	ln  *quic.Listener

	clientsMu sync.Mutex
	clients   map[*client]struct{} // admitted connections, to apply policy changes to

	commits  chan *pending
	closing  sync.RWMutex // held to send on commits outside a connection
	closed   bool         // commits is closed
	conns    atomic.Int64
	idRates  *limiters
	addrRate *limiters
	retry    *rate.Limiter
}

// NewServer makes a relay. It does not listen yet.
func NewServer(ctx context.Context, o Options) (*Server, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, fmt.Errorf("relay: metrics: %w", err)
	}
	var log *audit.Log
	if o.Config.Audit.Enabled {
		if log, err = OpenAudit(ctx, o.Key, o.Store); err != nil {
			return nil, err
		}
	}
	pol, err := NewPolicy(ctx, o.Config.Policy, o.Store, o.Now)
	if err != nil {
		return nil, fmt.Errorf("relay: policy: %w", err)
	}
	st := SQLiteStorage{o.Store}
	seq, err := newSequencer(ctx, st, maxPairs)
	if err != nil {
		return nil, err
	}
	l := o.Config.Limits
	return &Server{
		cfg: o.Config, key: o.Key, st: st, policy: pol, audit: log, auditReader: o.Store, log: o.Log, metrics: m, now: o.Now,
		hub:      newHub(l.QueueSize),
		seq:      seq,
		clients:  map[*client]struct{}{},
		commits:  make(chan *pending, 4*maxBatch),
		idRates:  newLimiters(rate.Limit(l.PublishRate), l.PublishBurst),
		addrRate: newLimiters(rate.Limit(l.AddrRate), l.AddrBurst),
		retry:    rate.NewLimiter(rate.Limit(l.RetryAbove), l.RetryAbove),
	}, nil
}

// Policy returns the relay's policy, for admin commands.
func (s *Server) Policy() *Policy { return s.policy }

// SetBridge connects the relay to the mesh; call it before Serve.
func (s *Server) SetBridge(b Bridge) { s.bridge = b }

// Ingest queues an envelope that came from the mesh (already verified by
// the mesh node) for the committer, which stores it and hands it to the
// relay's subscribers; a duplicate is dropped there. It does not wait for
// the commit, so mesh traffic gets group commit too.
func (s *Server) Ingest(ctx context.Context, env *protocol.Envelope, id protocol.ID, raw []byte) error {
	p := &pending{rec: store.Record{ID: id, Env: env, Raw: raw, Via: viaMesh, Received: s.now()}, policy: s.policy.Version(), done: make(chan committed, 1)}
	s.closing.RLock()
	defer s.closing.RUnlock()
	if s.closed {
		return errServerClosed
	}
	_, err := s.enqueue(ctx, []*pending{p})
	return err
}

var errServerClosed = errors.New("relay: server is closed")

// Listen binds the QUIC listener on the configured address.
func (s *Server) Listen() error {
	udp, err := net.ListenPacket("udp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("relay: listen %s: %w", s.cfg.Listen, err)
	}
	tlsConf, err := relay.ServerTLS(s.key)
	if err != nil {
		udp.Close()
		return err
	}
	resetKey, tokenKey, err := transportKeys(s.key)
	if err != nil {
		udp.Close()
		return err
	}
	s.udp = udp
	s.tr = &quic.Transport{
		Conn: udp,
		// Keys derived from the relay's identity, so that after a restart
		// the relay still answers packets of connections it has lost
		// with a stateless reset (clients notice at once and reconnect)
		// and still accepts its Retry tokens.
		StatelessResetKey: resetKey,
		TokenGeneratorKey: tokenKey,
		// Under a burst of new handshakes, make clients prove their
		// address with a Retry round trip before the relay spends work
		// on them.
		VerifySourceAddress: func(net.Addr) bool { return !s.retry.Allow() },
	}
	l := s.cfg.Limits
	s.ln, err = s.tr.Listen(tlsConf, &quic.Config{
		HandshakeIdleTimeout:           l.HandshakeTimeout.Duration / 2, // quic-go allows twice this for the handshake
		MaxIdleTimeout:                 l.IdleTimeout.Duration,
		MaxIncomingStreams:             int64(l.MaxStreams),
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     32 << 10,
		MaxStreamReceiveWindow:         1 << 20,
		InitialConnectionReceiveWindow: 64 << 10,
		MaxConnectionReceiveWindow:     4 << 20,
		Allow0RTT:                      false,
	})
	if err != nil {
		s.tr.Close()
		udp.Close()
		return fmt.Errorf("relay: listen %s: %w", s.cfg.Listen, err)
	}
	return nil
}

func transportKeys(key identity.PrivateKey) (*quic.StatelessResetKey, *quic.TokenGeneratorKey, error) {
	var reset quic.StatelessResetKey
	var token quic.TokenGeneratorKey
	seed := key.Ed25519().Seed()
	for _, k := range []struct {
		info string
		out  []byte
	}{{"parley relay v1 stateless reset key", reset[:]}, {"parley relay v1 token key", token[:]}} {
		if _, err := io.ReadFull(hkdf.New(sha256.New, seed, nil, []byte(k.info)), k.out); err != nil {
			return nil, nil, fmt.Errorf("relay: transport keys: %w", err)
		}
	}
	return &reset, &token, nil
}

// Addr returns the address the relay listens on, once Listen returned.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Key returns the relay's identity.
func (s *Server) Key() identity.PrivateKey { return s.key }

// Abort drops every connection at once, without a goodbye to the clients
// (no CONNECTION_CLOSE), as a killed process would; Serve then returns.
// For tests of what clients do when a relay dies.
func (s *Server) Abort() { s.tr.Close() }

// Serve serves clients until ctx ends, then shuts down gracefully: it
// stops accepting connections and requests, commits and acknowledges
// every publish it accepted, closes connections with CodeShuttingDown,
// and returns.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	commitDone := make(chan struct{})
	go func() {
		defer close(commitDone)
		s.commit(s.commits)
	}()
	if err := s.recordSync(&audit.Record{Kind: audit.KindStart, PolicyVersion: s.policy.Version(),
		Detail: fmt.Sprintf("listening on %s, policy %s", s.ln.Addr(), s.policy.Mode())}); err != nil {
		s.log.Error("audit: start record", "err", err)
	}
	var wg sync.WaitGroup
	for {
		conn, err := s.ln.Accept(ctx)
		if err != nil {
			break
		}
		wg.Go(func() { s.serveConn(ctx, conn) })
	}
	s.ln.Close()
	wg.Wait() // every handler has ended
	if err := s.recordSync(&audit.Record{Kind: audit.KindStop, PolicyVersion: s.policy.Version(), Detail: "stopped cleanly"}); err != nil {
		s.log.Error("audit: stop record", "err", err)
	}
	s.closing.Lock()
	s.closed = true
	close(s.commits) // the committer commits what is queued, then ends
	s.closing.Unlock()
	<-commitDone
	// A Transport given its socket does not close it: the port would stay
	// bound, and a relay started again in this process could not listen.
	return errors.Join(s.tr.Close(), s.udp.Close())
}

// client is one authenticated connection.
type client struct {
	id       identity.PublicKey
	fp       string
	addr     net.Addr
	conn     *quic.Conn
	admitted atomic.Bool // false: an invite-mode newcomer, which may only redeem
	log      *slog.Logger
}

func (s *Server) refuse(conn *quic.Conn, log *slog.Logger, code wire.ErrorCode, msg string) {
	s.refuseAs(conn, log, identity.PublicKey{}, code, msg)
}

// refuseAs closes conn after authentication, recording the refusal.
func (s *Server) refuseAs(conn *quic.Conn, log *slog.Logger, id identity.PublicKey, code wire.ErrorCode, msg string) {
	s.record(context.Background(), &audit.Record{Kind: audit.KindRefuse, PolicyVersion: s.policy.Version(), Identity: id,
		Addr: addrOf(conn.RemoteAddr()), Code: code, Detail: msg})
	s.metrics.refused.WithLabelValues(code.String()).Inc()
	log.Info("connection refused", "code", code.String(), "reason", msg)
	conn.CloseWithError(quic.ApplicationErrorCode(code), truncate(msg))
}

func (s *Server) serveConn(ctx context.Context, conn *quic.Conn) {
	addr := conn.RemoteAddr()
	log := s.log.With("addr", addr.String())
	state := conn.ConnectionState().TLS
	if len(state.PeerCertificates) != 1 {
		s.refuse(conn, log, wire.CodeNotAllowed, "no client certificate")
		return
	}
	id, err := relay.CertIdentity(state.PeerCertificates[0])
	if err != nil { // the TLS config checked it already
		s.refuse(conn, log, wire.CodeNotAllowed, err.Error())
		return
	}
	c := &client{id: id, fp: id.Fingerprint(), addr: addr, conn: conn, log: log.With("identity", id.Fingerprint())}
	host := addr.String()
	if ua, ok := addr.(*net.UDPAddr); ok {
		host = ua.IP.String()
	}
	if !s.addrRate.allow(host, s.now()) {
		s.refuseAs(conn, c.log, id, wire.CodeRateLimited, "too many new connections from "+host)
		return
	}
	if n := s.conns.Add(1); n > int64(s.cfg.Limits.MaxConnections) {
		s.conns.Add(-1)
		s.refuseAs(conn, c.log, id, wire.CodeTooMany, fmt.Sprintf("the relay is at its limit of %d connections", s.cfg.Limits.MaxConnections))
		return
	}
	defer s.conns.Add(-1)
	d := s.policy.Connect(id)
	switch {
	case d.Allow:
		c.admitted.Store(true)
	case d.Code == wire.CodeNotAllowed && s.policy.Mode() == wire.PolicyInvite:
		// May redeem an invite, nothing else.
	default:
		s.refuseAs(conn, c.log, id, d.Code, d.Err().(*wire.RelayError).Message)
		return
	}
	s.record(ctx, &audit.Record{Kind: audit.KindConnect, PolicyVersion: d.Version, Identity: id, Addr: addrOf(addr), Detail: d.Reason})
	s.metrics.connections.Inc()
	defer s.metrics.connections.Dec()
	s.clientsMu.Lock()
	s.clients[c] = struct{}{}
	s.clientsMu.Unlock()
	defer func() {
		s.clientsMu.Lock()
		delete(s.clients, c)
		s.clientsMu.Unlock()
	}()
	c.log.Debug("connected", "policy_version", d.Version, "decision", d.Reason)

	var wg sync.WaitGroup
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			break
		}
		wg.Go(func() { s.serveStream(ctx, c, str) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		conn.CloseWithError(quic.ApplicationErrorCode(wire.CodeShuttingDown), "the relay is shutting down")
		return
	}
	conn.CloseWithError(quic.ApplicationErrorCode(wire.CodeOK), "")
}

// deadlineWriter sets a write deadline before each write.
type deadlineWriter struct {
	str     *quic.Stream
	timeout time.Duration
}

func (w deadlineWriter) Write(b []byte) (int, error) {
	w.str.SetWriteDeadline(time.Now().Add(w.timeout))
	n, err := w.str.Write(b)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		err = &wire.RelayError{Code: wire.CodeSlowConsumer, Message: "the client did not read for " + w.timeout.String()}
	}
	return n, err
}

// Enforce applies the policy as it is now to the open connections: one
// whose identity may no longer connect (banned, taken off the allow list)
// is closed with the reason. The admin commands call it after a change.
func (s *Server) Enforce() {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	for c := range s.clients {
		d := s.policy.Connect(c.id)
		if !c.admitted.Load() && d.Code != wire.CodeBanned {
			continue // an invite-mode newcomer that may still redeem
		}
		if !d.Allow {
			c.admitted.Store(false)
			s.refuseAs(c.conn, c.log, c.id, d.Code, d.Err().(*wire.RelayError).Message)
		}
	}
}

// truncate makes msg fit an error frame: printable, at most
// wire.MaxErrorMessage bytes.
func truncate(msg string) string {
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, msg)
	if len(msg) > wire.MaxErrorMessage {
		msg = msg[:wire.MaxErrorMessage-3]
		for len(msg) > 0 && !utf8ValidEnd(msg) {
			msg = msg[:len(msg)-1]
		}
		msg += "..."
	}
	return msg
}

func utf8ValidEnd(s string) bool { return strings.ToValidUTF8(s, "\x00") == s }

// endStream ends a stream with an error: an Error frame, then the
// stream's close, and both directions reset with the code.
func (s *Server) endStream(c *client, str *quic.Stream, fw *wire.Writer, e *wire.RelayError) {
	s.metrics.dropped.WithLabelValues(e.Code.String()).Inc()
	c.log.Debug("stream ended", "code", e.Code.String(), "reason", e.Message)
	e = &wire.RelayError{Code: e.Code, Message: truncate(e.Message)}
	str.SetWriteDeadline(time.Now().Add(s.cfg.Limits.WriteTimeout.Duration))
	if fw.WriteError(e) == nil && fw.Flush() == nil {
		str.Close()
	} else {
		str.CancelWrite(quic.StreamErrorCode(e.Code))
	}
	str.CancelRead(quic.StreamErrorCode(e.Code))
}

func (s *Server) serveStream(ctx context.Context, c *client, str *quic.Stream) {
	fr := wire.NewReader(str, wire.MaxFrameBody)
	// Every write gets the write timeout: a client that stops reading
	// holds a stream for that long, never longer.
	fw := wire.NewWriter(deadlineWriter{str, s.cfg.Limits.WriteTimeout.Duration})
	// A client gets the handshake timeout to say what the stream is for,
	// and no longer once the relay shuts down.
	str.SetReadDeadline(time.Now().Add(s.cfg.Limits.HandshakeTimeout.Duration))
	stopWait := context.AfterFunc(ctx, func() { str.CancelRead(quic.StreamErrorCode(wire.CodeShuttingDown)) })
	t, body, err := fr.Next()
	if !stopWait() {
		return // shutting down: the connection closes with the code
	}
	if errors.Is(err, io.EOF) || (err != nil && isStreamEnd(err) && !errors.Is(err, io.ErrUnexpectedEOF)) {
		str.CancelRead(quic.StreamErrorCode(wire.CodeOK))
		str.Close() // an empty stream: nothing asked, nothing to say
		return
	}
	if err != nil {
		s.endStream(c, str, fw, wire.AsRelayError(err))
		return
	}
	str.SetReadDeadline(time.Time{})
	if !c.admitted.Load() && t != wire.FrameRedeem && t != wire.FrameInfoRequest {
		// The operator may have allowed the identity since it connected.
		if d := s.policy.Connect(c.id); d.Allow {
			c.admitted.Store(true)
		} else {
			s.endStream(c, str, fw, d.Err().(*wire.RelayError))
			return
		}
	}
	var rerr error
	switch t {
	case wire.FramePublish:
		s.publishStream(ctx, c, str, fr, fw, body)
		return
	case wire.FrameSubscribe:
		rerr = s.subscribeStream(ctx, c, str, fw, body)
	case wire.FrameFetchRange:
		rerr = s.fetchRange(ctx, c, fw, body)
	case wire.FrameFetchIDs:
		rerr = s.fetchIDs(ctx, c, fw, body)
	case wire.FramePeersRequest:
		rerr = s.peers(c, fw, body)
	case wire.FrameInfoRequest:
		rerr = s.info(fw, body)
	case wire.FrameRedeem:
		rerr = s.redeem(ctx, c, fw, body)
	case wire.FrameProveTree:
		rerr = s.proveTree(fw, body)
	default:
		rerr = &wire.RelayError{Code: wire.CodeBadFrame, Message: fmt.Sprintf("a stream cannot start with a %s frame", t)}
	}
	if rerr != nil && ctx.Err() == nil && (errors.Is(rerr, context.Canceled) || isStreamEnd(rerr)) {
		// The client went away (a subscription it ended, a reset).
		str.CancelRead(quic.StreamErrorCode(wire.CodeOK))
		str.CancelWrite(quic.StreamErrorCode(wire.CodeOK))
		return
	}
	if rerr != nil {
		if ctx.Err() != nil {
			rerr = &wire.RelayError{Code: wire.CodeShuttingDown, Message: "the relay is shutting down"}
		}
		s.endStream(c, str, fw, wire.AsRelayError(rerr))
		return
	}
	str.SetWriteDeadline(time.Now().Add(s.cfg.Limits.WriteTimeout.Duration))
	if err := fw.Flush(); err != nil {
		str.CancelWrite(quic.StreamErrorCode(wire.CodeSlowConsumer))
	} else {
		str.Close()
	}
	str.CancelRead(quic.StreamErrorCode(wire.CodeOK))
}

// publishStream takes publishes from a stream, pipelined: the client may
// send many before the first acknowledgement, and gets each Ack (after
// the commit) or Nack in the order it sent them.
func (s *Server) publishStream(ctx context.Context, c *client, str *quic.Stream, fr *wire.Reader, fw *wire.Writer, first []byte) {
	inflight := make(chan *pending, maxBatch)
	writeErr := make(chan error, 1)
	go func() { writeErr <- s.acks(str, fw, inflight) }()
	// At shutdown, stop reading: what was read is still committed and
	// acknowledged.
	stop := context.AfterFunc(ctx, func() { str.CancelRead(quic.StreamErrorCode(wire.CodeShuttingDown)) })
	defer stop()
	// A bigger buffer than other streams get, so that a pipelining
	// client's publishes are read, and their signatures checked, many at
	// a time.
	fr.Resize(str, publishBuffer)
	var end *wire.RelayError
	raws := [][]byte{bytes.Clone(first)}
	for end == nil {
		// Take every publish already here, then check them together.
		for end == nil && len(raws) < maxVerifyBatch && fr.Buffered() {
			raw, err := nextPublish(fr)
			if err != nil {
				end = err
				break
			}
			raws = append(raws, raw)
		}
		for _, p := range s.acceptAll(ctx, c, raws) {
			inflight <- p
		}
		raws = raws[:0]
		if end != nil {
			break
		}
		raw, err := nextPublish(fr)
		if err != nil {
			end = err
			break
		}
		raws = append(raws, raw)
	}
	if end != nil && end.Code == wire.CodeOK {
		end = nil
	}
	close(inflight)
	if err := <-writeErr; err != nil {
		s.metrics.dropped.WithLabelValues(wire.CodeSlowConsumer.String()).Inc()
		str.CancelWrite(quic.StreamErrorCode(wire.CodeSlowConsumer))
		str.CancelRead(quic.StreamErrorCode(wire.CodeSlowConsumer))
		return
	}
	if end != nil {
		s.endStream(c, str, fw, end)
		return
	}
	str.Close()
}

const (
	// publishBuffer is the read buffer of a publish stream: about 24
	// envelopes of a few hundred bytes.
	publishBuffer = 8 << 10
	// maxVerifyBatch is the most publishes checked in one batch.
	maxVerifyBatch = 64
)

// nextPublish reads the next frame of a publish stream and returns a copy
// of its body. At the stream's end it returns an error with CodeOK; a
// frame that is not a publish, or a broken one, gets the error to send.
func nextPublish(fr *wire.Reader) ([]byte, *wire.RelayError) {
	t, b, err := fr.Next()
	switch {
	case err != nil && isStreamEnd(err):
		return nil, &wire.RelayError{Code: wire.CodeOK}
	case err != nil:
		return nil, wire.AsRelayError(err)
	case t != wire.FramePublish:
		return nil, &wire.RelayError{Code: wire.CodeBadFrame, Message: fmt.Sprintf("%s frame on a publish stream", t)}
	}
	return bytes.Clone(b), nil
}

// shallow runs f on a goroutine of its own and waits for it. A store read
// goes deep into SQLite; on a subscription's own goroutine, which lives
// as long as the subscription, the stack it grows would stay.
func shallow[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		v, err = f()
	}()
	<-done
	return v, err
}

// isStreamEnd reports whether err is the client ending or resetting the
// stream, or the relay stopping reads at shutdown: no error to report.
func isStreamEnd(err error) bool {
	var se *quic.StreamError
	var ae *quic.ApplicationError
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &se) || errors.As(err, &ae)
}

// acks writes the answer to each publish in order, flushing whenever no
// answer is waiting.
func (s *Server) acks(str *quic.Stream, fw *wire.Writer, inflight <-chan *pending) error {
	var werr error
	var (
		lastCheckpoint []byte           // the checkpoint of the previous receipt on this stream
		lastProof      tlog.RecordProof // and its whole proof
		proof          [][32]byte       // the hashes a receipt sends, reused
		body           []byte           // an Ack's body, reused
		receipt        wire.Receipt
	)
	for p := range inflight {
		res := <-p.done
		if werr != nil {
			continue // drain: the senders' channels are buffered
		}
		if res.err == nil && res.app.Result == store.Equivocation {
			res.err = &wire.RelayError{Code: wire.CodeEquivocation,
				Message: "another envelope of this sender has the same room and sequence number; it is kept as evidence"}
		}
		if res.err != nil {
			nack := &wire.Nack{ID: p.rec.ID, Err: *wire.AsRelayError(res.err)}
			nack.Err.Message = truncate(nack.Err.Message)
			s.metrics.publishes.WithLabelValues(nack.Err.Code.String()).Inc()
			werr = fw.Msg(wire.FrameNack, nack)
		} else {
			status, counter := wire.AckStored, s.metrics.publishStored
			if res.app.Result == store.Duplicate {
				status, counter = wire.AckDuplicate, s.metrics.publishDuplicate
			}
			counter.Inc()
			ack := wire.Ack{ID: p.rec.ID, Status: status, Pos: uint64(res.app.Pos), Time: res.time}
			if a := res.audited; a != nil {
				receipt = wire.Receipt{Index: uint64(a.index), Time: a.record.Time, PolicyVersion: a.record.PolicyVersion}
				if !bytes.Equal(a.signed, lastCheckpoint) {
					receipt.Checkpoint = a.signed // else the same as the previous receipt's
					lastCheckpoint = a.signed
				}
				// The hashes this proof ends with that the previous one
				// ended with too are not sent again.
				full := a.proof
				k := 0
				for k < len(full) && k < len(lastProof) && full[len(full)-1-k] == lastProof[len(lastProof)-1-k] {
					k++
				}
				proof = proof[:0]
				for _, h := range full[:len(full)-k] {
					proof = append(proof, h)
				}
				receipt.Proof, receipt.Shared, lastProof = proof, uint8(k), full
				ack.Receipt = &receipt
			}
			var err error
			if body, err = ack.AppendBinary(body[:0]); err != nil {
				werr = err
			} else {
				werr = fw.Raw(wire.FrameAck, body)
			}
		}
		if werr == nil && len(inflight) == 0 {
			str.SetWriteDeadline(time.Now().Add(s.cfg.Limits.WriteTimeout.Duration))
			werr = fw.Flush()
		}
	}
	if werr == nil {
		str.SetWriteDeadline(time.Now().Add(s.cfg.Limits.WriteTimeout.Duration))
		werr = fw.Flush()
	}
	return werr
}

func refused(code wire.ErrorCode, format string, args ...any) *pending {
	p := &pending{done: make(chan committed, 1)}
	p.done <- committed{err: &wire.RelayError{Code: code, Message: fmt.Sprintf(format, args...)}}
	return p
}

// acceptAll checks publishes of one stream, their signatures in one
// batch, and queues each that passes for the committer, in order. The
// pendings it returns answer the client either way.
func (s *Server) acceptAll(ctx context.Context, c *client, raws [][]byte) []*pending {
	envs := make([]*protocol.Envelope, len(raws))
	errs := make([]error, len(raws))
	var (
		parsed []*protocol.Envelope
		at     []int // parsed[j] is envs[at[j]]
	)
	for i, raw := range raws {
		if len(raw) > s.cfg.Limits.MaxEnvelope {
			continue // accept says so
		}
		if envs[i], errs[i] = protocol.Parse(raw); errs[i] == nil {
			parsed = append(parsed, envs[i])
			at = append(at, i)
		}
	}
	if bad := protocol.VerifyBatch(parsed); bad != nil {
		for j, err := range bad {
			if err != nil {
				envs[at[j]], errs[at[j]] = nil, err
			}
		}
	}
	out := make([]*pending, len(raws))
	var queue []*pending
	for i, raw := range raws {
		var ok bool
		if out[i], ok = s.accept(ctx, c, raw, envs[i], errs[i]); ok {
			queue = append(queue, out[i])
		}
	}
	if n, err := s.enqueue(ctx, queue); err != nil {
		for _, p := range queue[n:] {
			p.done <- committed{err: &wire.RelayError{Code: wire.CodeShuttingDown, Message: "the relay is shutting down"}}
		}
	}
	return out
}

// accept takes one published envelope, with what parsing and verifying it
// gave, and checks it against the relay's rules. The pending it returns
// answers the client either way; queue says it passed, and is for the
// committer.
func (s *Server) accept(ctx context.Context, c *client, raw []byte, env *protocol.Envelope, err error) (p *pending, queue bool) {
	id := protocol.IDOf(raw)
	nack := func(code wire.ErrorCode, format string, args ...any) (*pending, bool) {
		p := refused(code, format, args...)
		p.rec.ID = id
		return p, false
	}
	if len(raw) > s.cfg.Limits.MaxEnvelope {
		return nack(wire.CodeTooLarge, "envelope of %d bytes, limit %d", len(raw), s.cfg.Limits.MaxEnvelope)
	}
	switch {
	case errors.Is(err, protocol.ErrUnknownVersion):
		return nack(wire.CodeUnsupported, "%v", err)
	case errors.Is(err, protocol.ErrTooLarge):
		return nack(wire.CodeTooLarge, "%v", err)
	case err != nil:
		return nack(wire.CodeBadEnvelope, "%v", err)
	}
	if !env.Sender.Equal(c.id) {
		return nack(wire.CodeNotSender, "the envelope is signed by %s, the connection is %s", env.Sender.Fingerprint(), c.fp)
	}
	d := s.policy.post(c.fp, env.Room)
	if !d.Allow {
		s.record(ctx, &audit.Record{Kind: audit.KindPublishRefused, PolicyVersion: d.Version, Identity: c.id, Message: id,
			Size: uint32(len(raw)), Room: env.Room, Addr: addrOf(c.addr), Code: d.Code, Detail: d.Reason})
		return nack(d.Code, "%s (policy version %d)", d.Reason, d.Version)
	}
	now := s.now()
	if !s.policy.admin(c.fp) && !s.idRates.allow(c.fp, now) {
		return nack(wire.CodeRateLimited, "over %g envelopes per second", s.cfg.Limits.PublishRate)
	}
	if skew := time.Duration(now.UnixMilli()-env.Time) * time.Millisecond; skew > s.cfg.Limits.Skew.Duration || -skew > s.cfg.Limits.Skew.Duration {
		return nack(wire.CodeStale, "the envelope's time is %s from the relay's clock, limit %s", skew.Round(time.Millisecond), s.cfg.Limits.Skew.Duration)
	}
	if s.bridge != nil {
		s.bridge.Join(env.Room)
	}
	return &pending{rec: store.Record{ID: id, Env: env, Raw: raw, Via: viaRelay, Received: now}, policy: d.Version, done: make(chan committed, 1)}, true
}

// subscribeStream sends a room's envelopes after the cursor, then Live,
// then each new one as it is committed: no gap and no duplicate at the
// switch, because the subscription is registered before history is read
// and every live record at or below the last position sent is skipped.
func (s *Server) subscribeStream(ctx context.Context, c *client, str *quic.Stream, fw *wire.Writer, body []byte) error {
	m, err := wire.ParseSubscribe(body)
	if err != nil {
		return err
	}
	if d := s.policy.Read(c.id, m.Room); !d.Allow {
		return d.Err()
	}
	if s.bridge != nil {
		s.bridge.Join(m.Room)
	}
	sub := s.hub.subscribe(m.Room)
	defer s.hub.unsubscribe(sub)
	s.metrics.subscriptions.Inc()
	defer s.metrics.subscriptions.Dec()
	// The client ends a subscription by stopping to read (STOP_SENDING),
	// which cancels the stream's context, as a closed connection does. No
	// goroutine waits on the stream's read side: an idle subscription costs
	// one goroutine, this one.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(str.Context(), cancel)
	defer stop()

	var pos int64
	if m.Cursor != (protocol.ID{}) {
		room, p, err := s.st.Position(ctx, m.Cursor)
		if errors.Is(err, store.ErrNotFound) || (err == nil && room != m.Room) {
			return &wire.RelayError{Code: wire.CodeUnknownCursor, Message: fmt.Sprintf("no envelope %s in room %s", m.Cursor, m.Room)}
		}
		if err != nil {
			return err
		}
		pos = p
	}
	// sent are the live envelopes sent before their commit; a Committed
	// frame confirms them once the disk has them.
	type sentRec struct {
		pos int64
		id  protocol.ID
	}
	var sent []sentRec
	write := func(recs []store.Record, live bool) error {
		for _, r := range recs {
			if r.Pos <= pos {
				continue
			}
			if err := fw.Raw(wire.FrameEnvelope, r.Raw); err != nil {
				return err
			}
			pos = r.Pos
			if live {
				sent = append(sent, sentRec{r.Pos, r.ID})
			}
		}
		return nil
	}
	confirm := func(upTo int64) error {
		i := -1
		for j, r := range sent {
			if r.pos > upTo {
				break
			}
			i = j
		}
		if i < 0 {
			return nil
		}
		id := sent[i].id
		sent = sent[i+1:]
		return fw.Msg(wire.FrameCommitted, &wire.Committed{ID: id})
	}
	flush := func() error {
		return fw.Flush() // a timeout is a RelayError with CodeSlowConsumer (deadlineWriter)
	}
	// catchUp reads the store past the last position sent. What it reads
	// is committed, and so is everything sent before it.
	// failed: a commit failed after its envelopes went out, perhaps to
	// this subscription. Nothing more goes out, not even a Committed frame
	// for a later envelope, which would confirm those.
	failed := func() error {
		if sub.failed.Load() {
			return &wire.RelayError{Code: wire.CodeInternal, Message: "the relay failed to store envelopes it had sent; resume from the last committed one"}
		}
		return nil
	}
	catchUp := func() error {
		if err := failed(); err != nil {
			return err
		}
		for {
			page, err := shallow(func() ([]store.Record, error) {
				return s.st.After(ctx, m.Room, pos, wire.MaxFetchLimit)
			})
			if err != nil {
				return err
			}
			if err := write(page, false); err != nil {
				return err
			}
			if len(page) > 0 {
				sent = sent[:0]
				if err := fw.Msg(wire.FrameCommitted, &wire.Committed{ID: page[len(page)-1].ID}); err != nil {
					return err
				}
			}
			if err := flush(); err != nil {
				return err
			}
			if len(page) < wire.MaxFetchLimit {
				return nil
			}
		}
	}
	if err := catchUp(); err != nil {
		return err
	}
	if err := fw.Raw(wire.FrameLive, nil); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	// behind: the hub dropped envelopes this subscription has not sent;
	// the store has them once they are committed.
	behind := func() bool { return sub.dropped.Load() > pos }
	// live sends a batch from the hub, after what was dropped before it.
	// While that is not committed yet (envelopes go live before their
	// commit), the batch cannot go first: it is dropped too, and comes
	// from the store after them.
	live := func(batch []store.Record) error {
		if err := failed(); err != nil {
			return err
		}
		if behind() {
			if err := catchUp(); err != nil {
				return err
			}
		}
		if behind() {
			sub.drop(batch[len(batch)-1].Pos)
			return nil
		}
		return write(batch, true)
	}
	for {
		select {
		case batch := <-sub.ch:
			if err := live(batch); err != nil {
				return err
			}
			if len(sub.ch) == 0 {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-sub.commit:
			if err := failed(); err != nil {
				return err
			}
			if behind() {
				if err := catchUp(); err != nil {
					return err
				}
			}
			// The committed batch may still be queued: send it first, so
			// that the Committed frame covers it.
			for !sub.lagging.Load() && len(sub.ch) > 0 {
				if err := live(<-sub.ch); err != nil {
					return err
				}
			}
			if err := confirm(sub.upTo.Load()); err != nil {
				return err
			}
			if len(sub.ch) == 0 {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-sub.lagged:
			// The queue holds what came before the first dropped batch:
			// send it, take new batches again, and read the store for
			// what was dropped (now, and at each commit until done).
			for len(sub.ch) > 0 {
				if err := live(<-sub.ch); err != nil {
					return err
				}
			}
			sub.lagging.Store(false)
			if err := catchUp(); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *Server) fetchRange(ctx context.Context, c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParseFetchRange(body)
	if err != nil {
		return err
	}
	if d := s.policy.Read(c.id, m.Room); !d.Allow {
		return d.Err()
	}
	recs, err := s.st.Range(ctx, m.Room, m.Since, m.Until, store.Cursor{Time: m.Since, ID: m.After}, int(m.Limit)+1)
	if err != nil {
		return err
	}
	more := len(recs) > int(m.Limit)
	if more {
		recs = recs[:m.Limit]
	}
	for _, r := range recs {
		if err := fw.Raw(wire.FrameEnvelope, r.Raw); err != nil {
			return err
		}
	}
	return fw.Msg(wire.FrameEnd, &wire.End{More: more})
}

func (s *Server) fetchIDs(ctx context.Context, c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParseFetchIDs(body)
	if err != nil {
		return err
	}
	for _, id := range m.IDs {
		r, err := s.st.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if !s.policy.Read(c.id, r.Env.Room).Allow {
			continue // as if absent: which IDs exist in a closed room is not told
		}
		if err := fw.Raw(wire.FrameEnvelope, r.Raw); err != nil {
			return err
		}
	}
	return fw.Msg(wire.FrameEnd, &wire.End{})
}

func (s *Server) peers(c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParsePeersRequest(body)
	if err != nil {
		return err
	}
	if d := s.policy.Read(c.id, m.Room); !d.Allow {
		return d.Err()
	}
	var addrs []string
	if s.bridge != nil {
		s.bridge.Join(m.Room)
		addrs = s.bridge.Peers(m.Room)
	}
	if len(addrs) > wire.MaxPeerAddrs {
		addrs = addrs[:wire.MaxPeerAddrs]
	}
	return fw.Msg(wire.FramePeers, &wire.Peers{Addrs: addrs})
}

// Info describes this relay.
func (s *Server) Info() *wire.Info {
	l := s.cfg.Limits
	return &wire.Info{
		Versions:      []uint8{protocol.Version},
		MaxEnvelope:   uint32(l.MaxEnvelope),
		PublishRate:   uint32(math.Round(l.PublishRate)),
		PublishBurst:  uint32(l.PublishBurst),
		RetentionDays: uint32(math.Ceil(s.cfg.Retention.MaxAge.Hours() / 24)),
		Policy:        s.policy.Mode(),
		PolicyVersion: s.policy.Version(),
	}
}

func (s *Server) info(fw *wire.Writer, body []byte) error {
	if len(body) != 0 {
		return &wire.RelayError{Code: wire.CodeBadFrame, Message: "info request with a body"}
	}
	return fw.Msg(wire.FrameInfo, s.Info())
}

func (s *Server) redeem(ctx context.Context, c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParseRedeem(body)
	if err != nil {
		return err
	}
	if err := s.policy.Redeem(ctx, c.id, m.Token); err != nil {
		return err
	}
	c.log.Info("invite redeemed", "policy_version", s.policy.Version())
	c.admitted.Store(true)
	return fw.Raw(wire.FrameRedeemed, nil)
}

// limiters are token buckets by key (an identity, an address). Buckets
// that have refilled are dropped when the table grows, so it stays bounded
// by the keys active within a refill time.
type limiters struct {
	mu    sync.Mutex
	m     map[string]*rate.Limiter
	r     rate.Limit
	burst int
}

const maxLimiters = 1 << 16

func newLimiters(r rate.Limit, burst int) *limiters {
	return &limiters{m: map[string]*rate.Limiter{}, r: r, burst: burst}
}

func (l *limiters) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		if len(l.m) >= maxLimiters {
			for k, v := range l.m {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.m, k)
				}
			}
		}
		if len(l.m) >= maxLimiters {
			return false // every bucket is in use: refuse rather than grow
		}
		lim = rate.NewLimiter(l.r, l.burst)
		l.m[key] = lim
	}
	return lim.AllowN(now, 1)
}

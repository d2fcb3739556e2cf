package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/roster"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/hkdf"
	"golang.org/x/sync/semaphore"
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
	// Changes returns the member-list changes of a private room, in
	// resolution order.
	Changes(ctx context.Context, room string) ([]store.Record, error)
	// PutKeyPackage stores an identity's key package if it is newer
	// than the one stored, else returns store.ErrStaleKeyPackage;
	// KeyPackages returns those of keys not expired at now (keys.go).
	PutKeyPackage(ctx context.Context, key identity.PublicKey, created, expires int64, raw []byte) error
	KeyPackages(ctx context.Context, keys []identity.PublicKey, now time.Time) ([][]byte, error)
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
	// Rosters holds the member lists of private rooms, which the relay
	// judges their envelopes and readers by; the relay's mesh node must
	// share it (mesh.Config.Rosters). nil: the server makes its own
	// (Server.Rosters returns it).
	Rosters *roster.Book
}

// Server is a relay: a QUIC listener, the policy, the store and the hub.
type Server struct {
	// cfg is the config the relay started with; its Limits are read
	// from limits instead, which Reload replaces.
	cfg    Config
	limits atomic.Pointer[Limits]
	key    identity.PrivateKey
	// versions are the relay protocol versions it speaks (tests set
	// others before Start).
	versions wire.Versions
	st       Storage
	policy   *Policy
	log      *slog.Logger
	metrics  *metrics
	now      func() time.Time
	hub      *hub
	seq      *sequencer
	bridge   Bridge
	// private has the member lists of private rooms (private.go).
	private *privateRooms
	// memberWait bounds a publish's wait for the member-list change it
	// names; onMemberWait, if set (by tests, before Serve), is called
	// when a publish starts to wait.
	memberWait   time.Duration
	onMemberWait func(room string, missing protocol.ID)
	// audit is the tamper-evident log, nil when auditing is off;
	// auditReader reads its committed hashes.
	audit       *audit.Log
	auditReader audit.Reader

	udp net.PacketConn // the socket tr reads, which tr does not close
	tr  *quic.Transport
	ln  *quic.Listener
	tcp *transport.TCPListener // nil: QUIC only (listen_tcp = "off")
	// bindTCP binds the TCP listener (tests wrap it, before Listen, to
	// hold the port it is about to bind).
	bindTCP func(addr string, conf *tls.Config, opts func() transport.ListenOptions) (*transport.TCPListener, error)

	clientsMu sync.Mutex
	clients   map[*client]struct{} // admitted connections, to apply policy changes to

	// The committer's queues: commits has the audit records of events
	// that store nothing else, envs the envelopes, in the order of their
	// positions (sequence.go). A sender of envelopes takes a slot of
	// envSlots for each first, so that the sequencer never waits for
	// room in envs while it holds its lock.
	commits  chan *pending
	envs     chan *pending
	envSlots *semaphore.Weighted
	closing  sync.RWMutex // held to send on commits or envs outside a connection
	closed   bool         // commits and envs are closed
	readers  *readers     // the subscriptions' store reads, while serving
	conns    *openConns
	refusals *refusalGate
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
	s := &Server{
		cfg: o.Config, key: o.Key, st: st, policy: pol, audit: log, auditReader: o.Store, log: o.Log, metrics: m, now: o.Now, versions: wire.Current,
		hub:        newHub(l.QueueSize),
		seq:        seq,
		private:    newPrivateRooms(o.Rosters),
		memberWait: memberWait,
		bindTCP:    transport.ListenTCP,
		clients:    map[*client]struct{}{},
		commits:    make(chan *pending, 4*maxBatch),
		envs:       make(chan *pending, maxQueued),
		envSlots:   semaphore.NewWeighted(maxQueued),
		conns:      newOpenConns(),
		refusals:   newRefusalGate(),
		idRates:    newLimiters(rate.Limit(l.PublishRate), l.PublishBurst),
		addrRate:   newLimiters(rate.Limit(l.AddrRate), l.AddrBurst),
		retry:      rate.NewLimiter(rate.Limit(l.RetryAbove), l.RetryAbove),
	}
	s.limits.Store(&l)
	return s, nil
}

// lim returns the limits in force. Read it once per decision: a reload
// may replace it between two calls.
func (s *Server) lim() *Limits { return s.limits.Load() }

// setLimits puts l in force: for what is decided from now on (publishes,
// new connections and streams, write deadlines), the token buckets of
// identities and addresses included; QUIC's own settings (idle and
// handshake timeouts, streams per connection) apply to connections made
// from now on.
func (s *Server) setLimits(l Limits) {
	now := s.now()
	s.idRates.set(rate.Limit(l.PublishRate), l.PublishBurst, now)
	s.addrRate.set(rate.Limit(l.AddrRate), l.AddrBurst, now)
	s.retry.SetLimitAt(now, rate.Limit(l.RetryAbove))
	s.retry.SetBurstAt(now, l.RetryAbove)
	s.hub.setSize(l.QueueSize)
	s.limits.Store(&l)
}

// Policy returns the relay's policy, for admin commands.
func (s *Server) Policy() *Policy { return s.policy }

// SetBridge connects the relay to the mesh; call it before Serve.
func (s *Server) SetBridge(b Bridge) { s.bridge = b }

// Ingest queues an envelope that came from the mesh (already verified by
// the mesh node) for the committer, which stores it and hands it to the
// relay's subscribers; a duplicate is dropped there. It does not wait for
// the commit, so mesh traffic gets group commit too. An envelope of a
// private room is judged by the room's member list first, as a publish
// is: one it refuses, or one that names a change the relay does not
// have, is dropped (the mesh's sync brings the latter again).
func (s *Server) Ingest(ctx context.Context, env *protocol.Envelope, id protocol.ID, raw []byte) error {
	if protocol.IsPrivateRoom(env.Room) && !s.judgeIngest(ctx, env, id) {
		return nil
	}
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

// Listen binds the QUIC listener on the configured address, and the TCP
// one: by default on the same port number, so that one address names
// both.
func (s *Server) Listen() error {
	tlsConf, err := relay.ServerTLSVersions(s.key, s.versions)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		if err := s.listenQUIC(tlsConf); err != nil {
			return err
		}
		err := s.listenTCP(tlsConf)
		if err == nil {
			return nil
		}
		s.tr.Close()
		s.udp.Close()
		// Any port will do (port 0), and the kernel gave QUIC one whose
		// number some other socket holds on TCP: the promise is one
		// number for both, so take another pair rather than fail.
		if !s.anyPort() || !errors.Is(err, syscall.EADDRINUSE) || attempt == portAttempts {
			return err
		}
	}
}

// portAttempts bounds how many port numbers Listen tries, on port 0,
// for one that is free on both UDP and TCP.
const portAttempts = 16

// anyPort reports whether the relay listens on a port the kernel picks,
// with TCP on the same number.
func (s *Server) anyPort() bool {
	_, port, err := net.SplitHostPort(s.cfg.Listen)
	return err == nil && (port == "0" || port == "") && s.cfg.ListenTCP == ""
}

// listenTCP binds the TCP listener, unless listen_tcp is off.
func (s *Server) listenTCP(tlsConf *tls.Config) error {
	if s.cfg.ListenTCP == ListenTCPOff {
		return nil
	}
	addr := s.cfg.ListenTCP
	if addr == "" {
		host, _, _ := net.SplitHostPort(s.cfg.Listen)
		addr = net.JoinHostPort(host, strconv.Itoa(s.udp.LocalAddr().(*net.UDPAddr).Port))
	}
	tcp, err := s.bindTCP(addr, tlsConf, s.tcpOptions)
	if err != nil {
		return fmt.Errorf("relay: listen on TCP %s: %w", addr, err)
	}
	s.tcp = tcp
	return nil
}

// tcpOptions are the TCP side of the limits in force.
func (s *Server) tcpOptions() transport.ListenOptions {
	l := s.lim()
	return transport.ListenOptions{
		TCPOptions:       transport.TCPOptions{KeepAlive: l.IdleTimeout.Duration / 2, MaxStreams: l.MaxStreams},
		HandshakeTimeout: l.HandshakeTimeout.Duration,
	}
}

func (s *Server) listenQUIC(tlsConf *tls.Config) error {
	udp, err := net.ListenPacket("udp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("relay: listen %s: %w", s.cfg.Listen, err)
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
	qc := quicConfig(s.lim())
	// Each new connection gets the limits in force when it arrives.
	qc.GetConfigForClient = func(*quic.ClientInfo) (*quic.Config, error) { return quicConfig(s.lim()), nil }
	s.ln, err = s.tr.Listen(tlsConf, qc)
	if err != nil {
		s.tr.Close()
		udp.Close()
		return fmt.Errorf("relay: listen %s: %w", s.cfg.Listen, err)
	}
	return nil
}

// acceptQUIC serves the connections that come over QUIC until ctx ends
// or the listener is closed.
func (s *Server) acceptQUIC(ctx context.Context, wg *sync.WaitGroup) {
	for {
		conn, err := s.ln.Accept(ctx)
		if err != nil {
			return
		}
		wg.Go(func() { s.serveConn(ctx, transport.FromQUIC(conn)) })
	}
}

// acceptTCP serves the connections that come over TCP until ctx ends or
// the listener is closed.
func (s *Server) acceptTCP(ctx context.Context, wg *sync.WaitGroup) {
	for {
		conn, err := s.tcp.Accept(ctx)
		if err != nil {
			return
		}
		wg.Go(func() { s.serveConn(ctx, conn) })
	}
}

// quicConfig is the QUIC side of limits l.
func quicConfig(l *Limits) *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           l.HandshakeTimeout.Duration / 2, // quic-go allows twice this for the handshake
		MaxIdleTimeout:                 l.IdleTimeout.Duration,
		MaxIncomingStreams:             int64(l.MaxStreams),
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     32 << 10,
		MaxStreamReceiveWindow:         1 << 20,
		InitialConnectionReceiveWindow: 64 << 10,
		MaxConnectionReceiveWindow:     4 << 20,
		Allow0RTT:                      false,
	}
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

// TCPAddr returns the address the relay listens on over TCP, nil if it
// does not.
func (s *Server) TCPAddr() net.Addr {
	if s.tcp == nil {
		return nil
	}
	return s.tcp.Addr()
}

// Key returns the relay's identity.
func (s *Server) Key() identity.PrivateKey { return s.key }

// Abort drops every connection at once, without a goodbye to the clients
// (no CONNECTION_CLOSE), as a killed process would; Serve then returns.
// For tests of what clients do when a relay dies.
func (s *Server) Abort() {
	s.tr.Close()
	if s.tcp != nil {
		s.tcp.Abort()
	}
}

// listening says where the relay listens, for its start record.
func (s *Server) listening() string {
	if s.tcp == nil {
		return s.ln.Addr().String() + " (QUIC)"
	}
	return fmt.Sprintf("%s (QUIC) and %s (TCP)", s.ln.Addr(), s.tcp.Addr())
}

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
		s.commit(s.commits, s.envs)
	}()
	s.readers = startReaders(numReaders())
	indexDone := s.startMemberIndex(ctx) // rooms.go
	if err := s.recordSync(&audit.Record{Kind: audit.KindStart, PolicyVersion: s.policy.Version(),
		Detail: fmt.Sprintf("listening on %s, policy %s", s.listening(), s.policy.Mode())}); err != nil {
		s.log.Error("audit: start record", "err", err)
	}
	var wg sync.WaitGroup
	quicDone := make(chan struct{}) // ctx ended, or Abort
	wg.Go(func() {
		defer close(quicDone)
		s.acceptQUIC(ctx, &wg)
	})
	if s.tcp != nil {
		wg.Go(func() { s.acceptTCP(ctx, &wg) })
	}
	<-quicDone
	s.ln.Close()
	if s.tcp != nil {
		s.tcp.Close()
	}
	wg.Wait() // every handler has ended
	indexDone()
	s.readers.stop()
	if err := s.recordSync(&audit.Record{Kind: audit.KindStop, PolicyVersion: s.policy.Version(), Detail: "stopped cleanly"}); err != nil {
		s.log.Error("audit: stop record", "err", err)
	}
	s.closing.Lock()
	s.closed = true
	close(s.commits) // the committer commits what is queued, then ends
	close(s.envs)
	s.closing.Unlock()
	<-commitDone
	// A Transport given its socket does not close it: the port would stay
	// bound, and a relay started again in this process could not listen.
	return errors.Join(s.tr.Close(), s.udp.Close())
}

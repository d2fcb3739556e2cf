package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/multiformats/go-multiaddr"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/roster"
	"github.com/parleychat/parley/store"
)

// Node is one Parley peer on the mesh.
type Node struct {
	cfg       Config
	host      host.Host
	ps        *pubsub.PubSub
	dht       *dht.IpfsDHT
	store     *store.Store
	guard     protocol.ReplayGuard
	verifier  protocol.Verifier // keeps the expanded keys of the rooms' senders
	sums      summaryCache      // anti-entropy's summaries, with their stamps
	metrics   *metrics
	log       *slog.Logger
	limits    *peerLimits
	senders   *senderLimits
	seen      *seenIDs
	mesh      meshView
	pens      penalties
	topics    topicCap
	repairs   *repairs
	rosters   *roster.Book
	relays    *relaySet
	punches   *punches
	circuit   *relayv2.Relay // nil unless Config.Circuit
	follows   *follows
	feedSlots feedSlots
	// legacy makes the node behave as a peer from before private rooms,
	// which knows only text envelopes: the upgrade tests set it.
	legacy bool

	// The sync requests served at once, in all and by peer (takeSyncSlot).
	syncMu      sync.Mutex
	syncServing int
	syncOfPeer  map[peer.ID]int

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	evidenceQ chan equivocation

	mu     sync.Mutex
	rooms  map[string]*Room
	closed bool

	// unhook takes off the host what the node put on it (stream handlers,
	// notifiees), at Close. The host is closed after, but a closed host
	// can stay reachable: mocknet's peers keep their old links to a
	// stopped peer, and the links its network. With the node's notifiees
	// on that network, the whole node, its gossipsub and its queues stayed
	// in memory with it (sim's TestStoppedNodeIsFreed).
	unhook []func()

	scoreMu sync.Mutex
	scores  map[peer.ID]float64
}

// New starts a node: the libp2p host, gossipsub, discovery and the sync
// service. It restores the replay state from the store first, so that no
// envelope stored before a restart is accepted again. Close stops it.
func New(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("mesh: metrics: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{
		cfg:        cfg,
		store:      cfg.Store,
		guard:      protocol.ReplayGuard{Skew: cfg.skew(), Now: cfg.Now},
		metrics:    m,
		log:        log,
		seen:       newSeenIDs(seenSize),
		syncOfPeer: map[peer.ID]int{},
		rooms:      make(map[string]*Room),
		scores:     make(map[peer.ID]float64),
		evidenceQ:  make(chan equivocation, 64),
		repairs:    newRepairs(),
		rosters:    cfg.rosters(),
		relays:     newRelaySet(),
		punches:    newPunches(cfg.OnHolePunch, m),
		follows:    newFollows(),
	}
	// Every clock of the node is the one in n.cfg.
	n.limits = newPeerLimits(syncRate, syncBurst, n.cfg.now)
	n.senders = newSenderLimits(cfg.senderRate(), cfg.senderBurst(), maxSenders, n.cfg.now)
	n.pens.now = n.cfg.now
	if err := cfg.Store.RestoreReplay(ctx, &n.guard); err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	bootstrap, err := parseAddrs(cfg.Bootstrap)
	if err != nil {
		return nil, err
	}
	if n.host, err = hostFor(&cfg, n.punches, n.relays); err != nil {
		return nil, err
	}
	n.unhook = append(n.unhook, n.punches.attach(n.host.Network()))
	n.ctx, n.cancel = context.WithCancel(context.Background())
	fail := func(err error) (*Node, error) {
		n.cancel()
		if n.dht != nil {
			n.dht.Close()
		}
		if n.circuit != nil {
			n.circuit.Close()
		}
		n.host.Close()
		return nil, err
	}
	if err := n.startRelaying(); err != nil {
		return fail(err)
	}

	psOpts := n.pubsubOptions()
	if cfg.DHT {
		n.dht, err = dht.New(n.host,
			dht.ProtocolPrefix("/parley"),
			dht.Mode(dht.ModeServer),
			dht.BootstrapPeers(bootstrap...),
		)
		if err != nil {
			return fail(fmt.Errorf("mesh: DHT: %w", err))
		}
		psOpts = append(psOpts, pubsub.WithDiscovery(drouting.NewRoutingDiscovery(n.dht)))
	}
	n.ps, err = pubsub.NewGossipSub(n.ctx, n.host, psOpts...)
	if err != nil {
		return fail(fmt.Errorf("mesh: gossipsub: %w", err))
	}
	if err := n.serveStreams(); err != nil {
		return fail(err)
	}
	n.wg.Add(3)
	go n.prune()
	go n.keepEvidence()
	go n.keepRooms()
	if len(bootstrap) > 0 {
		n.AddPeers(bootstrap...)
	}
	if n.dht != nil {
		if err := n.dht.Bootstrap(n.ctx); err != nil {
			return fail(fmt.Errorf("mesh: DHT bootstrap: %w", err))
		}
	}
	if cfg.MDNS {
		if err := n.startMDNS(); err != nil {
			return fail(err)
		}
	}
	return n, nil
}

// check reports what makes c unusable.
func (c *Config) check() error {
	if c.Key.IsZero() {
		return errors.New("mesh: no identity key")
	}
	if c.Store == nil {
		return errors.New("mesh: no store")
	}
	if c.Circuit != nil {
		if c.AutoRelay {
			return errors.New("mesh: a circuit relay does not reserve slots on relays itself")
		}
		if err := c.Circuit.Check(); err != nil {
			return err
		}
	}
	_, err := parseAddrs(c.Relays)
	return err
}

// startRelaying makes the node use its configured relays and, if it is
// one, serve as a circuit relay.
func (n *Node) startRelaying() error {
	if len(n.cfg.Relays) > 0 {
		if err := n.AddRelay(n.cfg.Relays); err != nil {
			return err
		}
	}
	if n.cfg.Circuit == nil {
		return nil
	}
	var mt relayv2.MetricsTracer
	if n.cfg.Registerer != nil {
		mt = relayv2.NewMetricsTracer(relayv2.WithRegisterer(n.cfg.Registerer))
	}
	var err error
	n.circuit, err = startCircuit(n.host, n.cfg.Circuit, mt)
	return err
}

// serveStreams serves the node's own protocols (sync, feed) and follows
// its peers' connections: feeds over circuits, topics of peers gone.
func (n *Node) serveStreams() error {
	n.host.SetStreamHandler(syncProtocol, n.handleSync)
	n.host.SetStreamHandler(feedProtocol, n.handleFeed)
	n.unhook = append(n.unhook, func() {
		n.host.RemoveStreamHandler(syncProtocol)
		n.host.RemoveStreamHandler(feedProtocol)
		// gossipsub sets its handlers (the router's protocols, the
		// defaults here) and never takes them off.
		for _, id := range pubsub.GossipSubDefaultProtocols {
			n.host.RemoveStreamHandler(id)
		}
	})
	conns, err := n.host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged), eventbus.BufSize(64))
	if err != nil {
		return fmt.Errorf("mesh: connectedness events: %w", err)
	}
	n.wg.Add(1)
	go n.watchCircuits(conns)
	gone := &network.NotifyBundle{
		DisconnectedF: func(nw network.Network, c network.Conn) {
			if p := c.RemotePeer(); nw.Connectedness(p) != network.Connected {
				n.topics.forget(p)
			}
		},
	}
	n.host.Network().Notify(gone)
	n.unhook = append(n.unhook, func() { n.host.Network().StopNotify(gone) })
	return nil
}

func (n *Node) pubsubOptions() []pubsub.Option {
	q := n.cfg.queueSize()
	opts := []pubsub.Option{
		// Envelopes carry their own signatures: gossipsub signs nothing and
		// names no author, and the envelope ID is the message ID.
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithFloodPublish(true),
		pubsub.WithSeenMessagesTTL(seenTTL),
		pubsub.WithPeerScore(peerScoreParams(n.pens.score), peerScoreThresholds()),
		pubsub.WithPeerScoreInspect(n.keepScores, time.Second),
		pubsub.WithSubscriptionFilter(&n.topics),
		pubsub.WithMaxMessageSize(maxRPCSize),
		pubsub.WithValidateQueueSize(q),
		pubsub.WithValidateThrottle(q),
		pubsub.WithPeerOutboundQueueSize(q),
		pubsub.WithRawTracer(tracer{m: n.metrics, mesh: &n.mesh, repairs: n.repairs}),
	}
	if n.cfg.tracer != nil {
		opts = append(opts, pubsub.WithRawTracer(n.cfg.tracer))
	}
	return opts
}

// seenSize is how many recent envelope IDs the validator remembers.
const seenSize = 1 << 15

// seenTTL is how long gossipsub remembers a message ID, so as to drop a
// copy before the validator sees it. Gossipsub forwards a message when it
// arrives and advertises it for 3 heartbeats (3 s), so the copies honest
// peers send come within seconds; the validator's seen set (seenSize IDs)
// and the replay guard judge any later one, and a late copy is not passed
// on (passOn). Gossipsub's default, 2 minutes, made its two sets of IDs
// (seen and delivered, swept once a minute) the largest thing in a
// node's heap under a steady stream: 2 to 3 minutes of traffic, twice.
const seenTTL = 30 * time.Second

// maxRPCSize bounds one gossipsub RPC: a few of the largest envelopes.
const maxRPCSize = 4 * protocol.MaxEnvelopeSize

// penalise charges a peer that forwarded an envelope no honest peer would.
func (n *Node) penalise(p peer.ID) { n.pens.add(p) }

func (n *Node) keepScores(scores map[peer.ID]float64) {
	n.scoreMu.Lock()
	n.scores = scores
	n.scoreMu.Unlock()
}

// Score returns gossipsub's latest score of peer p (updated every second).
func (n *Node) Score(p peer.ID) (float64, bool) {
	n.scoreMu.Lock()
	defer n.scoreMu.Unlock()
	s, ok := n.scores[p]
	return s, ok
}

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Host returns the libp2p host.
func (n *Node) Host() host.Host { return n.host }

// Addrs returns the node's listen addresses, each ending in /p2p/<peer ID>,
// in the form Config.Bootstrap takes.
func (n *Node) Addrs() []string {
	var out []string
	for _, a := range n.host.Addrs() {
		out = append(out, a.String()+"/p2p/"+n.host.ID().String())
	}
	return out
}

// Verifications returns how many envelope signatures the gossipsub
// validator has checked.
func (n *Node) Verifications() int64 { return n.metrics.verifications.Load() }

// Dropped returns how many messages any queue of the node has dropped.
func (n *Node) Dropped() int64 { return n.metrics.dropped.Load() }

func parseAddrs(addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, s := range addrs {
		ma, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("mesh: peer address %q: %w", s, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(ma)
		if err != nil {
			return nil, fmt.Errorf("mesh: peer address %q must end in /p2p/<peer ID>: %w", s, err)
		}
		out = append(out, *ai)
	}
	return out, nil
}

// Connect dials a peer given as a multiaddr ending in /p2p/<peer ID>.
func (n *Node) Connect(ctx context.Context, addr string) error {
	ais, err := parseAddrs([]string{addr})
	if err != nil {
		return err
	}
	if err := n.host.Connect(ctx, n.throughRelays(ais[0])); err != nil {
		return fmt.Errorf("mesh: connect %s: %w", addr, err)
	}
	return nil
}

// AddPeers dials the given peers in the background: bootstrap peers, and
// the peers of a room that a relay hands out.
func (n *Node) AddPeers(peers ...peer.AddrInfo) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	for _, ai := range peers {
		if ai.ID == n.host.ID() {
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			cctx, cancel := context.WithTimeout(n.ctx, 20*time.Second)
			defer cancel()
			if err := n.host.Connect(cctx, n.throughRelays(ai)); err != nil {
				n.log.Debug("dial peer", "peer", ai.ID, "err", err)
			}
		}()
	}
}

// prune deletes envelopes past the retention, at start and every hour.
func (n *Node) prune() {
	defer n.wg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		cutoff := n.cfg.now().Add(-n.cfg.retention())
		if gone, err := n.store.Prune(n.ctx, cutoff); err != nil && n.ctx.Err() == nil {
			n.log.Error("prune store", "err", err)
		} else if gone > 0 {
			n.log.Info("pruned envelopes past retention", "n", gone)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// keepEvidence stores the envelopes that prove equivocation, which the
// validator hands over without waiting (it must not do I/O).
func (n *Node) keepEvidence() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case ev := <-n.evidenceQ:
			// Only as evidence: the accepted envelope may still be on
			// its way to the store, and must keep its slot.
			if err := n.store.PutEquivocation(n.ctx, ev.first, ev.raw, ev.seen); err != nil && n.ctx.Err() == nil {
				n.log.Error("store equivocation evidence", "err", err)
			}
			n.log.Warn("equivocation: a sender signed two envelopes with one sequence number",
				"sender", ev.env.Sender.Fingerprint(), "room", ev.env.Room, "seq", ev.env.Seq, "first", ev.first, "second", ev.id)
		}
	}
}

// equivocation is the proof that a sender signed two envelopes with one
// number: the one accepted (first), and the other's bytes.
type equivocation struct {
	first, id protocol.ID
	env       *protocol.Envelope
	raw       []byte
	seen      time.Time
}

// evidence hands env (id, raw), which equivocates against the accepted
// envelope first, to keepEvidence.
func (n *Node) evidence(first protocol.ID, env *protocol.Envelope, id protocol.ID, raw []byte) {
	ev := equivocation{first: first, id: id, env: env, raw: raw, seen: n.cfg.now()}
	select {
	case n.evidenceQ <- ev:
	default:
		n.metrics.drop("evidence")
	}
}

// Close leaves every room and stops the node. It waits for the node's
// goroutines to end.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	rooms := make([]*Room, 0, len(n.rooms))
	for _, r := range n.rooms {
		rooms = append(rooms, r)
	}
	n.mu.Unlock()
	for _, r := range rooms {
		r.Leave()
	}
	n.cancel()
	n.wg.Wait()
	for _, f := range n.unhook {
		f()
	}
	var errs []error
	if n.dht != nil {
		errs = append(errs, n.dht.Close())
	}
	if n.circuit != nil {
		errs = append(errs, n.circuit.Close())
	}
	errs = append(errs, n.host.Close())
	return errors.Join(errs...)
}

var _ io.Closer = (*Node)(nil)

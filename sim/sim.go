package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/parleychat/parley/mesh"
)

// Sim is one run of the simulation: people's nodes and relays' nodes on a
// mocknet, and what it has seen of them.
type Sim struct {
	cfg    Config
	mn     mocknet.Mocknet
	peers  []*simPeer // people first (0..Peers-1), then relays
	ledger *ledger
	slots  chan struct{} // nodes starting or stopping at once

	bytes    atomic.Int64 // written on counted streams
	dups     atomic.Int64 // people's nodes' gossipsub duplicates, sessions ended
	dropped  atomic.Int64
	leaves   atomic.Int64
	returns  atomic.Int64
	pubErrs  atomic.Int64
	firstErr error
	errOnce  sync.Once

	mu     sync.Mutex // online, rnd
	online []bool
	rnd    *rand.Rand // bootstrap choices

	linkMu  sync.Mutex                   // links, linkRnd
	links   map[int]map[mocknet.Link]int // by peer: its links, to the peer at the other end
	linkRnd *rand.Rand                   // link latencies

	end   chan struct{}  // closed at the end of Duration: the churned return
	churn sync.WaitGroup // peers away (leaveAndReturn)
}

// New checks cfg and makes the run's peers; Run runs it.
func New(cfg Config) (*Sim, error) {
	cfg.setDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	s := &Sim{
		cfg:     cfg,
		mn:      mocknet.New(),
		ledger:  newLedger(cfg.Peers),
		slots:   make(chan struct{}, cfg.Parallel),
		online:  make([]bool, cfg.Peers+cfg.Relays),
		rnd:     rand.New(rand.NewPCG(cfg.Seed, 3)),
		links:   map[int]map[mocknet.Link]int{},
		linkRnd: rand.New(rand.NewPCG(cfg.Seed, 4)),
		end:     make(chan struct{}),
	}
	for i := range cfg.Peers + cfg.Relays {
		relay := i >= cfg.Peers
		room := i % cfg.Rooms
		if relay {
			room = -1
		}
		p, err := newSimPeer(i, relay, room, cfg.Seed)
		if err != nil {
			return nil, err
		}
		s.peers = append(s.peers, p)
	}
	return s, nil
}

// Run starts every node, lets the network form for Warmup, then publishes
// and churns for Duration, brings back every peer still away, waits up to
// Drain for the last deliveries, stops every node and returns the
// figures.
func (s *Sim) Run(ctx context.Context) (Result, error) {
	began := time.Now()
	defer s.mn.Close()
	if err := s.startAll(); err != nil {
		s.stopAll()
		return Result{}, err
	}
	if !sleepUntil(ctx, time.Now().Add(s.cfg.Warmup)) {
		s.stopAll()
		return Result{}, ctx.Err()
	}
	t0 := time.Now()
	s.bytes.Store(0)
	first, err := sampleProc()
	if err != nil {
		s.stopAll()
		return Result{}, err
	}
	var wg sync.WaitGroup
	for _, f := range []func(context.Context, time.Time){s.publisher, s.churner, s.sampler, s.killer} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx, t0)
		}()
	}
	wg.Wait()
	close(s.end)
	s.churn.Wait()
	s.drain(ctx)
	last, err := sampleProc()
	s.stopAll()
	if err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if s.firstErr != nil {
		return Result{}, s.firstErr
	}
	r := s.ledger.summarize(s.dups.Load(), s.bytes.Load())
	r.Label, r.Config = s.cfg.Label(), s.cfg
	r.Leaves, r.Returns = int(s.leaves.Load()), int(s.returns.Load())
	r.Dropped, r.PublishErrors = s.dropped.Load(), int(s.pubErrs.Load())
	r.Process = between(first, last)
	r.Wall = time.Since(began)
	return r, nil
}

func (s *Sim) fail(err error) {
	s.errOnce.Do(func() { s.firstErr = err })
}

// sleepUntil waits until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// startAll starts the relays one by one, then the people, Parallel at a
// time; each dials the peers already up.
func (s *Sim) startAll() error {
	for _, p := range s.peers[s.cfg.Peers:] {
		if err := s.startPeer(p); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	for _, p := range s.peers[:s.cfg.Peers] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.startPeer(p); err != nil {
				s.fail(err)
			}
		}()
	}
	wg.Wait()
	return s.firstErr
}

// stopAll stops every node still up, Parallel at a time.
func (s *Sim) stopAll() {
	var wg sync.WaitGroup
	for _, p := range s.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stopPeer(p)
		}()
	}
	wg.Wait()
}

// startPeer puts a new host for p on the mocknet, links it to the peers
// it will dial (with a latency each), starts its node, joins its rooms and
// dials them. p counts as online from then on.
func (s *Sim) startPeer(p *simPeer) error {
	s.slots <- struct{}{}
	defer func() { <-s.slots }()
	k, err := p.libp2pKey()
	if err != nil {
		return err
	}
	h, err := s.mn.AddPeer(k, p.addr)
	if err != nil {
		return fmt.Errorf("sim: mocknet host of peer %d: %w", p.i, err)
	}
	targets := s.targets(p)
	if err := s.link(p, targets); err != nil {
		h.Close()
		return err
	}
	sess, err := p.openSession(&countingHost{Host: h, bytes: &s.bytes}, s.cfg.Dir, s.cfg.Rooms, s.cfg.AntiEntropy,
		func(m mesh.Message) { s.deliver(p, m) })
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.sess = sess
	p.mu.Unlock()
	for _, t := range targets {
		sess.node.AddPeers(t.info())
	}
	s.mu.Lock()
	s.online[p.i] = true
	s.mu.Unlock()
	return nil
}

// stopPeer stops p's node, if it is up, and cuts its links. The caller
// has marked it offline.
func (s *Sim) stopPeer(p *simPeer) {
	s.slots <- struct{}{}
	defer func() { <-s.slots }()
	p.mu.Lock()
	sess := p.sess
	p.sess = nil
	p.mu.Unlock()
	if sess == nil {
		return
	}
	s.mu.Lock()
	s.online[p.i] = false
	s.mu.Unlock()
	dups, dropped := sess.close()
	if !p.relay {
		s.dups.Add(dups)
	}
	s.dropped.Add(dropped)
	s.unlink(p)
}

// targets picks who p dials at start: Bootstrap online people of its room
// and every online relay. A relay dials only the relays before it.
func (s *Sim) targets(p *simPeer) []*simPeer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out, room []*simPeer
	for _, q := range s.peers {
		switch {
		case q == p || !s.online[q.i]:
		case q.relay:
			out = append(out, q)
		case !p.relay && q.room == p.room:
			room = append(room, q)
		}
	}
	s.rnd.Shuffle(len(room), func(i, j int) { room[i], room[j] = room[j], room[i] })
	return append(out, room[:min(len(room), s.cfg.Bootstrap)]...)
}

// link makes a mocknet link from p to each target, with a latency drawn
// from the configured range.
func (s *Sim) link(p *simPeer, targets []*simPeer) error {
	s.linkMu.Lock()
	defer s.linkMu.Unlock()
	span := int64(s.cfg.LatencyMax - s.cfg.LatencyMin)
	for _, t := range targets {
		l, err := s.mn.LinkPeers(p.id, t.id)
		if err != nil {
			return fmt.Errorf("sim: link %d-%d: %w", p.i, t.i, err)
		}
		lat := s.cfg.LatencyMin + time.Duration(s.linkRnd.Int64N(span+1))
		l.SetOptions(mocknet.LinkOptions{Latency: lat})
		s.addLink(p.i, t.i, l)
		s.addLink(t.i, p.i, l)
	}
	return nil
}

func (s *Sim) addLink(from, to int, l mocknet.Link) {
	if s.links[from] == nil {
		s.links[from] = map[mocknet.Link]int{}
	}
	s.links[from][l] = to
}

// unlink removes p's links, from the mocknet and from the other ends'
// lists: a peer that comes back is linked anew, and the run does not keep
// every link it ever made.
func (s *Sim) unlink(p *simPeer) {
	s.linkMu.Lock()
	defer s.linkMu.Unlock()
	for l, other := range s.links[p.i] {
		s.mn.Unlink(l)
		delete(s.links[other], l)
	}
	delete(s.links, p.i)
}

// deliver records a message arriving at a person's node.
func (s *Sim) deliver(p *simPeer, m mesh.Message) {
	if p.relay {
		return
	}
	if idx, ok := msgIndex(m); ok {
		s.ledger.receive(p.i, idx, time.Now(), m.Via)
	}
}

// drain waits, up to Drain, for every expected delivery.
func (s *Sim) drain(ctx context.Context) {
	deadline := time.Now().Add(s.cfg.Drain)
	for s.ledger.missing() > 0 && time.Now().Before(deadline) {
		if !sleepUntil(ctx, time.Now().Add(250*time.Millisecond)) {
			return
		}
	}
}

package mesh

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// Message is an envelope the node accepted, committed to its store, and
// hands to the application.
type Message struct {
	ID  protocol.ID
	Env *protocol.Envelope
	// Via is how it arrived: "mesh" (live gossip), "sync" (catch-up) or
	// "circuit" (a feed over a circuit relay, ViaCircuit).
	Via string
	// From is the peer that passed it on; not necessarily its sender.
	From peer.ID
}

// Room is a joined room: one gossipsub topic.
type Room struct {
	n     *Node
	name  string
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	evh   *pubsub.TopicEventHandler

	in      chan inbound     // accepted envelopes, to the writer
	hurry   chan hurry       // to the writer: commit what it holds of a moment (commitNow)
	out     chan Message     // stored envelopes, to the application
	syncReq chan syncRequest // to the syncer
	peers   chan PeerChange  // to the application
	ctx     context.Context  // ended by Leave
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// leaving is held for reading by each accept, and for writing by
	// Leave to set left: when Leave stores what is queued last, no accept
	// is under way. late holds what an accept showed while the room was
	// being left and could not queue for the writer.
	leaving sync.RWMutex
	left    bool
	lateMu  sync.Mutex
	late    []inbound

	gaps    *seenIDs // predecessors already asked for
	priv    *private // nil in a public room
	pending pendingSyncs
	feeds   feedSubs // peers behind a circuit that follow the room
}

type inbound struct {
	env  *protocol.Envelope
	id   protocol.ID
	raw  []byte
	via  string
	from peer.ID
}

// Join joins room: it subscribes to the room's topic, starts catch-up sync
// with every peer that shows up in it, and returns the room. Joining a room
// twice returns the same Room.
func (n *Node) Join(room string) (*Room, error) {
	if err := protocol.ValidRoom(room); err != nil {
		return nil, fmt.Errorf("mesh: join: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("mesh: node is closed")
	}
	if r, ok := n.rooms[room]; ok {
		return r, nil
	}
	r := &Room{
		n:       n,
		name:    room,
		in:      make(chan inbound, inQueue),
		out:     make(chan Message, outQueue),
		hurry:   make(chan hurry),
		syncReq: make(chan syncRequest, 64),
		peers:   make(chan PeerChange, 64),
		gaps:    newSeenIDs(gapMemory),
	}
	r.ctx, r.cancel = context.WithCancel(n.ctx)
	if protocol.IsPrivateRoom(room) && !n.legacy {
		p, err := n.openPrivate(r.ctx, room)
		if err != nil {
			r.cancel()
			return nil, fmt.Errorf("mesh: join %s: %w", room, err)
		}
		r.priv = p
	}

	topic := topicName(room)
	var err error
	// Inline: the check is CPU-bound and short, so it runs on gossipsub's
	// validation workers rather than on a goroutine per message.
	if err := n.ps.RegisterTopicValidator(topic, n.validate, pubsub.WithValidatorInline(true)); err != nil {
		r.cancel()
		return nil, fmt.Errorf("mesh: join %s: %w", room, err)
	}
	undo := func(err error) (*Room, error) {
		r.cancel()
		if r.sub != nil {
			r.sub.Cancel()
		}
		if r.evh != nil {
			r.evh.Cancel()
		}
		if r.topic != nil {
			r.topic.Close()
		}
		n.ps.UnregisterTopicValidator(topic)
		return nil, fmt.Errorf("mesh: join %s: %w", room, err)
	}
	if r.topic, err = n.ps.Join(topic); err != nil {
		return undo(err)
	}
	if err := r.topic.SetScoreParams(topicScoreParams()); err != nil {
		return undo(err)
	}
	if r.evh, err = r.topic.EventHandler(); err != nil {
		return undo(err)
	}
	if r.sub, err = r.topic.Subscribe(pubsub.WithBufferSize(n.cfg.queueSize())); err != nil {
		return undo(err)
	}
	n.rooms[room] = r
	r.wg.Add(4)
	go r.read()
	go r.write()
	go r.watchPeers()
	go r.syncer()
	if r.priv != nil {
		r.wg.Add(1)
		go r.resume()
	}
	n.follows.joined()
	return r, nil
}

// Name returns the room ID.
func (r *Room) Name() string { return r.name }

// Messages returns the envelopes that this process did not publish itself
// (others', and ours from another device) as they are accepted: live ones
// at once, synced ones as their pages arrive. Each is committed to the
// store right behind (group commit: a moment later when it comes alone,
// within MaxStoreDelay in a steady stream: see commitEvery), so a
// crash in between can lose the stored copy of a message already shown;
// sync restores it. The application must keep reading: when it does not,
// the room's queues fill and gossipsub drops (and counts) messages, which
// sync later recovers.
func (r *Room) Messages() <-chan Message { return r.out }

// PeerChange is a peer joining or leaving a room.
type PeerChange struct {
	Peer   peer.ID
	Joined bool
}

// PeerChanges returns the peers joining and leaving the room. A change the
// application does not take in time is dropped: Peers says where things
// stand.
func (r *Room) PeerChanges() <-chan PeerChange { return r.peers }

// Peers returns the peers known to be in the room.
func (r *Room) Peers() []peer.ID { return r.topic.ListPeers() }

// MeshSize returns how many peers gossipsub has grafted into the room's
// mesh: those that forward the room's messages to this node and back.
func (r *Room) MeshSize() int { return r.n.mesh.size(topicName(r.name)) }

// Publish gossips an envelope signed elsewhere, unchanged: by the client
// core, the one signer of a home folder (a node signs nothing itself, so
// that two signers never hand out one sequence number twice), by a
// relay's client, or by a test. It goes through the same validation as
// any other, and the node stores it as a message of its own.
func (r *Room) Publish(ctx context.Context, raw []byte) error {
	if err := r.topic.Publish(ctx, raw); err != nil {
		return fmt.Errorf("mesh: publish: %w", err)
	}
	return nil
}

// PublishChecked is Publish for an envelope this process signed or
// verified a moment ago (e is raw parsed, id its ID): the validator takes
// it as checked instead of verifying its signature again.
func (r *Room) PublishChecked(ctx context.Context, e *protocol.Envelope, id protocol.ID, raw []byte) error {
	if err := r.topic.Publish(ctx, raw, pubsub.WithValidatorData(&verified{env: e, id: id})); err != nil {
		return fmt.Errorf("mesh: publish %s: %w", id, err)
	}
	return nil
}

// Leave unsubscribes from the room and stops its goroutines.
func (r *Room) Leave() {
	r.n.mu.Lock()
	if r.n.rooms[r.name] != r {
		r.n.mu.Unlock()
		return
	}
	delete(r.n.rooms, r.name)
	r.n.mu.Unlock()
	r.cancel()
	r.sub.Cancel()
	r.evh.Cancel()
	// The accepts under way end (nothing they wait for outlasts the
	// context), and no other starts.
	r.leaving.Lock()
	r.left = true
	r.leaving.Unlock()
	r.wg.Wait()
	// The writer stored what was queued when it saw the context end; an
	// accept that was still running (the room's reader, or a sync on a
	// goroutine of the caller's) may have queued or kept more since.
	r.flush()
	r.topic.Close()
	r.n.ps.UnregisterTopicValidator(topicName(r.name))
}

// read hands accepted messages to the application at once and to the
// writer for the store. Live delivery does not wait for the disk; the
// writer commits in batches behind it.
func (r *Room) read() {
	defer r.wg.Done()
	self := r.n.host.ID()
	for {
		msg, err := r.sub.Next(r.ctx)
		if err != nil {
			return // cancelled
		}
		v, ok := msg.ValidatorData.(*verified)
		// gossipsub's message cache keeps msg for a few seconds of gossip;
		// the parsed envelope need not stay with it (13.5 MB of the live
		// heap in the 100-peer benchmark). Nothing of gossipsub reads it
		// after delivery.
		msg.ValidatorData = nil // gossipsub hands msg to each subscription of the topic: the room's is the only one
		if !ok || v.known {
			continue
		}
		via := "mesh"
		if msg.ReceivedFrom == self {
			via = "local" // Publish: signed elsewhere, entered here
		}
		if r.accept(inbound{env: v.env, id: v.id, raw: msg.Data, via: via, from: msg.ReceivedFrom}) != nil {
			return
		}
	}
}

// accept delivers a new envelope to the application (unless this process
// published it)
// and queues it for the store. It blocks while the application or the
// writer is behind, which pushes back on gossipsub's queues (whose drops
// are counted) rather than losing anything silently here.
//
// What the application was handed is stored, even when the room is left
// meanwhile: otherwise sync would bring it again after a restart, and
// the application would be handed it twice. What it was not handed (the
// room was left first) is not stored either, and comes again by sync
// after a restart.
func (r *Room) accept(it inbound) error {
	r.leaving.RLock()
	defer r.leaving.RUnlock()
	if r.left {
		return r.ctx.Err() // neither shown nor stored: sync brings it after a restart
	}
	r.feeds.offer(it, r.n.cfg.now())
	// What this process published itself is not handed back; our own
	// envelopes from another device (the same identity elsewhere) are.
	if it.via != "local" {
		select {
		case r.out <- Message{ID: it.id, Env: it.env, Via: it.via, From: it.from}:
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	}
	select {
	case r.in <- it:
		return nil
	case <-r.ctx.Done():
		// Shown: Leave stores it.
		r.lateMu.Lock()
		r.late = append(r.late, it)
		r.lateMu.Unlock()
		return r.ctx.Err()
	}
}

// Group commit. maxBatch bounds one commit. The writer commits a batch
// commitLinger after its first envelope, so that an envelope that comes
// alone is on disk a moment after it is shown; but never sooner than
// about commitEvery (nextCommit) after the previous commit began, so
// that a steady stream is committed every few seconds, each commit
// taking what queued meanwhile, rather than once per envelope; and at
// once when a peer asks whether it has stored something (commitNow). A
// commit of one envelope writes as many pages (the table's and each
// index's) as one of ten: at 60 peers and 50 messages a second, one
// commit per envelope at every node took more CPU than delivery itself,
// and the queueing that followed was the mesh's tail latency (issue 22).
// A second, against the 250 ms of before, took a further 5-10% off the
// CPU per delivery there; three seconds, once Confirm no longer waited
// for the paced commit, took the p99 at 100 peers from 222-255 ms to
// 177-192, and was lower in all nine pairs measured (docs/performance.md). Its
// cost is the window in which a crash loses the stored copy of what was
// shown (up to MaxStoreDelay, 4.5 s, of a steady stream; sync brings it
// back).
const (
	maxBatch     = 512
	commitLinger = 5 * time.Millisecond
	commitEvery  = 3 * time.Second
)

// A room's hand-over queues: to the application (Messages) and to the
// writer. They are short: gossipsub's subscription buffer in front of them
// (Config.QueueSize) holds a burst, and a full one pushes back on it
// rather than dropping anything. They were QueueSize long (8,192), and
// their slots, which hold pointers, were a large share of what the
// garbage collector scanned in the 100-peer benchmark: 1.4 MB a room,
// 137 MB of 625 MB live, and its mark phase in the traffic took half a
// second; short, it takes about half that (docs/performance.md). The
// writer reads its queue all the time but while it commits, so the queue
// need hold only what comes during one commit: 256 is five seconds at 50
// messages a second, or one page of catch-up sync (which then waits for
// the commit, and live delivery behind it: gossipsub's buffer holds that). At 2,048 and 512 slots the two took 233 KB a room
// from the start, 23 MB of the live heap in the 100-peer benchmark and as
// much for a relay in 100 rooms (session 41).
const (
	outQueue = 128
	inQueue  = 256
)

// MaxStoreDelay is how long, at most, an envelope delivered on
// Room.Messages waits to be stored when messages arrive steadily: the
// longest pause between two commits. A peer confirms an envelope (Confirm)
// only once it is stored.
const MaxStoreDelay = commitEvery * 3 / 2

// nextCommit is the least time from one commit to the next: commitEvery
// on average, between half of it and MaxStoreDelay, so that the peers of
// a room, which get each message at about the same time, do not all
// commit at the same moment (many nodes share a machine in simulations
// and benchmarks, and a burst of commits there stalls every delivery).
func nextCommit() time.Duration {
	return commitEvery/2 + rand.N(MaxStoreDelay-commitEvery/2)
}

// commitWait is how long the writer gathers a batch once it holds an
// envelope: until the next commit is due (due from now, which may have
// passed), or commitLinger, whichever is longer. Showing does not wait
// for the commit, so waiting costs no latency, and saves commits (and
// the CPU they take from delivery). A backlog (the previous batch was
// full) is committed as fast as the store goes: commitLinger.
func commitWait(backlog bool, due time.Duration) time.Duration {
	if backlog {
		return commitLinger
	}
	return max(commitLinger, due)
}

// pacer keeps what the writer's next wait depends on: when the previous
// commit began, and whether its batch was full.
type pacer struct {
	last    time.Time // when the previous commit began
	backlog bool      // the previous batch was full: more is queued
}

// wait is how long to gather a batch begun at now, with the commits
// spaced every apart (nextCommit).
func (p *pacer) wait(now time.Time, every time.Duration) time.Duration {
	return commitWait(p.backlog, every-now.Sub(p.last))
}

// began records a commit of n envelopes beginning at now.
func (p *pacer) began(n int, now time.Time) {
	p.last, p.backlog = now, n == maxBatch
}

// write commits accepted envelopes in batches (group commit), and looks
// for gaps in the senders' hash chains.
func (r *Room) write() {
	defer r.wg.Done()
	var (
		g    gathering // its batch grows to the largest commit yet, not maxBatch at once
		pace pacer
		gaps gapWatch
	)
	defer gaps.stop()
	for {
		g.batch, g.waiters = g.batch[:0], g.waiters[:0]
		var wait time.Duration
		select {
		case it := <-r.in:
			g.batch = append(g.batch, it)
			wait = pace.wait(time.Now(), nextCommit())
		case h := <-r.hurry:
			switch hurried := r.takeHurry(&g, h); {
			case hurried:
				wait = pace.hurried(time.Now())
			case len(g.batch) == 0:
				continue // nothing taken, nothing queued
			default: // nothing it waits for: the usual pace
				wait = pace.wait(time.Now(), nextCommit())
			}
		case <-gaps.due():
			for _, it := range gaps.take(time.Now()) {
				r.checkGap(it)
			}
			continue
		case <-r.ctx.Done():
			r.flush()
			return
		}
		r.gather(&g, wait, &pace)
		if len(g.batch) > 0 {
			pace.began(len(g.batch), time.Now())
			r.store(g.batch, &gaps)
		}
		for _, done := range g.waiters {
			close(done)
		}
	}
}

// gathering is the batch the writer gathers for its next commit, and
// those who wait for that commit (commitNow).
type gathering struct {
	batch   []inbound
	waiters []chan struct{}
}

// gather adds to g what the writer's queue brings within wait, and what
// is queued when it ends, up to maxBatch envelopes, or until the room is
// left. Someone who waits for an envelope the batch holds cuts the wait
// short (pacer.hurried).
func (r *Room) gather(g *gathering, wait time.Duration, pace *pacer) {
	deadline := time.Now().Add(wait)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(g.batch) < maxBatch {
		select {
		case it := <-r.in:
			g.batch = append(g.batch, it)
		case h := <-r.hurry:
			if !r.takeHurry(g, h) {
				continue
			}
			now := time.Now()
			if d := now.Add(pace.hurried(now)); d.Before(deadline) {
				deadline = d
				timer.Reset(d.Sub(now))
			}
		case <-timer.C:
			r.drain(g)
			return
		case <-r.ctx.Done():
			return
		}
	}
}

// takeHurry adds to g what is queued now and, if g then holds what h
// waits for, h's wait for the commit; otherwise it answers h at once. It
// reports whether h waits.
func (r *Room) takeHurry(g *gathering, h hurry) bool {
	r.drain(g)
	if !h.wants(g.batch) {
		close(h.done)
		return false
	}
	g.waiters = append(g.waiters, h.done)
	return true
}

// drain adds to g what is queued now, up to maxBatch: a batch whose time
// has come takes it all, not one more envelope, whichever of the two the
// select picked first.
func (r *Room) drain(g *gathering) {
	for len(g.batch) < maxBatch {
		select {
		case it := <-r.in:
			g.batch = append(g.batch, it)
		default:
			return
		}
	}
}

// store stores a batch in one transaction, and hands gaps the new
// envelopes whose predecessor is missing.
func (r *Room) store(batch []inbound, gaps *gapWatch) {
	now := r.n.cfg.now()
	recs := make([]store.Record, len(batch))
	for i, it := range batch {
		recs[i] = store.Record{ID: it.id, Env: it.env, Raw: it.raw, Via: it.via, Received: now}
	}
	// Not r.ctx: a batch that was accepted is committed even while the
	// room is being left.
	results, err := r.n.store.Put(context.Background(), recs...)
	if err != nil {
		// The envelopes passed the replay guard but are not stored;
		// sync brings them again from a neighbour after a restart.
		r.n.log.Error("store envelopes", "room", r.name, "n", len(batch), "err", err)
		for range batch {
			r.n.metrics.drop("store")
		}
		return
	}
	self := r.n.cfg.Key.Public()
	for i, it := range batch {
		if results[i] != store.Stored {
			continue
		}
		r.n.metrics.stored.WithLabelValues(it.via).Inc()
		if it.env.Sender == self || it.env.Prev.IsZero() || r.n.seen.isAccepted(it.env.Prev) {
			continue
		}
		for _, early := range gaps.add(it, time.Now()) {
			r.checkGap(early)
		}
	}
}

// flush commits what is still queued when the room is left, and what
// an accept kept when it could no longer queue it.
func (r *Room) flush() {
	r.lateMu.Lock()
	its := r.late
	r.late = nil
	r.lateMu.Unlock()
	for drained := false; !drained; {
		select {
		case it := <-r.in:
			its = append(its, it)
		default:
			drained = true
		}
	}
	if len(its) == 0 {
		return
	}
	now := r.n.cfg.now()
	recs := make([]store.Record, len(its))
	for i, it := range its {
		recs[i] = store.Record{ID: it.id, Env: it.env, Raw: it.raw, Via: it.via, Received: now}
	}
	if _, err := r.n.store.Put(context.Background(), recs...); err != nil {
		r.n.log.Error("store envelopes on leave", "room", r.name, "n", len(recs), "err", err)
	}
}

// Bounds of gap sync: the range asked for a missing predecessor, and how
// many predecessors a room remembers having asked for.
const (
	maxGapRange = time.Hour
	gapMemory   = 1024
)

// checkGap asks for sync when an envelope's predecessor in its sender's
// hash chain is missing (gapWatch holds it for a while first): once per
// missing predecessor, over a bounded range (the predecessor is older than
// this envelope and newer than the sender's previous one that we have).
func (r *Room) checkGap(it inbound) {
	if r.n.seen.isAccepted(it.env.Prev) {
		return // accepted lately, so stored or about to be: no query
	}
	has, err := r.n.store.Has(r.ctx, it.env.Prev)
	if err != nil || has || r.gaps.claim(it.env.Prev) != unseen {
		return
	}
	since := earlier(it.env.Time, maxGapRange.Milliseconds())
	if prev, err := r.n.store.Before(r.ctx, it.env.Sender, r.name, it.env.Seq); err == nil {
		since = max(since, prev.Env.Time)
	}
	r.requestSync(syncRequest{peer: it.from, since: since, until: later(it.env.Time), gap: true})
}

// watchPeers starts a catch-up sync with every peer that joins the room:
// that is how a node that was away gets what it missed, with no relay.
func (r *Room) watchPeers() {
	defer r.wg.Done()
	for {
		ev, err := r.evh.NextPeerEvent(r.ctx)
		if err != nil {
			return
		}
		select {
		case r.peers <- PeerChange{Peer: ev.Peer, Joined: ev.Type == pubsub.PeerJoin}:
		default: // not taken in time: Peers says where things stand
		}
		if ev.Type != pubsub.PeerJoin {
			continue
		}
		r.requestSync(syncRequest{peer: ev.Peer, since: r.catchUpSince().UnixMilli(),
			until: r.n.cfg.now().Add(r.n.cfg.skew()).UnixMilli()})
	}
}

// catchUpSince is where a catch-up sync with a peer that has just joined
// starts: twice the skew before the room's last receipt, or the retention
// horizon when that is later or nothing was received.
func (r *Room) catchUpSince() time.Time {
	since := r.n.cfg.now().Add(-r.n.cfg.retention())
	if last, err := r.n.store.LastReceived(r.ctx, r.name); err == nil && !last.IsZero() {
		// Anything sent while we were away carries a time after our
		// last receipt, give or take both clocks' skew.
		if from := last.Add(-2 * r.n.cfg.skew()); from.After(since) {
			since = from
		}
	}
	return since
}

// requestSync queues a sync, unless one like it is queued already: a peer
// that joins and leaves over and over gets one sync, not a queue full.
func (r *Room) requestSync(req syncRequest) {
	if !r.pending.add(req) {
		return
	}
	select {
	case r.syncReq <- req:
	default:
		r.pending.done(req)
		r.n.metrics.drop("sync-request")
	}
}

// pendingSyncs is the set of queued sync requests, by peer and kind.
type pendingSyncs struct {
	mu  sync.Mutex
	set map[pendingKey]bool
}

type pendingKey struct {
	peer peer.ID
	gap  bool
}

func (p *pendingSyncs) add(req syncRequest) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := pendingKey{req.peer, req.gap}
	if p.set[k] {
		return false
	}
	if p.set == nil {
		p.set = make(map[pendingKey]bool)
	}
	p.set[k] = true
	return true
}

func (p *pendingSyncs) done(req syncRequest) {
	p.mu.Lock()
	delete(p.set, pendingKey{req.peer, req.gap})
	p.mu.Unlock()
}

// syncer runs the room's sync requests one at a time, and the periodic
// anti-entropy sync. Its rounds come every AntiEntropy, the first after
// a random share of it and half of it more: peers that joined together
// (a network's start, a relay's restart, the benchmark's hundred nodes)
// do not all page each other in the same second of every minute.
func (r *Room) syncer() {
	defer r.wg.Done()
	var (
		every = r.n.cfg.antiEntropy()
		round *time.Timer
		tick  <-chan time.Time // nil: no anti-entropy
	)
	if every > 0 {
		round = time.NewTimer(every/2 + rand.N(every))
		defer round.Stop()
		tick = round.C
	}
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick:
			r.antiEntropy()
			round.Reset(every)
		case req := <-r.syncReq:
			r.runSync(req)
		}
	}
}

// syncTimeout bounds one SyncFrom with one peer.
const syncFromTimeout = 15 * time.Second

func (r *Room) runSync(req syncRequest) {
	defer r.pending.done(req)
	peers := []peer.ID{req.peer}
	if req.gap {
		// The peer that passed the envelope on may not have its
		// predecessor: then ask the room's other peers, until one answers.
		for _, p := range r.topic.ListPeers() {
			if p != req.peer {
				peers = append(peers, p)
			}
		}
	}
	for _, p := range peers {
		if p == "" || p == r.n.host.ID() {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, syncFromTimeout)
		_, err := r.SyncFrom(ctx, p, req.since, req.until)
		cancel()
		if err == nil {
			return
		}
		r.n.log.Debug("sync", "room", r.name, "peer", p, "err", err)
	}
}

// earlier is t less d milliseconds, or the start of time if that is
// before it: an envelope's time is anything a signer chose.
func earlier(t, d int64) int64 {
	if t < math.MinInt64+d {
		return math.MinInt64
	}
	return t - d
}

// later is the millisecond after t, or t at the end of time.
func later(t int64) int64 {
	if t == math.MaxInt64 {
		return t
	}
	return t + 1
}

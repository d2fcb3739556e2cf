package server

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multiformats/go-multiaddr"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/store"
)

// MeshBridge joins the relay to the mesh through a mesh node of its own:
// it joins the topic of every room the relay's clients use, commits what
// mesh peers publish (so relay clients get it, and it is kept for them),
// and gossips what relay clients publish. Envelopes pass unchanged both
// ways, and the relay's store and gossipsub both deduplicate by message
// ID, so an envelope that comes back is dropped, not delivered twice.
type MeshBridge struct {
	node *mesh.Node
	srv  *Server
	log  *slog.Logger
	ctx  context.Context

	mu    sync.Mutex
	rooms map[string]*mesh.Room

	fwd     chan store.Record
	dropped atomic.Int64 // envelopes Forward could not queue
	behind  behind       // where gossip goes on from the store
	// retry, after the store failed to give back what catchUp asked,
	// fires when it may ask again; nil otherwise. forward's alone.
	retry <-chan time.Time
	wg    sync.WaitGroup
}

// bridgeQueue is how many envelopes of the relay's clients wait for the
// mesh in memory; past it, the bridge reads them back from the store.
const bridgeQueue = 8192

// NewMeshBridge bridges srv and node until ctx ends; Close waits for it.
func NewMeshBridge(ctx context.Context, srv *Server, node *mesh.Node, log *slog.Logger) *MeshBridge {
	b := newMeshBridge(ctx, srv, node, log, bridgeQueue)
	b.wg.Go(b.forward)
	return b
}

// newMeshBridge is a bridge with a queue of queue envelopes whose
// forwarding has not started.
func newMeshBridge(ctx context.Context, srv *Server, node *mesh.Node, log *slog.Logger, queue int) *MeshBridge {
	return &MeshBridge{node: node, srv: srv, log: log, ctx: ctx, rooms: map[string]*mesh.Room{}, fwd: make(chan store.Record, queue),
		behind: behind{from: map[string]int64{}, kick: make(chan struct{}, 1)}}
}

// Join implements Bridge.
func (b *MeshBridge) Join(room string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.rooms[room]; ok || b.ctx.Err() != nil {
		return
	}
	r, err := b.node.Join(room)
	if err != nil {
		b.log.Warn("bridge: join failed", "room", room, "err", err)
		return
	}
	b.rooms[room] = r
	b.wg.Go(func() { b.ingest(r) })
}

// ingest commits what mesh peers publish in room r.
func (b *MeshBridge) ingest(r *mesh.Room) {
	for {
		select {
		case m := <-r.Messages():
			// The node's Policy (relayRun.meshPolicy) passed it: the
			// sender may post in the room here.
			raw, err := m.Env.MarshalBinary()
			if err != nil {
				continue
			}
			if err := b.srv.Ingest(b.ctx, m.Env, m.ID, raw); err != nil && b.ctx.Err() == nil {
				b.log.Warn("bridge: commit failed", "id", m.ID, "err", err)
			}
		case <-b.ctx.Done():
			return
		}
	}
}

// Forward implements Bridge. It never blocks: when the mesh cannot keep
// up and the queue is full, the bridge notes from where the room's
// envelopes were not queued (parley_relay_bridge_dropped_total counts
// them) and gossips them later, read back from the store, once the queue
// is empty. So an overloaded relay's clients' envelopes reach the mesh,
// and the other relays, late but all.
func (b *MeshBridge) Forward(rec store.Record) {
	select {
	case b.fwd <- rec:
	default:
		if b.dropped.Add(1)%1000 == 1 {
			b.log.Warn("bridge: the mesh does not keep up; envelopes gossiped later, from the store", "not queued", b.dropped.Load())
		}
		b.srv.metrics.bridgeDropped.Inc()
		b.behind.note(rec.Env.Room, rec.Pos)
	}
}

// forward gossips the queued envelopes, and, whenever the queue is
// empty, those it could not take, from the store.
func (b *MeshBridge) forward() {
	for {
		select {
		case rec := <-b.fwd:
			b.gossip(rec)
			continue
		case <-b.ctx.Done():
			return
		default:
		}
		if b.catchUp() {
			continue
		}
		select {
		case rec := <-b.fwd:
			b.gossip(rec)
		case <-b.behind.kick:
		case <-b.retry:
			b.retry = nil
		case <-b.ctx.Done():
			return
		}
	}
}

// gossip publishes rec in its room, if the bridge carries it.
func (b *MeshBridge) gossip(rec store.Record) {
	b.mu.Lock()
	r := b.rooms[rec.Env.Room]
	b.mu.Unlock()
	if r == nil {
		return
	}
	if err := r.PublishChecked(b.ctx, rec.Env, rec.ID, rec.Raw); err != nil && b.ctx.Err() == nil {
		b.log.Debug("bridge: gossip failed", "id", rec.ID, "err", err)
	}
}

// catchUpBatch is how many envelopes catchUp reads from the store at once.
const catchUpBatch = 256

// catchUpRetry is how long catchUp waits after the store failed it.
const catchUpRetry = time.Second

// catchUp gossips, from the store, a batch of the envelopes of one room
// that Forward could not queue (and those after them: the mesh drops one
// that went out in the last 30 s or so as seen, and passes an older one
// on once more while it is live, as it does any of the node's own
// publishes). It reports whether it did:
// not when nothing is left, nor for catchUpRetry after the store failed
// (the room's mark is kept, to try again).
func (b *MeshBridge) catchUp() bool {
	if b.retry != nil {
		return false
	}
	room, from, ok := b.behind.take()
	if !ok {
		return false
	}
	recs, err := b.srv.st.After(b.ctx, room, from-1, catchUpBatch)
	if err != nil {
		if b.ctx.Err() == nil {
			b.log.Warn("bridge: envelopes not gossiped yet: the store did not give them back; trying again", "room", room, "from", from, "in", catchUpRetry, "err", err)
			b.behind.keep(room, from)
			b.retry = time.After(catchUpRetry)
		}
		return false
	}
	for _, rec := range recs {
		b.gossip(rec)
	}
	if len(recs) == catchUpBatch {
		b.behind.note(room, recs[len(recs)-1].Pos+1)
	}
	return true
}

// behind is, by room, the position of the first envelope Forward could
// not queue, from which the bridge gossips from the store.
type behind struct {
	mu   sync.Mutex
	from map[string]int64
	kick chan struct{} // a note was added
}

// note marks room's envelopes from position pos on as not gossiped.
func (bh *behind) note(room string, pos int64) {
	bh.keep(room, pos)
	select {
	case bh.kick <- struct{}{}:
	default:
	}
}

// keep marks room's envelopes from position pos on as not gossiped, the
// smaller mark winning, without waking the bridge.
func (bh *behind) keep(room string, pos int64) {
	bh.mu.Lock()
	defer bh.mu.Unlock()
	if p, ok := bh.from[room]; !ok || pos < p {
		bh.from[room] = pos
	}
}

// take removes and returns one room's mark, if there is one.
func (bh *behind) take() (room string, pos int64, ok bool) {
	bh.mu.Lock()
	defer bh.mu.Unlock()
	for room, pos := range bh.from {
		delete(bh.from, room)
		return room, pos, true
	}
	return "", 0, false
}

// Peers implements Bridge: the relay's own node first, then the room's
// peers that the node has addresses for.
func (b *MeshBridge) Peers(room string) []string {
	out := b.node.Addrs()
	b.mu.Lock()
	r := b.rooms[room]
	b.mu.Unlock()
	if r == nil {
		return out
	}
	ps := b.node.Host().Peerstore()
	for _, p := range r.Peers() {
		for _, a := range ps.Addrs(p) {
			id, err := multiaddr.NewComponent("p2p", p.String())
			if err != nil {
				break
			}
			out = append(out, a.Encapsulate(id).String())
			break // one address per peer
		}
	}
	return out
}

// Close waits for the bridge's goroutines, which end with its context.
func (b *MeshBridge) Close() {
	b.wg.Wait()
}

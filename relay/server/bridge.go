package server

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

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
	dropped atomic.Int64
	wg      sync.WaitGroup
}

// NewMeshBridge bridges srv and node until ctx ends; Close waits for it.
func NewMeshBridge(ctx context.Context, srv *Server, node *mesh.Node, log *slog.Logger) *MeshBridge {
	b := &MeshBridge{node: node, srv: srv, log: log, ctx: ctx, rooms: map[string]*mesh.Room{}, fwd: make(chan store.Record, 8192)}
	b.wg.Go(b.forward)
	return b
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
// up, the envelope is not gossiped (parley_relay_bridge_dropped_total
// counts it, and the log says so). Relay clients get it all the same;
// mesh peers see the gap at the sender's next envelope but cannot fill it
// by sync, since no mesh node has it: this is the one way the bridge can
// lose an envelope for the mesh, and only under overload.
func (b *MeshBridge) Forward(rec store.Record) {
	select {
	case b.fwd <- rec:
	default:
		if b.dropped.Add(1)%1000 == 1 {
			b.log.Warn("bridge: the mesh does not keep up; envelopes not gossiped", "dropped", b.dropped.Load())
		}
		b.srv.metrics.bridgeDropped.Inc()
	}
}

func (b *MeshBridge) forward() {
	for {
		select {
		case rec := <-b.fwd:
			b.mu.Lock()
			r := b.rooms[rec.Env.Room]
			b.mu.Unlock()
			if r == nil {
				continue
			}
			if err := r.PublishChecked(b.ctx, rec.Env, rec.ID, rec.Raw); err != nil && b.ctx.Err() == nil {
				b.log.Debug("bridge: gossip failed", "id", rec.ID, "err", err)
			}
		case <-b.ctx.Done():
			return
		}
	}
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

package mesh

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Why a node closes a connection that works
//
// gossipsub keeps one outbound stream per peer. When that stream dies
// while another connection to the peer lives (a peer killed and back on
// the same address: the old connection dies after the new one came up),
// go-libp2p-pubsub v0.19.0 forgets every room the peer is in and opens a
// new outbound stream, but the peer has no reason to send its rooms again:
// its own stream to us is fine. From then on we see no peer in rooms we
// share, publish nothing to it, and its sends reach us but ours never
// reach it: a half-open room that no redial repairs, since the peer is
// still connected. The repair is to close every connection to the peer
// and dial it again, so that both sides start over and exchange their
// rooms.

// repairPause is the least time between two repairs of one peer, so that
// a peer whose connections keep failing costs a reconnect now and then,
// not a loop.
const repairPause = 10 * time.Second

// repairs takes the peers whose gossipsub stream closed from the tracer
// (which must not block) and repairs those still connected, one at a time.
type repairs struct {
	mu      sync.Mutex
	pending map[peer.ID]struct{}
	last    map[peer.ID]time.Time
	kick    chan struct{}
}

func newRepairs() *repairs {
	return &repairs{pending: map[peer.ID]struct{}{}, last: map[peer.ID]time.Time{}, kick: make(chan struct{}, 1)}
}

// streamClosed notes that gossipsub's outbound stream to p closed.
func (r *repairs) streamClosed(p peer.ID) {
	r.mu.Lock()
	r.pending[p] = struct{}{}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// take returns the pending peers not repaired within repairPause, and
// marks them repaired at now.
func (r *repairs) take(now time.Time) []peer.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []peer.ID
	for p := range r.pending {
		if now.Sub(r.last[p]) < repairPause {
			continue // stays pending: looked at again after the pause
		}
		delete(r.pending, p)
		r.last[p] = now
		out = append(out, p)
	}
	for p, t := range r.last {
		if now.Sub(t) >= repairPause {
			delete(r.last, p)
		}
	}
	return out
}

// keepRooms repairs, until the node closes, every peer whose gossipsub
// stream closed while it stayed connected.
func (n *Node) keepRooms() {
	defer n.wg.Done()
	t := time.NewTicker(repairPause)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.repairs.kick:
		case <-t.C: // a peer left pending by the pause
		}
		for _, p := range n.repairs.take(n.cfg.now()) {
			if n.ctx.Err() != nil {
				return
			}
			n.repair(p)
		}
	}
}

// repair closes the connections to p, if it is still connected, and dials
// it again.
func (n *Node) repair(p peer.ID) {
	if n.host.Network().Connectedness(p) != network.Connected {
		return // gone: gossipsub forgot it rightly, and a dial starts over
	}
	n.metrics.repairs.Inc()
	n.log.Info("gossipsub lost a connected peer's rooms: reconnecting", "peer", p)
	if err := n.host.Network().ClosePeer(p); err != nil {
		n.log.Debug("close peer", "peer", p, "err", err)
	}
	ctx, cancel := context.WithTimeout(n.ctx, 20*time.Second)
	defer cancel()
	if err := n.host.Connect(ctx, peer.AddrInfo{ID: p}); err != nil {
		// The peer's own redial, or ours of configured peers, comes later.
		n.log.Debug("redial after repair", "peer", p, "err", err)
	}
}

package mesh

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/protocol"
)

// A commit on demand
//
// A peer learns that its message reached the mesh by asking the room's
// peers whether they have stored it (Confirm). With group commit, a peer
// that delivered the message at once may store it only up to
// MaxStoreDelay later, and the sender waited that long to hear of it.
// So the asker hurries the commit instead: a sync request for a narrow
// window (Confirm asks about one millisecond) makes the room's writer
// commit at once what it holds of that window, and is answered after
// that commit. A question about something the writer does not hold (not
// arrived yet, or stored already) commits nothing. The commits of a
// steady stream stay about commitEvery apart; a sender hears within a
// round trip and a commit that its message is stored.

// hurryWindow is the widest window of a sync request that hurries the
// commit: Confirm's, and other questions about a moment, not catch-up.
const hurryWindow = 1000 // ms

// hurryGap is the least time between the start of a commit and a commit
// hurried after it: whatever peers ask, within their sync rates, the
// writer commits at most once per hurryGap.
const hurryGap = 20 * time.Millisecond

// hurryWait bounds how long a sync request waits for the commit it
// hurried: past it, the request is answered with what is stored.
const hurryWait = 500 * time.Millisecond

// hurries reports whether a sync request for since <= time < until asks
// about a moment, so that its answer may be worth a commit.
func hurries(req *protocol.SyncRequest) bool {
	return req.Since <= req.Until && uint64(req.Until-req.Since) <= hurryWindow
}

// hurry is a wait for the commit of what the writer holds with
// since <= time < until: done is closed once it is committed, or at once
// when the writer holds none of it.
type hurry struct {
	since, until int64
	done         chan struct{}
}

// wants reports whether batch holds an envelope h waits for.
func (h hurry) wants(batch []inbound) bool {
	for _, it := range batch {
		if t := it.env.Time; t >= h.since && t < h.until {
			return true
		}
	}
	return false
}

// commitNow asks the writer to commit what it holds, taken from its
// queue or queued now, with since <= time < until, and waits until it
// has, or until ctx ends or the room is left. When it holds none, the
// writer answers at once and commits nothing.
func (r *Room) commitNow(ctx context.Context, since, until int64) {
	h := hurry{since: since, until: until, done: make(chan struct{})}
	select {
	case r.hurry <- h:
	case <-ctx.Done():
		return
	case <-r.ctx.Done():
		return
	}
	select {
	case <-h.done:
	case <-ctx.Done():
	case <-r.ctx.Done():
	}
}

// hurryFor makes the writer of req's room commit what it holds of req's
// window, and waits for that (hurryWait at most), when req asks about a
// moment and remote may sync the room.
func (n *Node) hurryFor(req *protocol.SyncRequest, remote peer.ID) {
	if !hurries(req) {
		return
	}
	r, refused := n.maySync(req.Room, remote)
	if refused != "" {
		return // the request is refused after this
	}
	ctx, cancel := context.WithTimeout(n.ctx, hurryWait)
	defer cancel()
	r.commitNow(ctx, req.Since, req.Until)
}

// hurried is how long a batch that someone waits for may still gather:
// until hurryGap after the previous commit began.
func (p *pacer) hurried(now time.Time) time.Duration {
	return max(0, hurryGap-now.Sub(p.last))
}

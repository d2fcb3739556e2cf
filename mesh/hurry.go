package mesh

import (
	"context"
	"time"

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
// commit what it holds at once, and is answered after that commit. The
// commits of a steady stream stay about commitEvery apart; a sender
// hears within a round trip and a commit that its message is stored.

// hurryWindow is the widest window of a sync request that hurries the
// commit: Confirm's, and other questions about a moment, not catch-up.
const hurryWindow = 1000 // ms

// hurryGap is the least time between the start of a commit and a commit
// hurried after it: what a peer can make the writer do with sync
// requests, within its sync rate, is at most one commit per hurryGap.
const hurryGap = 20 * time.Millisecond

// hurryWait bounds how long a sync request waits for the commit it
// hurried: past it, the request is answered with what is stored.
const hurryWait = 500 * time.Millisecond

// hurries reports whether a sync request for since <= time < until asks
// about a moment, so that its answer is worth a commit.
func hurries(req *protocol.SyncRequest) bool {
	return req.Until-req.Since <= hurryWindow
}

// commitNow asks the writer to commit what it has taken from its queue
// and what is queued now, and waits until it has, or until ctx ends or
// the room is left. With nothing to commit, the writer answers at once.
func (r *Room) commitNow(ctx context.Context) {
	done := make(chan struct{})
	select {
	case r.hurry <- done:
	case <-ctx.Done():
		return
	case <-r.ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	case <-r.ctx.Done():
	}
}

// hurried is how long a batch that someone waits for may still gather:
// until hurryGap after the previous commit began.
func (p *pacer) hurried(now time.Time) time.Duration {
	return max(0, hurryGap-now.Sub(p.last))
}

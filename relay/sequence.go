package relay

import (
	"context"
	"fmt"
	"sync"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/store"
)

// maxHeads is the most (sender, room) pairs whose highest sequence number
// the sequencer keeps: about 100 bytes each. A pair beyond it is not
// known, and its envelopes wait for their insert before they go live.
const maxHeads = 1 << 18

// The sequencer gives every envelope on its way to the committer its
// position in the store, and queues it for the committer, in one step
// under one lock: the committer commits in position order, so a
// subscription that reads the store never finds a later position
// committed before an earlier one.
//
// An envelope the sequencer knows to be new goes to the live
// subscriptions at once, before the committer (early). It is new when its
// sequence number is above the highest stored, or on its way, of its
// sender in its room: such an envelope is neither a duplicate nor an
// equivocation, and its insert cannot fail but with the whole commit (and
// then every subscription ends, as before). Any other envelope, a resend
// for one, goes live after its insert, as the store decides (late); and
// while an envelope of a room waits for its insert, the room's later
// envelopes wait too, so that a room's envelopes go live in position
// order.
type sequencer struct {
	mu   sync.Mutex // held from giving a position to queueing
	next int64      // the next position

	known sync.Mutex // guards what follows; the committer takes it too
	heads map[head]uint64
	// complete: heads has every (sender, room) stored, so a pair not in
	// it has nothing stored.
	complete bool
	limit    int            // the most pairs heads holds
	late     map[string]int // per room, the late envelopes not yet live
}

type head struct {
	sender identity.PublicKey
	room   string
}

// newSequencer reads the last position of st and the heads of up to
// limit (sender, room) pairs.
func newSequencer(ctx context.Context, st Storage, limit int) (*sequencer, error) {
	last, err := st.LastPos(ctx)
	if err != nil {
		return nil, fmt.Errorf("relay: sequencer: %w", err)
	}
	q := &sequencer{next: last + 1, heads: map[head]uint64{}, limit: limit, late: map[string]int{}}
	q.complete, err = st.Heads(ctx, limit, func(h store.Head) {
		q.heads[head{h.Sender, h.Room}] = h.Seq
	})
	if err != nil {
		return nil, fmt.Errorf("relay: sequencer: %w", err)
	}
	return q, nil
}

// place decides whether p goes live early, and records it on its way:
// its sequence number as its stream's head, or the room's one more late
// envelope. The caller holds q.mu.
func (q *sequencer) place(p *pending) (early bool) {
	env := p.rec.Env
	k := head{env.Sender, env.Room}
	q.known.Lock()
	defer q.known.Unlock()
	top, ok := q.heads[k]
	switch {
	case q.late[env.Room] > 0:
	case ok && env.Seq > top:
		early = true
	case !ok && q.complete:
		early = true
	}
	q.raise(k, env.Seq)
	if !early {
		q.late[env.Room]++
	}
	return early
}

// raise makes seq the head of k if it is higher. The caller holds
// q.known.
func (q *sequencer) raise(k head, seq uint64) {
	top, ok := q.heads[k]
	switch {
	case ok && seq > top:
		q.heads[k] = seq
	case !ok && len(q.heads) < q.limit:
		q.heads[k] = seq
	case !ok:
		// Full: pairs not in heads are not known from now on.
		q.complete = false
	}
}

// settled tells the sequencer that the late envelopes of recs have gone
// live, or will not: the rooms' later envelopes may go early again.
func (q *sequencer) settled(recs []*pending) {
	q.known.Lock()
	defer q.known.Unlock()
	for _, p := range recs {
		room := p.rec.Env.Room
		if q.late[room]--; q.late[room] <= 0 {
			delete(q.late, room)
		}
	}
}

// enqueue gives each of ps its position and queues them for the
// committer, in order; those known to be new are with the live
// subscriptions before enqueue returns. It returns how many it queued,
// all of them unless ctx ends first.
func (s *Server) enqueue(ctx context.Context, ps []*pending) (int, error) {
	q := s.seq
	q.mu.Lock()
	defer q.mu.Unlock()
	var early []store.Record
	for i, p := range ps {
		p.early = q.place(p)
		p.rec.Pos = q.next + int64(i)
		if p.early {
			early = append(early, p.rec)
		}
	}
	s.hub.deliver(early)
	for i, p := range ps {
		select {
		case s.commits <- p:
			q.next++
		case <-ctx.Done():
			var late []*pending
			for _, p := range ps[i:] {
				if !p.early {
					late = append(late, p)
				}
			}
			if len(late) < len(ps[i:]) {
				s.hub.fail() // early ones went out and will not be stored
			}
			q.settled(late)
			return i, ctx.Err()
		}
	}
	return len(ps), nil
}

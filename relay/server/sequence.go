package server

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/store"
)

// maxPairs is the most (sender, room) pairs the sequencer keeps (about
// 190 bytes each). A pair beyond it is not known, and its envelopes wait
// for their insert before they go live.
const maxPairs = 1 << 18

// The sequencer gives every envelope on its way to the committer its
// position in the store, and queues it for the committer, in one step
// under one lock: the committer commits in position order, so a
// subscription that reads the store never finds a later position
// committed before an earlier one.
//
// An envelope the sequencer knows to be new goes to the live
// subscriptions at once, before the committer (early). It is new when no
// envelope of its sender in its room with its sequence number is stored
// or on its way: the sequencer knows the highest stored when the relay
// started, and every number since. Such an envelope is neither a
// duplicate nor an equivocation, and its insert cannot fail but with the
// whole commit (and then every subscription ends, as before). Any other
// envelope, a resend for one, goes live after its insert, as the store
// decides (late); and while an envelope of a room waits for its insert,
// the room's later envelopes wait too, so that a room's envelopes go live
// in position order.
type sequencer struct {
	mu   sync.Mutex // held from giving a position to queueing, which never waits (enqueue)
	next int64      // the next position

	known sync.Mutex // guards what follows; the committer takes it too
	pairs map[pair]numbers
	// complete: pairs has every (sender, room) stored, so a pair not in
	// it has nothing stored.
	complete bool
	limit    int            // the most pairs it holds
	late     map[string]int // per room, the late envelopes not yet live
}

type pair struct {
	sender identity.PublicKey
	room   string
}

// numbers is what the sequencer knows of the sequence numbers of one
// sender's envelopes in one room: every number up to base may be stored
// or on its way, and so is each in above; any other is new.
type numbers struct {
	base  uint64
	above []uint64 // above base; up to maxAbove of them
}

// maxAbove bounds numbers.above: a sender that skips numbers leaves them
// there. Past it, base rises to the highest and above is emptied, and
// the numbers skipped are taken as maybe stored (late) from then on.
const maxAbove = 64

// isNew reports whether seq is neither stored nor on its way.
func (n numbers) isNew(seq uint64) bool { return seq > n.base && !slices.Contains(n.above, seq) }

// add records seq as on its way.
func (n numbers) add(seq uint64) numbers {
	if seq <= n.base || slices.Contains(n.above, seq) {
		return n
	}
	n.above = append(n.above, seq)
	for {
		i := slices.Index(n.above, n.base+1)
		if i < 0 {
			break
		}
		n.base++
		n.above = slices.Delete(n.above, i, i+1)
	}
	if len(n.above) > maxAbove {
		n.base, n.above = slices.Max(n.above), nil
	}
	if len(n.above) == 0 {
		n.above = nil
	}
	return n
}

// newSequencer reads the last position of st and the highest sequence
// number stored of up to limit (sender, room) pairs.
func newSequencer(ctx context.Context, st Storage, limit int) (*sequencer, error) {
	last, err := st.LastPos(ctx)
	if err != nil {
		return nil, fmt.Errorf("relay: sequencer: %w", err)
	}
	q := &sequencer{next: last + 1, pairs: map[pair]numbers{}, limit: limit, late: map[string]int{}}
	q.complete, err = st.Heads(ctx, limit, func(h store.Head) {
		q.pairs[pair{h.Sender, h.Room}] = numbers{base: h.Seq}
	})
	if err != nil {
		return nil, fmt.Errorf("relay: sequencer: %w", err)
	}
	return q, nil
}

// place decides whether p goes live early, and records it as on its
// way, and if late, as the room's one more late envelope. The caller
// holds q.mu.
func (q *sequencer) place(p *pending) (early bool) {
	env := p.rec.Env
	k := pair{env.Sender, env.Room}
	q.known.Lock()
	defer q.known.Unlock()
	n, ok := q.pairs[k]
	switch {
	case !ok && !q.complete:
		// Not known: the store decides. Not added either, since what
		// the store holds of the pair is not known.
	case !ok && len(q.pairs) >= q.limit:
		// Nothing of the pair is stored, but pairs is full: from now on,
		// pairs not in it are not known.
		early = q.late[env.Room] == 0
		q.complete = false
	default:
		early = n.isNew(env.Seq) && q.late[env.Room] == 0
		q.pairs[k] = n.add(env.Seq)
	}
	if !early {
		q.late[env.Room]++
	}
	return early
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

// maxQueued is the most envelopes queued for the committer: a publisher
// that would queue more waits for the committer to take some (envSlots).
const maxQueued = 4 * maxBatch

// enqueue gives each of ps its position and queues them for the
// committer, in order; those known to be new are with the live
// subscriptions before enqueue returns. It returns how many it queued:
// all of them, or none if ctx ends while it waits for room in the queue.
//
// The wait for room is before the sequencer's lock, in envSlots, not
// under it: the lock is held only to place, number and queue, which
// never waits, so no publisher waits on the lock for another one's wait
// for the committer (and its disk flush), and one whose stream ends
// while it waits for room leaves at once.
func (s *Server) enqueue(ctx context.Context, ps []*pending) (int, error) {
	if len(ps) == 0 {
		return 0, nil
	}
	// While there is room, even at shutdown: what was read is committed.
	if n := int64(len(ps)); !s.envSlots.TryAcquire(n) {
		if err := s.envSlots.Acquire(ctx, n); err != nil {
			return 0, err
		}
	}
	q := s.seq
	q.mu.Lock()
	defer q.mu.Unlock()
	var early []store.Record
	for _, p := range ps {
		p.early = q.place(p)
		p.rec.Pos = q.next
		q.next++
		if p.early {
			early = append(early, p.rec)
		}
	}
	s.hub.deliver(early)
	s.metrics.liveEarly.Add(float64(len(early)))
	for _, p := range ps {
		s.envs <- p // never waits: each has its slot
	}
	return len(ps), nil
}

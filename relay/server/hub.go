package server

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/parleychat/parley/store"
)

// hub hands committed envelopes to the live subscriptions of their room.
// It never blocks: a subscription whose queue is full is marked lagged and
// catches up from the store, so one slow reader never holds up the others
// or the committer.
type hub struct {
	mu    sync.Mutex
	rooms map[string]map[*subscription]struct{}
	size  atomic.Int64 // queue capacity of a new subscription, in batches
	// inflight is, per room, the highest position delivered but not yet
	// committed: a subscription that starts now reads the store for its
	// history and would not find those, so it counts them as dropped.
	inflight map[string]int64
	lags     atomic.Int64 // times a subscription fell behind its queue
}

type subscription struct {
	room  string
	queue batches
	// lagged is set when a batch did not fit. From then on the hub
	// queues nothing for the subscription (lagging) until it has emptied
	// its queue, and dropped is the highest position it did not get: the
	// subscription reads the store up to there before it sends anything
	// newer.
	lagged  atomic.Bool
	lagging atomic.Bool
	dropped atomic.Int64
	// commit is set after a commit of envelopes of the room; upTo is the
	// highest position then committed. failed is set when a commit
	// failed after its envelopes went out.
	commit atomic.Bool
	upTo   atomic.Int64
	failed atomic.Bool
	// wake is called after each change above, and after a batch is
	// queued: the subscription has something to do. It must not block.
	wake func()
}

func newHub(size int) *hub {
	h := &hub{rooms: map[string]map[*subscription]struct{}{}, inflight: map[string]int64{}}
	h.size.Store(int64(size))
	return h
}

// setSize sets the queue capacity of subscriptions made from now on.
func (h *hub) setSize(size int) { h.size.Store(int64(size)) }

// subscribe registers a subscription of room; wake is its
// subscription.wake.
func (h *hub) subscribe(room string, wake func()) *subscription {
	s := &subscription{room: room, wake: wake}
	s.queue.init(int(h.size.Load()))
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rooms[room] == nil {
		h.rooms[room] = map[*subscription]struct{}{}
	}
	h.rooms[room][s] = struct{}{}
	s.dropped.Store(h.inflight[room])
	return s
}

func (h *hub) unsubscribe(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.rooms[s.room], s)
	if len(h.rooms[s.room]) == 0 {
		delete(h.rooms, s.room)
	}
}

// subscribers returns how many subscriptions a room has.
func (h *hub) subscribers(room string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rooms[room])
}

// deliver passes new records, in position order, to every subscription of
// their rooms, before their commit. It reports whether it queued any.
func (h *hub) deliver(recs []store.Record) (queued bool) {
	if len(recs) == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := recs[0].Env.Room; !slices.ContainsFunc(recs[1:], func(r store.Record) bool { return r.Env.Room != room }) {
		return h.deliverRoom(room, recs)
	}
	byRoom := map[string][]store.Record{}
	for _, r := range recs {
		byRoom[r.Env.Room] = append(byRoom[r.Env.Room], r)
	}
	for room, batch := range byRoom {
		if h.deliverRoom(room, batch) {
			queued = true
		}
	}
	return queued
}

// deliverRoom is deliver for records of one room. The caller holds h.mu.
func (h *hub) deliverRoom(room string, batch []store.Record) (queued bool) {
	last := batch[len(batch)-1].Pos
	h.inflight[room] = last
	for s := range h.rooms[room] {
		if !s.lagging.Load() {
			if s.queue.put(batch) {
				queued = true
				s.wake()
				continue
			}
			s.lagging.Store(true)
			h.lags.Add(1)
			s.lagged.Store(true)
			s.wake()
		}
		s.drop(last)
	}
	return queued
}

// committed tells the subscriptions of the rooms of recs, which deliver
// gave them before the commit, that they are on disk now.
func (h *hub) committed(recs []store.Record) {
	upTo := map[string]int64{}
	for _, r := range recs {
		upTo[r.Env.Room] = max(upTo[r.Env.Room], r.Pos)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for room, pos := range upTo {
		// Envelopes of the room may have gone out since this batch was
		// taken (early, sequence.go): those are still in flight.
		if h.inflight[room] <= pos {
			delete(h.inflight, room)
		}
	}
	for room, pos := range upTo {
		for s := range h.rooms[room] {
			s.upTo.Store(pos)
			s.commit.Store(true)
			s.wake()
		}
	}
}

// fail ends every subscription: envelopes went out whose commit failed.
// What is in flight stays so: envelopes sent early after the failed ones
// may still be committed, and a subscription that starts now must wait
// for them (a commit of the room clears it).
func (h *hub) fail() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, subs := range h.rooms {
		for s := range subs {
			s.failed.Store(true)
			s.commit.Store(true)
			s.wake()
		}
	}
}

// drop records that the subscription did not get the envelopes up to
// position pos from the hub.
func (s *subscription) drop(pos int64) {
	for {
		d := s.dropped.Load()
		if pos <= d || s.dropped.CompareAndSwap(d, pos) {
			return
		}
	}
}

// batches is a subscription's queue of batches from the hub: size of
// them, or more while they hold no more envelopes than one commit
// (maxBatch). The queue was sized for the committer's batches; since
// envelopes go live early (sequence.go), most batches are a publish
// stream's read, a few envelopes each, and size of them fill up in a
// burst that size commit batches took in their stride: the subscription
// would read the store for what it missed, which costs more than all the
// rest of a delivery. The batches are shared with the room's other
// subscriptions; a slot costs 24 bytes.
//
// Its slice grows as batches come and goes back to a small array of its
// own when emptied: an idle subscription holds no queue beyond that (a
// channel of size would hold size slots all along).
type batches struct {
	mu    sync.Mutex
	q     [][]store.Record
	small [2][]store.Record
	n     int // envelopes in q
	size  int
}

func (b *batches) init(size int) {
	b.size = size
	b.q = b.small[:0]
}

// put queues batch, unless the queue is full.
func (b *batches) put(batch []store.Record) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.q) >= b.size && b.n+len(batch) > maxBatch {
		return false
	}
	b.q = append(b.q, batch)
	b.n += len(batch)
	return true
}

// take returns the oldest batch queued, if any.
func (b *batches) take() ([]store.Record, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.q) == 0 {
		return nil, false
	}
	batch := b.q[0]
	b.q[0] = nil
	b.n -= len(batch)
	if b.q = b.q[1:]; len(b.q) == 0 {
		b.small = [2][]store.Record{}
		b.q = b.small[:0]
	}
	return batch, true
}

// len is how many batches are queued.
func (b *batches) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.q)
}

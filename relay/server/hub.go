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
	room string
	ch   chan []store.Record
	// lagged is signalled when a batch did not fit. From then on the hub
	// queues nothing for the subscription (lagging) until it has emptied
	// its queue, and dropped is the highest position it did not get: the
	// subscription reads the store up to there before it sends anything
	// newer.
	lagged  chan struct{}
	lagging atomic.Bool
	dropped atomic.Int64
	// commit is signalled after a commit of envelopes of the room;
	// upTo is the highest position then committed. failed is set when a
	// commit failed after its envelopes went out.
	commit chan struct{}
	upTo   atomic.Int64
	failed atomic.Bool
}

func newHub(size int) *hub {
	h := &hub{rooms: map[string]map[*subscription]struct{}{}, inflight: map[string]int64{}}
	h.size.Store(int64(size))
	return h
}

// setSize sets the queue capacity of subscriptions made from now on.
func (h *hub) setSize(size int) { h.size.Store(int64(size)) }

func (h *hub) subscribe(room string) *subscription {
	s := &subscription{room: room, ch: make(chan []store.Record, h.size.Load()), lagged: make(chan struct{}, 1), commit: make(chan struct{}, 1)}
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
			select {
			case s.ch <- batch:
				queued = true
				continue
			default:
				s.lagging.Store(true)
				h.lags.Add(1)
				signal(s.lagged)
			}
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
			signal(s.commit)
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
			signal(s.commit)
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

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

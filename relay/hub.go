package relay

import (
	"sync"

	"github.com/parleychat/parley/store"
)

// hub hands committed envelopes to the live subscriptions of their room.
// It never blocks: a subscription whose queue is full is marked lagged and
// catches up from the store, so one slow reader never holds up the others
// or the committer.
type hub struct {
	mu    sync.Mutex
	rooms map[string]map[*subscription]struct{}
	size  int // queue capacity of a subscription, in batches
}

type subscription struct {
	room string
	ch   chan []store.Record
	// lagged is signalled when a batch did not fit: the subscription
	// must read the store to close the gap.
	lagged chan struct{}
}

func newHub(size int) *hub {
	return &hub{rooms: map[string]map[*subscription]struct{}{}, size: size}
}

func (h *hub) subscribe(room string) *subscription {
	s := &subscription{room: room, ch: make(chan []store.Record, h.size), lagged: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rooms[room] == nil {
		h.rooms[room] = map[*subscription]struct{}{}
	}
	h.rooms[room][s] = struct{}{}
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

// deliver passes newly committed records, in position order, to every
// subscription of their rooms.
func (h *hub) deliver(recs []store.Record) {
	if len(recs) == 0 {
		return
	}
	byRoom := map[string][]store.Record{}
	for _, r := range recs {
		byRoom[r.Env.Room] = append(byRoom[r.Env.Room], r)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for room, batch := range byRoom {
		for s := range h.rooms[room] {
			select {
			case s.ch <- batch:
			default:
				select {
				case s.lagged <- struct{}{}:
				default:
				}
			}
		}
	}
}

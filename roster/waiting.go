package roster

import (
	"time"

	"github.com/parleychat/parley/protocol"
)

// Waiting holds items (posts and changes) that name a change not known
// yet, until it arrives or they expire: bounded in count, per owner (the
// sender, say) and in time, so that nobody can fill a node's memory with
// envelopes that name changes that will never come, or take the place of
// others' that wait in good faith. It is not safe for concurrent use.
type Waiting[T any] struct {
	max, perOwner int
	ttl           time.Duration
	items         map[protocol.ID][]held[T]
	owners        map[string]int
	n             int
}

type held[T any] struct {
	item  T
	owner string
	until time.Time
}

// NewWaiting returns a Waiting that holds at most max items, at most
// perOwner of one owner, each for at most ttl.
func NewWaiting[T any](max, perOwner int, ttl time.Duration) *Waiting[T] {
	return &Waiting[T]{max: max, perOwner: perOwner, ttl: ttl, items: make(map[protocol.ID][]held[T]), owners: make(map[string]int)}
}

// Hold keeps item of owner until the change with ID id arrives (Release)
// or ttl has passed since now. It reports false, keeping nothing, when
// max items, or perOwner of owner's, are held even after the expired ones
// are dropped.
func (w *Waiting[T]) Hold(id protocol.ID, item T, owner string, now time.Time) bool {
	if w.n >= w.max || w.owners[owner] >= w.perOwner {
		w.expire(now)
		if w.n >= w.max || w.owners[owner] >= w.perOwner {
			return false
		}
	}
	w.items[id] = append(w.items[id], held[T]{item, owner, now.Add(w.ttl)})
	w.n++
	w.owners[owner]++
	return true
}

// Release returns the unexpired items that waited for id, and forgets
// them.
func (w *Waiting[T]) Release(id protocol.ID, now time.Time) []T {
	var out []T
	for _, h := range w.items[id] {
		if now.Before(h.until) {
			out = append(out, h.item)
		}
		w.forget(h)
	}
	delete(w.items, id)
	return out
}

// Len returns how many items are held.
func (w *Waiting[T]) Len() int { return w.n }

func (w *Waiting[T]) forget(h held[T]) {
	w.n--
	if w.owners[h.owner]--; w.owners[h.owner] <= 0 {
		delete(w.owners, h.owner)
	}
}

func (w *Waiting[T]) expire(now time.Time) {
	for id, hs := range w.items {
		kept := hs[:0]
		for _, h := range hs {
			if now.Before(h.until) {
				kept = append(kept, h)
			} else {
				w.forget(h)
			}
		}
		if len(kept) == 0 {
			delete(w.items, id)
		} else {
			w.items[id] = kept
		}
	}
}

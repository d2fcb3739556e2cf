package roster

import (
	"errors"
	"sync"

	"github.com/parleychat/parley/protocol"
)

// Book holds the member lists of the private rooms a process knows: one
// Log per room, shared by the paths that process uses (the mesh node and
// the client core judge with the same list). It is safe for concurrent
// use.
type Book struct {
	mu   sync.Mutex
	logs map[string]*opened
}

type opened struct {
	log  *Log
	once sync.Once
	err  error
}

// NewBook returns an empty book.
func NewBook() *Book { return &Book{logs: make(map[string]*opened)} }

// Open returns the log of private room room. The first call for a room
// fills it with what load returns (a store's changes of the room); calls
// made meanwhile wait for it, so that nobody judges with half a list. A
// load that fails is tried again by the next call.
func (b *Book) Open(room string, load func() ([]Stored, error)) (*Log, int, error) {
	b.mu.Lock()
	o, ok := b.logs[room]
	if !ok {
		o = &opened{log: NewLog(room)}
		b.logs[room] = o
	}
	b.mu.Unlock()
	left := 0
	o.once.Do(func() {
		var changes []Stored
		if changes, o.err = load(); o.err == nil {
			left = o.log.Load(changes)
		}
	})
	if o.err != nil {
		b.mu.Lock()
		if b.logs[room] == o {
			delete(b.logs, room)
		}
		b.mu.Unlock()
		return nil, 0, o.err
	}
	return o.log, left, nil
}

// Log returns the log of private room room, and whether the book had it,
// without loading anything: for a process with two stores (the relay and
// its mesh node), which loads its own into it with Load (adding a change
// twice is nothing).
func (b *Book) Log(room string) (*Log, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if o, ok := b.logs[room]; ok {
		return o.log, true
	}
	o := &opened{log: NewLog(room)}
	b.logs[room] = o
	return o.log, false
}

// Stored is a change as a store hands it back.
type Stored struct {
	Env *protocol.Envelope
	ID  protocol.ID
}

// Load adds changes read from a store (verified when they were stored)
// to l. Parents come before their children in a store's order (Lamport
// clock, then ID) when their signers' clocks were honest; what waits for
// a change later in the list is offered again until nothing more can be
// added. It returns how many it could not add (refused, or still
// waiting).
func (l *Log) Load(changes []Stored) int {
	left := changes
	for len(left) > 0 {
		var again []Stored
		for _, c := range left {
			if _, err := l.Add(c.Env, c.ID); errors.Is(err, ErrWaiting) {
				again = append(again, c)
			}
		}
		if len(again) == len(left) {
			break // no progress: what is left waits for what is not here
		}
		left = again
	}
	failed := 0
	for _, c := range changes {
		if !l.Has(c.ID) {
			failed++
		}
	}
	return failed
}

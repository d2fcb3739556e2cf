package protocol

import (
	"fmt"
	"sync"
)

// DefaultSeqBlock is how many sequence numbers a SeqAllocator reserves at a
// time when SeqAllocator.Block is zero.
const DefaultSeqBlock = 1000

// SeqReservations is the durable record that a SeqAllocator keeps: per room,
// the highest sequence number reserved so far.
type SeqReservations interface {
	// Reserved returns the highest number reserved for room, 0 if none.
	Reserved(room string) (uint64, error)
	// Reserve records that every number up to n is reserved for room. It
	// returns only once the record would survive a crash.
	Reserve(room string, n uint64) error
}

// SeqAllocator hands out the local sender's sequence numbers, per room,
// so that no number is ever used twice, not even across a crash. Before it
// hands out any number of a block it durably reserves the whole block; after
// a restart it continues after the last reserved block, skipping whatever of
// it was unused. Receivers see a skipped range as a gap in numbers, not in
// the hash chain, which links envelopes by ID.
//
// Numbers never come from the clock. SeqAllocator is safe for concurrent use.
type SeqAllocator struct {
	// Store keeps the reservations. Required.
	Store SeqReservations
	// Block is how many numbers to reserve at a time. If zero,
	// DefaultSeqBlock.
	Block uint64

	mu    sync.Mutex // guards rooms only
	rooms map[string]*seqRoom
}

type seqRoom struct {
	mu       sync.Mutex // held across a reservation: the room's next numbers wait for it
	loaded   bool
	next     uint64 // the next number to hand out
	reserved uint64 // numbers up to this are durably reserved
}

// Next returns the next sequence number for room. A reservation's disk
// write holds up that room's numbers only, never another room's.
func (a *SeqAllocator) Next(room string) (uint64, error) {
	a.mu.Lock()
	r, ok := a.rooms[room]
	if !ok {
		r = &seqRoom{}
		if a.rooms == nil {
			a.rooms = make(map[string]*seqRoom)
		}
		a.rooms[room] = r
	}
	a.mu.Unlock()

	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.loaded {
		reserved, err := a.Store.Reserved(room)
		if err != nil {
			return 0, fmt.Errorf("sequence numbers of %s: %w", room, err)
		}
		// Whatever of the last block was handed out before a restart is
		// unknown, so none of it is used again.
		r.next, r.reserved, r.loaded = min(reserved, MaxCounter)+1, reserved, true
	}
	if r.next > MaxCounter {
		return 0, fmt.Errorf("sequence numbers of %s are used up", room)
	}
	if r.next > r.reserved {
		block := a.Block
		if block == 0 {
			block = DefaultSeqBlock
		}
		// next <= MaxCounter = 2^63-1, so this cannot overflow for any
		// block below 2^63.
		upTo := uint64(MaxCounter)
		if block-1 < MaxCounter-r.next {
			upTo = r.next + block - 1
		}
		if err := a.Store.Reserve(room, upTo); err != nil {
			return 0, fmt.Errorf("reserve sequence numbers of %s: %w", room, err)
		}
		r.reserved = upTo
	}
	n := r.next
	r.next++
	return n, nil
}

// LamportClock is a Lamport clock: Witness every clock value received, and
// Tick for each envelope sent. The zero value is ready to use; it is safe
// for concurrent use.
type LamportClock struct {
	mu sync.Mutex
	t  uint64
}

// MaxLamportJump is the furthest Witness moves the clock at once. A
// received value far beyond it would let one envelope push every later one
// to the end of the counter's range; past this it counts as this much.
const MaxLamportJump = 1 << 32

// Witness advances the clock to at least t, or by MaxLamportJump if t is
// further ahead than that.
func (c *LamportClock) Witness(t uint64) {
	c.mu.Lock()
	c.t = min(max(c.t, min(t, c.t+MaxLamportJump)), MaxCounter)
	c.mu.Unlock()
}

// Tick advances the clock by one and returns the new value, for an
// envelope about to be sent.
func (c *LamportClock) Tick() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t < MaxCounter {
		c.t++
	}
	return c.t
}

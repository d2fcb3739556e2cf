package ratchet

import (
	"fmt"
	"maps"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// Receiver is the receiving end of one sender's chain: the chain key of
// index Next and the keys of the messages skipped so far, for messages that
// arrive out of order.
//
// Each key is handed out once: that is what refuses a replayed message,
// and what lets a used key be erased. Persist the Receiver after every Key.
// Do not copy a Receiver by value: the copies would share Skipped but not
// Chain and Next, so one index could be handed out twice.
type Receiver struct {
	Chain   ChainKey
	Next    uint32
	Skipped map[uint32]MessageKey
}

// NewReceiver returns a Receiver at index 0 of the chain ck.
func NewReceiver(ck ChainKey) *Receiver {
	return &Receiver{Chain: ck, Skipped: make(map[uint32]MessageKey)}
}

// Key returns the key of message index, once.
//
// An index below Next gives its skipped key, which is then forgotten; if
// there is none (handed out already, or dropped), the error wraps ErrGone.
// An index more than MaxSkip ahead of Next gives ErrTooFar, and one beyond
// MaxIndex ErrExhausted; the state is then unchanged. Otherwise the chain
// advances past index, keeping the keys of the indexes in between, and
// dropping the lowest skipped keys beyond MaxSkipped.
func (r *Receiver) Key(index uint32) (MessageKey, error) {
	if index < r.Next {
		return r.takeSkipped(index)
	}
	if index > MaxIndex {
		return MessageKey{}, fmt.Errorf("%w: index %d", ErrExhausted, index)
	}
	if index-r.Next > MaxSkip {
		return MessageKey{}, fmt.Errorf("%w: index %d, chain at %d, limit %d ahead", ErrTooFar, index, r.Next, MaxSkip)
	}
	if r.Skipped == nil {
		r.Skipped = make(map[uint32]MessageKey)
	}
	r.dropLowest(len(r.Skipped) + int(index-r.Next) - MaxSkipped)
	return r.advance(index), nil
}

// advance steps the chain past index, keeping the keys of the indexes
// before it, and returns its key. Each step overwrites the old chain key.
func (r *Receiver) advance(index uint32) MessageKey {
	for ; r.Next < index; r.Next++ {
		var k MessageKey
		r.Chain, k = Step(r.Chain)
		r.Skipped[r.Next] = k
	}
	var mk MessageKey
	r.Chain, mk = Step(r.Chain)
	r.Next++
	return mk
}

// takeSkipped hands out and forgets the skipped key of index.
func (r *Receiver) takeSkipped(index uint32) (MessageKey, error) {
	mk, ok := r.Skipped[index]
	if !ok {
		return MessageKey{}, fmt.Errorf("%w: index %d, chain at %d", ErrGone, index, r.Next)
	}
	r.forget(index)
	return mk, nil
}

// forget erases and deletes the skipped key of index. Overwriting the
// entry first clears the bytes in the map's memory; copies the runtime
// made elsewhere are beyond reach, as always in Go.
func (r *Receiver) forget(index uint32) {
	r.Skipped[index] = MessageKey{}
	delete(r.Skipped, index)
}

// dropLowest forgets the n skipped keys of the lowest indexes.
func (r *Receiver) dropLowest(n int) {
	if n <= 0 {
		return
	}
	for _, i := range slices.Sorted(maps.Keys(r.Skipped))[:min(n, len(r.Skipped))] {
		r.forget(i)
	}
}

// receiverHeader is the size of a Receiver's encoding without skipped keys;
// each adds skippedSize.
const (
	receiverHeader = 32 + 4 + 2
	skippedSize    = 4 + 32
)

// MarshalBinary returns the encoding of r:
//
//	chain  [32]
//	next   u32
//	count  u16, at most MaxSkipped
//	count times, by index ascending: index u32 (below next), key [32]
//
// Integers are big-endian. A state that UnmarshalBinary would refuse
// gives an error wrapping ErrMalformed.
func (r *Receiver) MarshalBinary() ([]byte, error) {
	if len(r.Skipped) > MaxSkipped {
		return nil, fmt.Errorf("%w: %d skipped keys, limit %d", ErrMalformed, len(r.Skipped), MaxSkipped)
	}
	b := cryptobyte.NewFixedBuilder(make([]byte, 0, receiverHeader+skippedSize*len(r.Skipped)))
	b.AddBytes(r.Chain[:])
	b.AddUint32(r.Next)
	b.AddUint16(uint16(len(r.Skipped)))
	for _, i := range slices.Sorted(maps.Keys(r.Skipped)) {
		if i >= r.Next {
			return nil, fmt.Errorf("%w: skipped index %d not below next %d", ErrMalformed, i, r.Next)
		}
		mk := r.Skipped[i]
		b.AddUint32(i)
		b.AddBytes(mk[:])
	}
	return b.BytesOrPanic(), nil
}

// UnmarshalBinary sets r from what MarshalBinary returns, strictly: one
// encoding per state. On error r is unchanged.
func (r *Receiver) UnmarshalBinary(b []byte) error {
	in := cryptobyte.String(b)
	var next Receiver
	var count uint16
	if !in.CopyBytes(next.Chain[:]) || !in.ReadUint32(&next.Next) || !in.ReadUint16(&count) {
		return fmt.Errorf("%w: truncated receiver state", ErrMalformed)
	}
	if count > MaxSkipped {
		return fmt.Errorf("%w: %d skipped keys, limit %d", ErrMalformed, count, MaxSkipped)
	}
	if len(in) != skippedSize*int(count) {
		return fmt.Errorf("%w: %d bytes of skipped keys, want %d", ErrMalformed, len(in), skippedSize*int(count))
	}
	next.Skipped = make(map[uint32]MessageKey, count)
	var prev uint32
	for k := range int(count) {
		var i uint32
		var mk MessageKey
		in.ReadUint32(&i)
		in.CopyBytes(mk[:])
		if i >= next.Next {
			return fmt.Errorf("%w: skipped index %d not below next %d", ErrMalformed, i, next.Next)
		}
		if k > 0 && i <= prev {
			return fmt.Errorf("%w: skipped index %d after %d: not ascending", ErrMalformed, i, prev)
		}
		next.Skipped[i], prev = mk, i
	}
	*r = next
	return nil
}

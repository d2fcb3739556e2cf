package ratchet

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Sender is the sending end of a chain: the chain key of the next message
// and its index. Persist it after every Key, before the message goes out,
// so that no index is ever used twice.
type Sender struct {
	Chain ChainKey
	Next  uint32 // the index of the next message
}

// Key returns the index and key of the next message and advances the
// chain, overwriting the old chain key. After MaxIndex it fails with
// ErrExhausted.
func (s *Sender) Key() (index uint32, mk MessageKey, err error) {
	if s.Next > MaxIndex {
		return 0, MessageKey{}, fmt.Errorf("%w: index %d", ErrExhausted, s.Next)
	}
	next, mk := Step(s.Chain)
	index = s.Next
	s.Chain, s.Next = next, s.Next+1 // the old chain key is gone
	return index, mk, nil
}

// senderSize is the size of a Sender's encoding.
const senderSize = 32 + 4

// MarshalBinary returns chain key (32 bytes) || next (u32, big-endian).
func (s *Sender) MarshalBinary() ([]byte, error) {
	b := cryptobyte.NewFixedBuilder(make([]byte, 0, senderSize))
	b.AddBytes(s.Chain[:])
	b.AddUint32(s.Next)
	return b.BytesOrPanic(), nil
}

// UnmarshalBinary sets s from what MarshalBinary returns, strictly.
func (s *Sender) UnmarshalBinary(b []byte) error {
	if len(b) != senderSize {
		return fmt.Errorf("%w: sender state of %d bytes, want %d", ErrMalformed, len(b), senderSize)
	}
	in := cryptobyte.String(b)
	var next Sender
	if !in.CopyBytes(next.Chain[:]) || !in.ReadUint32(&next.Next) {
		return fmt.Errorf("%w: truncated sender state", ErrMalformed)
	}
	*s = next
	return nil
}

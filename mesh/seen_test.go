package mesh

import (
	"testing"

	"github.com/parleychat/parley/protocol"
)

func seenID(b byte) protocol.ID { return protocol.ID{b} }

// TestSeenForgetsOldestFirst checks the set's bound: it remembers the
// last size IDs claimed, forgets the oldest first, and holds memory for
// no more IDs than it was given.
func TestSeenForgetsOldestFirst(t *testing.T) {
	const size = 4
	s := newSeenIDs(size)
	for i := byte(1); i <= 3; i++ {
		if v := s.claim(seenID(i)); v != unseen {
			t.Fatalf("first claim of %d: %v, want unseen", i, v)
		}
	}
	if len(s.ring) != 3 {
		t.Fatalf("ring holds %d slots after 3 claims, want 3 (grown with use)", len(s.ring))
	}
	s.decide(seenID(1), accepted)
	s.decide(seenID(2), refused)
	s.decide(seenID(3), unseen) // forgotten at once
	for id, want := range map[byte]verdict{1: accepted, 2: refused, 3: unseen} {
		if v := s.known(seenID(id)); v != want {
			t.Errorf("known(%d) = %v, want %v", id, v, want)
		}
	}
	for i := byte(4); i <= 6; i++ {
		if v := s.claim(seenID(i)); v != unseen {
			t.Fatalf("first claim of %d: %v, want unseen", i, v)
		}
	}
	if len(s.ring) != size {
		t.Fatalf("ring holds %d slots, want at most %d", len(s.ring), size)
	}
	// Six claims into four slots: 1 and 2, the oldest, are forgotten; 4
	// to 6 are pending.
	if s.isAccepted(seenID(1)) || s.known(seenID(2)) != unseen {
		t.Errorf("the oldest IDs are still remembered: 1 accepted %v, 2 %v", s.isAccepted(seenID(1)), s.known(seenID(2)))
	}
	for i := byte(4); i <= 6; i++ {
		if v := s.claim(seenID(i)); v != pending {
			t.Errorf("second claim of %d: %v, want pending", i, v)
		}
	}
	if len(s.state) > size {
		t.Errorf("%d IDs remembered, more than %d", len(s.state), size)
	}
}

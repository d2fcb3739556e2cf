package mesh

import (
	"sync"

	"github.com/parleychat/parley/protocol"
)

// seenIDs remembers the IDs of the most recent envelopes that a validator
// has taken up, so that a copy of one arriving by another path, even while
// the first is still being checked, is dropped without paying for a second
// signature check. An ID is the hash of the whole signed encoding, so the
// same ID means the same bytes and the same verdict. It forgets the oldest
// IDs first; forgetting only costs a check, since the replay guard is the
// authority on what was accepted.
type seenIDs struct {
	mu   sync.Mutex
	set  map[protocol.ID]struct{}
	ring []protocol.ID
	next int
}

func newSeenIDs(size int) *seenIDs {
	return &seenIDs{set: make(map[protocol.ID]struct{}, size), ring: make([]protocol.ID, size)}
}

// claim records id and reports whether it is new.
func (s *seenIDs) claim(id protocol.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.set[id]; ok {
		return false
	}
	if old := s.ring[s.next]; !old.IsZero() {
		delete(s.set, old)
	}
	s.ring[s.next] = id
	s.next = (s.next + 1) % len(s.ring)
	s.set[id] = struct{}{}
	return true
}

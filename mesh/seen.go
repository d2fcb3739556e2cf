package mesh

import (
	"sync"

	"github.com/parleychat/parley/protocol"
)

// seenIDs remembers what the node decided about the most recent envelopes,
// by ID, so that a copy arriving by another path (gossip after sync, sync
// after gossip, a second sync peer) costs no second signature check. An ID
// is the hash of the whole signed encoding: the same ID is the same bytes
// and the same verdict. The oldest entries are forgotten first; forgetting
// costs only a check, since the replay guard is the authority on what was
// accepted.
type seenIDs struct {
	mu    sync.Mutex
	state map[protocol.ID]verdict
	ring  []protocol.ID // grows to size, then wraps at next
	size  int
	next  int
}

type verdict uint8

const (
	unseen   verdict = iota
	pending          // taken up, being checked
	accepted         // passed every check
	refused          // failed a check
)

// newSeenIDs returns a set that remembers at most size IDs. Its memory
// grows with use, so a node in quiet rooms never holds the whole of it:
// allocated whole, a node's took 3.5 MB from its start, and the 100 nodes
// of the mesh benchmark 350 MB of the heap (docs/performance.md).
func newSeenIDs(size int) *seenIDs {
	return &seenIDs{state: make(map[protocol.ID]verdict), size: size}
}

// claim returns what is known of id; if nothing, it records id as pending
// and returns unseen: the caller checks the envelope and calls decide.
func (s *seenIDs) claim(id protocol.ID) verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.state[id]; ok {
		return v
	}
	if len(s.ring) < s.size {
		s.ring = append(s.ring, id)
	} else {
		delete(s.state, s.ring[s.next]) // the oldest
		s.ring[s.next] = id
		s.next = (s.next + 1) % len(s.ring)
	}
	s.state[id] = pending
	return unseen
}

// decide records the verdict on a claimed id. Only verdicts that follow
// from the bytes alone are kept: accepted, or refused as malformed,
// forged or misplaced. A verdict that depends on time, the replay window or
// policy is forgotten (forget), so that a later copy, by sync say, is
// judged afresh: otherwise one late live copy could hide a message from a
// peer that comes back.
func (s *seenIDs) decide(id protocol.ID, v verdict) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, tracked := s.state[id]; !tracked {
		return // forgotten meanwhile
	}
	if v == unseen {
		delete(s.state, id) // its ring slot is reused in turn
		return
	}
	s.state[id] = v
}

// known returns what is known of id, without claiming it.
func (s *seenIDs) known(id protocol.ID) verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state[id]
}

// isAccepted reports whether id is remembered as accepted.
func (s *seenIDs) isAccepted(id protocol.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state[id] == accepted
}

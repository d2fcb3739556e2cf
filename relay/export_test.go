package relay

import "github.com/parleychat/parley/audit"

// Hooks into the client's audit witness for the tests of package
// relay_test, which run a relay server (package server imports this one).

// KeptCheckpoint is a checkpoint the witness keeps.
type KeptCheckpoint = checkpointSeen

// Kept returns the checkpoint the witness keeps, if it keeps one.
func (c *Client) Kept() (KeptCheckpoint, bool) {
	c.ckMu.Lock()
	defer c.ckMu.Unlock()
	if c.kept == nil {
		return KeptCheckpoint{}, false
	}
	return checkpointSeen{*c.kept, c.keptNote}, true
}

// QueueCheck queues a consistency check of cp against the newest
// checkpoint, and returns a channel that the check loop signals when it
// takes the queue.
func (c *Client) QueueCheck(cp KeptCheckpoint) <-chan struct{} {
	select {
	case <-c.ckTaken: // drain: the loop signals when it takes the list
	default:
	}
	c.ckMu.Lock()
	c.ckPending = append(c.ckPending, cp)
	c.ckMu.Unlock()
	c.ckWake <- struct{}{}
	return c.ckTaken
}

// NewKeptCheckpoint is a checkpoint seen, with its signed note.
func NewKeptCheckpoint(cp audit.Checkpoint, note []byte) KeptCheckpoint {
	return checkpointSeen{cp, note}
}

// KeepAndCheck makes kept the witness's kept checkpoint, queues the
// pending ones for checking against it, and wakes the check loop.
func (c *Client) KeepAndCheck(kept KeptCheckpoint, pending []KeptCheckpoint) {
	c.ckMu.Lock()
	c.kept, c.keptNote = &kept.cp, kept.note
	c.ckPending = pending
	c.ckMu.Unlock()
	c.ckWake <- struct{}{}
}

// CheckLoopStopped is closed once the check loop has ended.
func (c *Client) CheckLoopStopped() <-chan struct{} { return c.ckStopped }

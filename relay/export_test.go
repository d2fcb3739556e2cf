package relay

import "github.com/parleychat/parley/audit"

// Hooks into the client's audit witness for the tests of package
// relay_test, which run a relay server (package server imports this one).

// Witness returns the client's witness.
func (c *Client) Witness() *audit.Witness { return c.witness }

// WakeChecks wakes the check loop, and returns a channel that it signals
// when it takes the checkpoints waiting.
func (c *Client) WakeChecks() <-chan struct{} {
	select {
	case <-c.ckTaken: // drain: the loop signals when it takes the list
	default:
	}
	c.ckWake <- struct{}{}
	return c.ckTaken
}

// CheckLoopStopped is closed once the check loop has ended.
func (c *Client) CheckLoopStopped() <-chan struct{} { return c.ckStopped }

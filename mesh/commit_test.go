package mesh

import (
	"testing"
	"time"
)

// TestCommitWait: the writer waits for the next commit's time, but no
// less than commitLinger, and after a full batch (a backlog) only
// commitLinger, whatever the time: a busy room is stored as fast as the
// store goes, not a batch a second.
func TestCommitWait(t *testing.T) {
	for _, tc := range []struct {
		backlog bool
		due     time.Duration
		want    time.Duration
	}{
		{false, 800 * time.Millisecond, 800 * time.Millisecond},
		{false, commitLinger / 2, commitLinger},
		{false, -time.Second, commitLinger}, // overdue
		{true, 800 * time.Millisecond, commitLinger},
		{true, -time.Second, commitLinger},
	} {
		if got := commitWait(tc.backlog, tc.due); got != tc.want {
			t.Errorf("commitWait(%v, %v) = %v, want %v", tc.backlog, tc.due, got, tc.want)
		}
	}
}

// TestNextCommitBounds: the pause between commits is drawn between half
// of commitEvery and MaxStoreDelay, the longest an envelope waits to be
// stored (its documented promise).
func TestNextCommitBounds(t *testing.T) {
	lo, hi := MaxStoreDelay, time.Duration(0)
	for range 10000 {
		d := nextCommit()
		if d < commitEvery/2 || d >= MaxStoreDelay {
			t.Fatalf("nextCommit() = %v, want in [%v, %v)", d, commitEvery/2, MaxStoreDelay)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	// A constant would pass the bounds: the draws must spread over them.
	if spread := MaxStoreDelay - commitEvery/2; hi-lo < spread/2 {
		t.Errorf("10,000 draws spread over %v of %v", hi-lo, spread)
	}
}

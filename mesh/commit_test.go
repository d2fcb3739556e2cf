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

// TestPacer: the writer's loop waits the short commitLinger only after
// a full batch; after any smaller one, until the next commit is due,
// counted from when the previous one began.
func TestPacer(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	every := time.Second
	for _, tc := range []struct {
		n     int           // the previous batch
		after time.Duration // from its commit to the next envelope
		want  time.Duration
	}{
		{maxBatch, 10 * time.Millisecond, commitLinger},
		{maxBatch - 1, 10 * time.Millisecond, 990 * time.Millisecond},
		{1, 10 * time.Millisecond, 990 * time.Millisecond},
		{1, 2 * time.Second, commitLinger}, // overdue
	} {
		var p pacer
		p.began(tc.n, t0)
		if got := p.wait(t0.Add(tc.after), every); got != tc.want {
			t.Errorf("after a batch of %d, %v later: wait %v, want %v", tc.n, tc.after, got, tc.want)
		}
	}
	// A fresh pacer's last commit is long past: the first batch waits
	// only commitLinger.
	var p pacer
	if got := p.wait(t0, every); got != commitLinger {
		t.Errorf("first batch: wait %v, want %v", got, commitLinger)
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

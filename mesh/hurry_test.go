package mesh

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/parleychat/parley/protocol"
)

// TestHurries: Confirm's question about a millisecond hurries the commit;
// catch-up over minutes does not.
func TestHurries(t *testing.T) {
	for _, tc := range []struct {
		since, until int64
		want         bool
	}{
		{1000, 1001, true}, // Confirm's
		{1000, 1000 + hurryWindow, true},
		{1000, 1001 + hurryWindow, false},
		{0, time.Hour.Milliseconds(), false},
		{1001, 1000, false}, // reversed
		{math.MinInt64, math.MaxInt64, false},
		{math.MaxInt64, math.MinInt64, false},
	} {
		req := protocol.SyncRequest{Since: tc.since, Until: tc.until}
		if got := hurries(&req); got != tc.want {
			t.Errorf("hurries([%d, %d)) = %v, want %v", tc.since, tc.until, got, tc.want)
		}
	}
}

// TestPacerHurried: a hurried batch gathers until hurryGap after the
// previous commit began, and not at all once that has passed.
func TestPacerHurried(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	var p pacer
	p.began(10, t0)
	for _, tc := range []struct {
		after, want time.Duration
	}{
		{0, hurryGap},
		{hurryGap / 4, hurryGap * 3 / 4},
		{hurryGap, 0},
		{time.Second, 0},
	} {
		if got := p.hurried(t0.Add(tc.after)); got != tc.want {
			t.Errorf("%v after a commit: hurried %v, want %v", tc.after, got, tc.want)
		}
	}
}

// gatherRoom is a room with just the writer's queues, for gather. Its
// queue is unbuffered, so that a send returns once gather has taken it.
func gatherRoom(t *testing.T) *Room {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &Room{in: make(chan inbound), hurry: make(chan hurry), ctx: ctx, cancel: cancel}
}

// at is an envelope of time t in the writer's queue.
func at(t int64) inbound { return inbound{env: &protocol.Envelope{Time: t}, via: "mesh"} }

// TestGatherHurried: a batch that would gather for an hour is cut short
// by someone waiting for an envelope it holds, and takes them along;
// someone waiting for another moment is answered at once, and the batch
// goes on gathering.
func TestGatherHurried(t *testing.T) {
	r := gatherRoom(t)
	var (
		g    gathering
		pace pacer // its last commit long past: no gap to keep
	)
	gathered := make(chan struct{})
	go func() {
		defer close(gathered)
		r.gather(&g, time.Hour, &pace)
	}()
	r.in <- at(5000)
	other := hurry{since: 7000, until: 7001, done: make(chan struct{})}
	r.hurry <- other
	select {
	case <-other.done:
	case <-time.After(10 * time.Second):
		t.Fatal("a hurry for a moment the batch does not hold was not answered")
	}
	select {
	case <-gathered:
		t.Fatal("a hurry for a moment the batch does not hold cut it short")
	default:
	}
	mine := hurry{since: 5000, until: 5001, done: make(chan struct{})}
	select {
	case r.hurry <- mine:
	case <-time.After(10 * time.Second):
		t.Fatal("gather did not take the hurry")
	}
	select {
	case <-gathered:
	case <-time.After(10 * time.Second):
		t.Fatal("a hurried gather still waits for its hour")
	}
	if len(g.batch) != 1 || len(g.waiters) != 1 || g.waiters[0] != mine.done {
		t.Fatalf("gathered %d envelopes and %d waiters, want 1 and the one that hurried", len(g.batch), len(g.waiters))
	}
}

// TestGatherNotHurried: without a hurry, gather keeps gathering until
// its time, and ends when the room is left.
func TestGatherNotHurried(t *testing.T) {
	r := gatherRoom(t)
	var (
		g    gathering
		pace pacer
	)
	gathered := make(chan struct{})
	go func() {
		defer close(gathered)
		r.gather(&g, time.Hour, &pace)
	}()
	for i := range 3 {
		r.in <- at(int64(i))
	}
	select {
	case <-gathered:
		t.Fatal("gather returned before its time, unhurried")
	default:
	}
	r.cancel()
	select {
	case <-gathered:
	case <-time.After(10 * time.Second):
		t.Fatal("gather did not end with the room")
	}
	if len(g.batch) != 3 || len(g.waiters) != 0 {
		t.Fatalf("gathered %d envelopes and %d waiters, want 3 and none", len(g.batch), len(g.waiters))
	}
}

// TestGatherTakesTheQueue: a batch whose time has come takes everything
// already queued, however short its wait.
func TestGatherTakesTheQueue(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &Room{in: make(chan inbound, inQueue), hurry: make(chan hurry), ctx: ctx, cancel: cancel}
	for i := range 5 {
		r.in <- at(int64(i))
	}
	var (
		g    gathering
		pace pacer
	)
	r.gather(&g, 0, &pace)
	if len(g.batch) != 5 || len(r.in) != 0 {
		t.Fatalf("gathered %d with %d left queued, want all 5", len(g.batch), len(r.in))
	}
}

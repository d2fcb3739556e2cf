package mesh

import (
	"runtime"
	"testing"
	"time"
)

func TestGCWatchSeesCollections(t *testing.T) {
	w := watchGC()
	defer w.stop()
	before := time.Now()
	runtime.GC()
	runtime.GC()
	for deadline := time.Now().Add(10 * time.Second); w.seen() < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the watch saw %d collections of the 2 forced, in 10 s", w.seen())
		}
		time.Sleep(gcPoll)
	}
	starts := w.stop()
	for i, s := range starts {
		if s.Before(before) {
			t.Errorf("start %d at %v, before the watch's first collection at %v", i, s, before)
		}
		if i > 0 && s.Before(starts[i-1]) {
			t.Errorf("starts out of order: %v after %v", s, starts[i-1])
		}
	}
	if again := w.stop(); len(again) != len(starts) {
		t.Errorf("a second stop returned %d starts, the first %d", len(again), len(starts))
	}
}

func TestFlightCaught(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	starts := []time.Time{at(100), at(300), at(310)}
	for _, tc := range []struct {
		sent, last int
		want       bool
	}{
		{0, 50, false},    // all before the first
		{80, 120, true},   // across the first
		{100, 130, true},  // sent as it starts
		{60, 100, true},   // got as it starts
		{101, 299, false}, // between two
		{305, 400, true},  // across the third only
		{311, 500, false}, // after the last
	} {
		if got := (flight{at(tc.sent), at(tc.last)}).caught(starts); got != tc.want {
			t.Errorf("flight %d-%d ms: caught = %v, want %v", tc.sent, tc.last, got, tc.want)
		}
	}
	if (flight{at(0), at(1000)}).caught(nil) {
		t.Error("caught with no collections")
	}
}

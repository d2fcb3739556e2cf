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
	for deadline := time.Now().Add(10 * time.Second); w.ended() < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the watch saw %d collections end of the 2 forced, in 10 s", w.ended())
		}
		time.Sleep(gcPoll)
	}
	gcs := w.stop()
	if len(gcs) < 2 {
		t.Fatalf("%d collections, want 2 or more", len(gcs))
	}
	for i, g := range gcs {
		if g.start.Before(before) || g.end.Before(g.start) {
			t.Errorf("collection %d from %v to %v: not within the watch (from %v) or ends before it starts", i, g.start, g.end, before)
		}
		if i > 0 && g.start.Before(gcs[i-1].start) {
			t.Errorf("collections out of order: %v after %v", g.start, gcs[i-1].start)
		}
	}
	if again := w.stop(); len(again) != len(gcs) {
		t.Errorf("a second stop returned %d collections, the first %d", len(again), len(gcs))
	}
}

func TestFlightCaught(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	gcs := []gcSpan{{at(100), at(200)}, {at(300), at(310)}, {at(400), at(400)}}
	for _, tc := range []struct {
		sent, last int
		want       bool
	}{
		{0, 50, false},    // all before the first
		{80, 120, true},   // across its start
		{150, 160, true},  // within it
		{190, 250, true},  // across its end
		{200, 210, true},  // sent as it ends
		{60, 100, true},   // got as it starts
		{201, 299, false}, // between two
		{250, 400, true},  // across the second and the third
		{311, 399, false}, // between the second and the third
		{401, 500, false}, // after the last
	} {
		if got := (flight{at(tc.sent), at(tc.last)}).caught(gcs); got != tc.want {
			t.Errorf("flight %d-%d ms: caught = %v, want %v", tc.sent, tc.last, got, tc.want)
		}
	}
	if (flight{at(0), at(1000)}).caught(nil) {
		t.Error("caught with no collections")
	}
}

package roster

import (
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/protocol"
)

func TestWaitingBounded(t *testing.T) {
	w := NewWaiting[int](3, 100, time.Minute)
	a, b := protocol.ID{1}, protocol.ID{2}
	for i, id := range []protocol.ID{a, b, a} {
		if !w.Hold(id, i, "o", t0) {
			t.Fatalf("Hold %d refused", i)
		}
	}
	if w.Hold(b, 3, "o", t0.Add(59*time.Second)) {
		t.Errorf("a fourth item held with max 3")
	}
	if w.Len() != 3 {
		t.Errorf("Len = %d, want 3", w.Len())
	}
	// Releasing makes room.
	if got := w.Release(a, t0); !slices.Equal(got, []int{0, 2}) {
		t.Errorf("Release(a) = %v, want [0 2]", got)
	}
	if w.Len() != 1 || !w.Hold(b, 4, "o", t0) || !w.Hold(b, 5, "o", t0) || w.Hold(b, 6, "o", t0) {
		t.Errorf("after release: Len %d", w.Len())
	}
	if got := w.Release(b, t0); !slices.Equal(got, []int{1, 4, 5}) {
		t.Errorf("Release(b) = %v, want [1 4 5]", got)
	}
	if w.Len() != 0 {
		t.Errorf("Len = %d after releasing all", w.Len())
	}
	if none := NewWaiting[int](0, 100, time.Minute); none.Hold(a, 1, "o", t0) || none.Len() != 0 {
		t.Errorf("max 0 held an item")
	}
}

func TestWaitingExpires(t *testing.T) {
	w := NewWaiting[string](2, 100, time.Minute)
	a, b := protocol.ID{1}, protocol.ID{2}
	w.Hold(a, "old", "o", t0)
	w.Hold(b, "newer", "o", t0.Add(30*time.Second))
	// Full: the old item expires at t0+1m (not before), freeing a place.
	if w.Hold(b, "x", "o", t0.Add(time.Minute-time.Nanosecond)) {
		t.Errorf("held while full and nothing expired")
	}
	if !w.Hold(b, "late", "o", t0.Add(time.Minute)) {
		t.Errorf("refused although an item expired")
	}
	if w.Len() != 2 {
		t.Errorf("Len = %d, want 2", w.Len())
	}
	if got := w.Release(a, t0.Add(time.Minute)); len(got) != 0 {
		t.Errorf("released an expired item: %v", got)
	}
	// An expired item is not released, but its place is freed.
	got := w.Release(b, t0.Add(90*time.Second))
	if !slices.Equal(got, []string{"late"}) {
		t.Errorf("Release(b) = %v, want [late]", got)
	}
	if w.Len() != 0 {
		t.Errorf("Len = %d after release", w.Len())
	}
}

func TestWaitingRelease(t *testing.T) {
	w := NewWaiting[string](10, 100, time.Minute)
	a, b, zero := protocol.ID{1}, protocol.ID{2}, protocol.ID{}
	w.Hold(a, "a1", "o", t0)
	w.Hold(zero, "z1", "o", t0)
	w.Hold(b, "b1", "o", t0)
	w.Hold(a, "a2", "o", t0)
	w.Hold(zero, "z2", "o", t0)
	if got := w.Release(protocol.ID{3}, t0); len(got) != 0 {
		t.Errorf("Release of an ID nothing waits for = %v", got)
	}
	if got := w.Release(a, t0); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Errorf("Release(a) = %v, want [a1 a2], in the order held", got)
	}
	if got := w.Release(a, t0); len(got) != 0 {
		t.Errorf("released twice: %v", got)
	}
	if got := w.Release(zero, t0); !slices.Equal(got, []string{"z1", "z2"}) {
		t.Errorf("Release(zero ID) = %v, want [z1 z2]", got)
	}
	if w.Len() != 1 {
		t.Errorf("Len = %d, want 1 (b1)", w.Len())
	}
	if got := w.Release(b, t0.Add(time.Second)); !slices.Equal(got, []string{"b1"}) {
		t.Errorf("Release(b) = %v", got)
	}
}

// One owner cannot take all the places: perOwner bounds each.
func TestWaitingPerOwner(t *testing.T) {
	w := NewWaiting[int](10, 2, time.Minute)
	a := protocol.ID{1}
	if !w.Hold(a, 1, "mallory", t0) || !w.Hold(a, 2, "mallory", t0) || w.Hold(a, 3, "mallory", t0) {
		t.Errorf("mallory held more than 2")
	}
	if !w.Hold(a, 4, "alice", t0) {
		t.Errorf("alice refused while mallory is at her bound")
	}
	w.Release(a, t0)
	if !w.Hold(a, 5, "mallory", t0) {
		t.Errorf("mallory's places not freed by the release")
	}
	if !w.Hold(protocol.ID{2}, 6, "mallory", t0) || w.Hold(protocol.ID{2}, 7, "mallory", t0.Add(59*time.Second)) {
		t.Errorf("perOwner across IDs")
	}
	if !w.Hold(protocol.ID{2}, 8, "mallory", t0.Add(time.Minute)) {
		t.Errorf("mallory's expired places not freed")
	}
}

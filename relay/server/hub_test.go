package server

import (
	"testing"

	"github.com/parleychat/parley/store"
)

// TestBatchesBound: a subscription's queue takes size batches of any
// size, and small batches past that while it holds at most one commit's
// worth of envelopes; it gives them back in order, and an emptied queue
// holds no slice of its own.
func TestBatchesBound(t *testing.T) {
	var b batches
	b.init(16)
	batch := func(n int) []store.Record { return make([]store.Record, n) }
	for i := range 16 {
		if !b.put(batch(maxBatch)) {
			t.Fatalf("batch %d of 16 refused", i+1)
		}
	}
	if b.put(batch(1)) {
		t.Fatal("a full queue took a batch")
	}
	for range 16 {
		b.take()
	}
	if b.len() != 0 || b.n != 0 || cap(b.q) != len(b.small) {
		t.Fatalf("emptied: %d batches, %d envelopes, a slice of %d", b.len(), b.n, cap(b.q))
	}
	taken := 0
	for b.put(batch(2)) {
		taken++
	}
	if want := maxBatch / 2; taken != want {
		t.Fatalf("took %d batches of 2, want %d", taken, want)
	}
	for i := range taken {
		if got, ok := b.take(); !ok || len(got) != 2 {
			t.Fatalf("batch %d: %d envelopes, %v", i, len(got), ok)
		}
	}
	if _, ok := b.take(); ok {
		t.Fatal("a batch from an empty queue")
	}
}

package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkIndexText: what the client pays to store a page of messages
// that arrive at once (a catch-up) and index their text, in one
// transaction per page, as its merger does.
//
//	go test -run '^$' -bench IndexText ./store
func BenchmarkIndexText(b *testing.B) {
	const page = 256
	s, err := Open(filepath.Join(b.TempDir(), "chat.db"), Search())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	recs := make([]Record, b.N)
	for i := range recs {
		recs[i] = textRecord(b, uint64(i+1), "alice", fmt.Sprintf("message %d of the catch-up, with a few words to index", i))
		recs[i].Via = "relay" // as the relay delivers them: not noted unshown by the trigger
	}
	b.ResetTimer()
	for len(recs) > 0 {
		n := min(page, len(recs))
		bt, err := s.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bt.Append(ctx, recs[:n]); err != nil {
			b.Fatal(err)
		}
		for _, r := range recs[:n] {
			if ok, err := bt.IndexText(ctx, r.ID, "alice", "message of the catch-up, with a few words to index"); !ok || err != nil {
				b.Fatalf("index: %v, %v", ok, err)
			}
		}
		if err := bt.Commit(); err != nil {
			b.Fatal(err)
		}
		recs = recs[n:]
	}
}

package store

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestStoredRooms: every room with an envelope, once, in name order, at most
// the limit; a store with none has none.
func TestStoredRooms(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	if got, err := s.StoredRooms(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("empty store: rooms %q, %v", got, err)
	}
	at := time.UnixMilli(1_700_000_000_000)
	a, b := key(t, 1), key(t, 2)
	var recs []Record
	for i, room := range []string{"zeta", "alpha", "general", "alpha", "general"} {
		k := a
		if i%2 == 1 {
			k = b
		}
		recs = append(recs, record(t, k, room, uint64(i+1), uint64(i+1), at, "hi"))
	}
	if _, err := s.Put(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	got, err := s.StoredRooms(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"alpha", "general", "zeta"}; !slices.Equal(got, want) {
		t.Fatalf("rooms %q, want %q", got, want)
	}
	if got, err := s.StoredRooms(ctx, 2); err != nil || !slices.Equal(got, []string{"alpha", "general"}) {
		t.Fatalf("limit 2: rooms %q, %v", got, err)
	}
}

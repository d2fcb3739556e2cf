package store

import (
	"context"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/parleychat/parley/audit"
)

// TestAuditAppendBatches appends commits of many sizes (the store inserts
// 1, 2, 4, ... 64 rows a statement, so each size is a different mix),
// rolls one back, reopens the log from the store, and checks the whole
// log and every record's inclusion proof against the signed checkpoints.
func TestAuditAppendBatches(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "relay.db")
	s, err := Open(path, Durable())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	k := key(t, 1)
	log, err := audit.NewLog(k, 0, nil, s)
	if err != nil {
		t.Fatal(err)
	}
	var want [][]byte // every committed record's encoding, by index
	n := 0
	commit := func(size int, keep bool) {
		t.Helper()
		recs := make([]*audit.Record, size)
		for i := range recs {
			n++
			recs[i] = &audit.Record{Kind: audit.KindConnect, Time: t0.UnixMilli() + int64(n), PolicyVersion: uint64(n), Identity: k.Public(), Addr: "127.0.0.1:1"}
		}
		b, err := s.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		first, err := log.Append(b, recs)
		if err != nil {
			t.Fatal(err)
		}
		if first != int64(len(want)) {
			t.Fatalf("append at %d, want %d", first, len(want))
		}
		if _, err := log.Seal(b); err != nil {
			t.Fatal(err)
		}
		if !keep {
			b.Rollback()
			log.Abort()
			return
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		log.Commit()
		for _, r := range recs {
			data, err := r.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, data)
		}
	}
	for i, size := range []int{1, 2, 3, 64, 65, 127, 100, 300, 1, 512} {
		commit(size, true)
		if i == 4 {
			commit(77, false) // rolled back: none of it stays
		}
	}

	check := func(log *audit.Log) {
		t.Helper()
		entries, err := s.AuditEntries(ctx, 0, 10_000)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != len(want) {
			t.Fatalf("%d records stored, want %d", len(entries), len(want))
		}
		for i, e := range entries {
			if e.Index != int64(i) || string(e.Data) != string(want[i]) {
				t.Fatalf("record %d: got index %d, data %x; want %x", i, e.Index, e.Data, want[i])
			}
		}
		cps, err := s.Checkpoints(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res, err := audit.Verify(k.Public(), entries, cps)
		if err != nil {
			t.Fatal(err)
		}
		if res.Records != int64(len(want)) || res.Checkpoints != 10 {
			t.Fatalf("verified %d records and %d checkpoints, want %d and 10", res.Records, res.Checkpoints, len(want))
		}
		size := int64(len(want))
		for i := range size {
			p, err := log.ProveRecord(size, i, s)
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckRecord(p, size, res.Newest.Root, i, tlog.RecordHash(want[i])); err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
	}
	check(log)

	// Reopened, the log goes on from the store.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, Durable()); err != nil {
		t.Fatal(err)
	}
	latest, err := s.LatestCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if log, err = audit.NewLog(k, int64(len(want)), latest, s); err != nil {
		t.Fatal(err)
	}
	commit(70, true)
	entries, err := s.AuditEntries(ctx, 0, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := s.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(k.Public(), entries, cps); err != nil {
		t.Fatal(err)
	}
}

package store

import (
	"context"
	"errors"
	"fmt"
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

// TestAuditRowsTampered: a row holds a commit's records; a change inside
// one is still named at its record, and rows of one record each (as the
// relay wrote them before) read the same.
func TestAuditRowsTampered(t *testing.T) {
	ctx := context.Background()
	k := key(t, 1)
	build := func(t *testing.T) *Store {
		s, err := Open(filepath.Join(t.TempDir(), "relay.db"), Durable())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		log, err := audit.NewLog(k, 0, nil, s)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, size := range []int{3, 6, 4} {
			recs := make([]*audit.Record, size)
			for i := range recs {
				recs[i] = &audit.Record{Kind: audit.KindConnect, Time: t0.UnixMilli() + int64(n), Identity: k.Public(), Addr: fmt.Sprint("127.0.0.1:", 1000+n)}
				n++
			}
			b, err := s.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := log.Append(b, recs); err != nil {
				t.Fatal(err)
			}
			if _, err := log.Seal(b); err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			log.Commit()
		}
		return s
	}
	verify := func(t *testing.T, s *Store) error {
		t.Helper()
		entries, err := s.AuditEntries(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		cps, err := s.Checkpoints(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = audit.Verify(k.Public(), entries, cps)
		return err
	}
	named := func(t *testing.T, err error, want int64) {
		t.Helper()
		var p *audit.Problem
		if !errors.As(err, &p) || p.Index != want {
			t.Fatalf("verify: %v, want record %d named", err, want)
		}
	}
	exec := func(t *testing.T, s *Store, q string, args ...any) {
		t.Helper()
		if _, err := s.w.ExecContext(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("intact", func(t *testing.T) {
		s := build(t)
		if err := verify(t, s); err != nil {
			t.Fatal(err)
		}
		if size, err := s.AuditSize(ctx); err != nil || size != 13 {
			t.Fatalf("AuditSize = %d, %v; want 13", size, err)
		}
		if es, err := s.AuditEntries(ctx, 5, 3); err != nil || len(es) != 3 || es[0].Index != 5 || es[2].Index != 7 {
			t.Fatalf("AuditEntries(5, 3) = %d entries from %v, %v", len(es), es, err)
		}
	})
	t.Run("a byte changed inside a row", func(t *testing.T) {
		s := build(t)
		// Record 5 is the third of the second row (records 3 to 8).
		es, err := s.AuditEntries(ctx, 3, 3)
		if err != nil {
			t.Fatal(err)
		}
		at := len(es[0].Data) + len(es[1].Data) + 40 // a byte of record 5's identity
		// 0x5a, or 0xa5 where the key held 0x5a: never no change.
		exec(t, s, `UPDATE audit_records SET data = substr(data, 1, ?1)
			|| iif(substr(data, ?1 + 1, 1) = x'5a', x'a5', x'5a') || substr(data, ?1 + 2) WHERE idx = 3`, at)
		named(t, verify(t, s), 5)
	})
	t.Run("a hash changed inside a row", func(t *testing.T) {
		s := build(t)
		// The row of records 3 to 8 holds 3, 1, 2, 1, 4 and 1 hashes
		// for them: its eleventh is record 7's last, the hash of records
		// 0 to 7.
		exec(t, s, `UPDATE audit_records SET hashes = substr(hashes, 1, 32*10) || zeroblob(32) || substr(hashes, 32*11 + 1) WHERE idx = 3`)
		if err := verify(t, s); err == nil {
			t.Fatal("a changed hash passed")
		}
	})
	t.Run("one record a row", func(t *testing.T) {
		s := build(t)
		entries, err := s.AuditEntries(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		exec(t, s, `DELETE FROM audit_records`)
		for _, e := range entries {
			var hs []byte
			for _, h := range e.Stored {
				hs = append(hs, h[:]...)
			}
			exec(t, s, `INSERT INTO audit_records (idx, n, data, hashes) VALUES (?, 1, ?, ?)`, e.Index, e.Data, hs)
		}
		if err := verify(t, s); err != nil {
			t.Fatal(err)
		}
		exec(t, s, `DELETE FROM audit_records WHERE idx = 4`)
		named(t, verify(t, s), 4)
	})
}

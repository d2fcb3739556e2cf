package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/protocol"
	"modernc.org/sqlite"
)

// TestIDDirectoryPrefixes: IDs that share their first 8 bytes are all
// kept, each found as a candidate until it is removed, in any order.
func TestIDDirectoryPrefixes(t *testing.T) {
	d := newIDDirectory(nil)
	d.loaded = true // nothing to read
	var id, other [32]byte
	id[0], id[31] = 7, 1
	other[0] = 8
	for _, pos := range []int64{1, 2, 3, 2} { // the second 2: added again, as after a load
		d.add(idPrefix(id[:]), pos)
	}
	d.add(idPrefix(other[:]), 4)
	sorted := func(pos []int64) []int64 { slices.Sort(pos); return pos }
	candidates := func(id [32]byte) []int64 {
		pos, err := d.candidates(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return sorted(pos)
	}
	if got := candidates(id); !slices.Equal(got, []int64{1, 2, 3}) || d.len() != 4 {
		t.Fatalf("candidates %v, %d in all; want 1, 2, 3 of 4", got, d.len())
	}
	for _, step := range []struct {
		remove int64
		want   []int64
	}{{1, []int64{2, 3}}, {3, []int64{2}}, {9, []int64{2}}, {2, nil}} {
		d.removeAll([]idEntry{{idPrefix(id[:]), step.remove}})
		if got := candidates(id); !slices.Equal(got, step.want) {
			t.Fatalf("after removing %d: %v, want %v", step.remove, got, step.want)
		}
	}
	if got := candidates(other); !slices.Equal(got, []int64{4}) || d.len() != 1 || len(d.more) != 0 {
		t.Fatalf("the other ID: %v, %d in all, %d shared prefixes left", got, d.len(), len(d.more))
	}
}

// TestStoreIDs: a store has no index on the ID; its directory holds
// every stored envelope and no other, through batches rolled back,
// retention and a reopen, whether it was read before them (LoadIDs) or
// after (at the first lookup); a lookup reads one row by position, and
// an ID not stored reads none.
func TestStoreIDs(t *testing.T) { eachKind(t, testStoreIDs) }

func testStoreIDs(t *testing.T, kind ...Option) {
	s, path := open(t, kind...)
	ctx := context.Background()
	if err := s.LoadIDs(ctx); err != nil {
		t.Fatal(err)
	}
	k := key(t, 1)
	var recs []Record
	for i := range 50 {
		at := t0
		if i >= 40 {
			at = t0.Add(48 * time.Hour)
		}
		recs = append(recs, record(t, k, "r", uint64(i+1), uint64(i+1), at, "m"))
	}
	if _, err := s.Put(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	b, err := s.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append(ctx, []Record{record(t, k, "r", 99, 99, t0, "rolled back")}); err != nil {
		t.Fatal(err)
	}
	b.Rollback()
	if n, err := s.Prune(ctx, t0.Add(24*time.Hour)); err != nil || n != 40 {
		t.Fatalf("Prune = %d, %v; want 40", n, err)
	}
	check := func(s *Store, when string) {
		t.Helper()
		for i, r := range recs {
			if ok, err := s.Has(ctx, r.ID); err != nil || ok != (i >= 40) {
				t.Fatalf("%s: Has(%d) = %v, %v", when, i, ok, err)
			}
		}
		var rows, ids int
		if err := s.r.QueryRow(`SELECT (SELECT count(*) FROM envelopes), (SELECT count(*) FROM envelope_ids)`).Scan(&rows, &ids); err != nil {
			t.Fatal(err)
		}
		if want := len(recs) - 40; rows != want || ids != want || s.ids.len() != want {
			t.Fatalf("%s: %d envelopes, %d rows of envelope_ids, %d in the directory; want %d each", when, rows, ids, s.ids.len(), want)
		}
	}
	check(s, "after the prune")
	where, args, _, err := s.whereID(ctx, recs[45].ID)
	if err != nil {
		t.Fatal(err)
	}
	plan := queryPlan(t, s.r, `SELECT 1 FROM envelopes`+where, args...)
	if !strings.Contains(plan, "INTEGER PRIMARY KEY") || strings.Contains(plan, "SCAN") {
		t.Fatalf("a lookup by ID does not read by position:\n%s", plan)
	}
	if where, _, maybe, _ := s.whereID(ctx, recs[0].ID); maybe {
		t.Fatalf("a pruned ID still has a clause: %s", where)
	}
	s.Close()
	if names := schemaNames(t, path, "index"); slices.ContainsFunc(names, func(n string) bool {
		return n == "envelopes_id" || strings.HasPrefix(n, "sqlite_autoindex_envelopes")
	}) {
		t.Fatalf("the store has an index on the ID: %v", names)
	}
	s, err = Open(path, kind...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Stored before the directory is read: the reading finds it.
	recs = append(recs, record(t, k, "r", 51, 51, t0.Add(48*time.Hour), "after the reopen"))
	if _, err := s.Put(ctx, recs[len(recs)-1]); err != nil {
		t.Fatal(err)
	}
	check(s, "after a reopen")
}

// TestStoreLosesIDIndex: a store made before the directory, with
// envelopes and an index on their ID, opens with the index dropped
// (without rebuilding the table), every envelope in the directory, the
// database whole, and a version that a program from before refuses: a
// relay's, a chat client's and one with every part.
func TestStoreLosesIDIndex(t *testing.T) {
	for _, kind := range []struct {
		name   string
		before []schema
		opts   []Option
	}{
		{"relay", []schema{schemaEnvelopes, schemaRelay}, []Option{Relay()}},
		{"chat", []schema{schemaEnvelopes, schemaClient, schemaKeys}, []Option{Search()}},
		{"all", []schema{schemaEnvelopes, schemaRelay, schemaClient, schemaKeys}, nil},
	} {
		t.Run(kind.name, func(t *testing.T) { testStoreLosesIDIndex(t, kind.before, kind.opts...) })
	}
}

func testStoreLosesIDIndex(t *testing.T, before []schema, kind ...Option) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "parley.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if err := migrate(db, before); err != nil {
		t.Fatal(err)
	}
	k := key(t, 1)
	var recs []Record
	for i := range 20 {
		r := record(t, k, "r", uint64(i+1), uint64(i+1), t0, "before")
		recs = append(recs, r)
		if _, err := db.Exec(`INSERT INTO envelopes (id, room, sender, seq, lamport, time, prev, raw, via, received)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, r.ID[:], r.Env.Room, r.Env.Sender.Bytes(), int64(r.Env.Seq),
			int64(r.Env.Lamport), r.Env.Time, r.Env.Prev[:], r.Raw, r.Via, r.Received.UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	if !slices.Contains(schemaNames(t, path, "index"), "sqlite_autoindex_envelopes_1") {
		t.Fatal("the store from before has no index on the ID to drop")
	}

	s, err := Open(path, kind...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.LoadIDs(ctx); err != nil || s.ids.len() != len(recs) {
		t.Fatalf("directory %v, want %d envelopes", s.ids, len(recs))
	}
	for _, r := range recs {
		if got, err := s.Get(ctx, r.ID); err != nil || got.ID != r.ID {
			t.Fatalf("Get after the migration: %v", err)
		}
	}
	next := record(t, k, "r", 21, 21, t0, "after")
	res, err := s.Put(ctx, recs[3], next)
	if err != nil || res[0] != Duplicate || res[1] != Stored {
		t.Fatalf("Put after the migration = %v, %v; want a duplicate and a new one", res, err)
	}
	var check string
	var version int
	if err := s.w.QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check: %q, %v", check, err)
	}
	if err := s.w.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil || version != idsVersion {
		t.Fatalf("user_version %d, %v; want %d", version, err, idsVersion)
	}
	s.Close()
	if names := schemaNames(t, path, "index"); slices.ContainsFunc(names, func(n string) bool {
		return n == "envelopes_id" || strings.HasPrefix(n, "sqlite_autoindex_envelopes")
	}) {
		t.Fatalf("the index on the ID is still there: %v", names)
	}
}

// TestIDsAroundCommit: what a batch appends is found in its own
// transaction at once, by readers only once it commits, and at once
// then; a rolled-back batch leaves nothing found.
func TestIDsAroundCommit(t *testing.T) { eachKind(t, testIDsAroundCommit) }

func testIDsAroundCommit(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	k := key(t, 1)
	for i, commit := range []bool{false, true} {
		r := record(t, k, "r", uint64(i+1), uint64(i+1), t0, "m")
		b, err := s.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Append(ctx, []Record{r}); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := s.position(ctx, b.tx, r.ID); err != nil || !ok {
			t.Fatalf("in its batch: found %v, %v", ok, err)
		}
		if ok, err := s.Has(ctx, r.ID); err != nil || ok {
			t.Fatalf("before the commit: Has = %v, %v", ok, err)
		}
		if commit {
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
		} else {
			b.Rollback()
		}
		if ok, err := s.Has(ctx, r.ID); err != nil || ok != commit {
			t.Fatalf("committed %v: Has = %v, %v", commit, ok, err)
		}
		if n := s.ids.len(); n != i {
			t.Fatalf("committed %v: %d in the directory, want %d", commit, n, i)
		}
	}
}

// TestIDsConcurrent: batches commit while readers look IDs up, the first
// lookup reading the directory, and retention deletes: every envelope
// whose commit returned is found from then on, until it is deleted.
func TestIDsConcurrent(t *testing.T) { eachKind(t, testIDsConcurrent) }

func testIDsConcurrent(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	k := key(t, 1)
	const batches, per = 40, 5
	cut := t0.Add(time.Duration(batches*per/2)*time.Hour + time.Minute) // after the first half
	committed := make(chan Record, batches*per)
	errs := make(chan error, 3)
	go func() { // the writer
		defer close(committed)
		seq := uint64(0)
		for range batches {
			var recs []Record
			for range per {
				seq++
				recs = append(recs, record(t, k, "r", seq, seq, t0.Add(time.Duration(seq)*time.Hour), "m"))
			}
			if _, err := s.Put(ctx, recs...); err != nil {
				errs <- err
				return
			}
			for _, r := range recs {
				committed <- r
			}
		}
		errs <- nil
	}()
	go func() { // retention, of the first half
		_, err := s.Prune(ctx, cut)
		errs <- err
	}()
	go func() { // a reader that the writer does not wait for
		for range 50 {
			if _, err := s.Has(ctx, protocol.ID{1}); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	for r := range committed {
		ok, err := s.Has(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !ok && r.Env.Seq > batches*per/2 {
			t.Fatalf("envelope %d committed and not found", r.Env.Seq)
		}
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Prune(ctx, cut); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := s.r.QueryRow(`SELECT count(*) FROM envelopes`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != batches*per/2 || s.ids.len() != rows {
		t.Fatalf("%d envelopes, %d in the directory; want %d each", rows, s.ids.len(), batches*per/2)
	}
}

// TestRelayIDsAdopted: a relay's store made by the builds that named the
// directory's table relay_ids opens with every envelope found and
// relay_ids gone; opened AsIs before that, it is refused as old, and
// after, it opens.
func TestRelayIDsAdopted(t *testing.T) {
	ctx := context.Background()
	s, path := open(t, Relay())
	k := key(t, 1)
	var recs []Record
	for i := range 10 {
		recs = append(recs, record(t, k, "r", uint64(i+1), uint64(i+1), t0, "m"))
	}
	if _, err := s.Put(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Back to the layout of those builds.
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`ALTER TABLE envelope_ids RENAME TO relay_ids`,
		`DROP TRIGGER envelope_ids_delete`,
		`CREATE TRIGGER relay_ids_delete AFTER DELETE ON envelopes BEGIN DELETE FROM relay_ids WHERE pos = old.rowid; END`,
		`UPDATE schema_versions SET name = 'relay_ids' WHERE name = 'envelope_ids'`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	if _, err := Open(path, Relay(), AsIs()); !errors.Is(err, ErrOldSchema) {
		t.Fatalf("AsIs before the migration: %v, want ErrOldSchema", err)
	}
	s, err = Open(path, Relay())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if ok, err := s.Has(ctx, r.ID); err != nil || !ok {
			t.Fatalf("Has after the migration = %v, %v", ok, err)
		}
	}
	s.Close()
	if names := schemaNames(t, path, "table"); slices.Contains(names, "relay_ids") {
		t.Fatalf("relay_ids left: %v", names)
	}
	s, err = Open(path, Relay(), AsIs())
	if err != nil {
		t.Fatalf("AsIs after the migration: %v", err)
	}
	if n := s.ids.len(); n != 0 {
		t.Fatalf("directory read at open: %d", n)
	}
	if ok, err := s.Has(ctx, recs[3].ID); err != nil || !ok {
		t.Fatalf("Has, opened AsIs = %v, %v", ok, err)
	}
	s.Close()
}

// TestAsIsOldStore: a store from before the directory, opened AsIs, is
// refused as old and left as it was.
func TestAsIsOldStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if err := migrate(db, []schema{schemaEnvelopes, schemaRelay}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(path, Relay(), AsIs()); !errors.Is(err, ErrOldSchema) {
		t.Fatalf("AsIs: %v, want ErrOldSchema", err)
	}
	if names := schemaNames(t, path, "index"); !slices.Contains(names, "sqlite_autoindex_envelopes_1") {
		t.Fatalf("the ID index went: %v", names)
	}
	if names := schemaNames(t, path, "table"); slices.Contains(names, "envelope_ids") {
		t.Fatalf("envelope_ids made: %v", names)
	}
}

// TestIDDirectoryBroken: a directory that cannot be read (a row whose
// prefix is cut short) fails every lookup by ID with an error that says
// so once, with what was asked, and says "store:" once; nothing is put.
func TestIDDirectoryBroken(t *testing.T) {
	ctx := context.Background()
	s, path := open(t)
	a := record(t, key(t, 1), "r", 1, 1, t0, "one")
	if _, err := s.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE envelope_ids SET idp = x'01'`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	lookups := map[string]func(s *Store) error{
		"store: has":         func(s *Store) error { _, err := s.Has(ctx, a.ID); return err },
		"store: get":         func(s *Store) error { _, err := s.Get(ctx, a.ID); return err },
		"store: position of": func(s *Store) error { _, _, err := s.Position(ctx, a.ID); return err },
		"store: put":         func(s *Store) error { _, err := s.Put(ctx, record(t, key(t, 1), "r", 2, 2, t0, "two")); return err },
		"store: read the":    func(s *Store) error { return s.LoadIDs(ctx) },
	}
	for want, lookup := range lookups {
		// A store of its own each: a directory that failed to load is
		// read again at the next use.
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		err = lookup(s)
		s.Close()
		if err == nil {
			t.Fatalf("%s: no error from a broken directory", want)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, want) || strings.Count(msg, "store:") != 1 || !strings.Contains(msg, "prefix of 1 bytes") {
			t.Errorf("error %q: want it to begin %q, say \"store:\" once and name the short prefix", msg, want)
		}
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM envelopes`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d envelopes stored (%v), want the one from before", n, err)
	}
}

// TestCommitFails: a batch whose commit SQLite refuses (here its commit
// hook says no, as a full disk or an I/O error would) returns the error,
// takes its envelopes out of the directory, and leaves the store as it
// was: they are not found, and the next batch stores them.
func TestCommitFails(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	refuse := true
	conn, err := s.w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The writer's pool is one connection: the batches below use this
	// one, hook and all.
	err = conn.Raw(func(dc any) error {
		h, ok := dc.(sqlite.HookRegisterer)
		if !ok {
			return fmt.Errorf("the driver's connection %T registers no hooks", dc)
		}
		h.RegisterCommitHook(func() int32 {
			if refuse {
				return 1
			}
			return 0
		})
		return nil
	})
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.LoadIDs(ctx); err != nil {
		t.Fatal(err)
	}
	recs := []Record{record(t, key(t, 1), "r", 1, 1, t0, "one"), record(t, key(t, 1), "r", 2, 2, t0, "two")}
	if _, err := s.Put(ctx, recs...); err == nil || !strings.HasPrefix(err.Error(), "store: commit") {
		t.Fatalf("Put with a refused commit: %v, want a commit error", err)
	}
	for _, r := range recs {
		if ok, err := s.Has(ctx, r.ID); err != nil || ok {
			t.Fatalf("after the failed commit: Has = %v, %v", ok, err)
		}
	}
	// Has asks the table whenever the directory says "maybe", so it
	// passes with or without Batch.Commit's cleanup: the directory's size
	// is what shows that the failed batch's IDs were taken out.
	if n := s.ids.len(); n != 0 {
		t.Fatalf("%d IDs left in the directory by the failed commit", n)
	}
	refuse = false
	res, err := s.Put(ctx, recs...)
	if err != nil || res[0] != Stored || res[1] != Stored {
		t.Fatalf("Put again: %v, %v; want both stored", res, err)
	}
	for _, r := range recs {
		if ok, err := s.Has(ctx, r.ID); err != nil || !ok {
			t.Fatalf("after the commit: Has = %v, %v", ok, err)
		}
	}
}

// TestIDsRefusesACorruptID: a stored ID that is not 32 bytes (a damaged
// database) is an error, not a panic or a wrong ID.
func TestIDsRefusesACorruptID(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	if _, err := s.Put(ctx, record(t, key(t, 1), "r", 1, 1, t0, "one")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `UPDATE envelopes SET id = x'0102'`); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.IDs(ctx, "r", t0.UnixMilli(), t0.Add(time.Hour).UnixMilli(), 5); err == nil {
		t.Fatalf("IDs = %v, want an error", ids)
	}
}

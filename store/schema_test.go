package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func tables(t *testing.T, path string) []string { return schemaNames(t, path, "table") }

// schemaNames are the names of the database's objects of a type (table,
// index, trigger), in order.
func schemaNames(t *testing.T, path, typ string) []string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = ? ORDER BY name`, typ)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}

// TestPartsApart: a chat client's database has no relay tables, a relay's
// no client tables; both have the envelopes.
func TestPartsApart(t *testing.T) {
	for _, tc := range []struct {
		opt        Option
		has, hasnt string
	}{
		{Search(), "client_outbox", "audit_records"},
		{Relay(), "audit_records", "client_outbox"},
	} {
		path := filepath.Join(t.TempDir(), "x.db")
		s, err := Open(path, tc.opt)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		got := tables(t, path)
		if !slices.Contains(got, "envelopes") || !slices.Contains(got, tc.has) || slices.Contains(got, tc.hasnt) {
			t.Errorf("tables %v: want envelopes and %s, not %s", got, tc.has, tc.hasnt)
		}
		// Opening again migrates nothing and changes nothing.
		s, err = Open(path, tc.opt)
		if err != nil {
			t.Fatalf("open again: %v", err)
		}
		s.Close()
	}
}

// TestRelayIndexOnlyOnRelay: the index of a room's envelopes in commit
// order, which only the relay's subscriptions read, is in a relay's
// store and not in a chat client's, where it would be written for every
// envelope; a chat store that has it from before loses it at the next
// open, keeping its envelopes and its schema versions (a program from
// before still opens it); the client's queries by room still seek an
// index.
func TestRelayIndexOnlyOnRelay(t *testing.T) {
	ctx := context.Background()
	k := key(t, 1)
	for _, tc := range []struct {
		name string
		opts []Option
		has  bool
	}{
		{"chat client", []Option{Search()}, false},
		{"relay", []Option{Relay()}, true},
		{"every part (tools, tests)", nil, true},
	} {
		path := filepath.Join(t.TempDir(), "x.db")
		s, err := Open(path, tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, record(t, k, "r", 1, 1, time.Now(), "hello")); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if got := slices.Contains(schemaNames(t, path, "index"), "envelopes_room"); got != tc.has {
			t.Errorf("%s: envelopes_room there: %v, want %v", tc.name, got, tc.has)
		}
	}

	path := filepath.Join(t.TempDir(), "chat.db")
	s, err := Open(path, Search())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, record(t, k, "r", 1, 1, time.Now(), "hello")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	// As a chat store made before this change has it.
	if _, err := db.Exec(`CREATE INDEX envelopes_room ON envelopes(room)`); err != nil {
		t.Fatal(err)
	}
	versions := func() string {
		t.Helper()
		var v string
		if err := db.QueryRow(`SELECT group_concat(name || '=' || version, ',') FROM (SELECT * FROM schema_versions ORDER BY name)`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := versions()
	db.Close()
	if s, err = Open(path, Search()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if slices.Contains(schemaNames(t, path, "index"), "envelopes_room") {
		t.Error("a chat store from before keeps envelopes_room")
	}
	if rooms, err := s.StoredRooms(ctx, 10); err != nil || !slices.Equal(rooms, []string{"r"}) {
		t.Errorf("rooms %v, %v: want [r]", rooms, err)
	}
	if db, err = sql.Open("sqlite", "file:"+path); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if after := versions(); after != before {
		t.Errorf("schema versions %s, were %s", after, before)
	}
	if all := queryPlan(t, db, `SELECT room FROM envelopes WHERE room > ? ORDER BY room LIMIT 1`, ""); !strings.Contains(all, "USING COVERING INDEX") {
		t.Errorf("listing a chat store's rooms does not seek an index: %s", all)
	}
}

// TestLegacySchema: a database from before the parts (one list of six
// migrations) opens, with every part it had counted as done.
func TestLegacySchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	old := []string{schemaEnvelopes.migrations[0], schemaEnvelopes.migrations[1], schemaRelay.migrations[0],
		schemaRelay.migrations[1], schemaClient.migrations[0], schemaRelay.migrations[2]}
	for _, m := range old {
		if _, err := db.Exec(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`PRAGMA user_version = 6`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(path, Search())
	if err != nil {
		t.Fatalf("open a database from before the parts: %v", err)
	}
	s.Close()
	s, err = Open(path) // every part: none is applied twice
	if err != nil {
		t.Fatalf("open again with every part: %v", err)
	}
	s.Close()
}

package store

import (
	"database/sql"
	"path/filepath"
	"slices"
	"testing"
)

func tables(t *testing.T, path string) []string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
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

package store

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"
)

// TestPruneInChunks: retention deletes in transactions of pruneChunk
// envelopes, and goes on until every old envelope is gone, keeping the
// recent one.
func TestPruneInChunks(t *testing.T) { eachKind(t, testPruneInChunks) }

func testPruneInChunks(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	k := key(t, 1)
	const old = 2*pruneChunk + 5
	recs := make([]Record, 0, old+1)
	for i := range old {
		recs = append(recs, record(t, k, "r", uint64(i+1), uint64(i+1), t0, "old"))
	}
	recent := record(t, k, "r", old+1, old+1, t0.Add(48*time.Hour), "new")
	recs = append(recs, recent)
	if _, err := s.Put(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	n, err := s.Prune(ctx, t0.Add(24*time.Hour))
	if err != nil || n != old {
		t.Fatalf("Prune = %d, %v; want %d", n, err, old)
	}
	got, err := s.After(ctx, "r", 0, 10)
	if err != nil || len(got) != 1 || got[0].ID != recent.ID {
		t.Fatalf("after pruning, the room holds %d envelopes (%v); want the recent one only", len(got), err)
	}
}

// TestPruneUsesReceivedIndex: retention by age finds the old envelopes
// with the index on received, not by reading the whole table in rowid
// order (issue 22: a second and more per million envelopes, on the
// writer's connection, to delete nothing).
func TestPruneUsesReceivedIndex(t *testing.T) {
	s, _ := open(t)
	all := queryPlan(t, s.w, pruneOld, 0, pruneChunk)
	if !strings.Contains(all, "USING INDEX envelopes_received") || strings.Contains(all, "SCAN envelopes") {
		t.Fatalf("the prune's plan does not seek the received index:\n%s", all)
	}
}

// queryPlan is SQLite's plan for query, one step a line (EXPLAIN QUERY
// PLAN's details).
func queryPlan(t *testing.T, db *sql.DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.Query(`EXPLAIN QUERY PLAN `+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

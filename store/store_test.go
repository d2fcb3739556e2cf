package store

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

var t0 = time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)

func key(t testing.TB, n byte) identity.PrivateKey {
	t.Helper()
	k, err := identity.PrivateKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func open(t testing.TB, opts ...Option) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "parley.db")
	s, err := Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// eachKind runs test on each kind of store: one with every part (tools
// and tests), a relay's and a chat client's.
func eachKind(t *testing.T, test func(t *testing.T, kind ...Option)) {
	t.Run("all", func(t *testing.T) { test(t) })
	t.Run("relay", func(t *testing.T) { test(t, Relay()) })
	t.Run("chat", func(t *testing.T) { test(t, Search()) })
}

func record(t testing.TB, k identity.PrivateKey, room string, seq, lamport uint64, at time.Time, payload string) Record {
	t.Helper()
	e := &protocol.Envelope{Kind: protocol.KindText, Room: room, Seq: seq, Lamport: lamport, Time: at.UnixMilli(), Payload: []byte(payload)}
	if _, err := e.Sign(k); err != nil {
		t.Fatal(err)
	}
	raw, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return Record{ID: protocol.IDOf(raw), Env: e, Raw: raw, Via: "mesh", Received: at}
}

func TestPutDuplicateEquivocation(t *testing.T) { eachKind(t, testPutDuplicateEquivocation) }

func testPutDuplicateEquivocation(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	a := record(t, key(t, 1), "r", 1, 1, t0, "one")
	b := record(t, key(t, 1), "r", 2, 2, t0, "two")
	fork := record(t, key(t, 1), "r", 2, 2, t0, "two, differently")
	res, err := s.Put(ctx, a, b, a, fork)
	if err != nil {
		t.Fatal(err)
	}
	want := []Result{Stored, Stored, Duplicate, Equivocation}
	for i := range want {
		if res[i] != want[i] {
			t.Fatalf("results = %v, want %v", res, want)
		}
	}
	got, err := s.Get(ctx, b.ID)
	if err != nil || !bytes.Equal(got.Raw, b.Raw) || got.Via != "mesh" || !got.Received.Equal(t0) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := s.Get(ctx, fork.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the second of two equivocating envelopes was stored as a message: %v", err)
	}
	if ok, err := s.Has(ctx, a.ID); !ok || err != nil {
		t.Fatalf("Has = %v, %v", ok, err)
	}
}

func TestRangePages(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	var all []Record
	for i := range 25 {
		// Pairs of envelopes share a timestamp, so that paging must use the
		// ID to break ties.
		all = append(all, record(t, key(t, byte(i%3+1)), "r", uint64(i+1), uint64(i+1), t0.Add(time.Duration(i/2)*time.Second), "m"))
	}
	all = append(all, record(t, key(t, 1), "other", 1, 1, t0, "elsewhere"))
	if _, err := s.Put(ctx, all...); err != nil {
		t.Fatal(err)
	}
	seen := map[protocol.ID]bool{}
	var cur Cursor
	for page := 0; page < 10; page++ {
		recs, err := s.Range(ctx, "r", t0.UnixMilli(), t0.Add(time.Hour).UnixMilli(), cur, 4)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if seen[r.ID] || r.Env.Room != "r" {
				t.Fatalf("page %d: %s repeated or from another room", page, r.ID)
			}
			seen[r.ID] = true
		}
		last := recs[len(recs)-1]
		cur = Cursor{Time: last.Env.Time, ID: last.ID}
	}
	if len(seen) != 25 {
		t.Fatalf("paging saw %d envelopes, want 25", len(seen))
	}
	ids, err := s.IDs(ctx, "r", t0.UnixMilli(), t0.Add(time.Hour).UnixMilli(), 5)
	if err != nil || len(ids) != 5 {
		t.Fatalf("IDs = %d, %v; want 5", len(ids), err)
	}
	if ok, err := s.Has(ctx, ids[4]); !ok || err != nil {
		t.Fatalf("IDs gave %s, which the store does not hold (%v)", ids[4], err)
	}
	last, err := s.LastReceived(ctx, "r")
	if err != nil || !last.Equal(t0.Add(12*time.Second)) {
		t.Fatalf("LastReceived = %v, %v", last, err)
	}
	if none, err := s.LastReceived(ctx, "empty"); err != nil || !none.IsZero() {
		t.Fatalf("LastReceived(empty) = %v, %v", none, err)
	}
	// A time range excludes what lies outside it.
	recs, err := s.Range(ctx, "r", t0.Add(2*time.Second).UnixMilli(), t0.Add(4*time.Second).UnixMilli(), Cursor{}, 100)
	if err != nil || len(recs) != 4 {
		t.Fatalf("time range gave %d envelopes (%v), want 4", len(recs), err)
	}
}

func TestHistoryOrderAndLast(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	alice, bob := key(t, 1), key(t, 2)
	recs := []Record{
		record(t, alice, "r", 1, 5, t0.Add(3*time.Second), "a1"),
		record(t, bob, "r", 1, 3, t0.Add(9*time.Second), "b1"),
		record(t, alice, "r", 2, 7, t0.Add(1*time.Second), "a2"),
		record(t, bob, "r", 7, 6, t0, "b7"),
	}
	if _, err := s.Put(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, "r", 3)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range h {
		got = append(got, string(r.Env.Payload))
	}
	if want := "a1 b7 a2"; join(got) != want {
		t.Fatalf("History = %s, want %s (by Lamport clock, newest 3)", join(got), want)
	}
	// The pages above a message, as a screen loads them scrolling back.
	for _, tc := range []struct {
		before Record
		limit  int
		want   string
	}{{recs[2], 2, "a1 b7"}, {recs[3], 5, "b1 a1"}, {recs[1], 5, ""}} {
		e := tc.before.Env
		h, err := s.HistoryBefore(ctx, "r", e.Lamport, e.Time, tc.before.ID, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, r := range h {
			got = append(got, string(r.Env.Payload))
		}
		if join(got) != tc.want {
			t.Errorf("HistoryBefore(%s, %d) = %q, want %q", e.Payload, tc.limit, join(got), tc.want)
		}
	}
	last, err := s.Last(ctx, bob.Public(), "r")
	if err != nil || string(last.Env.Payload) != "b7" {
		t.Fatalf("Last(bob) = %v, %v", last.Env, err)
	}
	if _, err := s.Last(ctx, key(t, 9).Public(), "r"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Last(stranger): %v", err)
	}
	if n, err := s.MaxLamport(ctx, "r"); err != nil || n != 7 {
		t.Fatalf("MaxLamport = %d, %v", n, err)
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}

func TestRestoreReplayAfterReopen(t *testing.T) { eachKind(t, testRestoreReplayAfterReopen) }

func testRestoreReplayAfterReopen(t *testing.T, kind ...Option) {
	s, path := open(t, kind...)
	ctx := context.Background()
	var recs []Record
	for seq := uint64(1); seq <= protocol.WindowSize+50; seq++ {
		recs = append(recs, record(t, key(t, 1), "r", seq, seq, t0, "m"))
	}
	if _, err := s.Put(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(path, kind...)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	g := protocol.ReplayGuard{Now: func() time.Time { return t0 }}
	if err := s2.RestoreReplay(ctx, &g); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := g.Check(r.Env, r.ID, protocol.Live); !errors.Is(err, protocol.ErrReplay) {
			t.Fatalf("seq %d after reopen: %v, want ErrReplay", r.Env.Seq, err)
		}
	}
}

func TestSeqReservationsSurviveReopen(t *testing.T) {
	s, path := open(t)
	a := &protocol.SeqAllocator{Store: s, Block: 10}
	for range 3 {
		if _, err := a.Next("r"); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	b := &protocol.SeqAllocator{Store: s2, Block: 10}
	if n, err := b.Next("r"); err != nil || n != 11 {
		t.Fatalf("first number after reopen = %d, %v; want 11", n, err)
	}
	if err := s2.Reserve("r", 5); err != nil {
		t.Fatal(err)
	}
	if n, _ := s2.Reserved("r"); n != 20 {
		t.Fatalf("a lower reservation lowered it to %d", n)
	}
}

func TestPrune(t *testing.T) { eachKind(t, testPrune) }

func testPrune(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	old := record(t, key(t, 1), "r", 1, 1, t0, "old")
	recent := record(t, key(t, 1), "r", 2, 2, t0.Add(48*time.Hour), "new")
	if _, err := s.Put(ctx, old, recent); err != nil {
		t.Fatal(err)
	}
	n, err := s.Prune(ctx, t0.Add(24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if ok, _ := s.Has(ctx, old.ID); ok {
		t.Fatal("old envelope survived pruning")
	}
	if ok, _ := s.Has(ctx, recent.ID); !ok {
		t.Fatal("recent envelope was pruned")
	}
}

// BenchmarkPut commits batches of envelopes as the mesh's writer does
// under load (about 10 at 50 a second, up to 512 at saturation), into a
// store with every part (as the mesh's tests and benchmarks open it),
// a chat client's and a relay's:
//
//	go test -run '^$' -bench Put ./store
func BenchmarkPut(b *testing.B) {
	for _, st := range []struct {
		name string
		opts []Option
	}{{"all", nil}, {"chat", []Option{Search()}}, {"relay", []Option{Relay()}}} {
		for _, batch := range []int{1, 10, 64, 512} {
			b.Run(fmt.Sprintf("store=%s/batch=%d", st.name, batch), func(b *testing.B) {
				benchPut(b, batch, st.opts...)
			})
		}
	}
}

// BenchmarkPutFilled commits pages of 256 envelopes, as a catch-up
// from a relay brings them, into a store that holds 100,000 already:
// what the indexes cost once they are deeper than a page or two.
//
//	go test -run '^$' -bench PutFilled -benchtime 25600x ./store
func BenchmarkPutFilled(b *testing.B) {
	const filled, page = 100_000, 256
	for _, st := range []struct {
		name string
		opts []Option
	}{{"all", nil}, {"chat", []Option{Search()}}, {"relay", []Option{Relay()}}} {
		b.Run("store="+st.name, func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "parley.db"), st.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			var keys []identity.PrivateKey // 50 people talking
			for i := range 50 {
				keys = append(keys, key(b, byte(1+i)))
			}
			recs := make([]Record, filled+b.N)
			for i := range recs {
				seq := uint64(i/len(keys) + 1)
				recs[i] = record(b, keys[i%len(keys)], "r", seq, uint64(i+1), t0.Add(time.Duration(i)*time.Millisecond), "payload of a typical chat message, a line or two long")
				recs[i].Via = "relay"
			}
			for i := 0; i < filled; i += 1000 {
				if _, err := s.Put(ctx, recs[i:i+1000]...); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := filled; i < len(recs); i += page {
				if _, err := s.Put(ctx, recs[i:min(i+page, len(recs))]...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "envelopes/s")
		})
	}
}

func benchPut(b *testing.B, batch int, opts ...Option) {
	s, err := Open(filepath.Join(b.TempDir(), "parley.db"), opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	k := key(b, 1)
	recs := make([]Record, 0, batch)
	seq := uint64(0)
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		recs = recs[:0]
		for range batch {
			seq++
			b.StopTimer()
			recs = append(recs, record(b, k, "r", seq, seq, t0, "payload of a typical chat message, a line or two long"))
			b.StartTimer()
		}
		if _, err := s.Put(context.Background(), recs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "envelopes/s")
}

// TestPositions: Append gives each new envelope a growing position, a
// duplicate the position it has, and After and Position read by them.
func TestPositions(t *testing.T) { eachKind(t, testPositions) }

func testPositions(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	k := key(t, 1)
	now := time.Now()
	var recs []Record
	for i := range 5 {
		room := "a"
		if i%2 == 1 {
			room = "b"
		}
		recs = append(recs, record(t, k, room, uint64(i+1), uint64(i+1), now, fmt.Sprint(i)))
	}
	out, err := s.Append(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(out); i++ {
		if out[i].Result != Stored || out[i].Pos <= out[i-1].Pos {
			t.Fatalf("append %d: %+v after %+v", i, out[i], out[i-1])
		}
	}
	again, err := s.Append(ctx, recs[2:3])
	if err != nil || again[0].Result != Duplicate || again[0].Pos != out[2].Pos {
		t.Fatalf("duplicate: %+v %v, want position %d", again, err, out[2].Pos)
	}
	got, err := s.After(ctx, "a", out[0].Pos, 10)
	if err != nil || len(got) != 2 || got[0].ID != recs[2].ID || got[1].ID != recs[4].ID || got[0].Pos != out[2].Pos {
		t.Fatalf("after: %v, %d records", err, len(got))
	}
	room, pos, err := s.Position(ctx, recs[3].ID)
	if err != nil || room != "b" || pos != out[3].Pos {
		t.Fatalf("position: %s %d %v", room, pos, err)
	}
	if _, _, err := s.Position(ctx, protocol.ID{9}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("position of nothing: %v", err)
	}
	// A batch rolled back leaves nothing.
	b, err := s.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append(ctx, []Record{record(t, k, "a", 99, 99, now, "gone")}); err != nil {
		t.Fatal(err)
	}
	b.Rollback()
	if got, _ := s.After(ctx, "a", 0, 10); len(got) != 3 {
		t.Fatalf("%d records in a after a rollback, want 3", len(got))
	}
}

// TestGivenPositions: a record with a position is stored there, one
// without takes the next; a duplicate given a position leaves it unused.
// LastPos and Heads read what the relay's sequencer starts from.
func TestGivenPositions(t *testing.T) { eachKind(t, testGivenPositions) }

func testGivenPositions(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	if last, err := s.LastPos(ctx); err != nil || last != 0 {
		t.Fatalf("last position of nothing: %d, %v", last, err)
	}
	alice, bob := key(t, 1), key(t, 2)
	now := time.Now()
	given := record(t, alice, "a", 1, 1, now, "given")
	given.Pos = 10
	out, err := s.Append(ctx, []Record{given, record(t, alice, "a", 2, 2, now, "next")})
	if err != nil {
		t.Fatal(err)
	}
	if out[0] != (Appended{Stored, 10}) || out[1] != (Appended{Stored, 11}) {
		t.Fatalf("appended %+v, want positions 10 and 11", out)
	}
	dup := given
	dup.Pos = 12
	if out, err = s.Append(ctx, []Record{dup}); err != nil || out[0] != (Appended{Duplicate, 10}) {
		t.Fatalf("duplicate at a given position: %+v, %v", out, err)
	}
	taken := record(t, bob, "b", 7, 7, now, "x")
	taken.Pos = 11
	if _, err := s.Append(ctx, []Record{taken}); err == nil || !strings.Contains(err.Error(), "UNIQUE constraint failed: envelopes.rowid") {
		t.Fatalf("a record at a position taken: %v", err)
	}
	if _, err := s.Append(ctx, []Record{record(t, bob, "b", 5, 5, now, "b"), record(t, bob, "c", 3, 3, now, "c")}); err != nil {
		t.Fatal(err)
	}
	if last, err := s.LastPos(ctx); err != nil || last != 13 {
		t.Fatalf("last position %d, %v; want 13", last, err)
	}
	heads := map[string]uint64{}
	all, err := s.Heads(ctx, 10, func(h Head) { heads[h.Sender.Fingerprint()[:12]+" "+h.Room] = h.Seq })
	if err != nil || !all {
		t.Fatalf("heads: all %v, %v", all, err)
	}
	want := map[string]uint64{
		alice.Public().Fingerprint()[:12] + " a": 2,
		bob.Public().Fingerprint()[:12] + " b":   5,
		bob.Public().Fingerprint()[:12] + " c":   3,
	}
	if fmt.Sprint(heads) != fmt.Sprint(want) {
		t.Fatalf("heads %v, want %v", heads, want)
	}
	n := 0
	if all, err := s.Heads(ctx, 2, func(Head) { n++ }); err != nil || all || n != 2 {
		t.Fatalf("two heads of three: %d, all %v, %v", n, all, err)
	}
}

// TestPruneBytes keeps the newest envelopes within the byte budget, and
// never those received after the cutoff, nor the newest.
func TestPruneBytes(t *testing.T) { eachKind(t, testPruneBytes) }

func testPruneBytes(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	k := key(t, 1)
	old := time.Now().Add(-time.Hour)
	var size int64
	for i := range 10 {
		r := record(t, k, "a", uint64(i+1), uint64(i+1), old, strings.Repeat("x", 100))
		size = int64(len(r.Raw))
		r.Received = old
		if _, err := s.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PruneBytes(ctx, 3*size, time.Now())
	if err != nil || n != 7 {
		t.Fatalf("pruned %d (%v), want 7", n, err)
	}
	if got, _ := s.After(ctx, "a", 0, 20); len(got) != 3 || got[0].Env.Seq != 8 {
		t.Fatalf("kept %d", len(got))
	}
	// Nothing received after the cutoff goes, however tight the budget.
	n, err = s.PruneBytes(ctx, 1, old.Add(-time.Minute))
	if err != nil || n != 0 {
		t.Fatalf("pruned %d (%v) of what is newer than the cutoff", n, err)
	}
}

// TestCheckpointEvery: the option reaches the writer's connection, and a
// store without it keeps SQLite's default.
func TestCheckpointEvery(t *testing.T) {
	for _, tc := range []struct {
		opts []Option
		want int
	}{{nil, 1000}, {[]Option{CheckpointEvery(10000)}, 10000}} {
		s, err := Open(filepath.Join(t.TempDir(), "s.db"), tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		var got int
		if err := s.w.QueryRow(`PRAGMA wal_autocheckpoint`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if got != tc.want {
			t.Errorf("wal_autocheckpoint = %d, want %d", got, tc.want)
		}
	}
}

// TestMissing: Missing names the IDs that are not stored, in their order.
func TestMissing(t *testing.T) { eachKind(t, testMissing) }

func testMissing(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	a := record(t, key(t, 1), "r", 1, 1, t0, "a")
	b := record(t, key(t, 1), "r", 2, 2, t0, "b")
	c := record(t, key(t, 1), "r", 3, 3, t0, "c")
	if _, err := s.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := s.Missing(ctx, []protocol.ID{a.ID, b.ID, c.ID})
	if err != nil || len(got) != 2 || got[0] != a.ID || got[1] != c.ID {
		t.Fatalf("Missing = %v, %v; want [a c]", got, err)
	}
	if got, err := s.Missing(ctx, nil); got != nil || err != nil {
		t.Fatalf("Missing(nil) = %v, %v", got, err)
	}
}

// TestEquivocationEvidenceBeforeTheFirst: evidence of an equivocation
// recorded before the envelope it proves against is committed does not
// take that envelope's place (the mesh's validator hands both over on
// different goroutines).
func TestEquivocationEvidenceBeforeTheFirst(t *testing.T) {
	eachKind(t, testEquivocationEvidenceBeforeTheFirst)
}

func testEquivocationEvidenceBeforeTheFirst(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	first := record(t, key(t, 1), "r", 1, 1, t0, "shown")
	second := record(t, key(t, 1), "r", 1, 1, t0, "the other")
	if err := s.PutEquivocation(ctx, first.ID, second.Raw, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEquivocation(ctx, first.ID, second.Raw, t0); err != nil {
		t.Fatalf("the same proof again: %v", err)
	}
	if _, err := s.Get(ctx, second.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the evidence was stored as a message: %v", err)
	}
	res, err := s.Put(ctx, first)
	if err != nil || res[0] != Stored {
		t.Fatalf("the first envelope after its evidence: %v, %v", res, err)
	}
	if id, ok, err := s.AtSeq(ctx, first.Env.Sender, "r", 1); err != nil || !ok || id != first.ID {
		t.Fatalf("the slot holds %s (%v, %v), want the first envelope %s", id, ok, err, first.ID)
	}
}

// TestStamp: a range's stamp stays the same while its envelopes do, and
// changes when one is added to the range or pruned from it; envelopes
// of other rooms and times leave it alone.
func TestStamp(t *testing.T) { eachKind(t, testStamp) }

func testStamp(t *testing.T, kind ...Option) {
	s, _ := open(t, kind...)
	ctx := context.Background()
	k := key(t, 1)
	since, until := t0.UnixMilli(), t0.Add(5*time.Second).UnixMilli()
	stamp := func() Stamp {
		t.Helper()
		st, err := s.Stamp(ctx, "r", since, until, 100)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	put := func(recs ...Record) []Appended {
		t.Helper()
		out, err := s.Append(ctx, recs)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if st := stamp(); st != (Stamp{}) {
		t.Fatalf("stamp of an empty range = %+v", st)
	}
	in := put(record(t, k, "r", 1, 1, t0, "a"), record(t, k, "r", 2, 2, t0.Add(time.Second), "b"),
		record(t, k, "r", 3, 3, t0.Add(2*time.Second), "c"))
	first := stamp()
	if want := (Stamp{3, in[2].Pos}); first != want {
		t.Fatalf("stamp = %+v, want %+v", first, want)
	}
	put(record(t, k, "r", 4, 4, t0.Add(10*time.Second), "later"), record(t, k, "other", 1, 1, t0.Add(time.Second), "elsewhere"))
	if st := stamp(); st != first {
		t.Fatalf("envelopes out of the range changed its stamp: %+v, then %+v", first, st)
	}
	added := put(record(t, k, "r", 5, 5, t0.Add(3*time.Second), "d"))
	second := stamp()
	if want := (Stamp{4, added[0].Pos}); second != want {
		t.Fatalf("after an envelope in the range: stamp = %+v, want %+v", second, want)
	}
	if st, err := s.Stamp(ctx, "r", since, until, 2); err != nil || st.Count != 2 {
		t.Fatalf("stamp counting at most 2 = %+v, %v", st, err)
	}
	// Retention takes the envelopes received before t0 + 1.5 s.
	if n, err := s.Prune(ctx, t0.Add(1500*time.Millisecond)); err != nil || n != 3 {
		t.Fatalf("Prune = %d, %v; want 3", n, err)
	}
	if st := stamp(); st.Count != 2 || st == second {
		t.Fatalf("after pruning two of the range: stamp = %+v, before %+v", st, second)
	}
	// Two taken away and two added: the count is the same as before,
	// the stamp is not.
	put(record(t, k, "r", 6, 6, t0.Add(4*time.Second), "e"), record(t, k, "r", 7, 7, t0.Add(4*time.Second), "f"))
	if st := stamp(); st.Count != second.Count || st == second {
		t.Fatalf("as many envelopes in the range, two of them others: stamp = %+v, before %+v", st, second)
	}
}

// TestStampReadsTheIndexOnly: a stamp is read from the index on (room,
// time, id), not from the table's rows.
func TestStampReadsTheIndexOnly(t *testing.T) {
	s, _ := open(t)
	plan := queryPlan(t, s.r, stampQuery, "r", 0, 1, 10)
	if !strings.Contains(plan, "COVERING INDEX envelopes_room_time") || strings.Contains(plan, "SCAN envelopes") {
		t.Fatalf("the stamp's plan is not a search of the covering index:\n%s", plan)
	}
}

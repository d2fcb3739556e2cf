package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleychat/parley/protocol"
)

func textRecord(t testing.TB, seq uint64, nick, body string) Record {
	t.Helper()
	payload, err := (&protocol.Text{Nick: nick, Body: body}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return record(t, key(t, 1), "r", seq, seq, t0.Add(time.Duration(seq)*time.Second), string(payload))
}

func TestSearch(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "chat.db"), Search())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	recs := []Record{
		textRecord(t, 1, "alice", "the Café opens at nine"),
		textRecord(t, 2, "bob", "see you at the cafe"),
		textRecord(t, 3, "alice", `a "quoted" word AND an operator`),
		record(t, key(t, 1), "r", 4, 4, t0, "not a text payload"),
	}
	// Indexed before it is stored: not indexed, and said so.
	if ok, err := s.IndexText(ctx, recs[0].ID, "alice", "the Café opens at nine"); ok || err != nil {
		t.Fatalf("IndexText of an envelope not stored = %v, %v; want false", ok, err)
	}
	if _, err := s.Put(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	// The store does not read payloads: the client hands it the text.
	for _, r := range recs[:3] {
		txt, err := protocol.ParseText(r.Env.Payload)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // twice is once
			if ok, err := s.IndexText(ctx, r.ID, txt.Nick, txt.Body); !ok || err != nil {
				t.Fatalf("IndexText = %v, %v", ok, err)
			}
		}
	}
	for _, tc := range []struct {
		q    string
		want []uint64 // sequence numbers, in display order
	}{
		{"cafe", []uint64{1, 2}},           // diacritics folded, case ignored
		{"cafe nine", []uint64{1}},         // every word must match
		{"bob", []uint64{2}},               // the nickname is searched too
		{`"quoted"`, []uint64{3}},          // quotes are text
		{"AND", []uint64{3}},               // and so are operators
		{"NEAR(", nil},                     // never a syntax error
		{"nine\x00 \xffcafe", []uint64{1}}, // nor a NUL (found by FuzzSearch) or bad UTF-8
		{"", []uint64{1, 2, 3, 4}},         // no words: the history
		{"payload", nil},                   // only text envelopes are indexed
	} {
		got, err := s.Search(ctx, "r", tc.q, 10)
		if err != nil {
			t.Fatalf("Search(%q): %v", tc.q, err)
		}
		var seqs []uint64
		for _, r := range got {
			seqs = append(seqs, r.Env.Seq)
		}
		if len(seqs) != len(tc.want) {
			t.Fatalf("Search(%q) = %v, want %v", tc.q, seqs, tc.want)
		}
		for i := range seqs {
			if seqs[i] != tc.want[i] {
				t.Fatalf("Search(%q) = %v, want %v", tc.q, seqs, tc.want)
			}
		}
	}
	// A pruned envelope leaves the index too.
	if n, err := s.Prune(ctx, t0.Add(90*time.Second)); err != nil || n != 3 {
		t.Fatalf("Prune = %d, %v; want 3", n, err)
	}
	if got, err := s.Search(ctx, "r", "cafe", 10); err != nil || len(got) != 0 {
		t.Fatalf("Search after prune = %d records, %v", len(got), err)
	}
}

func TestClientState(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	r := textRecord(t, 1, "alice", "hi")
	if _, err := s.Put(ctx, r); err != nil {
		t.Fatal(err)
	}
	for _, via := range []string{"relay", "mesh", "relay", "sync"} {
		if ok, err := s.AddVia(ctx, r.ID, via); err != nil || !ok {
			t.Fatalf("AddVia(%s) = %v, %v", via, ok, err)
		}
	}
	if ok, err := s.AddVia(ctx, protocol.ID{9}, "relay"); err != nil || ok {
		t.Fatalf("AddVia of an unknown envelope = %v, %v; want false", ok, err)
	}
	got, err := s.Get(ctx, r.ID)
	if err != nil || got.Via != "mesh,relay,sync" {
		t.Fatalf("via = %q, %v; want mesh,relay,sync", got.Via, err)
	}

	for _, room := range []string{"b", "a", "b"} {
		if err := s.AddRoom(ctx, room, t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RemoveRoom(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if rooms, err := s.Rooms(ctx); err != nil || len(rooms) != 1 || rooms[0] != "a" {
		t.Fatalf("Rooms = %v, %v; want [a]", rooms, err)
	}

	if c, err := s.RelayCursor(ctx, "relay1", "a"); err != nil || c != (protocol.ID{}) {
		t.Fatalf("cursor before any = %v, %v", c, err)
	}
	for _, id := range []protocol.ID{{1}, {2}} {
		if err := s.SetRelayCursor(ctx, "relay1", "a", id); err != nil {
			t.Fatal(err)
		}
	}
	if c, err := s.RelayCursor(ctx, "relay1", "a"); err != nil || c != (protocol.ID{2}) {
		t.Fatalf("cursor = %v, %v; want the last set", c, err)
	}
	if c, _ := s.RelayCursor(ctx, "relay2", "a"); c != (protocol.ID{}) {
		t.Fatalf("another relay's cursor = %v", c)
	}

	if cp, err := s.RelayCheckpoint(ctx, "relay1"); err != nil || cp != nil {
		t.Fatalf("checkpoint before any = %q, %v", cp, err)
	}
	for _, note := range []string{"one", "two"} {
		if err := s.SetRelayCheckpoint(ctx, "relay1", []byte(note)); err != nil {
			t.Fatal(err)
		}
	}
	if cp, err := s.RelayCheckpoint(ctx, "relay1"); err != nil || string(cp) != "two" {
		t.Fatalf("checkpoint = %q, %v; want two", cp, err)
	}

	if tr, err := s.RelayTransport(ctx, "relay1"); err != nil || tr != "" {
		t.Fatalf("transport before any = %q, %v", tr, err)
	}
	for _, tr := range []string{"quic", "tcp"} {
		if err := s.SetRelayTransport(ctx, "relay1", tr); err != nil {
			t.Fatal(err)
		}
	}
	if tr, err := s.RelayTransport(ctx, "relay1"); err != nil || tr != "tcp" {
		t.Fatalf("transport = %q, %v; want the last set", tr, err)
	}

	// Unshown messages: noted, listed if stored, cleared once shown.
	r2 := textRecord(t, 2, "alice", "later")
	if err := s.AddUnshown(ctx, "r", []protocol.ID{r2.ID, r.ID}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Unshown(ctx, "r"); err != nil || len(got) != 1 || got[0].ID != r.ID {
		t.Fatalf("Unshown before the second is stored = %v, %v", got, err)
	}
	if _, err := s.Put(ctx, r2); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Unshown(ctx, "r"); len(got) != 2 || got[0].ID != r.ID || got[1].ID != r2.ID {
		t.Fatalf("Unshown = %d records, want both in order", len(got))
	}
	if err := s.RemoveUnshown(ctx, []protocol.ID{r.ID}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Unshown(ctx, "r"); len(got) != 1 || got[0].ID != r2.ID {
		t.Fatalf("Unshown after one was shown = %d records", len(got))
	}

	if got, err := s.Receipts(ctx, r.ID); err != nil || len(got) != 0 {
		t.Fatalf("receipts before any = %v, %v", got, err)
	}
	// One per relay: a second relay's receipt does not replace the
	// first's; the same relay's again does.
	want := Receipt{Relay: "relay1", Pos: 7, Index: 42, Checkpoint: []byte("note")}
	other := Receipt{Relay: "relay2", Pos: 9, Index: 3, Checkpoint: []byte("note 2")}
	for _, rc := range []Receipt{want, other, want} {
		if err := s.PutReceipt(ctx, r.ID, rc); err != nil {
			t.Fatal(err)
		}
	}
	rcs, err := s.Receipts(ctx, r.ID)
	if err != nil || len(rcs) != 2 {
		t.Fatalf("receipts = %+v, %v; want relay1's and relay2's", rcs, err)
	}
	for i, w := range []Receipt{want, other} {
		if g := rcs[i]; g.Relay != w.Relay || g.Pos != w.Pos || g.Index != w.Index || string(g.Checkpoint) != string(w.Checkpoint) {
			t.Errorf("receipt %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestDatabaseIsPrivate(t *testing.T) {
	_, path := open(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("database mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestIndexTextBeside: indexing a message that is not stored does not wait
// for a batch that is open (the writer of the mesh node, committing), and
// says not found; one that the open batch appended is indexed once that
// batch commits.
func TestIndexTextBeside(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "chat.db"), Search())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	stored, absent := textRecord(t, 1, "alice", "in the open batch"), textRecord(t, 2, "alice", "nowhere")
	b, err := s.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Rollback()
	if _, err := b.Append(ctx, []Record{stored}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		ok  bool
		err error
	}
	index := func(r Record) <-chan result {
		c := make(chan result, 1)
		go func() {
			ok, err := s.IndexText(ctx, r.ID, "alice", "text")
			c <- result{ok, err}
		}()
		return c
	}
	select {
	case r := <-index(absent):
		if r.ok || r.err != nil {
			t.Fatalf("IndexText of an envelope not stored = %v, %v; want false", r.ok, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("IndexText of an envelope not stored waited for the open batch")
	}
	pending := index(stored)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-pending:
		if !r.ok || r.err != nil {
			t.Fatalf("IndexText of the batch's envelope = %v, %v; want true", r.ok, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("IndexText of the batch's envelope did not end after its commit")
	}
	if got, err := s.Search(ctx, "r", "text", 10); err != nil || len(got) != 1 {
		t.Fatalf("search after the commit: %d found, %v", len(got), err)
	}
}

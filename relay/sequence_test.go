package relay

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// envelopeAt is a pending envelope of sender in room with sequence number
// seq, as far as the sequencer looks.
func envelopeAt(sender identity.PrivateKey, room string, seq uint64) *pending {
	return &pending{rec: store.Record{Env: &protocol.Envelope{Sender: sender.Public(), Room: room, Seq: seq}}}
}

// TestSequencer: what the sequencer sends live at once (early) and what
// waits for the store (late), from a store with envelopes in it.
func TestSequencer(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	alice, bob, carol := testkit.Key(t), testkit.Key(t), testkit.Key(t)
	a := &testkit.Author{Key: alice, Room: "a"}
	b := &testkit.Author{Key: bob, Room: "b"}
	for _, au := range []*testkit.Author{a, a, a, b} {
		raw, id := au.Next(t, "x")
		env, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(ctx, store.Record{ID: id, Env: env, Raw: raw, Via: viaRelay, Received: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}

	q, err := newSequencer(ctx, SQLiteStorage{st}, maxHeads)
	if err != nil {
		t.Fatal(err)
	}
	if q.next != 5 || !q.complete {
		t.Fatalf("next position %d, complete %v; want 5, true", q.next, q.complete)
	}
	place := func(p *pending, want bool) {
		t.Helper()
		if got := q.place(p); got != want {
			t.Fatalf("%s seq %d: early %v, want %v", p.rec.Env.Room, p.rec.Env.Seq, got, want)
		}
	}
	place(envelopeAt(alice, "a", 4), true)  // the next of a stored stream
	place(envelopeAt(carol, "c", 1), true)  // a stream with nothing stored
	resend := envelopeAt(alice, "a", 2)     // stored already
	place(resend, false)                    // the store decides
	after := envelopeAt(alice, "a", 5)      // new, but behind a late one
	place(after, false)                     //
	place(envelopeAt(bob, "b", 2), true)    // another room goes on
	again := envelopeAt(alice, "a", 4)      // on its way already
	place(again, false)                     //
	q.settled([]*pending{resend, after})    //
	place(envelopeAt(alice, "a", 6), false) // again is still late
	q.settled([]*pending{again})            //
	place(envelopeAt(alice, "a", 7), false) // behind the late 6
	q.settled([]*pending{envelopeAt(alice, "a", 6), envelopeAt(alice, "a", 7)})
	place(envelopeAt(alice, "a", 8), true) // the room is clear

	// Heads of only some pairs: a pair not known waits for the store.
	q, err = newSequencer(ctx, SQLiteStorage{st}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if q.complete {
		t.Fatal("one head of two read, and complete")
	}
	early := 0
	for _, p := range []*pending{envelopeAt(alice, "a", 4), envelopeAt(bob, "b", 2)} {
		if q.place(p) {
			early++
		}
	}
	if early != 1 {
		t.Fatalf("%d of the two streams' next envelopes early, want the one known", early)
	}
	place(envelopeAt(carol, "c", 1), false)
}

// TestSequencerFull: past its limit of pairs, the sequencer no longer
// takes a pair it does not know for one with nothing stored.
func TestSequencerFull(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	q, err := newSequencer(ctx, SQLiteStorage{st}, 2)
	if err != nil {
		t.Fatal(err)
	}
	keys := []identity.PrivateKey{testkit.Key(t), testkit.Key(t), testkit.Key(t)}
	for i, k := range keys {
		if !q.place(envelopeAt(k, "r", 1)) {
			t.Fatalf("stream %d: first envelope late", i)
		}
	}
	if q.complete {
		t.Fatal("three pairs in a sequencer of two, and complete")
	}
	if q.place(envelopeAt(testkit.Key(t), "s", 1)) {
		t.Fatal("a pair not known went early")
	}
	if !q.place(envelopeAt(keys[0], "r", 2)) {
		t.Fatal("a known pair's next envelope went late")
	}
}

// TestLiveExactlyOnce: live subscribers get each new envelope once, in
// order, whether it went out before the committer (new) or after its
// insert (a resend, an equivocation, envelopes behind them), across a
// restart of the relay on the same store.
func TestLiveExactlyOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	key := testkit.Key(t)
	r := startRelayAt(t, path, key, nil)
	alice, bob := testkit.Key(t), testkit.Key(t)
	ca, cb := dial(t, r, alice), dial(t, r, bob)
	ctx := ctxT(t)
	sub, err := cb.Subscribe(ctx, "lobby", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	<-sub.Live
	a := &testkit.Author{Key: alice, Room: "lobby"}
	var (
		raws [][]byte
		want []protocol.ID
		pos  []uint64
	)
	publish := func(c *Client, raw []byte, status protocol.AckStatus) *protocol.Ack {
		t.Helper()
		ack, err := c.Publish(ctx, raw)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Status != status {
			t.Fatalf("ack status %v, want %v", ack.Status, status)
		}
		return ack
	}
	for i := range 3 {
		raw, id := a.Next(t, fmt.Sprint("new ", i))
		raws, want = append(raws, raw), append(want, id)
		pos = append(pos, publish(ca, raw, protocol.AckStored).Pos)
	}
	if dup := publish(ca, raws[1], protocol.AckDuplicate); dup.Pos != pos[1] {
		t.Fatalf("duplicate at position %d, the envelope is at %d", dup.Pos, pos[1])
	}
	other := &testkit.Author{Key: alice, Room: "lobby", Seq: 2, Prev: want[1]}
	forked, _ := other.Next(t, "the other third")
	if _, err := ca.Publish(ctx, forked); err == nil {
		t.Fatal("an equivocation was stored")
	}
	raw, id := a.Next(t, "after them")
	want = append(want, id)
	pos = append(pos, publish(ca, raw, protocol.AckStored).Pos)
	for i := 1; i < len(pos); i++ {
		if pos[i] <= pos[i-1] {
			t.Fatalf("positions %v do not grow", pos)
		}
	}
	for i, d := range receive(t, sub, len(want)) {
		if d.ID != want[i] || !d.Live {
			t.Fatalf("delivery %d: %s (live %v), want %s", i, d.ID, d.Live, want[i])
		}
	}
	sub.Close()
	ca.Close()
	cb.Close()

	// The same store after a restart: the sequencer reads it again.
	r.stop()
	r = startRelayAt(t, path, key, nil)
	ca, cb = dial(t, r, alice), dial(t, r, bob)
	sub, err = cb.Subscribe(ctx, "lobby", want[len(want)-1])
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	<-sub.Live
	publish(ca, raws[0], protocol.AckDuplicate)
	raw, id = a.Next(t, "after the restart")
	if ack := publish(ca, raw, protocol.AckStored); ack.Pos <= pos[len(pos)-1] {
		t.Fatalf("position %d after the restart, %d before it", ack.Pos, pos[len(pos)-1])
	}
	if d := receive(t, sub, 1)[0]; d.ID != id {
		t.Fatalf("after the restart: %s, want %s", d.ID, id)
	}
	select {
	case d := <-sub.C:
		t.Fatalf("delivered also %s", d.ID)
	case <-time.After(100 * time.Millisecond):
	}
}

package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

	q, err := newSequencer(ctx, SQLiteStorage{st}, maxPairs)
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

// TestNumbers: out of order, with gaps, and past maxAbove.
func TestNumbers(t *testing.T) {
	var s numbers
	for _, seq := range []uint64{3, 1, 5} {
		if !s.isNew(seq) {
			t.Fatalf("%d new, not seen as new", seq)
		}
		s = s.add(seq)
	}
	if s.base != 1 || !slices.Equal(s.above, []uint64{3, 5}) {
		t.Fatalf("base %d above %v, want 1 [3 5]", s.base, s.above)
	}
	for seq, want := range map[uint64]bool{1: false, 2: true, 3: false, 4: true, 5: false, 6: true} {
		if s.isNew(seq) != want {
			t.Fatalf("%d: new %v, want %v", seq, !want, want)
		}
	}
	s = s.add(2).add(4)
	if s.base != 5 || s.above != nil {
		t.Fatalf("base %d above %v after the gaps filled, want 5 []", s.base, s.above)
	}
	// A sender that skips every other number.
	for i := range uint64(maxAbove + 1) {
		s = s.add(7 + 2*i)
	}
	if want := uint64(7 + 2*maxAbove); s.base != want || s.above != nil {
		t.Fatalf("base %d above %d numbers, want %d and none", s.base, len(s.above), want)
	}
	if s.isNew(8) {
		t.Fatal("a number skipped, once above is full, is taken as new")
	}
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
	publish := func(c *relay.Client, raw []byte, status wire.AckStatus) *wire.Ack {
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
		pos = append(pos, publish(ca, raw, wire.AckStored).Pos)
	}
	if dup := publish(ca, raws[1], wire.AckDuplicate); dup.Pos != pos[1] {
		t.Fatalf("duplicate at position %d, the envelope is at %d", dup.Pos, pos[1])
	}
	other := &testkit.Author{Key: alice, Room: "lobby", Seq: 2, Prev: want[1]}
	forked, _ := other.Next(t, "the other third")
	if _, err := ca.Publish(ctx, forked); err == nil {
		t.Fatal("an equivocation was stored")
	}
	raw, id := a.Next(t, "after them")
	want = append(want, id)
	pos = append(pos, publish(ca, raw, wire.AckStored).Pos)
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
	// One at a time, each new one went early; the resend and the
	// equivocation went to the store, which did not store them.
	if early, late := testutil.ToFloat64(r.srv.metrics.liveEarly), testutil.ToFloat64(r.srv.metrics.liveLate); early != 4 || late != 0 {
		t.Fatalf("%v early and %v late, want 4 and 0", early, late)
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
	publish(ca, raws[0], wire.AckDuplicate)
	raw, id = a.Next(t, "after the restart")
	if ack := publish(ca, raw, wire.AckStored); ack.Pos <= pos[len(pos)-1] {
		t.Fatalf("position %d after the restart, %d before it", ack.Pos, pos[len(pos)-1])
	}
	if d := receive(t, sub, 1)[0]; d.ID != id {
		t.Fatalf("after the restart: %s, want %s", d.ID, id)
	}
	if d, ok := nextEnvelope(sub, 100*time.Millisecond); ok {
		t.Fatalf("delivered also %s", d.ID)
	}
}

// TestHubFailKeepsInFlight: when a commit fails, envelopes of later
// batches that went out early are still in flight, and a subscription
// that starts now must wait for them (it counts them as dropped).
func TestHubFailKeepsInFlight(t *testing.T) {
	h := newHub(4)
	env := &protocol.Envelope{Room: "r"}
	h.deliver([]store.Record{{Env: env, Pos: 10}}) // its commit fails
	h.deliver([]store.Record{{Env: env, Pos: 11}}) // early, a later batch
	h.fail()
	if d := h.subscribe("r", func() {}).dropped.Load(); d != 11 {
		t.Fatalf("a subscription that starts after the failure counts %d as dropped, want 11", d)
	}
	h.committed([]store.Record{{Env: env, Pos: 11}})
	if d := h.subscribe("r", func() {}).dropped.Load(); d != 0 {
		t.Fatalf("after the commit of 11: %d dropped, want 0", d)
	}
}

// TestHubCommittedKeepsLater: a commit clears what it committed from the
// in-flight positions, not what went out early after its batch.
func TestHubCommittedKeepsLater(t *testing.T) {
	h := newHub(4)
	env := &protocol.Envelope{Room: "r"}
	h.deliver([]store.Record{{Env: env, Pos: 10}})
	h.deliver([]store.Record{{Env: env, Pos: 11}}) // early, a later batch
	h.committed([]store.Record{{Env: env, Pos: 10}})
	if d := h.subscribe("r", func() {}).dropped.Load(); d != 11 {
		t.Fatalf("a subscription that starts after the commit of 10 counts %d as dropped, want 11", d)
	}
}

// failingBegin is a Storage whose next Begin fails when fail is set,
// and whose next Commit fails when failCommit is.
type failingBegin struct {
	Storage
	fail       *atomic.Bool
	failCommit *atomic.Bool
}

func (f failingBegin) Begin(ctx context.Context) (Batch, error) {
	if f.fail.CompareAndSwap(true, false) {
		return nil, errors.New("disk I/O error")
	}
	b, err := f.Storage.Begin(ctx)
	if err != nil || f.failCommit == nil {
		return b, err
	}
	return failingCommit{b, f.failCommit}, nil
}

// failingCommit is a Batch that rolls back and fails when fail is set.
type failingCommit struct {
	Batch
	fail *atomic.Bool
}

func (b failingCommit) Commit() error {
	if b.fail.CompareAndSwap(true, false) {
		b.Batch.Rollback()
		return errors.New("disk full")
	}
	return b.Batch.Commit()
}

// TestEarlyThenNotStored: an envelope went out early and its batch could
// not be written. The subscription that may have sent it ends with code
// 12, so the client resumes from its last Committed frame; and a resend in a batch
// that could not be written does not leave its room late for good.
func TestEarlyThenNotStored(t *testing.T) {
	var fail atomic.Bool
	r := startRelayAt(t, filepath.Join(t.TempDir(), "relay.db"), testkit.Key(t), nil, func(s *Server) {
		s.st = failingBegin{s.st, &fail, nil}
	})
	ctx := ctxT(t)
	alice := testkit.Key(t)
	ca := dial(t, r, alice)
	a := &testkit.Author{Key: alice, Room: "lobby"}
	first, _ := a.Next(t, "stored")
	if _, err := ca.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}

	conn, err := relay.DialQUIC(ctx, r.addr, testkit.Key(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	str.SetReadDeadline(time.Now().Add(20 * time.Second))
	body, _ := (&wire.Subscribe{Room: "lobby", Cursor: protocol.IDOf(first)}).MarshalBinary()
	if _, err := str.Write(wire.AppendFrame(nil, wire.FrameSubscribe, body)); err != nil {
		t.Fatal(err)
	}
	fr := wire.NewReader(str, wire.MaxFrameBody)
	if ft, _, err := fr.Next(); err != nil || ft != wire.FrameLive {
		t.Fatalf("subscribe: %s, %v", ft, err)
	}

	// The second connection's audit record is queued before its
	// subscription is served, and a batch of audit records alone waits up
	// to auditLinger for more: left alone, it could be the batch that
	// fails, on a loaded machine. An envelope published and acknowledged
	// now is committed with it or after it; the subscription sends it and
	// its Committed frame.
	barrier, barrierID := a.Next(t, "after the connection's record")
	if _, err := ca.Publish(ctx, barrier); err != nil {
		t.Fatal(err)
	}
	for {
		ft, body, err := fr.Next()
		if err != nil {
			t.Fatalf("before the failed batch: %v", err)
		}
		if ft == wire.FrameCommitted {
			if c, err := wire.ParseCommitted(body); err == nil && c.ID == barrierID {
				break
			}
		}
	}

	lost, lostID := a.Next(t, "early, never stored")
	fail.Store(true)
	if _, err := ca.Publish(ctx, lost); !errors.Is(err, &wire.RelayError{Code: wire.CodeInternal}) {
		t.Fatalf("publish into a batch that cannot be written: %v", err)
	}
	var sent []protocol.ID
	for {
		ft, body, err := fr.Next()
		if err != nil {
			t.Fatalf("after %d envelopes: %v", len(sent), err)
		}
		if ft == wire.FrameEnvelope {
			sent = append(sent, protocol.IDOf(body))
			continue
		}
		if ft != wire.FrameError {
			t.Fatalf("%s frame after the failed batch", ft)
		}
		e, err := wire.ParseErrorFrame(body)
		if err != nil || e.Code != wire.CodeInternal {
			t.Fatalf("error frame: %+v, %v", e, err)
		}
		break
	}
	// The subscription may have sent the early envelope before it saw
	// the failure, or not: either way the client resumes from before it.
	if len(sent) > 1 || (len(sent) == 1 && sent[0] != lostID) {
		t.Fatalf("sent %v before the error, want at most the early envelope", sent)
	}

	// A resend is late; its batch fails too.
	fail.Store(true)
	if _, err := ca.Publish(ctx, first); err == nil {
		t.Fatal("a resend into a batch that cannot be written succeeded")
	}
	r.srv.seq.known.Lock()
	late := r.srv.seq.late["lobby"]
	r.srv.seq.known.Unlock()
	if late != 0 {
		t.Fatalf("%d late envelopes of the room pending after their batch failed", late)
	}
}

// TestLiveUnderStress: several senders publish to one room, pipelined
// (so out of order), with resends and equivocations among them, while
// subscriptions with queues of one batch start at different moments.
// Every subscription gets exactly the room's stored envelopes, each once,
// in position order.
func TestLiveUnderStress(t *testing.T) {
	r := startRelay(t, func(c *Config) {
		c.Limits.QueueSize = 16
		c.Limits.PublishRate, c.Limits.PublishBurst = 1e6, 1e6
	})
	r.srv.hub.setSize(1) // below what the config allows: bursts overflow
	ctx := ctxT(t)
	const (
		room    = "busy"
		senders = 4
		each    = 150
	)
	type subscriber struct {
		fr  *wire.Reader
		got []protocol.ID
	}
	var (
		subsMu sync.Mutex
		subs   []*subscriber
	)
	subscribe := func() {
		conn, err := relay.DialQUIC(ctx, r.addr, testkit.Key(t))
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { conn.CloseWithError(0, "") })
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		str.SetReadDeadline(time.Now().Add(25 * time.Second))
		body, _ := (&wire.Subscribe{Room: room}).MarshalBinary()
		if _, err := str.Write(wire.AppendFrame(nil, wire.FrameSubscribe, body)); err != nil {
			t.Error(err)
			return
		}
		subsMu.Lock()
		subs = append(subs, &subscriber{fr: wire.NewReader(str, wire.MaxFrameBody)})
		subsMu.Unlock()
	}
	var published atomic.Int64
	var wg sync.WaitGroup
	for _, at := range []int64{0, 50, 200, 400, 550} {
		wg.Go(func() {
			for published.Load() < at {
				time.Sleep(time.Millisecond)
			}
			subscribe()
		})
	}
	for range senders {
		key := testkit.Key(t)
		c := dial(t, r, key)
		a := &testkit.Author{Key: key, Room: room}
		raws := make([][]byte, each)
		for i := range raws {
			raws[i], _ = a.Next(t, fmt.Sprint("n", i))
		}
		fork := &testkit.Author{Key: key, Room: room, Seq: each / 2}
		forked, _ := fork.Next(t, "the other one")
		wg.Go(func() {
			pipelined(len(raws), 16, func(i int) {
				if _, err := c.Publish(ctx, raws[i]); err != nil {
					t.Error(err)
				}
				published.Add(1)
				switch {
				case i%10 == 9: // a resend of an earlier one
					if ack, err := c.Publish(ctx, raws[i/2]); err != nil || ack.Status != wire.AckDuplicate {
						t.Errorf("resend: %+v, %v", ack, err)
					}
				case i == each-1:
					if _, err := c.Publish(ctx, forked); err == nil {
						t.Error("an equivocation was stored")
					}
				}
			})
		})
	}
	wg.Wait()

	var stored []protocol.ID
	for pos := int64(0); ; {
		page, err := r.st.After(ctx, room, pos, wire.MaxFetchLimit)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range page {
			stored = append(stored, rec.ID)
			pos = rec.Pos
		}
		if len(page) < wire.MaxFetchLimit {
			break
		}
	}
	if len(stored) != senders*each {
		t.Fatalf("%d envelopes stored, want %d", len(stored), senders*each)
	}
	for n, s := range subs {
		for len(s.got) < len(stored) {
			ft, body, err := s.fr.Next()
			if err != nil {
				t.Fatalf("subscription %d: after %d of %d envelopes: %v", n, len(s.got), len(stored), err)
			}
			switch ft {
			case wire.FrameEnvelope:
				s.got = append(s.got, protocol.IDOf(body))
			case wire.FrameLive, wire.FrameCommitted:
			default:
				t.Fatalf("subscription %d: %s frame", n, ft)
			}
		}
		if !slices.Equal(s.got, stored) {
			t.Fatalf("subscription %d: %d envelopes, not the %d stored in their order", n, len(s.got), len(stored))
		}
	}
	t.Logf("subscriptions fell behind their queues %d times; %v envelopes went live early, %v late", r.srv.hub.lags.Load(),
		testutil.ToFloat64(r.srv.metrics.liveEarly), testutil.ToFloat64(r.srv.metrics.liveLate))
}

// TestCommitFails: a batch whose envelopes were inserted but whose commit
// failed answers its publishers with an internal error, does not leave its
// room late for good (its late envelopes settled at their insert), and
// the relay goes on storing and serving the room's envelopes after it,
// so the failed transaction left no lock or writer behind.
func TestCommitFails(t *testing.T) {
	var failBegin, failCommit atomic.Bool
	r := startRelayAt(t, filepath.Join(t.TempDir(), "relay.db"), testkit.Key(t), nil, func(s *Server) {
		s.st = failingBegin{s.st, &failBegin, &failCommit}
	})
	ctx := ctxT(t)
	alice := testkit.Key(t)
	ca := dial(t, r, alice)
	a := &testkit.Author{Key: alice, Room: "lobby"}
	first, firstID := a.Next(t, "stored")
	if _, err := ca.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}

	// A resend is late: it waits for its insert, which is rolled back.
	failCommit.Store(true)
	if _, err := ca.Publish(ctx, first); !errors.Is(err, &wire.RelayError{Code: wire.CodeInternal}) {
		t.Fatalf("a resend into a batch whose commit fails: %v", err)
	}
	if failCommit.Load() {
		t.Fatal("the resend's batch was never committed")
	}
	r.srv.seq.known.Lock()
	late := r.srv.seq.late["lobby"]
	r.srv.seq.known.Unlock()
	if late != 0 {
		t.Fatalf("%d late envelopes of the room pending after their commit failed", late)
	}

	next, nextID := a.Next(t, "after the failed commit")
	if _, err := ca.Publish(ctx, next); err != nil {
		t.Fatalf("publish after a failed commit: %v", err)
	}
	got, err := ca.FetchIDs(ctx, firstID, nextID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("fetched %d of the envelopes before and after the failed commit, want 2", len(got))
	}
}

package client

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/store"
)

// testRelayPath is a relay, never dialled, whose name an offline client's
// relay arrivals carry: its cursors are kept under it.
var testRelayPath = &relayPath{name: "SHA256:test-relay"}

// waitCursor waits until the kept relay cursor of room is want.
func waitCursor(t *testing.T, c *Client, room string, want protocol.ID) {
	t.Helper()
	var got protocol.ID
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var err error
		if got, err = c.st.RelayCursor(context.Background(), testRelayPath.name, room); err == nil && got == want {
			return
		}
	}
	t.Fatalf("cursor of %s = %s, want %s", room, got, want)
}

// TestCursorOnlyCommitted: the relay sends live envelopes before their
// commit, and one whose commit fails may come again later in another
// position. The cursor kept for the next session moves only to what the
// relay confirmed committed, never merely to the last envelope delivered.
func TestCursorOnlyCommitted(t *testing.T) {
	c := openOffline(t)
	alice := &testkit.Author{Key: testkit.Key(t), Room: "r"}
	raw1, id1 := alice.Next(t, "committed")
	raw2, id2 := alice.Next(t, "early, its commit still to come")
	for _, raw := range [][]byte{raw1, raw2} {
		e, _ := protocol.Parse(raw)
		c.in <- arrival{room: "r", id: protocol.IDOf(raw), env: e, raw: raw, via: ViaRelay}
	}
	c.in <- arrival{room: "r", id: id1, via: ViaRelay, relay: testRelayPath, committed: true}
	next(t, c)
	next(t, c)
	waitCursor(t, c, "r", id1)
	// The relay confirms the second: the cursor follows.
	c.in <- arrival{room: "r", id: id2, via: ViaRelay, relay: testRelayPath, committed: true}
	waitCursor(t, c, "r", id2)
}

// TestFailedMergeLosesNothing: a store error while merging leaves the
// batch to be tried again whole: its message is shown once it is stored,
// never swallowed, and a copy by another path is not taken for a message
// already shown.
func TestFailedMergeLosesNothing(t *testing.T) {
	c := openOffline(t)
	var failures atomic.Int32
	failures.Store(2)
	c.merge.fault = func() error {
		if failures.Add(-1) >= 0 {
			return errors.New("disk I/O error (injected)")
		}
		return nil
	}
	r := addRoom(c, "r")
	raw, id, e := signedBy(t, "r", "through a bad moment")
	c.in <- arrival{room: "r", id: id, env: e, raw: raw, via: ViaRelay, history: true}
	c.in <- arrival{room: "r", id: id, via: ViaRelay, relay: testRelayPath, committed: true}
	c.in <- arrival{room: "r", relay: testRelayPath, caughtUp: true}
	if m := next(t, c); m.ID != id || m.Text != "through a bad moment" {
		t.Fatalf("shown %+v", m)
	}
	if failures.Load() >= 0 {
		t.Fatal("no failure was injected")
	}
	select {
	case <-r.caughtUp: // a Send waiting for the history goes on
	case <-time.After(30 * time.Second):
		t.Fatal("the history's end was never marked")
	}
	waitCursor(t, c, "r", id)
	if has, err := c.st.Has(context.Background(), id); err != nil || !has {
		t.Fatalf("stored: %v, %v", has, err)
	}
	// The mesh's copy, later, is another path of the same message.
	c.in <- arrival{room: "r", id: id, env: e, via: ViaMesh}
	noMore(t, c)
	waitVia(t, c, id, "relay,mesh")
}

// TestOneSigner: the client is the one signer of a home folder. Across
// reserved blocks of sequence numbers and a restart, its numbers never
// repeat and its chain links each envelope to the one before.
func TestOneSigner(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	ctx := context.Background()
	var prev protocol.ID
	var last uint64
	for session := range 2 {
		h, err := OpenHome(dir, HomeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Nick = "me"
		c, err := Open(ctx, h, Options{Config: cfg, Offline: true})
		if err != nil {
			t.Fatal(err)
		}
		c.sign.alloc.Block = 3
		for i := range 7 {
			id, err := c.Post(ctx, "r", "numbered")
			if err != nil {
				t.Fatal(err)
			}
			rec, err := c.st.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Env.Seq <= last || rec.Env.Prev != prev {
				t.Fatalf("session %d message %d: seq %d after %d, prev %s after %s", session, i, rec.Env.Seq, last, rec.Env.Prev, prev)
			}
			last, prev = rec.Env.Seq, id
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// alone opens a client on the mesh only, with no peer: its sends stay
// under way, the mesh path waiting for a peer in the room. It returns the
// client, its home and its configuration.
func alone(t *testing.T) (*Client, *Home, Config) {
	t.Helper()
	h, err := OpenHome(filepath.Join(t.TempDir(), "a"), HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Nick, cfg.Mode, cfg.MDNS, cfg.Listen = "a", ModeP2P, false, []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	c, err := Open(context.Background(), h, Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return c, h, cfg
}

// TestSendsBelongToTheClient: a send under way ends with Close, which
// waits for it; a message whose send is under way is not sent a second
// time by the outbox; and the outcome comes as events.
func TestSendsBelongToTheClient(t *testing.T) {
	ctx := context.Background()
	c, h, cfg := alone(t)
	id, err := c.Post(ctx, "r", "to nobody yet")
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	r, inflight := c.rooms["r"], c.inflight[id]
	c.mu.Unlock()
	if inflight == nil {
		t.Fatal("the posted message is not on its way")
	}
	rec, err := c.st.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if d, started := c.startDelivery(r, signed{rec.Env, id, rec.Raw}, time.Now().Add(time.Second)); started || d != inflight {
		t.Fatal("a message on its way was sent a second time")
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Close did not end the send under way in 60 s")
	}
	var last *DeliveryEvent
	for e := range c.Events() {
		if d, ok := e.(*DeliveryEvent); ok && d.Sent.ID == id {
			last = d
		}
	}
	if last != nil && (!last.Done || last.Sent.Delivered()) {
		t.Fatalf("the send's last event: %+v", last)
	}
	// Kept for the next session.
	c2, err := Open(ctx, h, Options{Config: cfg, Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if out, err := c2.st.Outbox(ctx, "r"); err != nil || len(out) != 1 || out[0].ID != id {
		t.Fatalf("outbox = %v, %v", out, err)
	}
}

// TestEventQueueKeepsWhatPumpHandsOut: when the queue is full, dropping a
// status event never drops the first one, which the pump may be handing
// out (it then removes the first: another event would be lost), nor a
// relay state; a message waits for room instead of being dropped.
func TestEventQueueKeepsWhatPumpHandsOut(t *testing.T) {
	q := newEventQueue()
	head := &PeerEvent{Room: "r", Peer: "head"}
	q.q = append(q.q, head, &RelayEvent{Connected: false})
	for len(q.q) < maxQueued-1 {
		q.q = append(q.q, &DeliveryEvent{Room: "r"})
	}
	q.q = append(q.q, &SyncEvent{Room: "r", N: 1})
	if !q.push(context.Background(), &PeerEvent{Room: "r", Peer: "new"}) {
		t.Fatal("push refused")
	}
	if q.q[0] != head {
		t.Fatalf("the first event was dropped: %#v", q.q[0])
	}
	if _, ok := q.q[1].(*RelayEvent); !ok {
		t.Fatalf("the relay state was dropped: %#v", q.q[1])
	}
	for _, e := range q.q {
		if s, ok := e.(*SyncEvent); ok && s.N == 1 {
			t.Fatal("the sync progress event was kept and another dropped")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if q.push(ctx, &MessageEvent{}) {
		t.Fatal("a message was queued past the bound")
	}
}

// TestMeshStoredIsShownLater: a message that the mesh node stored but
// the client never merged (it closed, or was killed, a moment after the
// node's group commit) is shown by the next session, once; one shown
// before the node stored it is not shown again.
func TestMeshStoredIsShownLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	ctx := context.Background()
	open := func() *Client {
		h, err := OpenHome(dir, HomeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Nick = "me"
		c, err := Open(ctx, h, Options{Config: cfg, Offline: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice := &testkit.Author{Key: testkit.Key(t), Room: "r"}
	meshStores := func(c *Client, raw []byte) {
		e, _ := protocol.Parse(raw)
		if _, err := c.st.Put(ctx, store.Record{ID: protocol.IDOf(raw), Env: e, Raw: raw, Via: ViaMesh, Received: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	c := open()
	if err := c.Join(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	rawLost, idLost := alice.Next(t, "stored by the node, never merged")
	meshStores(c, rawLost)
	// Shown first, stored by the node after the shown note was written.
	rawShown, idShown := alice.Next(t, "shown before the node stored it")
	e, _ := protocol.Parse(rawShown)
	c.in <- arrival{room: "r", id: idShown, env: e, via: ViaMesh}
	if m := next(t, c); m.ID != idShown {
		t.Fatalf("shown %s, want %s", m.ID, idShown)
	}
	c.Shown(idShown)
	c.flushShown()
	meshStores(c, rawShown)
	c.flushShown()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c = open()
	defer c.Close()
	if err := c.Join(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if m := next(t, c); m.ID != idLost {
		t.Fatalf("next session showed %s %q, want the one never merged", m.ID, m.Text)
	}
	noMore(t, c)
}

// A message shown from the mesh that a relay delivers too: the event
// that says so names the relay.
func TestAlsoViaNamesTheRelay(t *testing.T) {
	c := openOffline(t)
	addRoom(c, "r")
	raw, id, e := signedBy(t, "r", "twice")
	p := &relayPath{name: "SHA256:x", addr: relay.Addr{Fingerprint: "SHA256:x", HostPort: "127.0.0.1:4433"}}
	c.in <- arrival{room: "r", id: id, env: e, raw: raw, via: ViaMesh}
	if m := next(t, c); m.ID != id {
		t.Fatalf("shown %+v", m)
	}
	c.in <- arrival{room: "r", id: id, env: e, raw: raw, via: ViaRelay, relay: p}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			if a, ok := ev.(*AlsoViaEvent); ok {
				if a.ID != id || a.Via != ViaRelay || a.Relay != p.addr.String() {
					t.Fatalf("also via: %+v, want %s by relay %s", a, id, p.addr)
				}
				return
			}
		case <-timeout:
			t.Fatal("no AlsoViaEvent in 30 s")
		}
	}
}

// addRoom makes c's room name, as a Join would, with no path.
func addRoom(c *Client, name string) *room {
	r := &room{name: name, caughtUp: make(chan struct{})}
	c.mu.Lock()
	c.rooms[name] = r
	c.mu.Unlock()
	return r
}

// signedBy is a text message in room of a new author.
func signedBy(t *testing.T, room, text string) ([]byte, protocol.ID, *protocol.Envelope) {
	t.Helper()
	alice := &testkit.Author{Key: testkit.Key(t), Room: room}
	raw, id := alice.Next(t, text)
	e, err := protocol.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return raw, id, e
}

// TestNoteWaitsForTheNode: the search entry of a message shown from the
// mesh waits for the node to store it for noteWait, however many batches
// the client merges meanwhile (a busy room merges many a second, and the
// node commits up to mesh.MaxStoreDelay behind what it shows); past noteWait it
// is dropped.
func TestNoteWaitsForTheNode(t *testing.T) {
	ctx := context.Background()
	h, err := OpenHome(filepath.Join(t.TempDir(), "home"), HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64 // Unix ms: the test moves it
	clock.Store(time.Now().UnixMilli())
	cfg := DefaultConfig()
	cfg.Nick = "me"
	c, err := Open(ctx, h, Options{Config: cfg, Offline: true, Now: func() time.Time { return time.UnixMilli(clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addRoom(c, "r")
	nodeStores := func(raw []byte, e *protocol.Envelope) {
		t.Helper()
		if _, err := c.st.Put(ctx, store.Record{ID: protocol.IDOf(raw), Env: e, Raw: raw, Via: ViaMesh, Received: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	// busy merges n batches of one relayed message each.
	busy := func(n int) {
		t.Helper()
		for i := range n {
			raw, id, e := signedBy(t, "r", fmt.Sprintf("busy %d", i))
			c.in <- arrival{room: "r", id: id, env: e, raw: raw, via: ViaRelay}
			if m := next(t, c); m.ID != id {
				t.Fatalf("shown %s, want %s", m.ID, id)
			}
		}
	}
	found := func(query string) int {
		t.Helper()
		recs, err := c.st.Search(ctx, "r", query, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}

	raw, id, e := signedBy(t, "r", "findable once stored")
	c.in <- arrival{room: "r", id: id, env: e, via: ViaMesh}
	if m := next(t, c); m.ID != id {
		t.Fatalf("shown %s, want %s", m.ID, id)
	}
	busy(noteTries + 10)
	nodeStores(raw, e)
	deadline := time.Now().Add(30 * time.Second)
	for found("findable") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the search entry was not written in 30 s after %d merges before the node stored the message", noteTries+10)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Past noteWait the entry is dropped: a message the node never stores
	// does not keep a note for ever.
	raw, id, e = signedBy(t, "r", "dropped before stored")
	c.in <- arrival{room: "r", id: id, env: e, via: ViaMesh}
	if m := next(t, c); m.ID != id {
		t.Fatalf("shown %s, want %s", m.ID, id)
	}
	clock.Add((noteWait + time.Second).Milliseconds())
	busy(1) // a merge writes, and drops, the pending notes
	nodeStores(raw, e)
	busy(1)
	if n := found("dropped"); n != 0 {
		t.Fatalf("a note past noteWait was written: %d found", n)
	}
}

// TestOwnMessageBackFromTheMesh: our message, on its way (the mesh path
// waits for a peer in the room), comes back from the mesh node because a
// peer passed it on first (a relay's bridge, from our relay path). It is
// another path of our message, not a message to show; a message of
// someone else's after it is shown.
func TestOwnMessageBackFromTheMesh(t *testing.T) {
	ctx := context.Background()
	c, _, _ := alone(t)
	defer c.Close()
	id, err := c.Post(ctx, "r", "to nobody yet")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := c.st.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	c.in <- arrival{room: "r", id: id, env: rec.Env, raw: rec.Raw, via: ViaMesh}
	raw, other, e := signedBy(t, "r", "from someone else")
	c.in <- arrival{room: "r", id: other, env: e, raw: raw, via: ViaMesh}
	if m := next(t, c); m.ID != other {
		t.Fatalf("shown %s %q, want only the other's message", m.ID, m.Text)
	}
	waitVia(t, c, id, ViaLocal+","+ViaMesh)
}

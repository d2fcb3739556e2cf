package mesh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// Every wait in these tests is bounded by this, generous for a loaded
// two-core machine under -race; a healthy run takes a small part of it.
const patience = 60 * time.Second

func testKey(t testing.TB, n int) identity.PrivateKey {
	t.Helper()
	seed := bytes.Repeat([]byte{byte(n + 1)}, ed25519.SeedSize)
	seed[0] = byte(n >> 8)
	k, err := identity.PrivateKeyFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// peerSpec is one test peer: its key and its store's folder survive a
// restart.
type peerSpec struct {
	key identity.PrivateKey
	dir string
}

func newSpec(t testing.TB, n int) peerSpec {
	return peerSpec{key: testKey(t, n), dir: t.TempDir()}
}

// start starts a node for spec on loopback, mDNS off. The test stops it.
func start(t testing.TB, spec peerSpec, tweak ...func(*Config)) *Node {
	t.Helper()
	st, err := store.Open(filepath.Join(spec.dir, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Key:         spec.key,
		Store:       st,
		ListenAddrs: []string{testListen()},
	}
	for _, f := range tweak {
		f(&cfg)
	}
	n, err := New(context.Background(), cfg)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(n) })
	return n
}

// stop closes a node and its store; stopping twice is harmless.
func stop(n *Node) {
	n.Close()
	n.store.Close()
}

func connect(t testing.TB, a, b *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := a.Connect(ctx, b.Addrs()[0]); err != nil {
		t.Fatal(err)
	}
}

func join(t testing.TB, n *Node, room string) *Room {
	t.Helper()
	r, err := n.Join(room)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor polls cond until it holds or patience runs out.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s after %v", what, patience)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// receiver gathers what a room delivers, from the moment it is made.
type receiver struct {
	mu   sync.Mutex
	got  map[protocol.ID]int
	msgs []Message
}

func receive(t testing.TB, r *Room) *receiver {
	rc := &receiver{got: map[protocol.ID]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-r.Messages():
				rc.mu.Lock()
				rc.got[m.ID]++
				rc.msgs = append(rc.msgs, m)
				rc.mu.Unlock()
			case <-r.ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { r.Leave(); <-done })
	return rc
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.msgs)
}

func (rc *receiver) has(ids ...protocol.ID) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, id := range ids {
		if rc.got[id] == 0 {
			return false
		}
	}
	return true
}

// exactlyOnce fails unless rc got each of want once and nothing else.
func (rc *receiver) exactlyOnce(t testing.TB, who string, want []protocol.ID) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	wanted := map[protocol.ID]bool{}
	for _, id := range want {
		wanted[id] = true
		if rc.got[id] != 1 {
			t.Errorf("%s got %s %d times, want once", who, id, rc.got[id])
		}
	}
	for id := range rc.got {
		if !wanted[id] {
			t.Errorf("%s got unexpected %s", who, id)
		}
	}
}

// authors sign the tests' envelopes: one chain per (key, room), kept
// across a node's restarts, as the client core's signer does.
var authors struct {
	sync.Mutex
	m map[string]*testkit.Author
}

func publish(t testing.TB, r *Room, text string) protocol.ID {
	t.Helper()
	id, _ := publishEnv(t, r, text)
	return id
}

// publishEnv publishes as publish does, and returns the envelope too.
func publishEnv(t testing.TB, r *Room, text string) (protocol.ID, *protocol.Envelope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	key := r.n.cfg.Key
	name := key.Public().Fingerprint() + " " + r.name
	authors.Lock()
	a, ok := authors.m[name]
	if !ok {
		a = &testkit.Author{Key: key, Room: r.name}
		if authors.m == nil {
			authors.m = make(map[string]*testkit.Author)
		}
		authors.m[name] = a
	}
	raw, id := a.Next(t, text)
	authors.Unlock()
	e, err := protocol.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PublishChecked(ctx, e, id, raw); err != nil {
		t.Fatal(err)
	}
	return id, e
}

// sparse connects node i to i+1 and i+3 (mod n): each dials two others and
// is dialled by two, and the graph stays connected if any one node fails.
func sparse(t testing.TB, nodes []*Node) {
	for i := range nodes {
		connect(t, nodes[i], nodes[(i+1)%len(nodes)])
		if len(nodes) > 4 {
			connect(t, nodes[i], nodes[(i+3)%len(nodes)])
		}
	}
}

// waitMesh waits until gossipsub has grafted every room's known peers
// into its mesh (up to the mesh degree): before that, a message reaches
// only the publisher's direct neighbours, and sync has to bring the rest.
func waitMesh(t testing.TB, rooms []*Room) {
	t.Helper()
	waitFor(t, "every room's mesh to form", func() bool {
		for _, r := range rooms {
			peers := len(r.Peers())
			if peers == 0 || r.MeshSize() < min(peers, 4) {
				return false
			}
		}
		return true
	})
}

// sparseRoom starts n peers in room "general", connects them sparsely and
// waits for the room's mesh to form.
func sparseRoom(t testing.TB, n int) ([]*Node, []*Room, []*receiver) {
	nodes := make([]*Node, n)
	rooms := make([]*Room, n)
	recv := make([]*receiver, n)
	for i := range nodes {
		nodes[i] = start(t, newSpec(t, i))
		rooms[i] = join(t, nodes[i], "general")
		recv[i] = receive(t, rooms[i])
	}
	sparse(t, nodes)
	waitMesh(t, rooms)
	return nodes, rooms, recv
}

func TestTenPeersEveryMessageExactlyOnce(t *testing.T) {
	const n = 10
	nodes, rooms, recv := sparseRoom(t, n)

	sent := make([][]protocol.ID, n)
	for round := range 3 {
		for i := range nodes {
			sent[i] = append(sent[i], publish(t, rooms[i], fmt.Sprintf("message %d from %d", round, i)))
		}
	}
	for i := range nodes {
		var want []protocol.ID
		for j := range nodes {
			if j != i {
				want = append(want, sent[j]...)
			}
		}
		waitFor(t, fmt.Sprintf("peer %d to get %d messages", i, len(want)), func() bool { return recv[i].has(want...) })
		recv[i].exactlyOnce(t, fmt.Sprintf("peer %d", i), want)
	}
	// One verification per message per node: each node checked each of the
	// others' 27 envelopes once, however many paths brought it, and never
	// its own.
	for i, nd := range nodes {
		if v := nd.Verifications(); v != 3*(n-1) {
			t.Errorf("peer %d verified %d envelopes, want %d", i, v, 3*(n-1))
		}
		if d := nd.Dropped(); d != 0 {
			t.Errorf("peer %d dropped %d messages", i, d)
		}
	}
}

// testListen is the address test peers listen on: loopback QUIC, or
// loopback TCP when PARLEY_TEST_TRANSPORT=tcp (to compare transports in
// the benchmarks).
func testListen() string {
	if os.Getenv("PARLEY_TEST_TRANSPORT") == "tcp" {
		return "/ip4/127.0.0.1/tcp/0"
	}
	return "/ip4/127.0.0.1/udp/0/quic-v1"
}

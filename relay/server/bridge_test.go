package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// TestBridgeCatchesUp: when the mesh does not keep up with the relay's
// clients (here, a queue of one, full before the bridge forwards), the
// envelopes the bridge could not queue are gossiped later from the
// store: a mesh peer gets every one, though the store fails the
// bridge's first two reads back.
func TestBridgeCatchesUp(t *testing.T) {
	const room, n = "busy", 200
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := openTestStore(t, "relay.db")
	srv, err := NewServer(ctx, Options{Config: DefaultConfig(), Key: testkit.Key(t), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyAfter{Storage: srv.st}
	flaky.fails.Store(2)
	srv.st = flaky
	relayNode := startTestNode(t, ctx, "relay-mesh.db", nil)
	b := newMeshBridge(ctx, srv, relayNode, slog.New(slog.DiscardHandler), 1)
	defer func() { cancel(); b.Close() }()
	b.Join(room)
	peerNode := startTestNode(t, ctx, "peer.db", relayNode.Addrs())
	pr, err := peerNode.Join(room)
	if err != nil {
		t.Fatal(err)
	}
	awaitRoomPeer(t, pr)

	alice := &testkit.Author{Key: testkit.Key(t), Room: room}
	want := map[protocol.ID]bool{}
	for i := range n {
		raw, id := alice.Next(t, fmt.Sprint("message ", i))
		e, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		rec := store.Record{ID: id, Env: e, Raw: raw, Via: "local", Received: time.Now()}
		out, err := st.Append(ctx, []store.Record{rec})
		if err != nil || out[0].Result != store.Stored {
			t.Fatalf("append: %v %v", out, err)
		}
		rec.Pos = out[0].Pos
		b.Forward(rec)
		want[id] = true
	}
	// The mesh did not keep up at all: one envelope queued, the others
	// not. Only now does the bridge start forwarding.
	if got := b.dropped.Load(); got != n-1 {
		t.Fatalf("%d envelopes not queued, want %d", got, n-1)
	}
	b.wg.Go(b.forward)
	timeout := time.After(2 * time.Minute)
	for len(want) > 0 {
		select {
		case m := <-pr.Messages():
			delete(want, m.ID)
		case <-timeout:
			t.Fatalf("the mesh peer got %d of %d envelopes in two minutes (%d not queued at first)", n-len(want), n, b.dropped.Load())
		}
	}
	if left := flaky.fails.Load(); left != 0 {
		t.Errorf("the store's failures were not all met: %d left", left)
	}
}

// flakyAfter is a Storage whose After fails its first fails calls.
type flakyAfter struct {
	Storage
	fails atomic.Int32
}

func (f *flakyAfter) After(ctx context.Context, room string, pos int64, limit int) ([]store.Record, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, errors.New("disk I/O error (injected)")
	}
	f.fails.Store(0)
	return f.Storage.After(ctx, room, pos, limit)
}

func openTestStore(t *testing.T, name string) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// startTestNode starts a mesh node on loopback, dialling bootstrap, until
// ctx ends; the test waits for it to close.
func startTestNode(t *testing.T, ctx context.Context, db string, bootstrap []string) *mesh.Node {
	t.Helper()
	st := openTestStore(t, db)
	n, err := mesh.New(ctx, mesh.Config{Key: testkit.Key(t), Store: st, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, Bootstrap: bootstrap, AntiEntropy: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// awaitRoomPeer waits until r has a peer in its topic, a minute at most.
func awaitRoomPeer(t *testing.T, r *mesh.Room) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); len(r.Peers()) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no peer in the room within a minute")
		}
	}
}

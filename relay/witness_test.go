package relay_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/server"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// startRelay starts an in-process relay on loopback for the client's
// tests; the test's cleanup stops it.
func startRelay(t *testing.T) *server.Server {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Listen, cfg.Admin = "127.0.0.1:0", ""
	st, err := store.Open(filepath.Join(t.TempDir(), "relay.db"), store.Durable())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.NewServer(context.Background(), server.Options{Config: cfg, Key: testkit.Key(t), Store: st, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Error("relay did not stop within 30 s")
		}
		st.Close()
	})
	return srv
}

func dial(t *testing.T, srv *server.Server, key identity.PrivateKey, opts relay.ClientOptions) *relay.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := relay.Dial(ctx, relay.AddrOf(srv.Key().Public(), srv.Addr().String()), key, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestNoWarningWhenClosedDuringCheck: a client closed while a
// consistency check of the relay's audit log waits for its answer says
// nothing about it: nothing failed, and the next session proves the log
// from the checkpoint kept. (Every short-lived sender used to log
// "consistency check not done".)
func TestNoWarningWhenClosedDuringCheck(t *testing.T) {
	r := startRelay(t)
	var logs testkit.LogBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	alice := testkit.Key(t)
	c := dial(t, r, alice, relay.ClientOptions{Log: log})
	ctx := ctxT(t)
	a := &testkit.Author{Key: alice, Room: "lobby"}
	raw, _ := a.Next(t, "one")
	if _, err := c.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	// The checkpoint of that publish, for the check to prove against a
	// newer one.
	var first relay.KeptCheckpoint
	for deadline := time.Now().Add(30 * time.Second); ; {
		var ok bool
		if first, ok = c.Kept(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint kept in 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	raw, _ = a.Next(t, "two")
	if _, err := c.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	// The relay goes silent; a check of the first checkpoint against
	// the newest waits for an answer that does not come.
	r.Abort()
	taken := c.QueueCheck(first)
	select {
	case <-taken:
	case <-time.After(30 * time.Second):
		t.Fatal("the check did not start")
	}
	c.Close()
	select {
	case <-c.CheckLoopStopped():
	case <-time.After(30 * time.Second):
		t.Fatal("the check loop did not end with Close")
	}
	if strings.Contains(logs.String(), "consistency") {
		t.Fatalf("logged:\n%s", logs.String())
	}
}

// TestCheckLoopSeesEveryCheckpoint: more checkpoints wait than one
// consistency request proves; a fork shown in any of them is reported,
// the first of the second request's included.
func TestCheckLoopSeesEveryCheckpoint(t *testing.T) {
	r := startRelay(t)
	for _, forkAt := range []int{0, wire.MaxProofs - 2, wire.MaxProofs - 1, wire.MaxProofs, 2*wire.MaxProofs - 1} {
		c := dial(t, r, testkit.Key(t), relay.ClientOptions{})
		kept := audit.Checkpoint{Origin: "x", Size: 10, Root: [32]byte{1}}
		pending := make([]relay.KeptCheckpoint, 0, 3*wire.MaxProofs)
		for i := range 2*wire.MaxProofs + 5 {
			cp := kept
			if i == forkAt {
				cp.Root = [32]byte{2} // the same size, another root: a fork
			}
			pending = append(pending, relay.NewKeptCheckpoint(cp, []byte("note")))
		}
		c.KeepAndCheck(relay.NewKeptCheckpoint(kept, []byte("kept")), pending)
		deadline := time.Now().Add(10 * time.Second)
		for c.AuditError() == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := c.AuditError(); !errors.Is(err, relay.ErrAuditLog) {
			t.Fatalf("fork in pending checkpoint %d: AuditError = %v", forkAt, err)
		}
	}
}

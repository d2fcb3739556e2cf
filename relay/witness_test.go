package relay_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
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
	var first audit.Seen
	for deadline := time.Now().Add(30 * time.Second); ; {
		var ok bool
		if first, ok = c.Witness().Kept(); ok {
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
	c.Witness().Queue(first)
	taken := c.WakeChecks()
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
		pending := make([]audit.Seen, 0, 3*wire.MaxProofs)
		for i := range 2*wire.MaxProofs + 5 {
			cp := kept
			if i == forkAt {
				cp.Root = [32]byte{2} // the same size, another root: a fork
			}
			pending = append(pending, audit.Seen{Checkpoint: cp, Note: []byte("note")})
		}
		c.Witness().Keep(audit.Seen{Checkpoint: kept, Note: []byte("kept")})
		c.Witness().Queue(pending...)
		c.WakeChecks()
		deadline := time.Now().Add(10 * time.Second)
		for c.AuditError() == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := c.AuditError(); !errors.Is(err, relay.ErrAuditLog) {
			t.Fatalf("fork in pending checkpoint %d: AuditError = %v", forkAt, err)
		}
	}
}

// fakeRelay is a relay that answers Info, and each publish with an Ack
// that ack makes: for receipts a real relay never sends. It counts the
// publishes it got.
type fakeRelay struct {
	addr      relay.Addr
	publishes atomic.Int32
}

func startFake(t *testing.T, ack func(id protocol.ID) *wire.Ack) *fakeRelay {
	t.Helper()
	key := testkit.Key(t)
	conf, err := relay.ServerTLS(key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", conf, &quic.Config{MaxIdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRelay{addr: relay.AddrOf(key.Public(), ln.Addr().String())}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.CloseWithError(0, "")
				for {
					str, err := conn.AcceptStream(ctx)
					if err != nil {
						return
					}
					wg.Go(func() { f.serve(str, ack) })
				}
			})
		}
	})
	return f
}

func (f *fakeRelay) serve(str *quic.Stream, ack func(id protocol.ID) *wire.Ack) {
	defer str.Close()
	fr, fw := wire.NewReader(str, wire.MaxFrameBody), wire.NewWriter(str)
	for {
		t, body, err := fr.Next()
		if err != nil {
			return
		}
		switch t {
		case wire.FrameInfoRequest:
			fw.Msg(wire.FrameInfo, &wire.Info{Versions: []uint8{protocol.Version}, MaxEnvelope: protocol.MaxEnvelopeSize, Policy: wire.PolicyOpen})
		case wire.FramePublish:
			f.publishes.Add(1)
			fw.Msg(wire.FrameAck, ack(protocol.IDOf(body)))
		}
		if fw.Flush() != nil {
			return
		}
	}
}

// TestReceiptWithoutCheckpointIsFinal: a relay whose first receipt names
// no checkpoint (an empty one means "the previous one", and there is
// none) is a security error at once: final for the client, never a
// failure to retry on a new connection.
func TestReceiptWithoutCheckpointIsFinal(t *testing.T) {
	f := startFake(t, func(id protocol.ID) *wire.Ack {
		return &wire.Ack{ID: id, Status: wire.AckStored, Pos: 1, Time: time.Now().UnixMilli(),
			Receipt: &wire.Receipt{Index: 0, Time: 1}}
	})
	c := dialAddr(t, f.addr, testkit.Key(t))
	a := &testkit.Author{Key: testkit.Key(t), Room: "lobby"}
	raw, _ := a.Next(t, "hi")
	if _, err := c.Publish(ctxT(t), raw); !errors.Is(err, relay.ErrAuditLog) {
		t.Fatalf("publish: %v, want the audit log's security error", err)
	}
	if n := f.publishes.Load(); n != 1 {
		t.Fatalf("the relay got the publish %d times: a security error was retried", n)
	}
	if !errors.Is(c.AuditError(), relay.ErrAuditLog) {
		t.Fatalf("AuditError = %v after a receipt with no checkpoint", c.AuditError())
	}
	raw, _ = a.Next(t, "again")
	if _, err := c.Publish(ctxT(t), raw); !errors.Is(err, relay.ErrAuditLog) || f.publishes.Load() != 1 {
		t.Fatalf("a later publish: %v, %d sent; want the same error, nothing sent", err, f.publishes.Load())
	}
}

func dialAddr(t *testing.T, addr relay.Addr, key identity.PrivateKey) *relay.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := relay.Dial(ctx, addr, key, relay.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
)

// testRelay is a relay on loopback with its store in a temporary folder.
type testRelay struct {
	srv  *Server
	addr relay.Addr
	key  identity.PrivateKey
	st   *store.Store
	stop func()
}

func startRelay(t testing.TB, edit func(*Config)) *testRelay {
	t.Helper()
	return startRelayAt(t, filepath.Join(t.TempDir(), "relay.db"), testkit.Key(t), edit)
}

// startRelayAt starts a relay with key on the store at path; prepare
// functions change the server before it serves.
func startRelayAt(t testing.TB, path string, key identity.PrivateKey, edit func(*Config), prepare ...func(*Server)) *testRelay {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin = ""
	if edit != nil {
		edit(&cfg)
	}
	st, err := store.Open(path, store.Durable())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(context.Background(), Options{Config: cfg, Key: key, Store: st, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range prepare {
		f(srv)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	tr := &testRelay{srv: srv, addr: relay.AddrOf(key.Public(), srv.Addr().String()), key: key, st: st}
	var once bool
	tr.stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Error("relay did not stop within 30 s")
		}
		st.Close()
	}
	t.Cleanup(tr.stop)
	return tr
}

func dial(t testing.TB, r *testRelay, key identity.PrivateKey) *relay.Client {
	t.Helper()
	return dialVia(t, r, key, relay.ViaAuto)
}

// dialVia dials over the transport via.
func dialVia(t testing.TB, r *testRelay, key identity.PrivateKey, via relay.Via) *relay.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := relay.Dial(ctx, r.addr, key, relay.ClientOptions{Via: via})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pipelined runs f(0) to f(n-1), up to window of them at a time, and
// returns when all have returned.
func pipelined(n, window int, f func(i int)) {
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func receive(t testing.TB, sub *relay.Subscription, n int) []relay.Delivery {
	t.Helper()
	var out []relay.Delivery
	timeout := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case d, ok := <-sub.C:
			if !ok {
				t.Fatalf("subscription ended after %d of %d: %v", len(out), n, sub.Err())
			}
			if !d.Committed {
				out = append(out, d)
			}
		case <-timeout:
			t.Fatalf("received %d of %d envelopes in 30 s", len(out), n)
		}
	}
	return out
}

// overBoth runs test over QUIC and over TCP.
func overBoth(t *testing.T, test func(t *testing.T, via relay.Via)) {
	for _, via := range []relay.Via{relay.ViaQUIC, relay.ViaTCP} {
		t.Run(via.String(), func(t *testing.T) { test(t, via) })
	}
}

func TestPublishSubscribe(t *testing.T) { overBoth(t, testPublishSubscribe) }

func testPublishSubscribe(t *testing.T, via relay.Via) {
	r := startRelay(t, nil)
	alice, bob := testkit.Key(t), testkit.Key(t)
	ca, cb := dialVia(t, r, alice, via), dialVia(t, r, bob, via)
	if got := ca.State().Transport.String(); got != via.String() {
		t.Fatalf("connected over %s, want %s", got, via)
	}
	ctx := ctxT(t)
	a := &testkit.Author{Key: alice, Room: "lobby"}

	var ids []protocol.ID
	for i := range 3 {
		raw, id := a.Next(t, fmt.Sprint("history ", i))
		ack, err := ca.Publish(ctx, raw)
		if err != nil {
			t.Fatal(err)
		}
		if ack.ID != id || ack.Status != wire.AckStored {
			t.Fatalf("ack %+v for %s", ack, id)
		}
		ids = append(ids, id)
	}
	sub, err := cb.Subscribe(ctx, "lobby", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got := receive(t, sub, 3)
	select {
	case <-sub.Live:
	case <-time.After(30 * time.Second):
		t.Fatal("no live mark after history")
	}
	for i := range 2 {
		raw, id := a.Next(t, fmt.Sprint("live ", i))
		if _, err := ca.Publish(ctx, raw); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	got = append(got, receive(t, sub, 2)...)
	for i, d := range got {
		if d.ID != ids[i] {
			t.Fatalf("delivery %d is %s, want %s", i, d.ID, ids[i])
		}
		if d.Live != (i >= 3) {
			t.Errorf("delivery %d: live %v", i, d.Live)
		}
	}

	// Publishing again is idempotent: a duplicate, acknowledged, not
	// delivered twice.
	raw, err := cb.FetchIDs(ctx, ids[0])
	if err != nil || len(raw) != 1 {
		t.Fatalf("fetch by ID: %v, %d envelopes", err, len(raw))
	}
	ack, err := ca.Publish(ctx, raw[0].Raw)
	if err != nil || ack.Status != wire.AckDuplicate {
		t.Fatalf("republish: %+v, %v", ack, err)
	}
	// With its own receipt, of a record of this publish, which the client
	// checked (Publish fails on a receipt that does not check out).
	if ack.Receipt == nil {
		t.Error("the duplicate's acknowledgement carries no audit receipt")
	}
	// Resume after the third envelope: the fourth and fifth, nothing else.
	sub2, err := cb.Subscribe(ctx, "lobby", ids[2])
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	again := receive(t, sub2, 2)
	if again[0].ID != ids[3] || again[1].ID != ids[4] {
		t.Fatalf("resumed with %s, %s", again[0].ID, again[1].ID)
	}
	for live := false; !live; {
		select {
		case d := <-sub2.C:
			if !d.Committed {
				t.Fatalf("unexpected delivery %s", d.ID)
			}
		case <-sub2.Live:
			live = true
		}
	}

	// Fetch by time range, in pages.
	all, err := cb.FetchRange(ctx, "lobby", 0, time.Now().Add(time.Hour).UnixMilli(), 100)
	if err != nil || len(all) != 5 {
		t.Fatalf("fetch range: %v, %d envelopes", err, len(all))
	}
}

func TestUnknownCursor(t *testing.T) {
	r := startRelay(t, nil)
	c := dial(t, r, testkit.Key(t))
	sub, err := c.Subscribe(ctxT(t), "lobby", protocol.IDOf([]byte("nothing")))
	if err != nil {
		t.Fatal(err)
	}
	for range sub.C {
	}
	if !errors.Is(sub.Err(), &wire.RelayError{Code: wire.CodeUnknownCursor}) {
		t.Fatalf("err %v, want unknown cursor", sub.Err())
	}
}

func TestAllowList(t *testing.T) { overBoth(t, testAllowList) }

func testAllowList(t *testing.T, via relay.Via) {
	r := startRelay(t, func(c *Config) { c.Policy.Mode = "allowlist" })
	mallory := testkit.Key(t)
	ctx := ctxT(t)
	_, err := relay.Dial(ctx, r.addr, mallory, relay.ClientOptions{Via: via})
	var re *wire.RelayError
	if !errors.As(err, &re) || re.Code != wire.CodeNotAllowed || re.Message == "" {
		t.Fatalf("dial of a stranger: %v, want not allowed, with the reason", err)
	}
	t.Log(err)
	if _, err := r.srv.Policy().Allow(ctx, mallory.Public(), "test"); err != nil {
		t.Fatal(err)
	}
	c := dialVia(t, r, mallory, via)
	a := &testkit.Author{Key: mallory, Room: "lobby"}
	raw, _ := a.Next(t, "hello")
	if _, err := c.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
}

func TestWrongRelayKey(t *testing.T) {
	overBoth(t, func(t *testing.T, via relay.Via) {
		r := startRelay(t, nil)
		other := relay.AddrOf(testkit.Key(t).Public(), r.addr.HostPort)
		_, err := relay.Dial(ctxT(t), other, testkit.Key(t), relay.ClientOptions{Via: via})
		if !errors.Is(err, relay.ErrWrongRelay) {
			t.Fatalf("dial of a relay whose key is not the one in the address: %v, want ErrWrongRelay", err)
		}
		t.Log(err)
	})
}

func TestWrongRelayKeyAuto(t *testing.T) {
	r := startRelay(t, nil)
	other := relay.AddrOf(testkit.Key(t).Public(), r.addr.HostPort)
	_, err := relay.Dial(ctxT(t), other, testkit.Key(t), relay.ClientOptions{})
	if err == nil {
		t.Fatal("dialled a relay whose key is not the one in the address")
	}
	t.Log(err)
}

func TestInvite(t *testing.T) {
	r := startRelay(t, func(c *Config) { c.Policy.Mode = "invite" })
	ctx := ctxT(t)
	token, err := NewInvite(ctx, r.st, "for carol", time.Hour, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	carol, dave := testkit.Key(t), testkit.Key(t)
	cc := dial(t, r, carol)
	a := &testkit.Author{Key: carol, Room: "lobby"}
	raw, _ := a.Next(t, "before")
	if _, err := cc.Publish(ctx, raw); !errors.Is(err, &wire.RelayError{Code: wire.CodeNotAllowed}) {
		t.Fatalf("publish before redeeming: %v", err)
	}
	if err := cc.Redeem(ctx, token); err != nil {
		t.Fatal(err)
	}
	raw, _ = a.Next(t, "after")
	if _, err := cc.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	// Used up.
	cd := dial(t, r, dave)
	if err := cd.Redeem(ctx, token); !errors.Is(err, &wire.RelayError{Code: wire.CodeNotAllowed}) {
		t.Fatalf("second redemption: %v", err)
	}
}

func TestPublishRefusals(t *testing.T) {
	r := startRelay(t, func(c *Config) {
		c.Limits.PublishRate, c.Limits.PublishBurst = 1, 20
	})
	alice, bob := testkit.Key(t), testkit.Key(t)
	ca, cb := dial(t, r, alice), dial(t, r, bob)
	ctx := ctxT(t)
	a := &testkit.Author{Key: alice, Room: "lobby"}

	refused := func(what string, raw []byte, c *relay.Client, code wire.ErrorCode) {
		t.Helper()
		_, err := c.Publish(ctx, raw)
		if !errors.Is(err, &wire.RelayError{Code: code}) {
			t.Fatalf("%s: %v, want %s", what, err, code)
		}
		t.Logf("%s: %v", what, err)
	}
	raw, _ := a.Next(t, "mine")
	refused("someone else's envelope", raw, cb, wire.CodeNotSender)
	forged := append([]byte(nil), raw...)
	forged[len(forged)-1] ^= 1
	refused("forged", forged, ca, wire.CodeBadEnvelope)
	refused("garbage", []byte{protocol.Version, 1, 2, 3}, ca, wire.CodeBadEnvelope)
	refused("newer version", []byte{protocol.Version + 1, 1, 2, 3}, ca, wire.CodeUnsupported)
	badText := &protocol.Envelope{Kind: protocol.KindText, Room: "lobby", Seq: 500, Lamport: 500, Time: time.Now().UnixMilli(), Payload: []byte("not a text payload")}
	if _, err := badText.Sign(alice); err != nil {
		t.Fatal(err)
	}
	badRaw, err := badText.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	refused("a text envelope whose payload is not a text", badRaw, ca, wire.CodeBadEnvelope)
	old := &testkit.Author{Key: alice, Room: "lobby", Seq: 100, Now: func() time.Time { return time.Now().Add(-time.Hour) }}
	stale, _ := old.Next(t, "late")
	refused("stale", stale, ca, wire.CodeStale)
	// The refusals did not end the stream: the envelope still goes in.
	if _, err := ca.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	// Over the rate: the burst of 20 is used up by the publishes above
	// and these.
	var limited bool
	for range 30 {
		raw, _ := a.Next(t, "flood")
		if _, err := ca.Publish(ctx, raw); errors.Is(err, &wire.RelayError{Code: wire.CodeRateLimited}) {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("30 publishes at once were not rate-limited at 1/s with a burst of 20")
	}
	// Bob, meanwhile, is served.
	b := &testkit.Author{Key: bob, Room: "lobby"}
	raw, _ = b.Next(t, "still here")
	if _, err := cb.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
}

func TestRoomRules(t *testing.T) {
	alice, bob := testkit.Key(t), testkit.Key(t)
	r := startRelay(t, func(c *Config) {
		c.Policy.Rooms = map[string]RoomRule{"news": {Post: []string{alice.Public().Fingerprint()}, Read: []string{alice.Public().Fingerprint()}}}
	})
	ca, cb := dial(t, r, alice), dial(t, r, bob)
	ctx := ctxT(t)
	a, b := &testkit.Author{Key: alice, Room: "news"}, &testkit.Author{Key: bob, Room: "news"}
	raw, _ := a.Next(t, "for alice only")
	if _, err := ca.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	raw, _ = b.Next(t, "bob tries")
	if _, err := cb.Publish(ctx, raw); !errors.Is(err, &wire.RelayError{Code: wire.CodeForbidden}) {
		t.Fatalf("bob posting: %v", err)
	}
	sub, err := cb.Subscribe(ctx, "news", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	for range sub.C {
		t.Fatal("bob read a room closed to him")
	}
	if !errors.Is(sub.Err(), &wire.RelayError{Code: wire.CodeForbidden}) {
		t.Fatalf("bob reading: %v", sub.Err())
	}
}

// TestSubscribeUnderLoad starts subscriptions while envelopes stream in,
// with queues small enough that subscribers lag, one of them reading
// slowly: each gets every envelope exactly once.
func TestSubscribeUnderLoad(t *testing.T) {
	r := startRelay(t, func(c *Config) {
		c.Limits.QueueSize = 16
		c.Limits.PublishRate, c.Limits.PublishBurst = 1e6, 1e6
	})
	r.srv.hub.setSize(1) // below what the config allows: every burst overflows
	ctx := ctxT(t)
	alice := testkit.Key(t)
	ca := dial(t, r, alice)
	const total = 1500
	a := &testkit.Author{Key: alice, Room: "busy"}
	raws := make([][]byte, total)
	for i := range raws {
		raws[i], _ = a.Next(t, fmt.Sprint("n", i))
	}
	type result struct {
		got map[protocol.ID]int
		err error
	}
	results := make(chan result, 5)
	var published atomic.Int64
	startAt := []int64{0, 100, 400, 900, 1400}
	for s, at := range startAt {
		go func() {
			for published.Load() < at {
				time.Sleep(time.Millisecond)
			}
			c := dial(t, r, testkit.Key(t))
			sub, err := c.Subscribe(ctx, "busy", protocol.ID{})
			if err != nil {
				results <- result{err: err}
				return
			}
			defer sub.Close()
			got := map[protocol.ID]int{}
			for n := 0; n < total; n++ {
				select {
				case d, ok := <-sub.C:
					if !ok {
						results <- result{got: got, err: fmt.Errorf("subscriber %d ended after %d: %v", s, len(got), sub.Err())}
						return
					}
					if d.Committed {
						n--
						continue
					}
					got[d.ID]++
					if s == 1 && n < 300 {
						time.Sleep(200 * time.Microsecond) // a slow reader
					}
				case <-time.After(30 * time.Second):
					results <- result{got: got, err: fmt.Errorf("subscriber %d: %d of %d in 30 s", s, len(got), total)}
					return
				}
			}
			results <- result{got: got}
		}()
	}
	pipelined(len(raws), 64, func(i int) {
		if _, err := ca.Publish(ctx, raws[i]); err != nil {
			t.Error(err)
		}
		published.Add(1)
	})
	defer func() { t.Logf("subscriptions fell behind their queues %d times", r.srv.hub.lags.Load()) }()
	for range startAt {
		res := <-results
		if res.err != nil {
			t.Fatal(res.err)
		}
		for id, n := range res.got {
			if n != 1 {
				t.Fatalf("envelope %s delivered %d times", id, n)
			}
		}
		if len(res.got) != total {
			t.Fatalf("%d of %d envelopes delivered", len(res.got), total)
		}
	}
}

// TestEquivocation: a second envelope with the same sender, room and
// number is refused with its own code, and the first stays the one served.
func TestEquivocation(t *testing.T) {
	r := startRelay(t, nil)
	alice := testkit.Key(t)
	c := dial(t, r, alice)
	ctx := ctxT(t)
	a := &testkit.Author{Key: alice, Room: "lobby"}
	first, _ := a.Next(t, "one")
	b := &testkit.Author{Key: alice, Room: "lobby"}
	second, _ := b.Next(t, "the other one")
	if _, err := c.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, second); !errors.Is(err, &wire.RelayError{Code: wire.CodeEquivocation}) {
		t.Fatalf("equivocating publish: %v", err)
	}
	// The stream still works.
	third, _ := a.Next(t, "two")
	if _, err := c.Publish(ctx, third); err != nil {
		t.Fatal(err)
	}
}

// TestAllowedWhileConnected: an invite-mode newcomer that the operator
// allows while it is connected can publish on the same connection.
func TestAllowedWhileConnected(t *testing.T) {
	r := startRelay(t, func(c *Config) { c.Policy.Mode = "invite" })
	carol := testkit.Key(t)
	c := dial(t, r, carol)
	ctx := ctxT(t)
	if _, err := r.srv.Policy().Allow(ctx, carol.Public(), "by hand"); err != nil {
		t.Fatal(err)
	}
	a := &testkit.Author{Key: carol, Room: "lobby"}
	raw, _ := a.Next(t, "hi")
	if _, err := c.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
}

// TestBanClosesConnections: a ban takes effect on open connections.
func TestBanClosesConnections(t *testing.T) { overBoth(t, testBanClosesConnections) }

func testBanClosesConnections(t *testing.T, via relay.Via) {
	r := startRelay(t, nil)
	mallory := testkit.Key(t)
	c := dialVia(t, r, mallory, via)
	ctx := ctxT(t)
	sub, err := c.Subscribe(ctx, "lobby", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	<-sub.Live
	if err := r.srv.Policy().Ban(ctx, mallory.Public(), "spam"); err != nil {
		t.Fatal(err)
	}
	r.srv.Enforce()
	select {
	case _, ok := <-sub.C:
		if ok {
			t.Fatal("a banned identity still receives")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the banned identity's subscription did not end in 30 s")
	}
	if !errors.Is(sub.Err(), &wire.RelayError{Code: wire.CodeBanned}) {
		t.Fatalf("subscription ended with %v, want banned", sub.Err())
	}
}

// TestLargeEnvelopeAfterQuiet: a subscription that was quiet for longer
// than the write timeout still gets an envelope larger than its buffers.
func TestLargeEnvelopeAfterQuiet(t *testing.T) {
	r := startRelay(t, func(c *Config) { c.Limits.WriteTimeout = Duration{300 * time.Millisecond} })
	alice, bob := testkit.Key(t), testkit.Key(t)
	ca, cb := dial(t, r, alice), dial(t, r, bob)
	ctx := ctxT(t)
	sub, err := cb.Subscribe(ctx, "lobby", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	<-sub.Live
	time.Sleep(time.Second)
	// A kind this code does not know (the relay stores any) lets the
	// payload be larger than a text's.
	e := &protocol.Envelope{Kind: 200, Room: "lobby", Seq: 1, Time: time.Now().UnixMilli(), Payload: []byte(strings.Repeat("x", 40000))}
	id, err := e.Sign(alice)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, sub, 1); got[0].ID != id {
		t.Fatalf("got %s", got[0].ID)
	}
}

// TestReceipts: an acknowledged publish carries a receipt the client
// checks, and a client shown a log inconsistent with the checkpoint it
// kept reports a security error.
func TestReceipts(t *testing.T) {
	r := startRelay(t, nil)
	alice := testkit.Key(t)
	c := dial(t, r, alice)
	ctx := ctxT(t)
	a := &testkit.Author{Key: alice, Room: "lobby"}
	raw, id := a.Next(t, "one")
	ack, err := c.Publish(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Receipt == nil {
		t.Fatal("no receipt with the acknowledgement")
	}
	for deadline := time.Now().Add(30 * time.Second); c.Checkpoint() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the client kept no checkpoint in 30 s")
		}
	}
	if int64(ack.Receipt.Index) < 0 || ack.Receipt.Time <= 0 || len(ack.Receipt.Proof) > 64 {
		t.Fatalf("receipt %+v for %s", ack.Receipt, id)
	}
	kept, err := audit.Open(c.Checkpoint(), r.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	// A second publish: a bigger log, proved consistent with the first.
	raw, _ = a.Next(t, "two")
	if _, err := c.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}

	// A fork: a checkpoint of a log this relay's log does not extend,
	// signed with the relay's own key (as a dishonest operator could).
	forked, err := audit.Sign(audit.Checkpoint{Origin: kept.Origin, Size: kept.Size + 1, Root: [32]byte{7}}, r.key)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := relay.Dial(ctx, r.addr, alice, relay.ClientOptions{Checkpoint: forked})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	// The check runs behind the publish; it finds the fork, and every
	// publish after fails with it.
	raw, _ = a.Next(t, "three")
	if _, err := c2.Publish(ctx, raw); err != nil && !errors.Is(err, relay.ErrAuditLog) {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); c2.AuditError() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no security error in 30 s from a relay whose log is not the one kept")
		}
	}
	t.Log(c2.AuditError())
	raw, _ = a.Next(t, "four")
	if _, err := c2.Publish(ctx, raw); !errors.Is(err, relay.ErrAuditLog) {
		t.Fatalf("publish after the fork was found: %v", err)
	}
	// A checkpoint not signed by the relay is refused at once.
	other, _ := audit.Sign(audit.Checkpoint{Origin: kept.Origin, Size: 1}, testkit.Key(t))
	if _, err := relay.Dial(ctx, r.addr, alice, relay.ClientOptions{Checkpoint: other}); !errors.Is(err, audit.ErrCheckpoint) {
		t.Fatalf("a kept checkpoint of another key: %v", err)
	}
}

// TestReceiptsPipelined: many publishes in flight on one connection, so
// that the acknowledgements of one commit follow each other on a stream
// and their receipts send only what their proofs do not share: every one
// is rebuilt and checked by the client, and the log stays trusted.
func TestReceiptsPipelined(t *testing.T) {
	r := startRelay(t, nil)
	alice := testkit.Key(t)
	c := dial(t, r, alice)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &testkit.Author{Key: alice, Room: fmt.Sprintf("room-%d", w)}
			for i := range 40 {
				raw, _ := a.Next(t, fmt.Sprint(i))
				ack, err := c.Publish(ctx, raw)
				if err != nil {
					errs <- err
					return
				}
				if ack.Receipt == nil || ack.Receipt.Shared != 0 || len(ack.Receipt.Proof) == 0 && ack.Receipt.Index > 0 {
					errs <- fmt.Errorf("receipt %+v not rebuilt", ack.Receipt)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := c.AuditError(); err != nil {
		t.Fatal(err)
	}
}

// TestPublishBatchWithForgeries: publishes written in one go are checked
// together; forged and broken ones among them get their own Nack, in
// order, and every good one is stored and acknowledged.
func TestPublishBatchWithForgeries(t *testing.T) {
	r := startRelay(t, nil)
	alice := testkit.Key(t)
	ctx := ctxT(t)
	conn, err := relay.DialQUIC(ctx, r.addr, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &testkit.Author{Key: alice, Room: "lobby"}
	const n = 150 // more than one batch
	var (
		frames []byte
		want   []wire.ErrorCode // CodeOK: an Ack
		ids    []protocol.ID
	)
	for i := range n {
		raw, _ := a.Next(t, fmt.Sprint(i))
		code := wire.CodeOK
		switch i % 7 {
		case 3:
			raw[len(raw)-1] ^= 1 // the signature
			code = wire.CodeBadEnvelope
		case 5:
			raw[len(raw)-70] ^= 1 // the last byte of the payload
			code = wire.CodeBadEnvelope
		}
		if i == 100 {
			raw, code = []byte{protocol.Version, 1, 2, 3}, wire.CodeBadEnvelope
		}
		frames = wire.AppendFrame(frames, wire.FramePublish, raw)
		want = append(want, code)
		ids = append(ids, protocol.IDOf(raw))
	}
	if _, err := str.Write(frames); err != nil {
		t.Fatal(err)
	}
	str.Close()
	fr := wire.NewReader(str, wire.MaxFrameBody)
	for i := range n {
		ft, body, err := fr.Next()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		switch ft {
		case wire.FrameAck:
			ack, err := wire.ParseAck(body)
			if err != nil {
				t.Fatal(err)
			}
			if want[i] != wire.CodeOK || ack.ID != ids[i] {
				t.Fatalf("publish %d: acknowledged (%s), want %s", i, ack.ID, want[i])
			}
		case wire.FrameNack:
			nack, err := wire.ParseNack(body)
			if err != nil {
				t.Fatal(err)
			}
			if nack.Err.Code != want[i] || nack.ID != ids[i] {
				t.Fatalf("publish %d: refused with %v, want %s", i, nack.Err, want[i])
			}
		default:
			t.Fatalf("answer %d: %s frame", i, ft)
		}
	}
	stored := 0
	for i, code := range want {
		if code != wire.CodeOK {
			continue
		}
		stored++
		if _, err := r.st.Get(ctx, ids[i]); err != nil {
			t.Errorf("publish %d acknowledged but not stored: %v", i, err)
		}
	}
	t.Logf("%d of %d stored", stored, n)
}

// nextEnvelope returns the next envelope (not a Committed mark) that sub
// delivers within wait, if one comes.
func nextEnvelope(sub *relay.Subscription, wait time.Duration) (relay.Delivery, bool) {
	deadline := time.After(wait)
	for {
		select {
		case d, ok := <-sub.C:
			if !ok {
				return d, false
			}
			if !d.Committed {
				return d, true
			}
		case <-deadline:
			return relay.Delivery{}, false
		}
	}
}

package server

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// restartable is a relay that a test can kill, without a goodbye to its
// clients as after a kill -9, and start again on the same port with the
// same key and store.
type restartable struct {
	t    testing.TB
	path string
	key  identity.PrivateKey
	edit func(*Config)
	*testRelay
}

func startRestartable(t testing.TB, edit func(*Config)) *restartable {
	t.Helper()
	r := &restartable{t: t, path: filepath.Join(t.TempDir(), "relay.db"), key: testkit.Key(t), edit: edit}
	r.testRelay = startRelayAt(t, r.path, r.key, edit)
	return r
}

// kill drops every connection silently: the relay's transport destroys
// them without sending a CONNECTION_CLOSE, as a killed process would,
// and the relay stops.
func (r *restartable) kill() {
	r.t.Helper()
	r.srv.Abort()
	r.stop()
}

// restart starts the relay again on the port it had.
func (r *restartable) restart() {
	r.t.Helper()
	hostPort := r.addr.HostPort
	r.testRelay = startRelayAt(r.t, r.path, r.key, func(c *Config) {
		if r.edit != nil {
			r.edit(c)
		}
		c.Listen = hostPort
	})
	if r.addr.HostPort != hostPort {
		r.t.Fatalf("restarted on %s, want %s", r.addr.HostPort, hostPort)
	}
}

// TestSubscriptionAfterRelayKill: a relay killed without a goodbye and
// started again on the same port, with the same key and store, while a
// subscription is live and idle. An envelope published after the restart
// reaches the subscriber well within the QUIC idle timeout (60 s): the
// client notices the silent relay and reconnects at once.
func TestSubscriptionAfterRelayKill(t *testing.T) {
	r := startRestartable(t, nil)
	alice, bob := testkit.Key(t), testkit.Key(t)
	ctx := ctxT(t)
	// A keep-alive of 1 s rather than the default 15 s keeps the test
	// short; without the client's check for silence it makes no
	// difference: the client waits for the 60 s idle timeout either way.
	sub, err := dialWith(t, r.testRelay, bob, relay.ClientOptions{KeepAlive: time.Second}).Subscribe(ctx, "lobby", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	a := &testkit.Author{Key: alice, Room: "lobby"}
	raw, id := a.Next(t, "before")
	if _, err := dial(t, r.testRelay, alice).Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	if d := receive(t, sub, 1); d[0].ID != id {
		t.Fatalf("got %s, want %s", d[0].ID, id)
	}

	r.kill()
	r.restart()
	killed := time.Now()
	raw, id = a.Next(t, "after")
	if _, err := dial(t, r.testRelay, alice).Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	// The keep-alive finds the relay silent, and a few seconds more (the
	// client's silence grace, 5 s) decide it is gone: well under the 60 s
	// idle timeout, which is what a client without the check waits for.
	// The bound is generous for a loaded machine, and still tells them
	// apart.
	const bound = 40 * time.Second
	d, ok := nextEnvelope(sub, bound)
	if !ok {
		t.Fatalf("nothing delivered within %s of the restart (subscription error: %v)", bound, sub.Err())
	}
	if d.ID != id {
		t.Fatalf("got %s, want %s", d.ID, id)
	}
	t.Logf("delivered %s after the restart", time.Since(killed).Round(time.Millisecond))
}

func dialWith(t testing.TB, r *testRelay, key identity.PrivateKey, opts relay.ClientOptions) *relay.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := relay.Dial(ctx, r.addr, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// states collects what OnState tells, for a test to wait on.
type states struct {
	ch chan relay.State
}

func newStates() *states { return &states{ch: make(chan relay.State, 1000)} }

func (s *states) on(st relay.State) { s.ch <- st }

// await waits for a state with status, failing after 30 s; it returns it.
func (s *states) await(t testing.TB, status relay.Status) relay.State {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case st := <-s.ch:
			t.Logf("state %s rtt %s err %v", st.Status, st.RTT, st.Err)
			if st.Status == status {
				return st
			}
		case <-timeout:
			t.Fatalf("no %s state in 30 s", status)
		}
	}
}

// TestStartWhileRelayDown: a client made by Start while the relay is
// down reports that its first dial failed, fails a publish at once with
// ErrNotConnected, connects by itself once the relay is up, and then
// delivers to a subscription made while it was down; it reports each
// state and the round-trip time. After a kill of the relay it is down,
// and connected again once the relay is back.
func TestStartWhileRelayDown(t *testing.T) {
	key := testkit.Key(t)
	hostPort := testkit.FreeAddr(t)
	st := newStates()
	bob := testkit.Key(t)
	c, err := relay.Start(relay.AddrOf(key.Public(), hostPort), bob, relay.ClientOptions{KeepAlive: time.Second, OnState: st.on})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	if err := c.Ready(ctx); !errors.Is(err, relay.ErrNotConnected) {
		t.Fatalf("Ready with the relay down: %v, want relay.ErrNotConnected", err)
	}
	if s := c.State(); s.Status != relay.StatusDown || s.Err == nil {
		t.Fatalf("state %+v, want down with its error", s)
	}
	sub, err := c.Subscribe(ctx, "lobby", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// A publish fails at once, long before its context ends.
	alice := testkit.Key(t)
	a := &testkit.Author{Key: alice, Room: "lobby"}
	raw, _ := a.Next(t, "while down")
	started := time.Now()
	if _, err := c.Publish(ctx, raw); !errors.Is(err, relay.ErrNotConnected) {
		t.Fatalf("publish while down: %v, want relay.ErrNotConnected", err)
	}
	if d := time.Since(started); d > 5*time.Second {
		t.Fatalf("publish while down took %s", d)
	}

	path := filepath.Join(t.TempDir(), "relay.db")
	r := &restartable{t: t, path: path, key: key, testRelay: startRelayAt(t, path, key, func(c *Config) { c.Listen = hostPort })}
	if s := st.await(t, relay.StatusConnected); s.RTT <= 0 {
		t.Fatalf("connected with RTT %s", s.RTT)
	}
	select {
	case <-sub.Live:
	case <-time.After(30 * time.Second):
		t.Fatal("the subscription made while down did not go live")
	}
	raw, id := a.Next(t, "after")
	if _, err := dial(t, r.testRelay, alice).Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	if d := receive(t, sub, 1); d[0].ID != id {
		t.Fatalf("got %s, want %s", d[0].ID, id)
	}
	if _, err := c.Info(ctx); err != nil {
		t.Fatal(err)
	}

	r.kill()
	if s := st.await(t, relay.StatusDown); s.Err == nil {
		t.Fatal("down without a reason")
	}
	r.restart()
	st.await(t, relay.StatusConnected)
	raw, id = a.Next(t, "after the restart")
	if _, err := dial(t, r.testRelay, alice).Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	if d := receive(t, sub, 1); d[0].ID != id {
		t.Fatalf("got %s, want %s", d[0].ID, id)
	}
	c.Close()
	st.await(t, relay.StatusClosed)
}

// TestStartRefused: a client made by Start that the relay refuses for
// good learns it from Ready, is in StatusRefused, and dials no more; so
// does one that finds another key at the relay's address.
func TestStartRefused(t *testing.T) {
	r := startRelay(t, func(c *Config) { c.Policy.Mode = "allowlist" })
	ctx := ctxT(t)
	c, err := relay.Start(r.addr, testkit.Key(t), relay.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var re *wire.RelayError
	if err := c.Ready(ctx); !errors.As(err, &re) || re.Code != wire.CodeNotAllowed {
		t.Fatalf("Ready: %v, want not allowed", err)
	}
	if s := c.State(); s.Status != relay.StatusRefused || !errors.As(s.Err, &re) {
		t.Fatalf("state %+v, want refused", s)
	}
	if _, err := c.Publish(ctx, []byte("x")); !errors.As(err, &re) {
		t.Fatalf("publish after a refusal: %v", err)
	}
	// It dials no more: the relay refuses no other connection. (The
	// count of open connections would not do: the refused one closes.)
	refused := func() float64 {
		return testutil.ToFloat64(r.srv.metrics.refused.WithLabelValues(wire.CodeNotAllowed.String()))
	}
	for deadline := time.Now().Add(30 * time.Second); refused() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the relay never counted the refusal")
		}
	}
	time.Sleep(500 * time.Millisecond) // several backoffs, had it gone on dialling
	if n := refused(); n != 1 {
		t.Fatalf("the relay refused %v connections, want 1: the client dialled again", n)
	}

	w, err := relay.Start(relay.AddrOf(testkit.Key(t).Public(), r.addr.HostPort), testkit.Key(t), relay.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Ready(ctx); !errors.Is(err, relay.ErrWrongRelay) {
		t.Fatalf("Ready: %v, want relay.ErrWrongRelay", err)
	}
	if s := w.State(); s.Status != relay.StatusRefused {
		t.Fatalf("state %+v, want refused", s)
	}
}

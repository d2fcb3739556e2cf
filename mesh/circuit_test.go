package mesh

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/multiformats/go-multiaddr"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// circuitTrio starts a relay with the circuit service, a peer that keeps
// a slot on it (AutoRelay), and a peer that knows the relay; the two
// peers have joined room "behind". It waits for the slot.
func circuitTrio(t *testing.T, relayTweak ...func(*Config)) (relay, a, b *Node) {
	t.Helper()
	relay = start(t, newSpec(t, 0), append([]func(*Config){func(c *Config) { c.Circuit = &CircuitConfig{} }}, relayTweak...)...)
	a = start(t, newSpec(t, 1), func(c *Config) {
		c.AutoRelay = true
		c.Relays = relay.Addrs()
	})
	b = start(t, newSpec(t, 2), func(c *Config) {
		if os.Getenv("PARLEY_TEST_LOG") != "" {
			c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	})
	if err := b.AddRelay(relay.Addrs()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a slot on the relay", func() bool { return holdsSlot(a, relay) })
	return relay, a, b
}

// holdsSlot reports whether n holds a slot on relay. On loopback AutoRelay
// advertises no address through the relay (it keeps only public ones), so
// this looks for the mark it puts on a relay's connection once reserved.
func holdsSlot(n, relay *Node) bool {
	return n.Host().ConnManager().IsProtected(relay.ID(), "autorelay")
}

// dialThroughRelay connects from to to through relay only.
func dialThroughRelay(t *testing.T, from, to, relay *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	addr := "/p2p/" + relay.ID().String() + "/p2p-circuit/p2p/" + to.ID().String()
	if err := from.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
}

// onlyPath fails unless every connection of n to p is of kind want, and
// returns one.
func onlyPath(t *testing.T, n *Node, p peer.ID, want PathKind) Path {
	t.Helper()
	var got []Path
	for _, path := range n.Paths() {
		if path.Peer == p {
			got = append(got, path)
		}
	}
	if len(got) == 0 {
		t.Fatalf("no path to %s", p)
	}
	for _, path := range got {
		if path.Kind != want {
			t.Fatalf("path to %s is %s (%s), want %s only", p, path.Kind, path.Remote, want)
		}
	}
	return got[0]
}

func TestPathsDirect(t *testing.T) {
	a := start(t, newSpec(t, 1))
	b := start(t, newSpec(t, 2))
	connect(t, a, b)
	p := onlyPath(t, a, b.ID(), PathDirect)
	want := "quic"
	if strings.Contains(testListen(), "/tcp/") {
		want = "tcp"
	}
	if p.Transport != want || p.Inbound || p.Relay != "" || p.Opened.IsZero() {
		t.Errorf("a's path to b = %+v, want outbound %s, no relay", p, want)
	}
	if in := onlyPath(t, b, a.ID(), PathDirect); !in.Inbound {
		t.Errorf("b's path to a = %+v, want inbound", in)
	}
}

// Two peers that reach each other only through a circuit relay still
// share their room: gossipsub does not use the circuit, the feed and sync
// do. What was said before they met comes by sync, what is said after by
// the feed, both ways, each message once.
func TestRoomOverCircuit(t *testing.T) {
	relay, a, b := circuitTrio(t)
	ra, rb := join(t, a, "behind"), join(t, b, "behind")
	recvA, recvB := receive(t, ra), receive(t, rb)
	before := publish(t, ra, "said before b came")

	dialThroughRelay(t, b, a, relay)
	for _, n := range []*Node{a, b} {
		other := a.ID()
		if n == a {
			other = b.ID()
		}
		p := onlyPath(t, n, other, PathCircuit)
		if p.Relay != relay.ID() || !strings.HasSuffix(p.Remote, "/p2p/"+relay.ID().String()+"/p2p-circuit") {
			t.Errorf("circuit path %+v: want relay %s", p, relay.ID())
		}
	}
	if n := b.Host().Network().Connectedness(a.ID()); n != network.Limited {
		t.Fatalf("b to a: %s, want limited", n)
	}

	waitFor(t, "b to catch up through the circuit", func() bool { return recvB.has(before) })
	fromA := publish(t, ra, "a, live, through the relay")
	fromB := publish(t, rb, "b, live, through the relay")
	waitFor(t, "live messages both ways", func() bool { return recvB.has(fromA) && recvA.has(fromB) })
	recvB.exactlyOnce(t, "b", []protocol.ID{before, fromA})
	recvA.exactlyOnce(t, "a", []protocol.ID{fromB})
	for _, m := range recvA.msgs {
		if m.Via != ViaCircuit || m.From != b.ID() {
			t.Errorf("a got %s via %s from %s, want via %s from b", m.ID, m.Via, m.From, ViaCircuit)
		}
	}
	if len(ra.Peers()) != 0 || len(rb.Peers()) != 0 {
		t.Errorf("gossipsub peers over a circuit: a %v, b %v", ra.Peers(), rb.Peers())
	}
}

// Connect given a peer's unreachable address dials it through the relays
// the node knows as well.
func TestConnectFallsBackToRelay(t *testing.T) {
	relay, a, b := circuitTrio(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	// Nothing listens on port 9 of loopback (discard).
	if err := b.Connect(ctx, "/ip4/127.0.0.1/tcp/9/p2p/"+a.ID().String()); err != nil {
		t.Fatal(err)
	}
	if p := onlyPath(t, b, a.ID(), PathCircuit); p.Relay != relay.ID() {
		t.Errorf("path %+v, want through %s", p, relay.ID())
	}
}

// A feed is served only to followers that may read the room, and only
// over a circuit.
func TestFeedRefusals(t *testing.T) {
	relay, a, b := circuitTrio(t)
	dialThroughRelay(t, b, a, relay)
	rb := join(t, b, "behind")
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	// a has not joined: refused.
	if got := rb.follow(ctx, a.ID()); got != "refused" {
		t.Errorf("follow where the room is not joined: %s, want refused", got)
	}
	// Over a direct connection, gossipsub serves the room.
	c := start(t, newSpec(t, 3))
	join(t, c, "behind")
	connect(t, b, c)
	if got := rb.follow(ctx, c.ID()); got != "refused" {
		t.Errorf("follow over a direct connection: %s, want refused", got)
	}
}

// A relay's Allow decides who holds a slot and who connects through it.
func TestCircuitACL(t *testing.T) {
	refused := testKey(t, 2).Public() // b's
	relay, a, b := circuitTrio(t, func(c *Config) {
		c.Circuit.Allow = func(k identity.PublicKey) bool { return k != refused }
	})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	addr := "/p2p/" + relay.ID().String() + "/p2p-circuit/p2p/" + a.ID().String()
	if err := b.Connect(ctx, addr); err == nil {
		t.Error("a refused peer connected through the relay")
	}
	if _, err := client.Reserve(ctx, b.Host(), peer.AddrInfo{ID: relay.ID()}); err == nil {
		t.Error("a refused peer holds a slot")
	}
	c := start(t, newSpec(t, 3))
	if err := c.AddRelay(relay.Addrs()); err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx, addr); err != nil {
		t.Errorf("an admitted peer: %v", err)
	}
}

func TestCircuitConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		c    CircuitConfig
		want string
	}{
		{CircuitConfig{}, ""},
		{CircuitConfig{MaxReservations: 1, MaxCircuits: 1, ReservationTTL: MinCircuitTTL, Duration: MinCircuitDuration, Data: MinCircuitData}, ""},
		{CircuitConfig{MaxCircuits: -1}, "negative"},
		{CircuitConfig{ReservationTTL: time.Minute}, "reservation TTL"},
		{CircuitConfig{Duration: time.Second}, "duration"},
		{CircuitConfig{Data: 1024}, "data limit"},
	} {
		err := tc.c.Check()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}
	rc := (&CircuitConfig{MaxCircuits: 3}).resources()
	if rc.MaxReservations != DefaultCircuitReservations || rc.MaxCircuits != 3 || rc.ReservationTTL != DefaultCircuitTTL ||
		rc.Limit == nil || rc.Limit.Duration != DefaultCircuitDuration || rc.Limit.Data != DefaultCircuitData {
		t.Errorf("resources = %+v", rc)
	}
}

func TestRelayAndAutoRelayExclusive(t *testing.T) {
	spec := newSpec(t, 1)
	st, err := store.Open(filepath.Join(spec.dir, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := New(context.Background(), Config{Key: spec.key, Store: st, Circuit: &CircuitConfig{}, AutoRelay: true}); err == nil {
		t.Fatal("a relay that uses relays itself")
	}
	if _, err := New(context.Background(), Config{Key: spec.key, Store: st, Circuit: &CircuitConfig{Duration: time.Second}}); err == nil {
		t.Fatal("a relay with a circuit duration under the bound")
	}
}

// AutoRelay asks for candidates before the client knows its relay: the
// source waits for one rather than answering nothing.
func TestRelaySourceWaitsForRelay(t *testing.T) {
	rs := newRelaySet()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	out := rs.source(ctx, 4)
	select {
	case ai := <-out:
		t.Fatalf("candidate %s before any relay", ai.ID)
	case <-time.After(50 * time.Millisecond):
	}
	id := peerIDOf(t, 7)
	if err := rs.add(peer.AddrInfo{ID: id, Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/192.0.2.1/udp/4434/quic-v1")}}); err != nil {
		t.Fatal(err)
	}
	got, ok := <-out
	if !ok || got.ID != id || len(got.Addrs) != 1 {
		t.Fatalf("candidate %v %v", got, ok)
	}
	if _, ok := <-out; ok {
		t.Error("source did not close after the known relays")
	}
	// A source whose AutoRelay stops ends.
	cctx, ccancel := context.WithCancel(context.Background())
	empty := newRelaySet().source(cctx, 1)
	ccancel()
	if _, ok := <-empty; ok {
		t.Error("candidate from an empty set")
	}
	if got := rs.circuitAddrs(peerIDOf(t, 8)); len(got) != 1 || got[0].String() != "/p2p/"+id.String()+"/p2p-circuit" {
		t.Errorf("circuit addrs %v", got)
	}
	if got := rs.circuitAddrs(id); len(got) != 0 {
		t.Errorf("circuit addrs of the relay itself %v", got)
	}
}

func TestRelaySetBounded(t *testing.T) {
	rs := newRelaySet()
	for i := range maxRelays {
		if err := rs.add(peer.AddrInfo{ID: peerIDOf(t, 10+i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := rs.add(peer.AddrInfo{ID: peerIDOf(t, 100)}); err == nil {
		t.Error("a relay past the bound")
	}
	if err := rs.add(peer.AddrInfo{ID: peerIDOf(t, 10)}); err != nil {
		t.Errorf("more of a known relay: %v", err)
	}
}

func TestTransportAndRelayOf(t *testing.T) {
	relay := peerIDOf(t, 1)
	for _, tc := range []struct{ addr, transport, relay string }{
		{"/ip4/7.0.0.1/udp/4434/quic-v1", "quic", ""},
		{"/ip4/7.0.0.1/tcp/4434", "tcp", ""},
		{"/ip4/7.0.0.1/tcp/443/ws", "websocket", ""},
		{"/ip4/7.0.0.1/udp/443/quic-v1/webtransport", "webtransport", ""},
		{"/ip4/7.0.0.1/udp/4434/quic-v1/p2p/" + relay.String() + "/p2p-circuit", "quic", relay.String()},
		{"/p2p/" + relay.String() + "/p2p-circuit", "other", relay.String()},
	} {
		a := multiaddr.StringCast(tc.addr)
		if got := transportOf(a); got != tc.transport {
			t.Errorf("transportOf(%s) = %s, want %s", tc.addr, got, tc.transport)
		}
		if got := relayOf(a); got.String() != tc.relay && !(got == "" && tc.relay == "") {
			t.Errorf("relayOf(%s) = %s, want %s", tc.addr, got, tc.relay)
		}
	}
}

// The hole punching tracer marks the direct connections that appear
// while a punch runs, and only those.
func TestHolePunchedPaths(t *testing.T) {
	var reported []error
	a := start(t, newSpec(t, 1), func(c *Config) {
		c.OnHolePunch = func(_ peer.ID, err error) { reported = append(reported, err) }
	})
	b := start(t, newSpec(t, 2))
	c := start(t, newSpec(t, 3))
	connect(t, a, c) // before any punch: direct

	a.punches.Trace(&holepunch.Event{Type: holepunch.StartHolePunchEvtT, Remote: b.ID(), Evt: &holepunch.StartHolePunchEvt{}})
	a.punches.Trace(&holepunch.Event{Type: holepunch.StartHolePunchEvtT, Remote: c.ID(), Evt: &holepunch.StartHolePunchEvt{}})
	connect(t, a, b) // while the punch with b runs
	a.punches.Trace(&holepunch.Event{Type: holepunch.EndHolePunchEvtT, Remote: b.ID(), Evt: &holepunch.EndHolePunchEvt{Success: true}})
	a.punches.Trace(&holepunch.Event{Type: holepunch.EndHolePunchEvtT, Remote: c.ID(), Evt: &holepunch.EndHolePunchEvt{Error: "no luck"}})

	onlyPath(t, a, b.ID(), PathHolePunched)
	onlyPath(t, a, c.ID(), PathDirect)
	if len(reported) != 2 || reported[0] != nil || reported[1] == nil || reported[1].Error() != "no luck" {
		t.Errorf("reported %v, want nil then an error", reported)
	}
	// Forgotten once closed.
	for _, conn := range a.Host().Network().ConnsToPeer(b.ID()) {
		id := conn.ID()
		conn.Close()
		waitFor(t, "the closed connection forgotten", func() bool { return !a.punches.punched(id) })
	}
}

func peerIDOf(t *testing.T, n int) peer.ID {
	t.Helper()
	id, err := PeerID(testKey(t, n).Public())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestFeedOncePerPeer: a peer gets one feed of a room at a time; a
// second would have every envelope sent to it twice (review finding: 32
// feeds of one room were served to one peer).
func TestFeedOncePerPeer(t *testing.T) {
	relay, a, b := circuitTrio(t)
	dialThroughRelay(t, b, a, relay)
	join(t, a, "behind")
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	open := func() error {
		s, err := b.Host().NewStream(network.WithAllowLimitedConn(ctx, "feed"), a.ID(), feedProtocol)
		if err != nil {
			return err
		}
		t.Cleanup(func() { s.Reset() })
		s.SetDeadline(time.Now().Add(patience))
		if err := writeFrame(s, []byte("behind")); err != nil {
			return err
		}
		_, err = readFrame(s, 0)
		return err
	}
	if err := open(); err != nil {
		t.Fatalf("the first feed: %v", err)
	}
	if err := open(); err == nil {
		t.Fatal("a second feed of the room to the same peer was served")
	}
}

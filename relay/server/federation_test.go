package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
)

// fedRelay is a relay run whole (Run), with its mesh node on loopback.
type fedRelay struct {
	addr relay.Addr
	mesh []string
}

// runFedRelay runs a relay with policy mode, federated with the relays
// whose mesh addresses are given, carrying rooms, until the test ends.
func runFedRelay(t *testing.T, mode string, allowed []identity.PublicKey, others []string, rooms ...string) fedRelay {
	t.Helper()
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{Policy: wire.PolicyOpen}); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Policy.Mode = mode
	for _, k := range allowed {
		cfg.Policy.Admins = append(cfg.Policy.Admins, k.Fingerprint())
	}
	cfg.Listen, cfg.ListenTCP, cfg.Admin = "127.0.0.1:0", ListenTCPOff, ""
	cfg.P2PListen = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.Federation = FederationConfig{Relays: others, Rooms: rooms}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan fedRelay, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunOptions{Dir: dir, Config: cfg, Ready: func(a relay.Addr, m []string) { ready <- fedRelay{a, m} }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	select {
	case r := <-ready:
		return r
	case err := <-done:
		t.Fatalf("relay ended: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("relay not ready within a minute")
	}
	return fedRelay{}
}

// holds waits until the relay at addr serves reader every one of ids in
// room, and fails if it serves any of refused; a minute at most.
func holds(t *testing.T, addr relay.Addr, reader identity.PrivateKey, room string, ids, refused []protocol.ID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := relay.Dial(ctx, addr, reader, relay.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sub, err := rc.Subscribe(ctx, room, protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	want := map[protocol.ID]bool{}
	for _, id := range ids {
		want[id] = true
	}
	bad := map[protocol.ID]bool{}
	for _, id := range refused {
		bad[id] = true
	}
	// Until every one arrived and the history (all the relay held at
	// the subscription) is read whole: a refused one would be in it.
	live, left := sub.Live, -1
	for len(want) > 0 || left != 0 {
		select {
		case <-live:
			live, left = nil, len(sub.C)
		case d, ok := <-sub.C:
			if left > 0 {
				left--
			}
			if !ok {
				t.Fatalf("relay %s: subscription ended: %v", addr, sub.Err())
			}
			if bad[d.ID] {
				t.Fatalf("relay %s serves %s, which its policy refuses", addr, d.ID)
			}
			delete(want, d.ID)
		case <-ctx.Done():
			t.Fatalf("relay %s: %d of %d envelopes published elsewhere never arrived", addr, len(want), len(ids))
		}
	}
}

// publishOn publishes n envelopes of author a to the relay at addr and
// returns their IDs.
func publishOn(t *testing.T, addr relay.Addr, a *testkit.Author, n int) []protocol.ID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := relay.Dial(ctx, addr, a.Key, relay.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var ids []protocol.ID
	for i := range n {
		raw, id := a.Next(t, "message "+strings.Repeat("x", i))
		if _, err := rc.Publish(ctx, raw); err != nil {
			t.Fatalf("publish %d to %s: %v", i, addr, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestFederation: three relays of one network. What a client publishes
// to one is stored by the others, which carry the room from the start;
// the third, whose policy allows alice only, refuses bob's messages,
// stores and serves alice's, and the other two still carry bob's.
func TestFederation(t *testing.T) {
	alice, bob := testkit.Key(t), testkit.Key(t)
	a := runFedRelay(t, "open", nil, nil, "lobby")
	b := runFedRelay(t, "open", nil, a.mesh, "lobby")
	c := runFedRelay(t, "allowlist", []identity.PublicKey{alice.Public()}, append(append([]string(nil), a.mesh...), b.mesh...), "lobby")

	aliceA := &testkit.Author{Key: alice, Room: "lobby"}
	fromAlice := publishOn(t, a.addr, aliceA, 10)
	fromBob := publishOn(t, b.addr, &testkit.Author{Key: bob, Room: "lobby"}, 10)
	holds(t, b.addr, alice, "lobby", append(fromAlice, fromBob...), nil)
	holds(t, a.addr, alice, "lobby", append(fromAlice, fromBob...), nil)
	holds(t, c.addr, alice, "lobby", fromAlice, fromBob)
	// And what alice publishes on the strict relay reaches the others.
	more := publishOn(t, c.addr, aliceA, 5)
	holds(t, a.addr, alice, "lobby", more, nil)
	holds(t, b.addr, alice, "lobby", more, nil)
}

// TestFederationConfig: the other relays are mesh addresses that name
// their peer; the rooms carried are room names; the relay's own address
// among the others is left out.
func TestFederationConfig(t *testing.T) {
	self, other := testkit.Key(t), testkit.Key(t)
	checkConfigCases(t, []configCase{
		{"no peer ID", func(c *Config) { c.Federation.Relays = []string{"/ip4/127.0.0.1/udp/4434/quic-v1"} }, "federation.relays"},
		{"not a multiaddr", func(c *Config) { c.Federation.Relays = []string{"relay.example.org:4434"} }, "federation.relays"},
		{"bad room", func(c *Config) { c.Federation.Rooms = []string{""} }, "federation.rooms"},
		{"good", func(c *Config) {
			c.Federation.Relays = []string{meshAddrOf(t, other)}
			c.Federation.Rooms = []string{"general"}
		}, ""},
	})
	f, err := newFederation([]string{meshAddrOf(t, self), meshAddrOf(t, other), meshAddrOf(t, other)}, self.Public())
	if err != nil {
		t.Fatal(err)
	}
	if len(f.peers) != 1 || !f.member(other.Public()) || f.member(self.Public()) {
		t.Fatalf("federation of self, other, other: %d peers, other %v, self %v; want other alone",
			len(f.peers), f.member(other.Public()), f.member(self.Public()))
	}
}

func meshAddrOf(t *testing.T, k identity.PrivateKey) string {
	t.Helper()
	id, err := mesh.PeerID(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return "/ip4/127.0.0.1/udp/4434/quic-v1/p2p/" + id.String()
}

package server

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	chat "github.com/parleychat/parley/client"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/store"
)

// TestFindRelays runs three relays and an impostor on loopback: B;
// A, federated with B (A vouches for B); C, which connects to A but
// which no relay vouches for; and a mesh node that announces the room
// and answers with A's address. A client given A finds all four for the
// room and trusts A (given) and B (vouched by A) only; it refuses the
// impostor, whose address names another key than its peer.
func TestFindRelays(t *testing.T) {
	const room = "lobby"
	b := runFedRelay(t, "open", nil, nil, room)
	a := runFedRelay(t, "open", nil, b.mesh, room)
	c := runFedRelay(t, "open", nil, a.mesh, room)
	impostor := runImpostor(t, a, room)

	cl := openDiscoverClient(t, a)
	want := map[string]chat.RelayTrust{
		b.addr.Fingerprint: chat.TrustVouched, a.addr.Fingerprint: chat.TrustGiven,
		c.addr.Fingerprint: chat.TrustUnknown, impostor.Fingerprint(): chat.TrustRefused,
	}
	found := awaitFound(t, cl, room, len(want))
	for _, f := range found {
		fp := f.Key.Fingerprint()
		w, ok := want[fp]
		if !ok {
			t.Errorf("found %s, not one of the test's (or twice)", fp)
			continue
		}
		delete(want, fp)
		if f.Trust != w {
			t.Errorf("%s: trust %v, want %v (err %v)", fp, f.Trust, w, f.Err)
		}
		switch w {
		case chat.TrustVouched:
			if f.VouchedBy != a.addr.String() || f.Addr != b.addr.String() {
				t.Errorf("B: vouched by %q at %q, want by %q at %q", f.VouchedBy, f.Addr, a.addr, b.addr)
			}
		case chat.TrustRefused:
			if !errors.Is(f.Err, chat.ErrRelayMismatch) || f.Addr != "" {
				t.Errorf("impostor: err %v, addr %q; want ErrRelayMismatch and no address", f.Err, f.Addr)
			}
		}
	}
	for fp, w := range want {
		t.Errorf("%s (%v) not found", fp, w)
	}
}

// awaitFound asks cl for the relays of room until n are found, a
// minute at most (the relays announce themselves once connected).
func awaitFound(t *testing.T, cl *chat.Client, room string, n int) []chat.FoundRelay {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var found []chat.FoundRelay
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		found, err = cl.FindRelays(ctx, room)
		cancel()
		if err == nil && len(found) >= n {
			return found
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("awaited %d relays of %s within a minute; last found %d (%v)", n, room, len(found), err)
	return nil
}

// openDiscoverClient opens a client session, on the mesh and with relay
// a, until the test ends.
func openDiscoverClient(t *testing.T, a fedRelay) *chat.Client {
	t.Helper()
	home, err := chat.OpenHome(t.TempDir(), chat.HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := chat.DefaultConfig()
	cfg.Nick, cfg.MDNS = "finder", false
	cfg.Relays = chat.RelayList{a.addr.String()}
	cfg.Listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	return openClient(t, home, cfg)
}

// runImpostor runs a mesh node with the DHT, connected to a, that
// announces room and says it is a (a's address, its own key), until the
// test ends. It returns its key.
func runImpostor(t *testing.T, a fedRelay, room string) identity.PublicKey {
	t.Helper()
	key := testkit.Key(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "impostor.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := mesh.New(ctx, mesh.Config{Key: key, Store: st, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, Bootstrap: a.mesh, DHT: true})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); n.Close(); st.Close() })
	if _, err := mesh.ServeRelayInfo(n.Host(), func() mesh.RelayInfo { return mesh.RelayInfo{Addr: a.addr.String()} }); err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(ctx, time.Minute)
	defer acancel()
	for {
		err := n.Announce(actx, mesh.RelayKey(room))
		if err == nil {
			return key.Public()
		}
		if actx.Err() != nil {
			t.Fatalf("impostor: announce within a minute: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

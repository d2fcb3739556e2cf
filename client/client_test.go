package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/lockfile"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	h, err := OpenHome(dir, HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The first run writes the commented template, which is the defaults.
	cfg, err := h.Config()
	if err != nil {
		t.Fatal(err)
	}
	if def := DefaultConfig(); cfg.Mode != def.Mode || cfg.Nick != DefaultNick(h.Key.Public()) || !cfg.MDNS {
		t.Fatalf("template config = %+v, want the defaults %+v", cfg, def)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, want string }{
		{"colour = 'blue'\n", "unknown key colour"},
		{"nick = 3\n", "nick"},
		{"mode = 'mesh'\n", `mode "mesh" is not auto, p2p or relay`},
		{"mode = 'relay'\n", "mode relay needs a relay"},
		{"relay = 'relay.example.org:4433'\n", "relay"},
		{"nick = 'Alice'\n", `nick "Alice"`},
		{"peers = ['not-a-multiaddr']\n", `peer "not-a-multiaddr"`},
		{"peers = ['/ip4/127.0.0.1/udp/4001/quic-v1']\n", "/p2p/"},
		{"listen = ['/ip4/nonsense']\n", `listen "/ip4/nonsense"`},
	} {
		path := filepath.Join(dir, ConfigFile)
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := h.Config()
		if err == nil {
			err = cfg.Validate()
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: %v; want ErrConfig saying %q", tc.file, err, tc.want)
		}
	}
}

func TestSeenSetForgetsOldest(t *testing.T) {
	s := newSeenSet(3)
	for i := range 5 {
		s.add(protocol.ID{byte(i + 1)}, ViaMesh)
	}
	s.add(protocol.ID{5}, ViaMesh) // again: no change
	for i, want := range []bool{false, false, true, true, true} {
		if got := s.has(protocol.ID{byte(i + 1)}); got != want {
			t.Errorf("has(%d) = %v, want %v", i+1, got, want)
		}
	}
	if len(s.ids) != 3 {
		t.Errorf("%d IDs kept, want 3", len(s.ids))
	}
}

// openOffline opens a client with no network, whose merger the test
// feeds as the paths would.
func openOffline(t *testing.T) *Client {
	t.Helper()
	h, err := OpenHome(filepath.Join(t.TempDir(), "home"), HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Nick = "me"
	c, err := Open(context.Background(), h, Options{Config: cfg, Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func next(t *testing.T, c *Client) Message {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e := <-c.Events():
			if m, ok := e.(*MessageEvent); ok {
				return m.Message
			}
		case <-timeout:
			t.Fatal("no message in 30 s")
		}
	}
}

func noMore(t *testing.T, c *Client) {
	t.Helper()
	quiet := time.After(200 * time.Millisecond)
	for {
		select {
		case e := <-c.Events():
			if m, ok := e.(*MessageEvent); ok {
				t.Fatalf("extra message %s %q via %s", m.ID, m.Text, m.Via)
			}
		case <-quiet:
			return
		}
	}
}

func waitVia(t *testing.T, c *Client, id protocol.ID, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		r, err := c.st.Get(context.Background(), id)
		if err == nil && r.Via == want {
			return
		}
		got = r.Via
	}
	t.Fatalf("via of %s = %q, want %q", id, got, want)
}

// TestMergeShowsEachMessageOnce: whichever path delivers a message first,
// and however late the mesh node stores what it showed, a message is
// shown once and its stored paths name every path that delivered it.
func TestMergeShowsEachMessageOnce(t *testing.T) {
	c := openOffline(t)
	ctx := context.Background()
	alice := &testkit.Author{Key: testkit.Key(t), Room: "r"}
	arrive := func(raw []byte, via string) {
		e, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		c.in <- arrival{room: "r", id: protocol.IDOf(raw), env: e, raw: raw, via: via}
	}
	meshStores := func(raw []byte) {
		e, _ := protocol.Parse(raw)
		if _, err := c.st.Append(ctx, []store.Record{{ID: protocol.IDOf(raw), Env: e, Raw: raw, Via: ViaMesh, Received: time.Now()}}); err != nil {
			t.Fatal(err)
		}
	}

	// The relay first, then the mesh (which stores its copy late).
	raw1, id1 := alice.Next(t, "one")
	arrive(raw1, ViaRelay)
	if m := next(t, c); m.ID != id1 || m.Via != ViaRelay || m.Text != "one" || m.Trust != identity.TrustNew {
		t.Fatalf("first = %+v", m)
	}
	arrive(raw1, ViaMesh)
	meshStores(raw1)
	noMore(t, c)
	waitVia(t, c, id1, "relay,mesh")

	// The mesh first, stored by the mesh node only after the relay's copy
	// arrived: the relay's path is noted once the mesh's copy is stored.
	raw2, id2 := alice.Next(t, "two")
	arrive(raw2, ViaMesh)
	if m := next(t, c); m.ID != id2 || m.Via != ViaMesh || m.Trust != identity.TrustKnown || m.Gap {
		t.Fatalf("second = %+v", m)
	}
	arrive(raw2, ViaRelay)
	time.Sleep(50 * time.Millisecond)
	meshStores(raw2)
	noMore(t, c)
	waitVia(t, c, id2, "mesh,relay")

	// A message whose predecessor is missing is shown with a gap.
	alice.Next(t, "three, never delivered")
	raw4, id4 := alice.Next(t, "four")
	arrive(raw4, ViaRelay)
	if m := next(t, c); m.ID != id4 || !m.Gap {
		t.Fatalf("fourth = %+v, want a gap before it", m)
	}

	// An equivocation (another envelope under a number used) is evidence,
	// never a message.
	fork := &testkit.Author{Key: alice.Key, Room: "r", Seq: 3, Prev: id2}
	rawFork, _ := fork.Next(t, "four, differently")
	arrive(rawFork, ViaRelay)
	noMore(t, c)

	// Our own messages, echoed by the relay, are not shown again; ours
	// from another device with our identity are.
	sent, err := c.Send(ctx, "r", "mine")
	if !errors.Is(err, ErrNoPath) {
		t.Fatalf("send offline: %v", err)
	}
	echo, err := c.st.Get(ctx, sent.ID)
	if err != nil {
		t.Fatal(err)
	}
	arrive(echo.Raw, ViaRelay)
	noMore(t, c)
	other := &testkit.Author{Key: c.Key(), Room: "elsewhere"}
	rawOther, idOther := other.Next(t, "from my laptop")
	e, _ := protocol.Parse(rawOther)
	c.in <- arrival{room: "elsewhere", id: idOther, env: e, raw: rawOther, via: ViaRelay}
	if m := next(t, c); m.ID != idOther || !m.Own || m.Text != "from my laptop" {
		t.Fatalf("ours from another device = %+v", m)
	}

	// History has them all in order, searchable, with their paths.
	hist, err := c.History(ctx, "r", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range hist {
		texts = append(texts, m.Text+"/"+m.Via)
	}
	if got := strings.Join(texts, " "); got != "one/relay,mesh two/mesh,relay four/relay mine/local,relay" {
		t.Errorf("history = %s", got)
	}
	if hist, err := c.History(ctx, "r", "FOUR", 10); err != nil || len(hist) != 1 || hist[0].ID != id4 {
		t.Errorf("search = %v, %v", hist, err)
	}
}

func TestSecondProcessRefused(t *testing.T) {
	c := openOffline(t)
	_, err := Open(context.Background(), c.home, Options{Config: c.cfg, Offline: true})
	var le *lockfile.LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("second Open: %v; want a LockedError naming PID %d", err, os.Getpid())
	}
}

func TestSendWithNoPath(t *testing.T) {
	c := openOffline(t)
	ctx := context.Background()
	sent, err := c.Send(ctx, "r", "into the void")
	if !errors.Is(err, ErrNoPath) {
		t.Fatalf("Send with no path: %v; want ErrNoPath", err)
	}
	// Kept all the same, and the next one continues its chain.
	if _, err := c.st.Get(ctx, sent.ID); err != nil {
		t.Fatalf("the unsent message is not kept: %v", err)
	}
	sent2, _ := c.Send(ctx, "r", "again")
	r, err := c.st.Get(ctx, sent2.ID)
	if err != nil || r.Env.Prev != sent.ID || r.Env.Seq <= 1 || r.Env.Lamport <= 1 {
		t.Fatalf("second message: %+v, %v; want it linked to the first", r.Env, err)
	}
}

// TestPeerComesBack: a configured peer that goes away and comes back (a
// restart, on the same address) is dialled again, and the room is
// meshed again without restarting this client.
func TestPeerComesBack(t *testing.T) {
	ctx := context.Background()
	homeA, err := OpenHome(filepath.Join(t.TempDir(), "a"), HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	openA := func(listen string) *Client {
		cfg := DefaultConfig()
		cfg.Nick, cfg.Mode, cfg.MDNS, cfg.Listen = "a", ModeP2P, false, []string{listen}
		c, err := Open(ctx, homeA, Options{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Join(ctx, "r"); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := openA("/ip4/127.0.0.1/udp/0/quic-v1")
	addr := a.Node().Addrs()[0]
	listen := addr[:strings.Index(addr, "/p2p/")]

	homeB, err := OpenHome(filepath.Join(t.TempDir(), "b"), HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Nick, cfg.Mode, cfg.MDNS = "b", ModeP2P, false
	cfg.Listen, cfg.Peers = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, []string{addr}
	b, err := Open(ctx, homeB, Options{Config: cfg, KeepPeers: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Join(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	waitPeers := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); b.MeshPeers("r") == 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: b has no peer in the room after 60 s", what)
			}
		}
	}
	waitPeers("at start")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); b.MeshPeers("r") != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("b still sees a peer 60 s after a left")
		}
	}
	a = openA(listen)
	defer a.Close()
	waitPeers("after a came back")
}

// TestOutbox: a message no path took is kept, and sent when a peer shows
// up, without anyone sending again.
func TestOutbox(t *testing.T) {
	ctx := context.Background()
	open := func(name string, peers ...string) *Client {
		h, err := OpenHome(filepath.Join(t.TempDir(), name), HomeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Nick, cfg.Mode, cfg.MDNS = name, ModeP2P, false
		cfg.Listen, cfg.Peers = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, peers
		c, err := Open(ctx, h, Options{Config: cfg, KeepPeers: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Join(ctx, "r"); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := open("a")
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	sent, err := a.Send(short, "r", "while nobody was here")
	cancel()
	if !errors.Is(err, ErrNoPath) {
		t.Fatalf("send with no peer: %v", err)
	}
	if out, err := a.st.Outbox(ctx, "r"); err != nil || len(out) != 1 || out[0].ID != sent.ID {
		t.Fatalf("outbox = %v, %v; want the unsent message", out, err)
	}
	b := open("b", a.Node().Addrs()[0])
	m := next(t, b)
	if m.ID != sent.ID || m.Text != "while nobody was here" {
		t.Fatalf("b got %+v", m)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, err := a.st.Outbox(ctx, "r")
		if err == nil && len(out) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the outbox still holds %d after delivery (%v)", len(out), err)
		}
	}
	noMore(t, b)
}

package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	circuitclient "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// The circuit service is on by default, with mesh's default limits, in
// the defaults and in the file init writes; a config can turn it off.
func TestCircuitDefaults(t *testing.T) {
	def := DefaultConfig().Circuit
	want := CircuitConfig{
		Enabled: true, MaxReservations: mesh.DefaultCircuitReservations, MaxCircuits: mesh.DefaultCircuitsPerPeer,
		ReservationTTL: Duration{mesh.DefaultCircuitTTL}, Duration: Duration{mesh.DefaultCircuitDuration}, DataBytes: mesh.DefaultCircuitData,
	}
	if def != want {
		t.Fatalf("default circuit config %+v, want %+v", def, want)
	}
	allow := func(identity.PublicKey) bool { return true }
	mc := def.meshConfig(allow)
	if mc == nil || mc.MaxReservations != want.MaxReservations || mc.MaxCircuits != want.MaxCircuits ||
		mc.ReservationTTL != mesh.DefaultCircuitTTL || mc.Duration != mesh.DefaultCircuitDuration ||
		mc.Data != mesh.DefaultCircuitData || mc.Allow == nil || mc.Check() != nil {
		t.Fatalf("mesh circuit config %+v", mc)
	}

	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{Policy: wire.PolicyOpen}); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadDirConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Circuit != want {
		t.Fatalf("circuit config init writes: %+v, want %+v", cfg.Circuit, want)
	}
	// The template shows every default as it is.
	for _, line := range []string{"# enabled = true", "# max_reservations = 1024", "# max_circuits = 16",
		`# reservation_ttl = "1h0m0s"`, `# duration = "10m0s"`, "# data_bytes = 1048576"} {
		if !strings.Contains(ConfigTemplate, line) {
			t.Errorf("the config template has no %q", line)
		}
	}

	off := "[circuit]\nenabled = false\n"
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(off), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err = LoadDirConfig(dir); err != nil || cfg.Circuit.Enabled {
		t.Fatalf("enabled = false: %+v, %v", cfg.Circuit, err)
	}
	if cfg.Circuit.meshConfig(allow) != nil {
		t.Fatal("a circuit service that is off reaches the mesh node")
	}
}

func TestCircuitValidation(t *testing.T) {
	checkConfigCases(t, []configCase{
		{"defaults", func(c *Config) {}, ""},
		{"no reservations", func(c *Config) { c.Circuit.MaxReservations = 0 }, "max_reservations"},
		{"circuits -1", func(c *Config) { c.Circuit.MaxCircuits = -1 }, "max_circuits"},
		{"reservations of a minute", func(c *Config) { c.Circuit.ReservationTTL.Duration = time.Minute }, "circuit.reservation_ttl"},
		{"circuits of 10 s", func(c *Config) { c.Circuit.Duration.Duration = 10 * time.Second }, "circuit.duration"},
		{"circuits of 4 KiB", func(c *Config) { c.Circuit.DataBytes = 4096 }, "circuit.data_bytes"},
		// Off, its limits are not looked at.
		{"off", func(c *Config) { c.Circuit = CircuitConfig{} }, ""},
	})
}

// A relay's mesh node runs the circuit service for the identities its
// policy admits, and for no one else.
func TestRelayCircuitFollowsPolicy(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{Policy: wire.PolicyAllowList}); err != nil {
		t.Fatal(err)
	}
	admitted, refused := testkit.Key(t), testkit.Key(t)
	cfg := DefaultConfig()
	cfg.Policy.Mode = "allowlist"
	cfg.Policy.Admins = []string{admitted.Public().Fingerprint()}
	cfg.Listen, cfg.ListenTCP, cfg.Admin = "127.0.0.1:0", ListenTCPOff, ""
	cfg.P2PListen = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunOptions{Dir: dir, Config: cfg, Ready: func(_ relay.Addr, mesh []string) { ready <- mesh }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	var meshAddrs []string
	select {
	case meshAddrs = <-ready:
	case err := <-done:
		t.Fatalf("relay ended: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("relay not ready within a minute")
	}

	peers := map[string]*mesh.Node{}
	for name, key := range map[string]identity.PrivateKey{"admitted": admitted, "refused": refused} {
		st, err := store.Open(filepath.Join(t.TempDir(), "parley.db"))
		if err != nil {
			t.Fatal(err)
		}
		n, err := mesh.New(ctx, mesh.Config{Key: key, Store: st, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, Relays: meshAddrs})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close(); st.Close() })
		peers[name] = n
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	ai, err := peer.AddrInfoFromString(meshAddrs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := circuitclient.Reserve(rctx, peers["admitted"].Host(), *ai); err != nil {
		t.Errorf("an admitted identity has no slot: %v", err)
	}
	if _, err := circuitclient.Reserve(rctx, peers["refused"].Host(), *ai); err == nil {
		t.Error("an identity the policy refuses holds a slot")
	}
}

// The circuit service is read at start: a reload names a change to it.
func TestReloadNamesCircuit(t *testing.T) {
	r := startRelay(t, nil)
	cfg := r.srv.cfg
	cfg.Circuit.Enabled = false
	if resp := r.srv.Reload(ctxT(t), cfg, "test"); resp.Error != "" || !strings.HasSuffix(resp.Message, "at the next start: circuit") {
		t.Fatalf("reload with the circuit service off: %+v", resp)
	}
}

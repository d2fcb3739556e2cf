package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
)

// mDNS is off on a relay unless the config turns it on: a relay is a
// public server. So it is in the defaults and in the file init writes.
func TestMDNSOffByDefault(t *testing.T) {
	if DefaultConfig().MDNS {
		t.Fatal("mdns is on by default")
	}
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{Policy: wire.PolicyOpen}); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadDirConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MDNS {
		t.Fatal("mdns is on in the config init writes")
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte("mdns = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err = LoadDirConfig(dir); err != nil || !cfg.MDNS {
		t.Fatalf("mdns = true: %v, %v", cfg.MDNS, err)
	}
}

// TestReloadLimits: a reload puts new limits in force for what is decided
// from then on, on connections already open too: a publisher's bucket
// shrinks to the new burst, an envelope over the new size is refused, a
// connection over the new maximum is refused, and new clients are told
// the new figures. The skew stays as the relay started (its mesh node
// and retention window use it), and the reload says so. A config that
// does not validate changes nothing.
func TestReloadLimits(t *testing.T) {
	r := startRelay(t, nil)
	ctx := ctxT(t)
	alice := testkit.Key(t)
	ca := dial(t, r, alice)
	a := &testkit.Author{Key: alice, Room: "lobby"}
	publish := func(text string) error {
		raw, _ := a.Next(t, text)
		_, err := ca.Publish(ctx, raw)
		return err
	}
	if err := publish("before"); err != nil {
		t.Fatal(err)
	}

	bad := r.srv.cfg
	bad.Limits.MaxEnvelope = 100
	if resp := r.srv.Reload(ctx, bad, "test"); resp.Error == "" || !strings.Contains(resp.Error, "nothing changed") {
		t.Fatalf("reload of an invalid config: %+v", resp)
	}

	cfg := r.srv.cfg
	cfg.Limits.MaxEnvelope = 600
	cfg.Limits.PublishRate, cfg.Limits.PublishBurst = 1e-3, 2 // two more, then one per 1000 s
	cfg.Limits.MaxConnections = 1
	cfg.Limits.Skew.Duration = time.Minute
	resp := r.srv.Reload(ctx, cfg, "test")
	if resp.Error != "" || !strings.Contains(resp.Message, "the limits changed") || !strings.Contains(resp.Message, "at the next start: limits.skew") {
		t.Fatalf("reload: %+v", resp)
	}
	t.Log(resp.Message)
	if got := r.srv.lim().Skew.Duration; got != DefaultConfig().Limits.Skew.Duration {
		t.Fatalf("skew %s after a reload, want the one the relay started with", got)
	}

	if err := publish(strings.Repeat("x", 700)); !errors.Is(err, &wire.RelayError{Code: wire.CodeTooLarge}) {
		t.Fatalf("an envelope over the new max_envelope: %v", err)
	}
	for i := range 2 {
		if err := publish("in the new burst"); err != nil {
			t.Fatalf("publish %d of the new burst of 2: %v", i+1, err)
		}
	}
	if err := publish("over"); !errors.Is(err, &wire.RelayError{Code: wire.CodeRateLimited}) {
		t.Fatalf("a third publish with a burst of 2: %v", err)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := relay.Dial(dctx, r.addr, testkit.Key(t), relay.ClientOptions{}); !errors.Is(err, &wire.RelayError{Code: wire.CodeTooMany}) {
		t.Fatalf("a second connection with max_connections = 1: %v", err)
	}
	info, err := ca.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.MaxEnvelope != 600 || info.PublishBurst != 2 {
		t.Fatalf("info after the reload: max envelope %d, burst %d; want 600, 2", info.MaxEnvelope, info.PublishBurst)
	}

	if resp := r.srv.Reload(ctx, cfg, "test"); resp.Message != "reloaded: nothing changed; at the next start: limits.skew" {
		t.Fatalf("the same config again: %+v", resp)
	}
}

// TestConnectionsPerIdentityAndAddress: one identity cannot take every
// connection slot of the relay (issue 16, finding 5): it is capped, an
// address is capped, and the last tenth of the slots is kept for
// identities that have none open. A closed connection frees its slot.
func TestConnectionsPerIdentityAndAddress(t *testing.T) {
	r := startRelay(t, func(c *Config) {
		c.Limits.MaxConnections, c.Limits.ConnsPerIdentity, c.Limits.ConnsPerAddr = 10, 3, 100
	})
	ctx := ctxT(t)
	try := func(key identity.PrivateKey) (*relay.Client, error) {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := relay.Dial(dctx, r.addr, key, relay.ClientOptions{})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	tooMany := &wire.RelayError{Code: wire.CodeTooMany}
	mallory := testkit.Key(t)
	var first *relay.Client
	for i := range 3 {
		c, err := try(mallory)
		if err != nil {
			t.Fatalf("connection %d of an identity allowed 3: %v", i+1, err)
		}
		first = cmp.Or(first, c)
	}
	if _, err := try(mallory); !errors.Is(err, tooMany) {
		t.Fatalf("a 4th connection of one identity: %v", err)
	}
	others := make([]identity.PrivateKey, 7)
	for i := range 6 {
		others[i] = testkit.Key(t)
		if _, err := try(others[i]); err != nil {
			t.Fatal(err)
		}
	}
	// 9 of 10 open: the last is kept for an identity with none.
	if _, err := try(others[0]); !errors.Is(err, tooMany) || !strings.Contains(err.Error(), "kept for identities that have none") {
		t.Fatalf("a second connection into the reserve: %v", err)
	}
	others[6] = testkit.Key(t)
	if _, err := try(others[6]); err != nil {
		t.Fatalf("a newcomer into the reserve: %v", err)
	}
	if _, err := try(testkit.Key(t)); !errors.Is(err, tooMany) {
		t.Fatalf("an 11th connection: %v", err)
	}

	// A closed connection frees its slot, once the relay has seen it end.
	first.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := try(testkit.Key(t))
		if err == nil {
			break
		}
		if !errors.Is(err, tooMany) || time.Now().After(deadline) {
			t.Fatalf("after a close, a new connection: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConnectionsPerAddress: an address is capped whatever the
// identities it uses.
func TestConnectionsPerAddress(t *testing.T) {
	r := startRelay(t, func(c *Config) { c.Limits.ConnsPerAddr = 2 })
	for range 2 {
		dial(t, r, testkit.Key(t))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := relay.Dial(ctx, r.addr, testkit.Key(t), relay.ClientOptions{}); !errors.Is(err, &wire.RelayError{Code: wire.CodeTooMany}) {
		t.Fatalf("a third connection from an address allowed 2: %v", err)
	}
}

// TestRefusalsDoNotFloodTheAuditLog: an admitted identity that may not
// post in a room pipelines 300 envelopes to it (issue 16, finding 3).
// Each is refused, but the audit log, which is never pruned, gets at most
// a burst of refusal records per identity; the next record, once the
// rate allows it, counts those not recorded one by one. The relay's clock
// stands still here, so the rate gives no more.
func TestRefusalsDoNotFloodTheAuditLog(t *testing.T) {
	var clock atomic.Pointer[time.Time]
	now := time.Now()
	clock.Store(&now)
	alice, mallory := testkit.Key(t), testkit.Key(t)
	r := startRelayAt(t, filepath.Join(t.TempDir(), "relay.db"), testkit.Key(t), func(c *Config) {
		c.Limits.PublishRate, c.Limits.PublishBurst = 1e6, 1e6 // the refusals are what is limited
		c.Policy.Rooms = map[string]RoomRule{"news": {Post: []string{alice.Public().Fingerprint()}}}
	}, func(s *Server) { s.now = func() time.Time { return *clock.Load() } })
	ctx := ctxT(t)
	cm := dial(t, r, mallory)
	a := &testkit.Author{Key: mallory, Room: "news"}
	const flood = 300
	for i := range flood {
		raw, _ := a.Next(t, fmt.Sprint("spam ", i))
		if _, err := cm.Publish(ctx, raw); !errors.Is(err, &wire.RelayError{Code: wire.CodeForbidden}) {
			t.Fatalf("publish %d to a room mallory may not post in: %v", i, err)
		}
	}
	refusals := func(want int) []audit.Record {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			entries, err := r.st.AuditEntries(ctx, 0, 10_000)
			if err != nil {
				t.Fatal(err)
			}
			var got []audit.Record
			for _, e := range entries {
				if rec, err := audit.ParseRecord(e.Data); err == nil && rec.Kind == audit.KindPublishRefused {
					got = append(got, *rec)
				}
			}
			if len(got) >= want || time.Now().After(deadline) {
				return got
			}
		}
	}
	if got := refusals(refusalBurst); len(got) != refusalBurst {
		t.Fatalf("%d refusal records, want the burst of %d", len(got), refusalBurst)
	}
	later := now.Add(time.Second)
	clock.Store(&later)
	raw, _ := a.Next(t, "one more")
	cm.Publish(ctx, raw)
	got := refusals(refusalBurst + 1)
	if len(got) != refusalBurst+1 {
		t.Fatalf("%d refusal records after a second, want %d", len(got), refusalBurst+1)
	}
	want := fmt.Sprintf("(and %d refusals of %s before it, not recorded one by one)", flood-refusalBurst, mallory.Public().Fingerprint())
	if last := got[len(got)-1]; !strings.Contains(last.Detail, want) {
		t.Fatalf("the record after the held-back refusals: %q, want it to say %q", last.Detail, want)
	}
}

// TestStalledFrameBodyIsEnded: on a publish stream, after a first frame
// that is answered, a header promising 60,000 bytes and nothing more
// (issue 16, finding 4). The relay does not wait for the body for longer
// than the handshake timeout: it ends the stream as idle, and the slot
// and whatever it held go with it.
func TestStalledFrameBodyIsEnded(t *testing.T) {
	r := startRelay(t, func(c *Config) { c.Limits.HandshakeTimeout = Duration{2 * time.Second} })
	ctx := ctxT(t)
	alice := testkit.Key(t)
	conn, err := relay.DialQUIC(ctx, r.addr, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	promise := wire.AppendFrame(nil, wire.FramePublish, make([]byte, 60_000))[:wire.FrameHeaderSize+10]
	if _, err := str.Write(append(wire.AppendFrame(nil, wire.FramePublish, []byte{1}), promise...)); err != nil {
		t.Fatal(err)
	}
	str.SetReadDeadline(time.Now().Add(25 * time.Second)) // far past the relay's 2 s
	fr := wire.NewReader(str, wire.MaxFrameBody)
	if ft, _, err := fr.Next(); err != nil || ft != wire.FrameNack {
		t.Fatalf("the answer to a 1-byte publish: %s, %v; want a Nack", ft, err)
	}
	ft, body, err := fr.Next()
	if err != nil || ft != wire.FrameError {
		t.Fatalf("after a stalled body: %s, %v; want an Error frame", ft, err)
	}
	if re, err := wire.ParseErrorFrame(body); err != nil || re.Code != wire.CodeIdle {
		t.Fatalf("after a stalled body: %v, %v; want code %s", re, err, wire.CodeIdle)
	}
}

package server

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
	"github.com/quic-go/quic-go"
)

// newPackage makes key's package for device dev, made at created and
// living for life, encoded.
func newPackage(t testing.TB, key identity.PrivateKey, dev byte, created time.Time, life time.Duration) []byte {
	t.Helper()
	p, _, err := keypackage.New(key, [keypackage.DeviceSize]byte{dev}, created, created.Add(life))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func wantCode(t testing.TB, what string, err error, code wire.ErrorCode) {
	t.Helper()
	if !errors.Is(err, &wire.RelayError{Code: code}) {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
	t.Logf("%s: %v", what, err)
}

func wantPackages(t testing.TB, c *relay.Client, keys []identity.PublicKey, want ...[]byte) {
	t.Helper()
	got, err := c.KeyPackages(ctxT(t), keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d packages, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("package %d is not the one wanted", i)
		}
	}
}

// TestKeyPackages: a person puts their package, and someone who shares
// no room with them gets it; the relay keeps only the newest, of the
// connection's own identity, and refuses what does not check out.
func TestKeyPackages(t *testing.T) {
	path, relayKey := filepath.Join(t.TempDir(), "relay.db"), testkit.Key(t)
	r := startRelayAt(t, path, relayKey, nil)
	alice, bob, carol := testkit.Key(t), testkit.Key(t), testkit.Key(t)
	ca, cb := dial(t, r, alice), dial(t, r, bob)
	ctx := ctxT(t)
	now := time.Now()
	all := []identity.PublicKey{alice.Public(), bob.Public(), carol.Public()}

	// Nobody has one yet.
	wantPackages(t, cb, all)

	first := newPackage(t, alice, 1, now.Add(-time.Hour), keypackage.Lifetime)
	if err := ca.PutKeyPackage(ctx, first); err != nil {
		t.Fatal(err)
	}
	wantPackages(t, cb, all, first)
	// The same again (a retry after a lost answer): a success.
	if err := ca.PutKeyPackage(ctx, first); err != nil {
		t.Fatalf("the same package again: %v", err)
	}

	// Only alice puts alice's.
	wantCode(t, "someone else's package", cb.PutKeyPackage(ctx, newPackage(t, alice, 1, now, time.Hour)), wire.CodeNotSender)

	// A newer one replaces it (another device's too, for now); an older
	// one is stale.
	newer := newPackage(t, alice, 2, now.Add(-time.Minute), keypackage.Lifetime)
	if err := ca.PutKeyPackage(ctx, newer); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "an older package", ca.PutKeyPackage(ctx, newPackage(t, alice, 1, now.Add(-30*time.Minute), keypackage.Lifetime)), wire.CodeStale)
	wantCode(t, "the first package again", ca.PutKeyPackage(ctx, first), wire.CodeStale)

	// Out of its life, forged, broken, of a newer version.
	wantCode(t, "expired", ca.PutKeyPackage(ctx, newPackage(t, alice, 1, now.Add(-2*time.Hour), time.Hour)), wire.CodeExpired)
	wantCode(t, "made in the future", ca.PutKeyPackage(ctx, newPackage(t, alice, 1, now.Add(time.Hour), time.Hour)), wire.CodeExpired)
	forged := bytes.Clone(newPackage(t, alice, 1, now, time.Hour))
	forged[len(forged)-1] ^= 1
	wantCode(t, "forged", ca.PutKeyPackage(ctx, forged), wire.CodeBadKeyPackage)
	wantCode(t, "garbage", ca.PutKeyPackage(ctx, []byte{keypackage.Version, 1, 2, 3}), wire.CodeBadKeyPackage)
	wantCode(t, "a newer version", ca.PutKeyPackage(ctx, []byte{keypackage.Version + 1, 1, 2, 3}), wire.CodeUnsupported)

	bobs := newPackage(t, bob, 1, now, keypackage.Lifetime)
	if err := cb.PutKeyPackage(ctx, bobs); err != nil {
		t.Fatal(err)
	}
	// In the order asked, each once.
	wantPackages(t, ca, []identity.PublicKey{carol.Public(), bob.Public(), alice.Public(), bob.Public()}, bobs, newer)
	wantPackages(t, ca, []identity.PublicKey{carol.Public()})

	// They are still there after a restart.
	r.stop()
	r = startRelayAt(t, path, relayKey, nil)
	wantPackages(t, dial(t, r, carol), all, newer, bobs)
}

// TestKeyPackagesExpire: GetKeys leaves out a package that expired since
// it was put.
func TestKeyPackagesExpire(t *testing.T) {
	var clock atomic.Pointer[time.Time]
	now := time.Now()
	clock.Store(&now)
	r := startRelayAt(t, filepath.Join(t.TempDir(), "relay.db"), testkit.Key(t), nil,
		func(s *Server) { s.now = func() time.Time { return *clock.Load() } })
	alice := testkit.Key(t)
	c := dial(t, r, alice)
	raw := newPackage(t, alice, 1, now, time.Hour)
	if err := c.PutKeyPackage(ctxT(t), raw); err != nil {
		t.Fatal(err)
	}
	keys := []identity.PublicKey{alice.Public()}
	wantPackages(t, c, keys, raw)
	later := now.Add(time.Hour)
	clock.Store(&later)
	wantPackages(t, c, keys)
}

// TestKeyPackagesPolicy: an invite-mode newcomer may neither put nor get
// until admitted; puts share the identity's publish rate.
func TestKeyPackagesPolicy(t *testing.T) {
	r := startRelay(t, func(c *Config) {
		c.Policy.Mode = "invite"
		c.Limits.PublishRate, c.Limits.PublishBurst = 0.01, 2
	})
	ctx := ctxT(t)
	dave := testkit.Key(t)
	cd := dial(t, r, dave)
	now := time.Now()
	wantCode(t, "a newcomer's put", cd.PutKeyPackage(ctx, newPackage(t, dave, 1, now, time.Hour)), wire.CodeNotAllowed)
	_, err := cd.KeyPackages(ctx, []identity.PublicKey{dave.Public()})
	wantCode(t, "a newcomer's get", err, wire.CodeNotAllowed)

	if _, err := r.srv.Policy().Allow(ctx, dave.Public(), "test"); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := cd.PutKeyPackage(ctx, newPackage(t, dave, 1, now.Add(time.Duration(i)*time.Second), time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, "over the rate", cd.PutKeyPackage(ctx, newPackage(t, dave, 1, now.Add(2*time.Second), time.Hour)), wire.CodeRateLimited)

	// Banned while connected (no admin socket here closes the
	// connection): each request asks the policy again.
	if err := r.srv.Policy().Ban(ctx, dave.Public(), "test"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "a banned identity's put", cd.PutKeyPackage(ctx, newPackage(t, dave, 1, now.Add(3*time.Second), time.Hour)), wire.CodeBanned)
	_, err = cd.KeyPackages(ctx, []identity.PublicKey{dave.Public()})
	wantCode(t, "a banned identity's get", err, wire.CodeBanned)
}

// rawRequest sends frames on a new stream of conn and returns the first
// answer.
func rawRequest(t testing.TB, conn *quic.Conn, frames []byte) (wire.FrameType, []byte, error) {
	t.Helper()
	ctx := ctxT(t)
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return 0, nil, err
	}
	str.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := str.Write(frames); err != nil {
		return 0, nil, err
	}
	str.Close()
	return wire.NewReader(str, wire.MaxFrameBody).Next()
}

func wantErrorFrame(t testing.TB, what string, ft wire.FrameType, body []byte, err error, code wire.ErrorCode) *wire.RelayError {
	t.Helper()
	if err != nil || ft != wire.FrameError {
		t.Fatalf("%s: %s, %v; want an Error frame", what, ft, err)
	}
	re, err := wire.ParseErrorFrame(body)
	if err != nil || re.Code != code {
		t.Fatalf("%s: %v, %v; want %s", what, re, err, code)
	}
	t.Logf("%s: %v", what, re)
	return re
}

// TestKeyFramesMalformed: bodies that do not parse end their stream with
// Error 1 (2 for a package over the size limit); the connection goes on,
// and so does everyone else's.
func TestKeyFramesMalformed(t *testing.T) {
	r := startRelay(t, nil)
	ctx := ctxT(t)
	alice, bob := testkit.Key(t), testkit.Key(t)
	conn, err := relay.DialQUIC(ctx, r.addr, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	key := alice.Public().Bytes()
	for _, tc := range []struct {
		what  string
		frame []byte
		code  wire.ErrorCode
	}{
		{"an empty put", wire.AppendFrame(nil, wire.FramePutKeys, nil), wire.CodeBadFrame},
		{"a put over the size", wire.AppendFrame(nil, wire.FramePutKeys, make([]byte, wire.MaxKeyPackage+1)), wire.CodeTooLarge},
		{"an empty get", wire.AppendFrame(nil, wire.FrameGetKeys, nil), wire.CodeBadFrame},
		{"a get of no keys", wire.AppendFrame(nil, wire.FrameGetKeys, []byte{0, 0}), wire.CodeBadFrame},
		{"a get short of a key", wire.AppendFrame(nil, wire.FrameGetKeys, append([]byte{0, 2}, key...)), wire.CodeBadFrame},
		{"a get with trailing bytes", wire.AppendFrame(nil, wire.FrameGetKeys, append(append([]byte{0, 1}, key...), 0)), wire.CodeBadFrame},
		{"a get of 257 keys", wire.AppendFrame(nil, wire.FrameGetKeys, append([]byte{1, 1}, bytes.Repeat(key, 257)...)), wire.CodeBadFrame},
		{"a get of a key twice", wire.AppendFrame(nil, wire.FrameGetKeys, append(append([]byte{0, 2}, key...), key...)), wire.CodeBadFrame},
		{"a get of a small-order key", wire.AppendFrame(nil, wire.FrameGetKeys, append([]byte{0, 1}, make([]byte, 32)...)), wire.CodeBadFrame},
		{"an answer frame as a request", wire.AppendFrame(nil, wire.FrameKeyPackage, key), wire.CodeBadFrame},
	} {
		ft, body, err := rawRequest(t, conn, tc.frame)
		wantErrorFrame(t, tc.what, ft, body, err, tc.code)
	}
	// The same connection still asks, and gets an answer.
	body, err := (&wire.GetKeys{Keys: []identity.PublicKey{alice.Public()}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ft, b, err := rawRequest(t, conn, wire.AppendFrame(nil, wire.FrameGetKeys, body))
	if err != nil || ft != wire.FrameEnd {
		t.Fatalf("a good get after the bad ones: %s %x, %v; want End", ft, b, err)
	}
	// And so does another client.
	cb := dial(t, r, bob)
	raw := newPackage(t, bob, 1, time.Now(), time.Hour)
	if err := cb.PutKeyPackage(ctx, raw); err != nil {
		t.Fatal(err)
	}
	wantPackages(t, cb, []identity.PublicKey{bob.Public()}, raw)
}

// TestUnknownFrameType: a frame of a type the relay does not know gets
// Error 1 saying "unknown type N", which is how a relay older than a
// request answers it, and by which a client tells ErrUnsupported.
func TestUnknownFrameType(t *testing.T) {
	r := startRelay(t, nil)
	ctx := ctxT(t)
	conn, err := relay.DialQUIC(ctx, r.addr, testkit.Key(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	ft, body, err := rawRequest(t, conn, wire.AppendFrame(nil, wire.FrameType(200), []byte{1, 2, 3}))
	re := wantErrorFrame(t, "an unknown frame type", ft, body, err, wire.CodeBadFrame)
	if !strings.Contains(re.Message, "unknown type 200") {
		t.Fatalf("the relay said %q, not \"unknown type 200\"", re.Message)
	}
	// The connection goes on.
	if _, _, err := rawRequest(t, conn, wire.AppendFrame(nil, wire.FrameInfoRequest, nil)); err != nil {
		t.Fatal(err)
	}
}

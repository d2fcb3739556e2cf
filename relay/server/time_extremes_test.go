package server

import (
	"math"
	"testing"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
)

// endOfTime is the largest time a key package may carry (1<<62 Unix s).
const endOfTime = 1 << 62

// TestPublishTimeExtremes: the publish path refuses, as stale, an
// envelope dated at every extreme of its Time field (TestStaleFarAway
// has now±2^58 ms); nothing of them is stored. An envelope of now, sent
// last, is stored: the connection was not broken by the others.
func TestPublishTimeExtremes(t *testing.T) {
	r := startRelay(t, nil)
	alice := testkit.Key(t)
	c := dial(t, r, alice)
	ctx := ctxT(t)
	for _, at := range []int64{math.MinInt64, math.MinInt64 + 1, -1, 0, 1, math.MaxInt64 - 1, math.MaxInt64} {
		a := &testkit.Author{Key: alice, Room: "lobby", Now: func() time.Time { return time.UnixMilli(at) }}
		raw, _ := a.Next(t, "at an extreme")
		_, err := c.Publish(ctx, raw)
		wantCode(t, "an envelope at "+time.UnixMilli(at).UTC().String(), err, wire.CodeStale)
	}
	if pos, err := r.st.LastPos(ctx); err != nil || pos != 0 {
		t.Fatalf("last position stored %d (%v), want 0: nothing stored", pos, err)
	}
	a := &testkit.Author{Key: alice, Room: "lobby"}
	raw, _ := a.Next(t, "now")
	if _, err := c.Publish(ctx, raw); err != nil {
		t.Fatalf("an envelope of now, after the extremes: %v", err)
	}
}

// TestPutKeysTimeExtremes: the relay's PutKeys refuses a key package
// made at the end of time (as made in the future, not as newest forever)
// or in 1970 (expired), and one of now is still stored after them: the
// end-of-time package did not become the stored newest.
func TestPutKeysTimeExtremes(t *testing.T) {
	r := startRelay(t, nil)
	alice := testkit.Key(t)
	c := dial(t, r, alice)
	ctx := ctxT(t)
	day := 24 * time.Hour
	for _, tc := range []struct {
		name    string
		created time.Time
		life    time.Duration
	}{
		{"made at the end of time", time.Unix(endOfTime-int64(day/time.Second), 0), day},
		{"made one second before the end of time", time.Unix(endOfTime-1, 0), time.Second},
		{"made at second 0", time.Unix(0, 0), keypackage.MaxLifetime},
		{"made at second 0, living one second", time.Unix(0, 0), time.Second},
	} {
		err := c.PutKeyPackage(ctx, newPackage(t, alice, 1, tc.created, tc.life))
		wantCode(t, tc.name, err, wire.CodeExpired)
	}
	wantPackages(t, c, nil)
	now := newPackage(t, alice, 1, time.Now().Add(-time.Minute), keypackage.Lifetime)
	if err := c.PutKeyPackage(ctx, now); err != nil {
		t.Fatalf("a package of now, after the extremes: %v", err)
	}
	wantPackages(t, c, []identity.PublicKey{alice.Public()}, now)
}

// TestInfoRetentionExtreme: the longest retention a configuration can
// hold (the largest time.Duration, 106,751.99 days) is announced in
// Info's RetentionDays without wrapping; no age limit is 0.
func TestInfoRetentionExtreme(t *testing.T) {
	for _, tc := range []struct {
		maxAge time.Duration
		days   uint32
	}{{math.MaxInt64, 106752}, {0, 0}} {
		r := startRelay(t, func(c *Config) { c.Retention.MaxAge = Duration{tc.maxAge} })
		info, err := dial(t, r, testkit.Key(t)).Info(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if info.RetentionDays != tc.days {
			t.Errorf("max_age %v: Info says %d days, want %d", tc.maxAge, info.RetentionDays, tc.days)
		}
	}
}

// TestTimeoutExtremes: the configuration's timeouts at the largest
// time.Duration (292 years: no deadline wraps into the past, and quic-go
// takes the idle timeout) and the retention age at its largest: a client
// connects over QUIC and over TCP and publishes on either.
func TestTimeoutExtremes(t *testing.T) {
	r := startRelay(t, func(c *Config) {
		l := &c.Limits
		l.HandshakeTimeout, l.IdleTimeout, l.WriteTimeout = Duration{math.MaxInt64}, Duration{math.MaxInt64}, Duration{math.MaxInt64}
		c.Retention.MaxAge = Duration{math.MaxInt64}
	})
	for _, via := range []relay.Via{relay.ViaQUIC, relay.ViaTCP} {
		alice := testkit.Key(t)
		a := &testkit.Author{Key: alice, Room: "lobby"}
		raw, _ := a.Next(t, "hello")
		if _, err := dialVia(t, r, alice, via).Publish(ctxT(t), raw); err != nil {
			t.Fatalf("a publish over %v with the largest timeouts: %v", via, err)
		}
	}
}

// TestConfigBoundsTimesAndRates: a skew over a day, whose double the
// relay computes, and a rate the Info frame cannot carry are refused
// with the setting named; the largest allowed load.
func TestConfigBoundsTimesAndRates(t *testing.T) {
	checkConfigCases(t, []configCase{
		{"skew of 292 years", func(c *Config) { c.Limits.Skew.Duration = math.MaxInt64; c.Retention.MaxAge.Duration = 0 }, "limits.skew"},
		{"skew of a day and a second", func(c *Config) { c.Limits.Skew.Duration = 24*time.Hour + time.Second; c.Retention.MaxAge.Duration = 0 }, "limits.skew"},
		{"publish rate 1e12", func(c *Config) { c.Limits.PublishRate = 1e12 }, "rates"},
		{"address rate 2^32", func(c *Config) { c.Limits.AddrRate = 1 << 32 }, "rates"},
		{"skew of a day", func(c *Config) { c.Limits.Skew.Duration = 24 * time.Hour; c.Retention.MaxAge.Duration = 0 }, ""},
		{"publish rate 2^32-1", func(c *Config) { c.Limits.PublishRate = math.MaxUint32 }, ""},
	})
}

package keyring

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
)

// endOfTime is the largest time a key package may carry (1<<62 Unix s).
const endOfTime = 1 << 62

// encodedPackage makes a package of p's key for its ring's device, made
// at created and living for life, encoded.
func (p *person) encodedPackage(created time.Time, life time.Duration) []byte {
	p.t.Helper()
	pkg, _, err := keypackage.New(p.key, [keypackage.DeviceSize]byte{1}, created, created.Add(life))
	if err != nil {
		p.t.Fatal(err)
	}
	raw, err := pkg.MarshalBinary()
	if err != nil {
		p.t.Fatal(err)
	}
	return raw
}

// TestLearnTimeExtremes: the client's receive path (a package announced
// in a room, or fetched from the relay) keeps no package made at the end
// of time or in 1970; one made at the end of time after a current one
// does not replace it (it would be "newest" forever).
func TestLearnTimeExtremes(t *testing.T) {
	alice, bob := newPerson(t, time.Now), newPerson(t, time.Now)
	ctx := context.Background()
	day := int64(24 * 60 * 60)
	extremes := []struct {
		name    string
		created time.Time
		life    time.Duration
	}{
		{"made at the end of time", time.Unix(endOfTime-day, 0), 24 * time.Hour},
		{"made a second before the end of time", time.Unix(endOfTime-1, 0), time.Second},
		{"made at second 0", time.Unix(0, 0), keypackage.MaxLifetime},
	}
	learn := func(raw []byte) bool {
		t.Helper()
		ok, err := bob.ring.LearnRaw(ctx, raw)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for _, x := range extremes {
		if learn(alice.encodedPackage(x.created, x.life)) {
			t.Errorf("%s: learnt", x.name)
		}
	}
	if _, ok, _ := bob.ring.PackageOf(ctx, alice.key.Public()); ok {
		t.Fatal("a package of alice is known after only extreme ones")
	}
	current := alice.encodedPackage(time.Now().Add(-time.Minute), keypackage.Lifetime)
	if !learn(current) {
		t.Fatal("a current package: not learnt")
	}
	for _, x := range extremes {
		if learn(alice.encodedPackage(x.created, x.life)) {
			t.Errorf("%s, after a current one: learnt", x.name)
		}
	}
	p, ok, err := bob.ring.PackageOf(ctx, alice.key.Public())
	if err != nil || !ok {
		t.Fatalf("alice's current package: %v, known %v", err, ok)
	}
	if raw, _ := p.MarshalBinary(); string(raw) != string(current) {
		t.Error("alice's kept package is not the current one")
	}
}

// TestClockJumpsBack: what our own clock dated ahead of it is replaced
// once the clock is right again, instead of being kept until the clock
// reaches it: our key package (which everyone else refuses as made in
// the future) and our sender key (whose age would be negative, and never
// reach EpochAge). A date within keypackage.MaxSkew ahead is kept.
func TestClockJumpsBack(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ahead    time.Duration
		replaced bool
	}{
		{"a minute ahead", time.Minute, false},
		{"an hour ahead", time.Hour, true},
		{"ten years ahead", 10 * 365 * 24 * time.Hour, true},
		{"the largest duration ahead (292 years)", math.MaxInt64, true},
	} {
		now := time.Now()
		clock := now.Add(tc.ahead)
		alice := newPerson(t, func() time.Time { return clock })
		ctx := context.Background()
		ahead, _, err := alice.ring.Current(ctx)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if alice.sendKeys(alice) == nil {
			t.Fatalf("%s: no first epoch", tc.name)
		}
		clock = now
		p, made, err := alice.ring.Current(ctx)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if made != tc.replaced || (p.ID() != ahead.ID()) == !tc.replaced {
			t.Errorf("%s: a new key package %v, want %v", tc.name, made, tc.replaced)
		}
		if got := alice.sendKeys(alice) != nil; got != tc.replaced {
			t.Errorf("%s: a new epoch %v, want %v", tc.name, got, tc.replaced)
		}
	}
}

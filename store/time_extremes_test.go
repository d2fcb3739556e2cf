package store

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
)

// timeExtremes are the int64 values every time field is fed (Unix ms for
// envelopes and invites).
var timeExtremes = []int64{math.MinInt64, math.MinInt64 + 1, -1, 0, 1, math.MaxInt64 - 1, math.MaxInt64}

// TestRangeTimeExtremes: envelopes stored with the extreme times (as a
// history sync can bring; the store compares them in SQL, with no
// arithmetic) are found by Range exactly when since <= time < until, for
// since and until at the extremes too.
func TestRangeTimeExtremes(t *testing.T) {
	s := atExtremes(t)
	ctx := context.Background()
	for _, since := range timeExtremes {
		for _, until := range timeExtremes {
			recs, err := s.Range(ctx, "r", since, until, Cursor{}, 100)
			if err != nil {
				t.Fatal(err)
			}
			var got, want []int64
			for _, r := range recs {
				got = append(got, r.Env.Time)
			}
			for _, at := range timeExtremes {
				if since <= at && at < until {
					want = append(want, at)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("Range(%d, %d) = %v, want %v", since, until, got, want)
			}
		}
	}
}

// TestPruneTimeExtremes: a cutoff at the smallest time prunes nothing,
// one at the largest everything but the newest envelope (which Prune
// always keeps), whatever the envelopes' times and receipt times.
func TestPruneTimeExtremes(t *testing.T) {
	s := atExtremes(t)
	ctx := context.Background()
	if n, err := s.Prune(ctx, time.UnixMilli(math.MinInt64)); err != nil || n != 0 {
		t.Fatalf("Prune at the smallest time = %d, %v; want 0", n, err)
	}
	if n, err := s.Prune(ctx, time.UnixMilli(math.MaxInt64)); err != nil || n != int64(len(timeExtremes)-1) {
		t.Fatalf("Prune at the largest time = %d, %v; want %d", n, err, len(timeExtremes)-1)
	}
}

// TestInviteExpiryExtremes: a relay invite expiring at the largest time
// is redeemable now and not at that time; one expiring at the smallest
// time (or at 0) never is: no expiry wraps to the other side.
func TestInviteExpiryExtremes(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	for _, tc := range []struct {
		expires, at int64
		ok          bool
	}{
		{math.MaxInt64, now.UnixMilli(), true},
		{math.MaxInt64, math.MaxInt64 - 1, true},
		{math.MaxInt64, math.MaxInt64, false},
		{math.MaxInt64, math.MinInt64, true},
		{math.MinInt64, now.UnixMilli(), false},
		{math.MinInt64, math.MinInt64, false},
		{0, now.UnixMilli(), false},
		{0, -1, true},
	} {
		s, _ := open(t)
		ctx := context.Background()
		hash := [32]byte{1}
		if _, err := s.AddInvite(ctx, hash, "n", time.UnixMilli(tc.expires), 1); err != nil {
			t.Fatal(err)
		}
		_, err := s.RedeemInvite(ctx, hash, key(t, 2).Public(), time.UnixMilli(tc.at))
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrBadInvite) {
			t.Errorf("expires %d, redeemed at %d: %v, want redeemed %v", tc.expires, tc.at, err, tc.ok)
		}
	}
}

// TestKeyPackageTimeExtremes: the relay's stored key packages at the
// extremes of their times (Unix s; keypackage bounds them to [0, 2^62])
// and of the clock: a package expiring at 2^62 is served at the largest
// clock time.Time can give from Unix ms, one expiring at 1 is not served
// now, and one made at 2^62 - 1 is newer than any other.
func TestKeyPackageTimeExtremes(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	alice, bob := key(t, 1).Public(), key(t, 2).Public()
	if err := s.PutKeyPackage(ctx, alice, 0, 1<<62, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutKeyPackage(ctx, bob, 0, 1, []byte("b")); err != nil {
		t.Fatal(err)
	}
	for _, now := range []time.Time{time.UnixMilli(math.MinInt64), time.Unix(0, 0), time.Now(), time.UnixMilli(math.MaxInt64)} {
		got, err := s.KeyPackages(ctx, []identity.PublicKey{alice, bob}, now)
		if err != nil {
			t.Fatal(err)
		}
		want := [][]byte{[]byte("a")}
		if now.Unix() < 1 {
			want = append(want, []byte("b"))
		}
		if !slices.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Errorf("at %d s: %q, want %q", now.Unix(), got, want)
		}
	}
	if err := s.PutKeyPackage(ctx, alice, 1<<62-1, 1<<62, []byte("end")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutKeyPackage(ctx, alice, time.Now().Unix(), 1<<62, []byte("now")); !errors.Is(err, ErrStaleKeyPackage) {
		t.Fatalf("a package of now after one made at the end of time: %v, want ErrStaleKeyPackage", err)
	}
}

// atExtremes is a store holding one envelope of key 1 in room "r" at each
// of timeExtremes, numbered in that order.
func atExtremes(t *testing.T) *Store {
	t.Helper()
	s, _ := open(t)
	k := key(t, 1)
	for i, at := range timeExtremes {
		if _, err := s.Put(context.Background(), record(t, k, "r", uint64(i+1), uint64(i+1), time.UnixMilli(at), "x")); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

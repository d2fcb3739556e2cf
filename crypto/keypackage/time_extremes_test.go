package keypackage_test

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
)

// maxTime is the largest Created or Expires that Parse accepts (1<<62
// Unix seconds, as the format says).
const maxTime = 1 << 62

// Offsets of the times in an encoding: version 1, suite 6, identity 32,
// device 16.
const createdAt, expiresAt = 55, 63

// withTimes returns a copy of the valid encoding raw with its times set to
// created and expires (any uint64, as the wire allows) and signed again by
// the key of derived, so that only the times can make Parse refuse it.
func withTimes(t *testing.T, raw []byte, created, expires uint64) []byte {
	t.Helper()
	b := append([]byte(nil), raw[:len(raw)-keypackage.SignatureSize]...)
	binary.BigEndian.PutUint64(b[createdAt:], created)
	binary.BigEndian.PutUint64(b[expiresAt:], expires)
	sig := key(t, 1).Sign(append([]byte("parley key package v1\x00"), b...))
	return append(b, sig...)
}

// TestParseTimeExtremes: every extreme of the two time fields on the wire
// (u64) is either refused as malformed or parsed to the same values; no
// value wraps to a negative time or a short lifetime.
func TestParseTimeExtremes(t *testing.T) {
	raw := encode(t, derived(t))
	if p, err := keypackage.Parse(withTimes(t, raw, 1000, 2000)); err != nil || p.Created != 1000 || p.Expires != 2000 {
		t.Fatalf("the re-signing helper is wrong: %v", err) // the control: only the times change
	}
	maxLife := uint64(keypackage.MaxLifetime / time.Second)
	for _, tc := range []struct {
		name             string
		created, expires uint64
		ok               bool
	}{
		{"0 to 1", 0, 1, true},
		{"0 to the longest life", 0, maxLife, true},
		{"0 to one second over the longest life", 0, maxLife + 1, false},
		{"the end of time", maxTime - 1, maxTime, true},
		{"the end of time, longest life", maxTime - maxLife, maxTime, true},
		{"expires one past the end", maxTime - 1, maxTime + 1, false},
		{"both past the end", maxTime + 1, maxTime + 2, false},
		{"expires MaxInt64", maxTime - 1, math.MaxInt64, false},
		{"expires 2^63 (MinInt64 as int64)", 0, 1 << 63, false},
		{"created 2^63, expires 1 (a wrap would give a lifetime of 2^63+1)", 1 << 63, 1, false},
		{"created MaxUint64, expires 0", math.MaxUint64, 0, false},
		{"created 0, expires MaxUint64 (-1 as int64)", 0, math.MaxUint64, false},
		{"expires before created", 2000, 1000, false},
		{"expires equal to created", 2000, 2000, false},
		{"expires 0", 0, 0, false},
	} {
		p, err := keypackage.Parse(withTimes(t, raw, tc.created, tc.expires))
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v, want it parsed", tc.name, err)
		case tc.ok && (p.Created != int64(tc.created) || p.Expires != int64(tc.expires)):
			t.Errorf("%s: parsed as %d to %d", tc.name, p.Created, p.Expires)
		case !tc.ok && !errors.Is(err, keypackage.ErrMalformed):
			t.Errorf("%s: %v, want ErrMalformed", tc.name, err)
		}
	}
}

// TestNewTimeExtremes: New refuses the times Parse would refuse, with the
// same error, and the error names the lifetime without overflow (a life
// of 2^62 s as a time.Duration wraps).
func TestNewTimeExtremes(t *testing.T) {
	for _, tc := range []struct {
		name             string
		created, expires time.Time
		life             string // in the error, if not ""
	}{
		{"before 1970", time.Unix(-1, 0), time.Unix(10, 0), ""},
		{"the zero time", time.Time{}, time.Unix(10, 0), ""},
		{"past the end of time", time.Unix(maxTime, 0), time.Unix(maxTime+1, 0), ""},
		{"from 0 to the end of time", time.Unix(0, 0), time.Unix(maxTime, 0), strconv.Itoa(maxTime) + "s"},
		{"from 0 to the largest time", time.Unix(0, 0), time.UnixMilli(math.MaxInt64), ""},
		{"from the smallest time", time.UnixMilli(math.MinInt64), time.Unix(10, 0), ""},
	} {
		_, _, err := keypackage.New(key(t, 1), device, tc.created, tc.expires)
		if !errors.Is(err, keypackage.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", tc.name, err)
			continue
		}
		if tc.life != "" && !strings.Contains(err.Error(), tc.life) {
			t.Errorf("%s: %q does not name the lifetime %s", tc.name, err, tc.life)
		}
	}
}

// TestValidTimeExtremes: Valid at the extremes of a package's times and
// of the clock: a package made at the end of time is made in the future
// (not valid now, however far), one from 1970 expired, and a clock at
// either end of time.Time finds the package outside its life.
func TestValidTimeExtremes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	day := int64(24 * 60 * 60)
	pkg := func(created, expires int64) *keypackage.Package {
		p, _, err := keypackage.New(key(t, 1), device, time.Unix(created, 0), time.Unix(expires, 0))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	current := pkg(now.Unix()-day, now.Unix()+day)
	for _, tc := range []struct {
		name  string
		p     *keypackage.Package
		now   time.Time
		valid bool
	}{
		{"a current package", current, now, true},
		{"made at the end of time", pkg(maxTime-day, maxTime), now, false},
		{"made in 1970", pkg(0, day), now, false},
		{"made at second 0, alive for the longest life, checked at second 1", pkg(0, 90*day), time.Unix(1, 0), true},
		{"a current package at the largest clock", current, time.UnixMilli(math.MaxInt64), false},
		{"a current package at the smallest clock", current, time.UnixMilli(math.MinInt64), false},
		{"a current package at the zero clock", current, time.Time{}, false},
		{"the end-of-time package at the largest clock", pkg(maxTime-day, maxTime), time.UnixMilli(math.MaxInt64), false},
		{"the end-of-time package just before it expires", pkg(maxTime-day, maxTime), time.Unix(maxTime-1, 0), true},
		{"the end-of-time package as it expires", pkg(maxTime-day, maxTime), time.Unix(maxTime, 0), false},
	} {
		err := tc.p.Valid(tc.now)
		if tc.valid && err != nil || !tc.valid && !errors.Is(err, keypackage.ErrExpired) {
			t.Errorf("%s: Valid = %v, want valid %v", tc.name, err, tc.valid)
		}
	}
	// Newer compares the times as they are: the end of time is newer.
	if !pkg(maxTime-day, maxTime).Newer(current) || current.Newer(pkg(maxTime-day, maxTime)) {
		t.Error("Newer is not the order of Created at the end of time")
	}
}

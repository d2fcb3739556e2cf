package protocol

import (
	"errors"
	"math"
	"testing"
	"time"
)

// Times far from now are far from now: a difference of more than 2^63 ns
// (about 292 years) does not wrap around to a small skew. An envelope
// dated 2^58 ms in the past, computed as time.Duration(now-t) *
// time.Millisecond, wraps to exactly 0 and would look just sent.
func TestReplayFarTimesExpire(t *testing.T) {
	far := int64(1) << 58 // milliseconds
	if w := time.Duration(far) * time.Millisecond; w != 0 {
		t.Fatalf("the wrapping product is %v, the test expects 0", w)
	}
	now := t0.UnixMilli()
	for _, tc := range []struct {
		name string
		at   int64
	}{
		{"2^58 ms in the past", now - far},
		{"2^58 ms in the future", now + far},
		{"2^62 ms in the future", now + 1<<62},
		{"the smallest time", math.MinInt64},
		{"the largest time", math.MaxInt64},
	} {
		k := key(t, 1)
		e := &Envelope{Kind: KindText, Room: "r", Seq: 1, Lamport: 1, Time: tc.at, Payload: []byte("m")}
		id, err := e.Sign(k)
		if err != nil {
			t.Fatal(err)
		}
		g := ReplayGuard{Now: fixedClock(t0)}
		if err := g.Check(e, id, Live); !errors.Is(err, ErrExpired) {
			t.Errorf("%s: %v, want ErrExpired", tc.name, err)
		}
		if WithinSkew(t0, tc.at, DefaultSkew) {
			t.Errorf("%s: WithinSkew says yes", tc.name)
		}
		if d := Age(t0, tc.at); (tc.at < now) != (d > 0) || d.Abs() < 24*time.Hour {
			t.Errorf("%s: Age %v", tc.name, d)
		}
	}
	if !WithinSkew(t0, t0.UnixMilli()-1000, DefaultSkew) || !WithinSkew(t0, t0.UnixMilli()+1000, DefaultSkew) {
		t.Error("a second either side is not within the skew")
	}
}

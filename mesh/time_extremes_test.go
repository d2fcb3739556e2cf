package mesh

import (
	"context"
	"math"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"

	"github.com/parleychat/parley/protocol"
)

// TestValidateTimeExtremes: the mesh validator ignores, as expired, a
// new envelope dated at every extreme of its Time field (TestValidate-
// FarTimes has now±2^58 ms), and the skew's edges hold: 1 ms inside is
// accepted, 1 ms outside is not. The node's clock is fixed.
func TestValidateTimeExtremes(t *testing.T) {
	base := time.UnixMilli(time.Now().UnixMilli())
	n := start(t, newSpec(t, 0), func(c *Config) { c.Now = func() time.Time { return base } })
	topic := topicName("general")
	validate := func(raw []byte) pubsub.ValidationResult {
		return n.validate(context.Background(), "", &pubsub.Message{Message: &pb.Message{Data: raw, Topic: &topic}, ReceivedFrom: "peer"})
	}
	now, skew := base.UnixMilli(), protocol.DefaultSkew.Milliseconds()
	k := testKey(t, 4)
	for i, tc := range []struct {
		at     int64
		accept bool
	}{
		{math.MinInt64, false},
		{math.MinInt64 + 1, false},
		{-1, false},
		{0, false},
		{1, false},
		{math.MaxInt64 - 1, false},
		{math.MaxInt64, false},
		{now - skew - 1, false},
		{now + skew + 1, false},
		{now - skew, true},
		{now + skew, true},
	} {
		raw, _ := envelopeAt(t, k, "general", uint64(i+1), protocol.ID{}, "extreme", time.UnixMilli(tc.at))
		before := validated(n, "ignore", "expired")
		r := validate(raw)
		expired := r == pubsub.ValidationIgnore && validated(n, "ignore", "expired") == before+1
		if tc.accept && r != pubsub.ValidationAccept || !tc.accept && !expired {
			t.Errorf("an envelope at %d ms (now %d): %v, want accepted %v", tc.at, now, r, tc.accept)
		}
	}
}

// TestGapRangeAtTheEndsOfTime: the sync range asked for a gap before an
// envelope dated at either end of time does not wrap around.
func TestGapRangeAtTheEndsOfTime(t *testing.T) {
	const d = int64(7 * 24 * 3600 * 1000)
	for _, tc := range []struct{ t, since, until int64 }{
		{math.MinInt64, math.MinInt64, math.MinInt64 + 1},
		{math.MinInt64 + 5, math.MinInt64, math.MinInt64 + 6},
		{0, -d, 1},
		{math.MaxInt64, math.MaxInt64 - d, math.MaxInt64},
	} {
		if got := earlier(tc.t, d); got != tc.since {
			t.Errorf("earlier(%d) = %d, want %d", tc.t, got, tc.since)
		}
		if got := later(tc.t); got != tc.until {
			t.Errorf("later(%d) = %d, want %d", tc.t, got, tc.until)
		}
	}
}

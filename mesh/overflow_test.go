package mesh

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"

	"github.com/parleychat/parley/protocol"
)

// The validator holds envelopes dated far from now to the clock without
// overflow: 2^58 ms away (which time.Duration(ms) * time.Millisecond wraps
// to 0) is far away, not no time at all. Both paths: a new envelope (the
// replay guard) and a copy of an envelope accepted before (forwardKnown),
// whose time is checked again.
func TestValidateFarTimes(t *testing.T) {
	base := time.Now()
	var clock atomic.Pointer[time.Time]
	clock.Store(&base)
	n := start(t, newSpec(t, 0), func(c *Config) {
		c.Now = func() time.Time { return *clock.Load() }
	})
	validate := func(raw []byte) pubsub.ValidationResult {
		topic := topicName("general")
		return n.validate(context.Background(), "", &pubsub.Message{Message: &pb.Message{Data: raw, Topic: &topic}, ReceivedFrom: "peer"})
	}
	expired := func(raw []byte) bool {
		before := validated(n, "ignore", "expired")
		return validate(raw) == pubsub.ValidationIgnore && validated(n, "ignore", "expired") == before+1
	}
	k := testKey(t, 3)
	ms := int64(1) << 58
	for i, at := range []int64{base.UnixMilli() - ms, base.UnixMilli() + ms} {
		raw, _ := envelopeAt(t, k, "general", uint64(i+1), protocol.ID{}, "far", time.UnixMilli(at))
		if !expired(raw) {
			t.Fatalf("a new envelope at %d ms (now %d): not ignored as expired", at, base.UnixMilli())
		}
	}
	// A live envelope, accepted; its copy 2^58 ms later or earlier is
	// expired.
	raw, _ := envelopeAt(t, k, "general", 10, protocol.ID{}, "now", base)
	if r := validate(raw); r != pubsub.ValidationAccept {
		t.Fatalf("a live envelope: %v", r)
	}
	for _, d := range []int64{ms, -ms} {
		later := time.UnixMilli(base.UnixMilli() + d)
		clock.Store(&later)
		if !expired(raw) {
			t.Fatalf("the known envelope's copy %d ms later: not ignored as expired", d)
		}
	}
}

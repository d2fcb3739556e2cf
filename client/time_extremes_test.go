package client

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
)

// TestReceiveTimeExtremes: the client's receive path takes envelopes at
// every extreme of their Time from the relay (which a relay that does not
// hold senders to its skew could send, live or as history: the client
// does not judge times itself), shows each once with its own time, keeps
// them, and pages back through them by time without a wrap.
func TestReceiveTimeExtremes(t *testing.T) {
	c := openOffline(t)
	ctx := context.Background()
	times := []int64{math.MinInt64, math.MinInt64 + 1, -1, 0, 1, math.MaxInt64 - 1, math.MaxInt64}
	alice := &testkit.Author{Key: testkit.Key(t), Room: "r"}
	for i, at := range times {
		alice.Now = func() time.Time { return time.UnixMilli(at) }
		raw, id := alice.Next(t, "extreme")
		e, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		c.in <- arrival{room: "r", id: id, env: e, raw: raw, via: ViaRelay, history: i%2 == 0}
		m := next(t, c)
		if m.ID != id || m.Time.UnixMilli() != at {
			t.Fatalf("shown %s at %d, want %s at %d", m.ID, m.Time.UnixMilli(), id, at)
		}
	}
	noMore(t, c)
	all, err := c.History(ctx, "r", "", 100)
	if err != nil || len(all) != len(times) {
		t.Fatalf("history: %d messages (%v), want %d", len(all), err, len(times))
	}
	// Each message's earlier ones: those before it in the history.
	for i, m := range all {
		before, err := c.HistoryBefore(ctx, "r", m, 100)
		if err != nil || len(before) != i {
			t.Errorf("before the message at %d: %d messages (%v), want %d", m.Time.UnixMilli(), len(before), err, i)
		}
	}
}

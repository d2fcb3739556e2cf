package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/relay/wire"
)

// TestSentJSONAtTheEndsOfTime: send --json prints an acknowledgement
// whatever time the relay's clock put in it; time.Time's own JSON stops
// at the year 9999.
func TestSentJSONAtTheEndsOfTime(t *testing.T) {
	var c cli
	for _, at := range []int64{math.MinInt64, -1, 0, 253402300800000 /* year 10000 */, math.MaxInt64} {
		v := c.sentJSON("lobby", client.Sent{Time: time.Now(), Ack: &wire.Ack{Status: wire.AckStored, Time: at}}, nil)
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("ack time %d: %v", at, err)
		}
		if !strings.Contains(string(b), `"time":"`+time.UnixMilli(at).UTC().Format(time.RFC3339Nano)+`"`) {
			t.Errorf("ack time %d: %s", at, b)
		}
	}
}

package mesh

import (
	"context"
	"fmt"
	"sync"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// summaryCache keeps the summaries of the buckets a node last read, each
// with the store's stamp of its range (store.Stamp). Anti-entropy covers
// the last AntiEntropy plus 2 × skew, 11 minutes, every minute, and a
// peer asks for the same buckets: without it, a node read every envelope
// ID of those 11 minutes twice a minute a room (33,000 a round at 50
// messages a second), when all but the newest minute were the same as
// the last round's. A stamp is one count over the index; an unchanged
// stamp means unchanged envelopes, so its summary is the one kept.
//
// Buckets are the same from round to round because antiEntropy ends them
// on a whole minute (summaryStep). Only such buckets, a whole minute
// each, are kept: a peer that asks for others is answered as before, by
// reading their IDs, and displaces nothing.
type summaryCache struct {
	mu      sync.Mutex
	entries map[bucketKey]keptSummary
}

type bucketKey struct {
	room         string
	since, until int64
}

type keptSummary struct {
	stamp store.Stamp
	sum   protocol.Summary
}

// maxKeptSummaries bounds the cache: 64 rooms of 16 buckets, about 100
// bytes each.
const maxKeptSummaries = 1024

func (c *summaryCache) get(k bucketKey, st store.Stamp) (protocol.Summary, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || e.stamp != st {
		return protocol.Summary{}, false
	}
	return e.sum, true
}

// put keeps sum, read after stamp st was taken, displacing a kept one
// (whichever the map's iteration gives first) when the cache is full.
func (c *summaryCache) put(k bucketKey, st store.Stamp, sum protocol.Summary) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[bucketKey]keptSummary)
	}
	if _, ok := c.entries[k]; !ok && len(c.entries) >= maxKeptSummaries {
		for old := range c.entries {
			delete(c.entries, old)
			break
		}
	}
	c.entries[k] = keptSummary{st, sum}
}

// summary summarises what the store holds of room with since <= time <
// until, or says Over when that is more than most envelopes. The stamp
// is taken before the IDs are read: an envelope stored in between makes
// the kept stamp older than the summary, and the next call reads again,
// where the other order would keep a summary older than its stamp.
func (n *Node) summary(ctx context.Context, room string, since, until int64, most int) (protocol.Summary, error) {
	k := bucketKey{room, since, until}
	st, err := n.store.Stamp(ctx, room, since, until, most+1)
	if err != nil {
		return protocol.Summary{}, fmt.Errorf("mesh: summary of %s: %w", room, err)
	}
	if st.Count > most {
		return protocol.Summary{Over: true}, nil
	}
	if sum, ok := n.sums.get(k, st); ok {
		return sum, nil
	}
	ids, err := n.store.IDs(ctx, room, since, until, most+1)
	if err != nil {
		return protocol.Summary{}, fmt.Errorf("mesh: summary of %s: %w", room, err)
	}
	if len(ids) > most {
		return protocol.Summary{Over: true}, nil
	}
	sum := protocol.SummaryOf(ids)
	// A range that changed in between (the count differs) is not kept.
	if len(ids) == st.Count && wholeMinute(since, until) {
		n.sums.put(k, st, sum)
	}
	return sum, nil
}

// wholeMinute reports whether since <= time < until is one bucket of
// antiEntropy's: a whole minute, from its start.
func wholeMinute(since, until int64) bool {
	step := summaryStep.Milliseconds()
	return until-since == step && floorTo(since, step) == since
}

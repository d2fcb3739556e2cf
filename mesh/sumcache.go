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
// on a whole bucket (summaryStep from the epoch). Only such buckets are
// kept, and only inside the range the node's own rounds cover now
// (worthKeeping): a peer that asks for others is answered as before, by
// reading their IDs, and displaces nothing; buckets that leave the range
// are dropped when room is needed.
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

// maxKeptSummaries bounds the cache: about 90 rooms of 43-44 buckets
// (the default range), about 100 bytes each.
const maxKeptSummaries = 4096

func (c *summaryCache) get(k bucketKey, st store.Stamp) (protocol.Summary, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || e.stamp != st {
		return protocol.Summary{}, false
	}
	return e.sum, true
}

// put keeps sum, read after stamp st was taken. When the cache is full it
// first drops the buckets that end before from (out of the range), then,
// if none did, a kept one (whichever the map's iteration gives first).
func (c *summaryCache) put(k bucketKey, st store.Stamp, sum protocol.Summary, from int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[bucketKey]keptSummary)
	}
	if _, ok := c.entries[k]; !ok && len(c.entries) >= maxKeptSummaries {
		for old := range c.entries {
			if old.until < from {
				delete(c.entries, old)
			}
		}
		for old := range c.entries {
			if len(c.entries) < maxKeptSummaries {
				break
			}
			delete(c.entries, old)
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
	if from, ok := n.worthKeeping(since, until); ok && len(ids) == st.Count {
		n.sums.put(k, st, sum, from)
	}
	return sum, nil
}

// worthKeeping reports whether since <= time < until is a bucket of the
// node's own rounds: a whole bucket that has ended, inside the range
// they cover now, which begins at from (less a bucket: the first may
// begin before the range).
func (n *Node) worthKeeping(since, until int64) (from int64, ok bool) {
	now := n.cfg.now()
	from = now.Add(-n.cfg.antiEntropy() - 2*n.cfg.skew() - summaryStep).UnixMilli()
	return from, wholeBucket(since, until) && since >= from && until <= now.UnixMilli()
}

// wholeBucket reports whether since <= time < until is one bucket of
// antiEntropy's: summaryStep long, from a multiple of it.
func wholeBucket(since, until int64) bool {
	step := summaryStep.Milliseconds()
	return until-since == step && since%step == 0
}

package relay

import (
	"context"
	"time"

	"github.com/parleychat/parley/store"
)

// maxBatch is the most envelopes one transaction commits.
const maxBatch = 512

// pending is an envelope on its way to the store.
type pending struct {
	rec  store.Record
	done chan committed // buffered: the committer never waits for it
}

type committed struct {
	app  store.Appended
	time int64 // Unix ms of the commit
	err  error
}

// commit is the relay's one writer of envelopes: it takes everything that
// is waiting, commits it in one durable transaction (group commit: one
// disk flush for the batch, not one per envelope), answers each sender,
// and then hands the new envelopes to subscribers and to the mesh. It
// returns when in is closed and drained.
func (s *Server) commit(in <-chan *pending) {
	batch := make([]*pending, 0, maxBatch)
	recs := make([]store.Record, 0, maxBatch)
	for p := range in {
		batch = append(batch[:0], p)
	gather:
		for len(batch) < maxBatch {
			select {
			case p, ok := <-in:
				if !ok {
					break gather
				}
				batch = append(batch, p)
			default:
				break gather
			}
		}
		recs = recs[:0]
		for _, p := range batch {
			recs = append(recs, p.rec)
		}
		start := time.Now()
		// Not the server's context: what was accepted is committed even
		// while the relay shuts down.
		out, err := s.st.Append(context.Background(), recs)
		s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
		s.metrics.batchSize.Observe(float64(len(batch)))
		now := s.now().UnixMilli()
		var fresh []store.Record
		for i, p := range batch {
			if err != nil {
				p.done <- committed{err: err}
				continue
			}
			p.done <- committed{app: out[i], time: now}
			if out[i].Result == store.Stored {
				r := p.rec
				r.Pos = out[i].Pos
				fresh = append(fresh, r)
			}
		}
		if err != nil {
			s.log.Error("commit failed", "envelopes", len(batch), "err", err)
			continue
		}
		s.metrics.stored.Add(float64(len(fresh)))
		s.hub.deliver(fresh)
		if s.bridge != nil {
			for _, r := range fresh {
				if r.Via != viaMesh {
					s.bridge.Forward(r)
				}
			}
		}
	}
}

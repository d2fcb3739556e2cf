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
		out, fresh, b, err := s.append(recs)
		if err == nil {
			// Live subscribers get the new envelopes now, before the
			// disk flush; Committed frames follow it.
			s.hub.deliver(fresh)
			err = b.Commit()
			if err != nil {
				// What went out is not stored: every subscription
				// starts again from its last committed envelope.
				s.hub.fail()
			} else {
				s.hub.committed(fresh)
			}
		}
		s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
		s.metrics.batchSize.Observe(float64(len(batch)))
		now := s.now().UnixMilli()
		for i, p := range batch {
			if err != nil {
				p.done <- committed{err: err}
				continue
			}
			p.done <- committed{app: out[i], time: now}
		}
		if err != nil {
			s.log.Error("commit failed", "envelopes", len(batch), "err", err)
			continue
		}
		s.metrics.stored.Add(float64(len(fresh)))
		if s.bridge != nil {
			for _, r := range fresh {
				if r.Via != viaMesh {
					s.bridge.Forward(r)
				}
			}
		}
	}
}

// append opens a batch and appends recs; it returns what Append said, the
// records that are new, with their positions, and the batch to commit.
func (s *Server) append(recs []store.Record) ([]store.Appended, []store.Record, Batch, error) {
	// Not the server's context: what was accepted is committed even
	// while the relay shuts down.
	ctx := context.Background()
	b, err := s.st.Begin(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	out, err := b.Append(ctx, recs)
	if err != nil {
		b.Rollback()
		return nil, nil, nil, err
	}
	var fresh []store.Record
	for i, r := range recs {
		if out[i].Result == store.Stored {
			r.Pos = out[i].Pos
			fresh = append(fresh, r)
		}
	}
	return out, fresh, b, nil
}

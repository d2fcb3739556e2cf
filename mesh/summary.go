package mesh

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/protocol"
)

// summarySettle is how far back from now anti-entropy compares summaries:
// an envelope newer than that may still be on its way to one of the two
// peers, or waiting for its commit (MaxStoreDelay), and would make honest
// peers' summaries differ. It is a guess: an envelope whose sender's
// clock is behind lands in the settled range at once, and a round that
// meets one pages through everything, as rounds did before summaries.
const summarySettle = 15 * time.Second

// summaryCost is what a summary request takes of its asker's sync rate
// limit, in page requests: reading up to MaxSummaryCount IDs costs about
// as much as 16 pages of envelopes (BenchmarkAntiEntropy, both peers'
// CPU: a round of summaries of 33,000 IDs 45-54 ms, a page 5-6 ms;
// extrapolated to 65,536 IDs). A summary asked for once a minute a room
// fits well within the limit; a peer that asks for nothing else gets no
// more of the responder's time than one that pages.
const summaryCost = 16

// summaryStep is the width of a summary bucket: 15 s, so that a
// difference pages through 15 s of the range, not eleven minutes, and so
// that a round, whose range ends on a whole bucket (antiEntropy), leaves
// at most 15 s more than summarySettle to the rounds after. The default
// range is 43 buckets of it (MaxSummaryBuckets is 64).
const summaryStep = 15 * time.Second

// antiEntropy syncs the recent past, the last AntiEntropy plus 2 × skew,
// with one random peer of the room: this picks up what gossip missed and
// no later envelope revealed as a gap. It compares summaries of the
// settled part of the range (up to summarySettle ago), summaryStep at a
// time, and pages (SyncFrom) only through the buckets whose summaries
// differ. Almost always nothing is missing, and paging costs the peer a
// read and parse of every envelope in the range, every minute: at 50
// messages a second, 33,000 envelopes a round (issue 22).
//
// What is not settled yet (the last summarySettle, up to summaryStep more
// so that the range ends on a whole bucket, and envelopes dated ahead
// within the skew) is left to the rounds after: it is in their
// settled part, as the range moves on a minute a round. Paging it every
// round re-sent the last 15 s of the room to every node each minute, 750
// envelopes at 50 a second, to find nothing missing; an envelope gossip
// missed is fetched soon anyway when a later one of its sender names
// it (gaps.go).
func (r *Room) antiEntropy() {
	peers := r.topic.ListPeers()
	if len(peers) == 0 {
		return
	}
	p := peers[rand.IntN(len(peers))]
	now := r.n.cfg.now()
	since := now.Add(-r.n.cfg.antiEntropy() - 2*r.n.cfg.skew()).UnixMilli()
	// Settled, and on a whole bucket, so that the buckets are those of
	// the last round and of the peer's, whose summaries were kept.
	settled := floorTo(now.Add(-summarySettle).UnixMilli(), summaryStep.Milliseconds())
	ctx, cancel := context.WithTimeout(r.ctx, syncFromTimeout)
	defer cancel()
	req, ok := r.summaryRequest(since, settled)
	if !ok { // an anti-entropy range under 15-30 s, or years long: page it all
		r.page(ctx, p, []span{{min(since, settled), now.Add(r.n.cfg.skew()).UnixMilli()}})
		return
	}
	spans := r.unlevel(ctx, p, req)
	switch {
	case len(spans) == 0:
		r.n.metrics.syncs.WithLabelValues("made", "level").Inc()
	case spanned(spans) < settled-req.Since:
		r.n.metrics.syncs.WithLabelValues("made", "partly-level").Inc()
	}
	r.page(ctx, p, spans)
}

// page syncs the spans from peer p, in order, until one fails.
func (r *Room) page(ctx context.Context, p peer.ID, spans []span) {
	for _, s := range merge(spans) {
		if _, err := r.SyncFrom(ctx, p, s.since, s.until); err != nil {
			r.n.log.Debug("anti-entropy sync", "room", r.name, "peer", p, "err", err)
			return
		}
	}
}

// span is a time range, since <= time < until, in Unix milliseconds.
type span struct{ since, until int64 }

// spanned is the time the spans cover.
func spanned(spans []span) int64 {
	var d int64
	for _, s := range spans {
		d += s.until - s.since
	}
	return d
}

// merge joins spans, in order, that meet.
func merge(spans []span) []span {
	var out []span
	for _, s := range spans {
		if n := len(out); n > 0 && out[n-1].until == s.since {
			out[n-1].until = s.until
			continue
		}
		out = append(out, s)
	}
	return out
}

// summaryRequest cuts since <= time < until into buckets of summaryStep,
// or wider when more than MaxSummaryBuckets of them would be needed (a
// skew of hours), the last ending at until; the first may begin before
// since. ok is false when no request covers the range: it is empty, or
// years long.
func (r *Room) summaryRequest(since, until int64) (req *protocol.SummaryRequest, ok bool) {
	d := until - since
	if since >= until || d <= 0 { // d <= 0: the range is longer than int64 holds
		return nil, false
	}
	step := summaryStep.Milliseconds()
	buckets := ceilDiv(d, step)
	if buckets > protocol.MaxSummaryBuckets {
		buckets = protocol.MaxSummaryBuckets
		step = min(ceilDiv(d, buckets), protocol.MaxSummaryStep)
	}
	req = &protocol.SummaryRequest{Room: r.name, Since: until - buckets*step, Step: step, Buckets: int(buckets)}
	return req, req.Since <= since
}

// floorTo is t rounded down to a multiple of step (> 0), for t at least
// math.MinInt64 + step.
func floorTo(t, step int64) int64 {
	if r := t % step; r != 0 {
		if r < 0 {
			r += step
		}
		return t - r
	}
	return t
}

// ceilDiv is a / b rounded up, for a >= 0 and b > 0, without overflow.
func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 {
		q++
	}
	return q
}

// unlevel returns the buckets of req, merged where they meet, in which
// peer p may hold other envelopes of the room than this node: those whose
// summaries differ, or that either side did not count (over the limit of
// one response). When the peer gives no summary (a peer older than
// summaries resets the stream, as a busy one does: ask tries three more
// times, 1.75 s in all), or this node cannot make its own, that is the
// whole range.
func (r *Room) unlevel(ctx context.Context, p peer.ID, req *protocol.SummaryRequest) []span {
	all := []span{{req.Since, req.Until()}}
	mine, err := r.n.summaries(ctx, req, protocol.MaxSummaryCount)
	if err != nil {
		if ctx.Err() == nil { // not the room being left
			r.n.log.Warn("anti-entropy summary", "room", r.name, "err", err)
		}
		return all
	}
	theirs, err := r.n.askSummary(ctx, p, req)
	if err != nil {
		r.n.log.Debug("anti-entropy summary", "room", r.name, "peer", p, "err", err)
		return all
	}
	return differ(req, mine, theirs)
}

// differ returns the buckets of req, merged where they meet, whose
// summaries in mine and theirs differ or were not counted (Over). The
// two have req.Buckets buckets each.
func differ(req *protocol.SummaryRequest, mine, theirs *protocol.SummaryResponse) []span {
	var out []span
	for k := range req.Buckets {
		if a, b := mine.Buckets[k], theirs.Buckets[k]; a.Over || b.Over || a != b {
			since, until := req.Bucket(k)
			out = append(out, span{since, until})
		}
	}
	return merge(out)
}

// summaries summarises what the store holds of req's room in each of
// req's buckets. It counts at most limit envelopes in all
// (MaxSummaryCount, but in tests): the bucket in which the count would
// pass it, and every later one, are Over. It reads the IDs only of the
// buckets whose envelopes changed since it last summarised them
// (summaryCache).
func (n *Node) summaries(ctx context.Context, req *protocol.SummaryRequest, limit int) (*protocol.SummaryResponse, error) {
	out := &protocol.SummaryResponse{Buckets: make([]protocol.Summary, req.Buckets)}
	left := limit
	for k := range out.Buckets {
		if left < 0 {
			out.Buckets[k] = protocol.Summary{Over: true}
			continue
		}
		since, until := req.Bucket(k)
		sum, err := n.summary(ctx, req.Room, since, until, left)
		if err != nil {
			return nil, err
		}
		if sum.Over {
			left = -1
		} else {
			left -= sum.Count
		}
		out.Buckets[k] = sum
	}
	return out, nil
}

// askSummary asks peer p for the summaries req names. An answer with
// another number of buckets than asked for is the peer's fault
// (ErrBadPeer).
func (n *Node) askSummary(ctx context.Context, p peer.ID, req *protocol.SummaryRequest) (*protocol.SummaryResponse, error) {
	body, err := req.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("mesh: summary request: %w", err)
	}
	out, err := n.ask(ctx, p, body, protocol.MaxSummaryResponse)
	if err != nil {
		return nil, err
	}
	sum, err := protocol.ParseSummaryResponse(out)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrBadPeer, p, err)
	}
	if len(sum.Buckets) != req.Buckets {
		return nil, fmt.Errorf("%w %s: %d summary buckets for %d asked", ErrBadPeer, p, len(sum.Buckets), req.Buckets)
	}
	return sum, nil
}

// serveSummary answers a summary request on s, and returns the result
// for the metrics: "summary" when it answered. It reads IDs only, at most
// MaxSummaryCount of them; handleSync has taken summaryCost of the
// asker's rate limit.
func (n *Node) serveSummary(s network.Stream, body []byte, remote peer.ID) string {
	req, err := protocol.ParseSummaryRequest(body)
	if err != nil {
		return "malformed"
	}
	if _, refused := n.maySync(req.Room, remote); refused != "" {
		return refused
	}
	sum, err := n.summaries(n.ctx, req, protocol.MaxSummaryCount)
	if err != nil {
		return "store"
	}
	out, err := sum.MarshalBinary()
	if err != nil {
		return "encode"
	}
	if err := writeFrame(s, out); err != nil {
		return "write"
	}
	return "summary"
}

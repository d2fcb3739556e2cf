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

// antiEntropy syncs the recent past, the last AntiEntropy plus 2 × skew,
// with one random peer of the room: this picks up what gossip missed and
// no later envelope revealed as a gap. It pages through the range
// (SyncFrom), but compares summaries of the settled part first (up to
// summarySettle ago): when they match, it pages only through the rest.
// Almost always nothing is missing, and paging costs the peer a read and
// parse of every envelope in the range, every minute: at 50 messages a
// second, 33,000 envelopes a round (issue 22).
func (r *Room) antiEntropy() {
	peers := r.topic.ListPeers()
	if len(peers) == 0 {
		return
	}
	p := peers[rand.IntN(len(peers))]
	now := r.n.cfg.now()
	since := now.Add(-r.n.cfg.antiEntropy() - 2*r.n.cfg.skew()).UnixMilli()
	ctx, cancel := context.WithTimeout(r.ctx, syncFromTimeout)
	defer cancel()
	if settled := now.Add(-summarySettle).UnixMilli(); r.level(ctx, p, since, settled) {
		r.n.metrics.syncs.WithLabelValues("made", "level").Inc()
		since = settled
	}
	if _, err := r.SyncFrom(ctx, p, since, now.Add(r.n.cfg.skew()).UnixMilli()); err != nil {
		r.n.log.Debug("anti-entropy sync", "room", r.name, "peer", p, "err", err)
	}
}

// level reports whether peer p holds the same envelopes of the room as
// this node with since <= time < until, by their summaries. Anything
// else is "not known to be level", and the caller pages: the summaries
// differ, either holds more than a summary covers, or the peer does not
// answer (a peer older than summaries resets the stream, as a busy one
// does: ask tries three more times, 1.75 s in all, before the caller
// pages).
func (r *Room) level(ctx context.Context, p peer.ID, since, until int64) bool {
	if since >= until {
		return false
	}
	mine, err := r.n.summary(ctx, r.name, since, until)
	if err != nil {
		if ctx.Err() == nil { // not the room being left
			r.n.log.Warn("anti-entropy summary", "room", r.name, "err", err)
		}
		return false
	}
	if mine.Over {
		return false
	}
	theirs, err := r.n.askSummary(ctx, p, &protocol.SummaryRequest{Room: r.name, Since: since, Until: until})
	if err != nil {
		r.n.log.Debug("anti-entropy summary", "room", r.name, "peer", p, "err", err)
		return false
	}
	return *theirs == mine
}

// summary is the summary of what the store holds of room with
// since <= time < until.
func (n *Node) summary(ctx context.Context, room string, since, until int64) (protocol.Summary, error) {
	ids, err := n.store.IDs(ctx, room, since, until, protocol.MaxSummaryCount+1)
	if err != nil {
		return protocol.Summary{}, fmt.Errorf("mesh: summary of %s: %w", room, err)
	}
	return protocol.SummaryOf(ids), nil
}

func (n *Node) askSummary(ctx context.Context, p peer.ID, req *protocol.SummaryRequest) (*protocol.Summary, error) {
	body, err := req.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("mesh: summary request: %w", err)
	}
	out, err := n.ask(ctx, p, body, protocol.SummaryLen)
	if err != nil {
		return nil, err
	}
	sum, err := protocol.ParseSummary(out)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrBadPeer, p, err)
	}
	return sum, nil
}

// serveSummary answers a summary request on s, and returns the result
// for the metrics: "summary" when it answered. It is one indexed read, of
// IDs only; handleSync has taken summaryCost of the asker's rate limit.
func (n *Node) serveSummary(s network.Stream, body []byte, remote peer.ID) string {
	req, err := protocol.ParseSummaryRequest(body)
	if err != nil {
		return "malformed"
	}
	if refused := n.maySync(req.Room, remote); refused != "" {
		return refused
	}
	sum, err := n.summary(n.ctx, req.Room, req.Since, req.Until)
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

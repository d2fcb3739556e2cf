package mesh

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/roster"
	"github.com/parleychat/parley/store"
)

// syncProtocol is the libp2p protocol of catch-up sync. One stream carries
// one request and its response, each framed by a 4-byte big-endian length.
const syncProtocol = "/parley/sync/1.0.0"

// Limits of the sync service.
const (
	// A page is one indexed range read of at most syncPageLimit envelopes:
	// the burst lets a returning peer catch up 20,000 envelopes at once,
	// and the rate 10,000 a second after that.
	syncRate      = 40 // requests per second per peer
	syncBurst     = 80
	syncRetries   = 3                // a failed page (the peer busy, or its limit hit) is asked again
	maxSyncServed = 8                // requests served at once, from all peers
	maxSyncOfPeer = 2                // of them, from one peer
	syncReadTime  = 5 * time.Second  // for a request to arrive whole, before it takes a slot
	syncTimeout   = 15 * time.Second // for one request and its response
	maxSyncPages  = 1000             // per SyncFrom call
	syncPageLimit = protocol.MaxSyncPage
)

// ErrBadPeer: a sync peer sent something no honest peer sends. Its
// remaining pages are not read.
var ErrBadPeer = errors.New("mesh: bad sync peer")

type syncRequest struct {
	peer         peer.ID
	since, until int64
	gap          bool
}

func writeFrame(w io.Writer, body []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(body)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

func readFrame(r io.Reader, limit int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > uint32(limit) {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", protocol.ErrTooLarge, n, limit)
	}
	// The body grows as it arrives: a peer that promises a large frame
	// and stalls holds little.
	body, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, err
	}
	if len(body) < int(n) {
		return nil, io.ErrUnexpectedEOF
	}
	return body, nil
}

// takeSyncSlot takes one of the slots of requests served at once, if one
// is free and remote holds fewer than maxSyncOfPeer; release gives it
// back.
func (n *Node) takeSyncSlot(remote peer.ID) (release func(), ok bool) {
	n.syncMu.Lock()
	defer n.syncMu.Unlock()
	if n.syncServing >= maxSyncServed || n.syncOfPeer[remote] >= maxSyncOfPeer {
		return nil, false
	}
	n.syncServing++
	n.syncOfPeer[remote]++
	return func() {
		n.syncMu.Lock()
		defer n.syncMu.Unlock()
		n.syncServing--
		if n.syncOfPeer[remote]--; n.syncOfPeer[remote] <= 0 {
			delete(n.syncOfPeer, remote)
		}
	}, true
}

// handleSync serves one sync request: a page of a joined room's stored
// envelopes, in (time, ID) order, leaving out those the asker has, or a
// summary of them (serveSummary).
func (n *Node) handleSync(s network.Stream) {
	defer s.Close()
	remote := s.Conn().RemotePeer()
	result := "ok"
	defer func() { n.metrics.syncs.WithLabelValues("served", result).Inc() }()
	if !n.limits.allow(remote) {
		result = "rate-limited"
		s.Reset()
		return
	}
	// The request is read whole, in bounded time, before it takes a slot:
	// a peer that writes a byte and stalls holds no slot, and no peer
	// holds more than maxSyncOfPeer, so one cannot starve the rest.
	s.SetDeadline(time.Now().Add(syncReadTime))
	body, err := readFrame(s, protocol.MaxSyncRequest)
	if err != nil {
		result = "bad-frame"
		s.Reset()
		return
	}
	summary := protocol.IsSummaryRequest(body)
	var req *protocol.SyncRequest
	if !summary {
		if req, err = protocol.ParseSyncRequest(body); err != nil {
			result = "malformed"
			s.Reset()
			return
		}
		n.hurryFor(req, remote) // before a slot: waiting for a commit holds none
	}
	release, ok := n.takeSyncSlot(remote)
	if !ok {
		result = "busy"
		s.Reset()
		return
	}
	defer release()
	s.SetDeadline(time.Now().Add(syncTimeout))
	if summary {
		if !n.limits.allowN(remote, summaryCost-1) { // one taken above
			result = "rate-limited"
			s.Reset()
			return
		}
		if result = n.serveSummary(s, body, remote); result != "summary" {
			s.Reset()
		}
		return
	}
	if _, refused := n.maySync(req.Room, remote); refused != "" {
		result = refused
		s.Reset()
		return
	}
	recs, err := n.store.Range(n.ctx, req.Room, req.Since, req.Until,
		store.Cursor{Time: req.AfterTime, ID: req.AfterID}, req.Limit)
	if err != nil {
		result = "store"
		s.Reset()
		return
	}
	resp := protocol.SyncResponse{More: len(recs) == req.Limit}
	size := 64
	for _, rec := range recs {
		if size+3+len(rec.Raw) > protocol.MaxSyncResponse {
			resp.More = true
			break
		}
		resp.NextTime, resp.NextID = rec.Env.Time, rec.ID
		if _, found := slices.BinarySearchFunc(req.Have, rec.ID, func(a, b protocol.ID) int { return bytes.Compare(a[:], b[:]) }); found {
			continue
		}
		resp.Envelopes = append(resp.Envelopes, rec.Raw)
		size += 3 + len(rec.Raw)
	}
	out, err := resp.MarshalBinary()
	if err != nil {
		result = "encode"
		s.Reset()
		return
	}
	if err := writeFrame(s, out); err != nil {
		result = "write"
		s.Reset()
	}
}

// SyncFrom fetches the envelopes of the room with since <= time < until
// from peer p, page by page, and passes each through the same checks as a
// live envelope (signature, room, policy, replay) before it is stored and
// shown. It returns how many new envelopes it handed to the writer.
func (r *Room) SyncFrom(ctx context.Context, p peer.ID, since, until int64) (int, error) {
	n := r.n
	if r.priv == nil {
		// A private room's member list is never pruned, and may be older.
		since = max(since, n.cfg.now().Add(-n.cfg.retention()).UnixMilli())
	}
	if since >= until {
		return 0, nil
	}
	req := protocol.SyncRequest{Room: r.name, Since: since, Until: until, AfterTime: since, Limit: syncPageLimit}
	got := 0
	for range maxSyncPages {
		// What we have from the cursor on, so that the peer leaves it out.
		have, err := n.store.IDs(ctx, r.name, req.AfterTime, until, protocol.MaxSyncHave)
		if err != nil {
			return got, err
		}
		slices.SortFunc(have, func(a, b protocol.ID) int { return bytes.Compare(a[:], b[:]) })
		req.Have = slices.Compact(have)
		resp, err := n.syncPage(ctx, p, &req)
		if err != nil {
			n.metrics.syncs.WithLabelValues("made", "error").Inc()
			return got, err
		}
		accepted, err := r.takeEnvelopes(resp.Envelopes, since, until, p, "sync")
		got += accepted
		if errors.Is(err, errBadEnvelope) {
			n.metrics.syncs.WithLabelValues("made", "bad-peer").Inc()
			return got, fmt.Errorf("%w %s: %v", ErrBadPeer, p, err)
		}
		if err != nil {
			return got, err
		}
		if !resp.More {
			break
		}
		if resp.NextTime < req.AfterTime || (resp.NextTime == req.AfterTime && bytes.Compare(resp.NextID[:], req.AfterID[:]) <= 0) {
			return got, fmt.Errorf("%w %s: sync cursor did not advance", ErrBadPeer, p)
		}
		req.AfterTime, req.AfterID = resp.NextTime, resp.NextID
	}
	n.metrics.syncs.WithLabelValues("made", "ok").Inc()
	return got, nil
}

// maySync returns the joined room, and "" if remote may sync it, else
// why not (the result of the request, for the metrics).
func (n *Node) maySync(room string, remote peer.ID) (*Room, string) {
	n.mu.Lock()
	r, joined := n.rooms[room]
	n.mu.Unlock()
	switch {
	case !joined:
		return nil, "not-joined"
	case r.priv != nil && !r.priv.maySync(remote, n.cfg.MaySync):
		// A private room's history is for its members only: an outsider,
		// or a member since removed, gets nothing.
		return nil, "not-member"
	}
	return r, ""
}

func (n *Node) syncPage(ctx context.Context, p peer.ID, req *protocol.SyncRequest) (*protocol.SyncResponse, error) {
	body, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	out, err := n.ask(ctx, p, body, protocol.MaxSyncResponse)
	if err != nil {
		return nil, err
	}
	resp, err := protocol.ParseSyncResponse(out)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrBadPeer, p, err)
	}
	return resp, nil
}

// ask sends one sync message to p and returns the answer, of at most
// limit bytes. The peer resets a request over its rate limit or when it
// is serving all it can: ask asks again, slower, before it gives up.
func (n *Node) ask(ctx context.Context, p peer.ID, body []byte, limit int) ([]byte, error) {
	out, err := n.askOnce(ctx, p, body, limit)
	for try, pause := 0, 250*time.Millisecond; err != nil && try < syncRetries; try, pause = try+1, 2*pause {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		out, err = n.askOnce(ctx, p, body, limit)
	}
	return out, err
}

func (n *Node) askOnce(ctx context.Context, p peer.ID, body []byte, limit int) ([]byte, error) {
	// The whole exchange is bounded, opening the stream included: on a
	// connection whose peer is gone, opening waits for an answer that
	// never comes, and Confirm would ask that peer until its own end.
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	// Over a circuit relay too: a peer reached only through one has no
	// gossipsub, and sync is bounded by its own limits and the relay's.
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "parley sync"), p, syncProtocol)
	if err != nil {
		return nil, fmt.Errorf("mesh: sync with %s: %w", p, err)
	}
	defer s.Close()
	deadline, _ := ctx.Deadline()
	s.SetDeadline(deadline)
	if err := writeFrame(s, body); err != nil {
		s.Reset()
		return nil, fmt.Errorf("mesh: sync with %s: %w", p, err)
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return nil, fmt.Errorf("mesh: sync with %s: %w", p, err)
	}
	out, err := readFrame(s, limit)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("mesh: sync with %s: %w", p, err)
	}
	return out, nil
}

// errBadEnvelope marks an envelope of a sync page that no honest peer
// would send.
var errBadEnvelope = errors.New("bad envelope")

// takeEnvelopes checks the envelopes of one sync page (or one envelope of
// a feed) from peer p, in order, and hands each new one that passes to the
// writer, as arrived by via. The signatures of the
// page are checked in one batch (protocol.VerifyBatch; a page usually has
// a few senders), the rest one by one. It returns how many it handed on;
// at the first envelope no honest peer would send it stops, with an error
// wrapping errBadEnvelope, after handing on those before it.
//
// An envelope's ID is claimed in the seen-set only just before it is
// judged, never across the batch check or the hand-off of others: while
// an ID is claimed, its live copies are ignored, and a page must not hold
// back live envelopes (or, failing at a forgery, make them lost).
func (r *Room) takeEnvelopes(raws [][]byte, since, until int64, p peer.ID, via string) (int, error) {
	n := r.n
	type candidate struct {
		env *protocol.Envelope
		id  protocol.ID
		raw []byte
	}
	var (
		page []candidate
		bad  error // the first envelope that does not parse or is misplaced
	)
	for _, raw := range raws {
		env, id, err := r.parseSynced(raw, since, until)
		if err != nil {
			bad = err
			break
		}
		if env != nil && n.seen.known(id) == unseen {
			page = append(page, candidate{env, id, raw})
		}
	}
	// A page comes in (time, ID) order, the order its cursor pages by;
	// it is taken in display order (Lamport clock first), so that one
	// sender's messages of one millisecond are shown in the order they
	// were sent, not by their IDs.
	slices.SortStableFunc(page, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.env.Lamport, b.env.Lamport), cmp.Compare(a.env.Time, b.env.Time), bytes.Compare(a.id[:], b.id[:]))
	})
	envs := make([]*protocol.Envelope, len(page))
	for i, c := range page {
		envs[i] = c.env
	}
	n.metrics.verifications.Add(int64(len(envs)))
	sigErrs := protocol.VerifyBatch(envs)
	got := 0
	for i, c := range page {
		if sigErrs != nil && sigErrs[i] != nil {
			if n.seen.claim(c.id) == unseen {
				n.seen.decide(c.id, refused) // the signature: the bytes alone
			}
			return got, fmt.Errorf("%w: %v", errBadEnvelope, sigErrs[i])
		}
		if n.seen.claim(c.id) != unseen {
			continue // taken up meanwhile, live or by another sync
		}
		it, w := r.checkVerified(c.env, c.id, c.raw)
		if it == nil {
			n.seen.decide(c.id, unseen)
			if w != nil {
				w.it.from, w.it.via = p, via
				r.hold(w.it, w.missing)
			}
			continue
		}
		n.seen.decide(c.id, accepted)
		it.from, it.via = p, via
		if err := r.accept(*it); err != nil {
			return got, err
		}
		got++
	}
	if bad != nil {
		return got, fmt.Errorf("%w: %v", errBadEnvelope, bad)
	}
	return got, nil
}

// parseSynced parses one envelope of a sync page. It returns nil for one
// to skip (not ours to judge), and an error for one no honest peer would
// send.
func (r *Room) parseSynced(raw []byte, since, until int64) (*protocol.Envelope, protocol.ID, error) {
	env, err := protocol.Parse(raw) // cheap: the signature comes later
	switch {
	case errors.Is(err, protocol.ErrUnknownVersion):
		return nil, protocol.ID{}, nil // a newer peer's; not ours to judge
	case err != nil:
		return nil, protocol.ID{}, err
	}
	if env.Room != r.name || env.Time < since || env.Time >= until {
		return nil, protocol.ID{}, fmt.Errorf("envelope of %s at %d is outside the request", env.Room, env.Time)
	}
	return env, protocol.IDOf(raw), nil
}

// checkVerified checks the policy and replay state of an envelope not
// seen before whose signature is good. It returns nil for one not to
// take, and then, for one that waits for a member-list change, what to
// hold once its ID is decided.
func (r *Room) checkVerified(env *protocol.Envelope, id protocol.ID, raw []byte) (*inbound, *waiter) {
	n := r.n
	if !n.knows(env.Kind) || protocol.CheckPayload(env) != nil {
		return nil, nil
	}
	if n.cfg.Policy != nil {
		if err := n.cfg.Policy(env); err != nil {
			return nil, nil
		}
	}
	if r.priv != nil {
		switch missing, err := r.priv.judge(env, id); {
		case errors.Is(err, roster.ErrWaiting):
			return nil, &waiter{r, inbound{env: env, id: id, raw: raw, via: "sync"}, missing}
		case err != nil:
			return nil, nil
		}
	}
	err := n.guard.Check(env, id, protocol.History)
	var eq *protocol.EquivocationError
	switch {
	case err == nil:
	case errors.Is(err, protocol.ErrBelowWindow):
		// Older than the replay window: the store decides, by the
		// (sender, room, number) the envelope claims.
		stored, found, serr := n.store.AtSeq(r.ctx, env.Sender, env.Room, env.Seq)
		switch {
		case serr != nil:
			return nil, nil
		case found && stored == id:
			return nil, nil // have it
		case found:
			n.evidence(stored, env, id, raw)
			return nil, nil
		}
	case errors.As(err, &eq):
		n.evidence(eq.First, env, id, raw)
		return nil, nil
	default: // duplicate
		return nil, nil
	}
	if r.priv != nil {
		r.release(r.commit(env, id))
	}
	return &inbound{env: env, id: id, raw: raw, via: "sync"}, nil
}

// confirmPause is the longest pause of Confirm between two rounds of
// asking the room's peers.
const confirmPause = time.Second

// MaxConfirmDelay is how late, at most, Confirm learns that a peer stored
// an envelope that both delivered at the same moment: one of Confirm's
// pauses, then the commit its question hurries (commitNow; hurryWait at
// most) and a round trip. A caller that waits for the mesh after another
// path confirmed gives it about this much. Before questions hurried the
// commit, it was the peer's wait to store the envelope in a steady
// stream (MaxStoreDelay) and a pause: 2.5 s. A peer of that version still
// confirms that late.
const MaxConfirmDelay = confirmPause + hurryWait

// Confirm waits until a peer of the room has stored the envelope with ID
// id, made at time t (Unix ms), and returns that peer. It asks the room's
// peers with a sync request for that millisecond, again and again with
// growing pauses, until one has it or ctx ends: the way a sender learns
// that its message reached the mesh, which gossip alone never tells.
func (r *Room) Confirm(ctx context.Context, id protocol.ID, t int64) (peer.ID, error) {
	pause := 5 * time.Millisecond
	asked := false
	for {
		for _, p := range r.topic.ListPeers() {
			asked = true
			if r.peerHas(ctx, p, id, t) {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			if !asked {
				return "", fmt.Errorf("mesh: confirm %s: no peer in room %s: %w", id, r.name, ctx.Err())
			}
			return "", fmt.Errorf("mesh: confirm %s: no peer of room %s has it yet: %w", id, r.name, ctx.Err())
		case <-time.After(pause):
		}
		// Sync requests are rate-limited per peer (syncRate a second):
		// the pauses grow to stay well inside the limit.
		pause = min(2*pause, confirmPause)
	}
}

// peerHas reports whether peer p has the envelope id of time t. Any
// failure counts as not yet.
func (r *Room) peerHas(ctx context.Context, p peer.ID, id protocol.ID, t int64) bool {
	req := protocol.SyncRequest{Room: r.name, Since: t, Until: t + 1, AfterTime: t, Limit: protocol.MaxSyncPage}
	for range 4 { // more than 4 pages in one millisecond: not worth asking on
		resp, err := r.n.syncPage(ctx, p, &req)
		if err != nil {
			return false
		}
		for _, raw := range resp.Envelopes {
			if protocol.IDOf(raw) == id {
				return true
			}
		}
		if !resp.More {
			return false
		}
		req.AfterTime, req.AfterID = resp.NextTime, resp.NextID
	}
	return false
}

package mesh

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/protocol"
)

// Rooms over a circuit relay
//
// Gossipsub (go-libp2p-pubsub v0.19.0) leaves alone a peer reached only
// through a circuit relay: it adds a peer only once the host counts it as
// Connected, which a peer with nothing but limited (relayed) connections
// never is, and it opens its streams without network.WithAllowLimitedConn,
// which the host refuses on a limited connection. Two peers behind NATs
// that meet through a relay would share nothing until hole punching
// connects them directly, and nothing at all behind symmetric NATs.
//
// So the node carries its rooms over circuits itself, with its own two
// protocols, whose streams it opens with network.WithAllowLimitedConn:
//
//   - catch-up sync (/parley/sync/1.0.0), unchanged;
//   - the feed (/parley/feed/1.0.0): a peer asks for one room; the node,
//     if it has joined the room (and, for a private room, the peer may
//     read it), answers with an empty frame and then sends each envelope
//     it accepts in the room from then on, one per frame (4-byte length
//     as in sync), except those that came from that peer; first those
//     it accepted in the last seconds (feedBacklog), which may not be in
//     its store yet when the catch-up sync reads it.
//
// For each room it has joined and each peer it reaches only through a
// circuit, a node follows the peer's feed and asks it for a catch-up sync
// once the feed is open. Each envelope fed is checked as a synced one is
// (signature, room, policy, member list, replay guard) and shown with Via
// "circuit". A feed ends when its room is left, when the peer is reached
// directly (gossipsub has it then, and the join sync fills what fell in
// between), when the circuit closes, or, on the serving side, when the
// follower falls feedQueue envelopes behind: the follower then opens it
// again and syncs. A node serves feeds on limited connections only, at
// most maxFeeds at once and maxFeedsOfPeer to one peer, and counts a
// request against the same per-peer rate as sync requests. Everything on
// a circuit is bounded again by the relay's limits (Config.Circuit).

// feedProtocol is the libp2p protocol of the feed.
const feedProtocol = "/parley/feed/1.0.0"

const (
	feedQueue = 256 // envelopes queued for one follower
	// feedBacklog and feedBacklogAge bound what a new follower gets of
	// what the room accepted before it came: the last few envelopes, of
	// the last seconds (far longer than a commit takes).
	feedBacklog    = 32
	feedBacklogAge = 5 * time.Second
	maxFeeds       = 256 // feeds served at once
	maxFeedsOfPeer = 32  // of them, to one peer
	maxFollows     = 256 // feeds followed at once
	// feedRetry is how often a node looks again for feeds to follow: one
	// that ended while its peer is still behind the circuit is opened
	// again then.
	feedRetry = 10 * time.Second
	// feedRefusedPause is how long a peer that refused a room's feed (it
	// has not joined the room) is not asked for it again.
	feedRefusedPause = 3 * feedRetry
)

// ViaCircuit is Message.Via for an envelope that came by a feed over a
// circuit relay.
const ViaCircuit = "circuit"

// feedSub is one follower of a room's feed.
type feedSub struct {
	peer peer.ID
	ch   chan []byte // closed when the follower fell behind
}

// feedSubs are the followers of one room's feed, and the envelopes the
// room accepted last.
type feedSubs struct {
	mu     sync.Mutex
	subs   map[*feedSub]struct{}
	recent [feedBacklog]fedEnvelope // a ring; next is the oldest
	next   int
}

type fedEnvelope struct {
	raw  []byte
	from peer.ID
	at   time.Time
}

// add adds a follower, its queue primed with what the room accepted in
// the last feedBacklogAge: an envelope accepted, but not yet committed,
// when the follower's catch-up sync reads the store would otherwise
// reach it by neither.
// A peer has at most one feed of a room: add returns nil for a second
// one, which would only have every envelope sent to it twice.
func (f *feedSubs) add(p peer.ID, now time.Time) *feedSub {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = make(map[*feedSub]struct{})
	}
	for s := range f.subs {
		if s.peer == p {
			return nil
		}
	}
	s := &feedSub{peer: p, ch: make(chan []byte, feedQueue)}
	for i := range feedBacklog {
		e := f.recent[(f.next+i)%feedBacklog]
		if e.raw != nil && e.from != p && now.Sub(e.at) < feedBacklogAge {
			s.ch <- e.raw // feedQueue > feedBacklog
		}
	}
	f.subs[s] = struct{}{}
	return s
}

func (f *feedSubs) remove(s *feedSub) {
	f.mu.Lock()
	delete(f.subs, s)
	f.mu.Unlock()
}

// offer queues an accepted envelope for every follower but the peer it
// came from. A follower whose queue is full is cut off: it will sync.
func (f *feedSubs) offer(it inbound, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recent[f.next] = fedEnvelope{raw: it.raw, from: it.from, at: now}
	f.next = (f.next + 1) % feedBacklog
	for s := range f.subs {
		if s.peer == it.from {
			continue
		}
		select {
		case s.ch <- it.raw:
		default:
			delete(f.subs, s)
			close(s.ch)
		}
	}
}

// feedSlots bounds the feeds served at once, in all and to one peer.
type feedSlots struct {
	mu     sync.Mutex
	used   int
	ofPeer map[peer.ID]int
}

func (fs *feedSlots) take(p peer.ID) (release func(), ok bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.used >= maxFeeds || fs.ofPeer[p] >= maxFeedsOfPeer {
		return nil, false
	}
	if fs.ofPeer == nil {
		fs.ofPeer = make(map[peer.ID]int)
	}
	fs.used++
	fs.ofPeer[p]++
	return func() {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		fs.used--
		if fs.ofPeer[p]--; fs.ofPeer[p] <= 0 {
			delete(fs.ofPeer, p)
		}
	}, true
}

// handleFeed serves one feed request.
func (n *Node) handleFeed(s network.Stream) {
	remote := s.Conn().RemotePeer()
	result := "ended"
	defer func() {
		n.metrics.feeds.WithLabelValues("served", result).Inc()
		n.log.Debug("circuit feed served", "peer", remote, "result", result)
	}()
	refuse := func(why string) {
		result = why
		s.Reset()
	}
	if !s.Conn().Stat().Limited {
		refuse("direct") // gossipsub serves a direct connection
		return
	}
	// Any directly connected peer can pose as a relay and open a
	// "relayed" connection: only one through a relay this node uses
	// is a circuit that the relay's limits and policy bound.
	if !n.relays.has(relayOf(s.Conn().RemoteMultiaddr())) {
		refuse("unknown-relay")
		return
	}
	if !n.limits.allow(remote) {
		refuse("rate-limited")
		return
	}
	s.SetDeadline(time.Now().Add(syncReadTime))
	body, err := readFrame(s, protocol.MaxRoomLen)
	if err != nil {
		refuse("bad-frame")
		return
	}
	n.mu.Lock()
	r := n.rooms[string(body)]
	n.mu.Unlock()
	switch {
	case r == nil:
		refuse("not-joined")
		return
	case r.priv != nil && !r.priv.maySync(remote, n.cfg.MaySync):
		refuse("not-member")
		return
	}
	release, ok := n.feedSlots.take(remote)
	if !ok {
		refuse("busy")
		return
	}
	defer release()
	sub := r.feeds.add(remote, n.cfg.now())
	if sub == nil {
		refuse("duplicate")
		return
	}
	defer r.feeds.remove(sub)
	if err := writeFrame(s, nil); err != nil { // yes: envelopes follow
		refuse("write")
		return
	}
	s.SetDeadline(time.Time{})
	result = r.serveFeed(s, sub)
}

// serveFeed writes the envelopes queued for sub until the follower closes
// the stream, falls behind, or the room is left.
func (r *Room) serveFeed(s network.Stream, sub *feedSub) string {
	// The follower writes nothing more: a read ends when it closes the
	// stream (or the connection goes), and so does this goroutine, at the
	// latest when the stream is closed below.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		var b [1]byte
		s.Read(b[:])
	}()
	for {
		select {
		case raw, ok := <-sub.ch:
			if !ok {
				s.Reset()
				return "overflow"
			}
			// A member removed since the feed opened gets nothing more.
			if r.priv != nil && !r.priv.maySync(sub.peer, r.n.cfg.MaySync) {
				s.Reset()
				return "not-member"
			}
			s.SetWriteDeadline(time.Now().Add(syncTimeout))
			if err := writeFrame(s, raw); err != nil {
				s.Reset()
				return "write"
			}
		case <-gone:
			s.Close()
			return "closed"
		case <-r.ctx.Done():
			s.Reset()
			return "left"
		}
	}
}

// followKey is one room's feed at one peer.
type followKey struct {
	peer peer.ID
	room string
}

// follows are the feeds a node follows, and those refused lately.
type follows struct {
	mu      sync.Mutex
	running map[followKey]context.CancelFunc
	refused map[followKey]time.Time
	kick    chan struct{} // a room was joined: look for feeds to follow
}

func newFollows() *follows {
	return &follows{
		running: make(map[followKey]context.CancelFunc),
		refused: make(map[followKey]time.Time),
		kick:    make(chan struct{}, 1),
	}
}

// joined notes that a room was joined.
func (f *follows) joined() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// stopPeer ends the feeds followed at p, and forgets its refusals: p is
// reached directly now, or not at all.
func (f *follows) stopPeer(p peer.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, cancel := range f.running {
		if k.peer == p {
			cancel()
		}
	}
	for k := range f.refused {
		if k.peer == p {
			delete(f.refused, k)
		}
	}
}

// watchCircuits follows the feeds of the peers the node reaches only
// through a circuit, in every joined room, and stops following a peer
// once it is reached directly.
func (n *Node) watchCircuits(sub event.Subscription) {
	defer n.wg.Done()
	defer sub.Close()
	tick := time.NewTicker(feedRetry)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			ev := e.(event.EvtPeerConnectednessChanged)
			if ev.Connectedness == network.Limited {
				n.followCircuits(ev.Peer)
			} else {
				n.follows.stopPeer(ev.Peer)
			}
		case <-n.follows.kick:
			n.followCircuits("")
		case <-tick.C:
			n.followCircuits("")
		}
	}
}

// viaKnownRelay reports whether a connection to p is a circuit through
// one of the node's relays.
func (n *Node) viaKnownRelay(p peer.ID) bool {
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if n.relays.has(relayOf(c.RemoteMultiaddr())) {
			return true
		}
	}
	return false
}

// followCircuits starts following, in every joined room, the feed of
// each peer reached only through a circuit (only of peer only, if not
// empty), unless it is followed already or refused it lately.
func (n *Node) followCircuits(only peer.ID) {
	peers := []peer.ID{only}
	if only == "" {
		peers = n.host.Network().Peers()
	}
	n.mu.Lock()
	rooms := make([]*Room, 0, len(n.rooms))
	for _, r := range n.rooms {
		rooms = append(rooms, r)
	}
	n.mu.Unlock()

	now := n.cfg.now()
	f := n.follows
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, t := range f.refused {
		if now.Sub(t) >= feedRefusedPause {
			delete(f.refused, k)
		}
	}
	for _, p := range peers {
		if n.host.Network().Connectedness(p) != network.Limited || !n.viaKnownRelay(p) {
			continue
		}
		for _, r := range rooms {
			k := followKey{p, r.name}
			if _, on := f.running[k]; on || len(f.running) >= maxFollows {
				continue
			}
			if _, no := f.refused[k]; no {
				continue
			}
			ctx, cancel := context.WithCancel(r.ctx)
			f.running[k] = cancel
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				defer cancel()
				result := r.follow(ctx, p)
				n.metrics.feeds.WithLabelValues("followed", result).Inc()
				n.log.Debug("circuit feed ended", "room", r.name, "peer", p, "result", result)
				f.mu.Lock()
				delete(f.running, k)
				if result == "refused" {
					f.refused[k] = n.cfg.now()
				}
				f.mu.Unlock()
			}()
		}
	}
}

// follow follows room r's feed at peer p until ctx ends or the feed does,
// and returns how it ended.
func (r *Room) follow(ctx context.Context, p peer.ID) string {
	n := r.n
	// Only over the connection there is: the feed is for a circuit, and a
	// feed is not worth a dial.
	ctx = network.WithNoDial(network.WithAllowLimitedConn(ctx, "parley feed"), "parley feed")
	octx, cancel := context.WithTimeout(ctx, syncTimeout)
	s, err := n.host.NewStream(octx, p, feedProtocol)
	cancel()
	if err != nil {
		return "open"
	}
	defer s.Close()
	if s.Conn().Stat().Limited && !n.relays.has(relayOf(s.Conn().RemoteMultiaddr())) {
		s.Reset() // the stream took a circuit through a relay not ours
		return "unknown-relay"
	}
	// Ending ctx ends the feed: a read in progress returns.
	defer context.AfterFunc(ctx, func() { s.Reset() })()

	s.SetDeadline(time.Now().Add(syncTimeout))
	if err := writeFrame(s, []byte(r.name)); err != nil {
		s.Reset()
		return "open"
	}
	if ack, err := readFrame(s, 0); err != nil || len(ack) != 0 {
		s.Reset()
		return "refused"
	}
	s.SetDeadline(time.Time{})
	// What p accepted before the feed began comes by sync.
	r.requestSync(syncRequest{peer: p, since: r.catchUpSince().UnixMilli(),
		until: n.cfg.now().Add(n.cfg.skew()).UnixMilli()})
	for {
		raw, err := readFrame(s, protocol.MaxEnvelopeSize)
		if err != nil {
			if ctx.Err() != nil {
				return "stopped"
			}
			return "ended"
		}
		if err := r.takeFed(raw, p); err != nil {
			if errors.Is(err, errBadEnvelope) {
				n.penalise(p)
				s.Reset()
				return "bad-peer"
			}
			return "stopped" // the room is being left
		}
	}
}

// takeFed checks one envelope of a feed as sync checks one of a page, and
// hands it on if it is new and passes. An envelope whose time this node's
// clock does not accept is skipped, not held against the peer; one no
// honest peer sends is an error wrapping errBadEnvelope.
func (r *Room) takeFed(raw []byte, p peer.ID) error {
	env, err := protocol.Parse(raw) // cheap: the signature comes later
	switch {
	case errors.Is(err, protocol.ErrUnknownVersion):
		return nil // a newer peer's; not ours to judge
	case err != nil:
		return fmt.Errorf("%w: %v", errBadEnvelope, err)
	case env.Room != r.name:
		return fmt.Errorf("%w: envelope of room %s fed for %s", errBadEnvelope, env.Room, r.name)
	}
	now := r.n.cfg.now()
	if env.Time >= now.Add(r.n.cfg.skew()).UnixMilli() {
		return nil
	}
	if r.priv == nil && env.Time < now.Add(-r.n.cfg.retention()).UnixMilli() {
		return nil
	}
	_, err = r.takeEnvelopes([][]byte{raw}, math.MinInt64, math.MaxInt64, p, ViaCircuit)
	return err
}

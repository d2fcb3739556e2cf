package mesh

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/identity"
	"golang.org/x/time/rate"
)

// peerLimits rate-limits requests per peer. It keeps at most maxLimited
// peers; when full, it forgets the idlest, so that many peers cannot grow
// it without bound.
type peerLimits struct {
	mu    sync.Mutex
	r     rate.Limit
	burst int
	now   func() time.Time
	peers map[peer.ID]*peerLimit
}

type peerLimit struct {
	lim  *rate.Limiter
	used time.Time
}

const maxLimited = 4096

func newPeerLimits(perSecond float64, burst int, now func() time.Time) *peerLimits {
	return &peerLimits{r: rate.Limit(perSecond), burst: burst, now: now, peers: make(map[peer.ID]*peerLimit)}
}

func (l *peerLimits) allow(p peer.ID) bool { return l.allowN(p, 1) }

// allowN takes n tokens of p's bucket, or none, and reports whether it
// did.
func (l *peerLimits) allowN(p peer.ID, n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	pl, ok := l.peers[p]
	if !ok {
		if len(l.peers) >= maxLimited {
			dropEarliest(l.peers, func(x *peerLimit) time.Time { return x.used })
		}
		pl = &peerLimit{lim: rate.NewLimiter(l.r, l.burst)}
		l.peers[p] = pl
	}
	pl.used = now
	return pl.lim.AllowN(now, n)
}

// dropEarliest deletes the entry of m whose time is earliest: how the
// node's per-peer tables stay bounded.
func dropEarliest[V any](m map[peer.ID]V, at func(V) time.Time) {
	var first peer.ID
	var earliest time.Time
	for id, v := range m {
		if t := at(v); first == "" || t.Before(earliest) {
			first, earliest = id, t
		}
	}
	delete(m, first)
}

// senderLimits rate-limits live envelopes per sender identity: one token
// bucket for each identity seen lately, shared by every room and every
// peer that forwards its envelopes. It is safe for concurrent use (the
// validators run at once on gossipsub's workers).
//
// The table holds at most l.most identities. A bucket left idle until it
// is full again is the same as the fresh one a new entry would get, so
// forgetting it changes nothing: when the table is full, those are swept
// first. If the sweep frees too little (many identities sending at once),
// arbitrary entries go too, down to 7/8 of l.most, so that the next sweep
// is l.most/8 new identities away rather than one. Forgetting a busy identity hands it a
// fresh burst, which is no more than a fresh identity gets anyway: keys
// cost nothing, so this limit bounds what one identity sends, not what a
// crowd of them sends (gossipsub's peer scores and queues are for that).
type senderLimits struct {
	mu      sync.Mutex
	r       rate.Limit
	burst   int
	most    int // identities kept at most
	now     func() time.Time
	senders map[identity.PublicKey]*rate.Limiter
}

// maxSenders bounds senderLimits' table.
const maxSenders = 4096

func newSenderLimits(perSecond float64, burst, most int, now func() time.Time) *senderLimits {
	return &senderLimits{r: rate.Limit(perSecond), burst: burst, most: most, now: now,
		senders: make(map[identity.PublicKey]*rate.Limiter)}
}

// allow takes one token from sender's bucket and reports whether there
// was one.
func (l *senderLimits) allow(sender identity.PublicKey) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	lim, ok := l.senders[sender]
	if !ok {
		if len(l.senders) >= l.most {
			l.shrink(now)
		}
		lim = rate.NewLimiter(l.r, l.burst)
		l.senders[sender] = lim
	}
	return lim.AllowN(now, 1)
}

// shrink makes room in the full table (see senderLimits): the full
// buckets go, then arbitrary ones down to 7/8 of l.most.
func (l *senderLimits) shrink(now time.Time) {
	for s, lim := range l.senders {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.senders, s)
		}
	}
	keep := l.most - max(l.most/8, 1)
	for s := range l.senders { // map order: arbitrary
		if len(l.senders) <= keep {
			break
		}
		delete(l.senders, s)
	}
}

// size returns how many identities the table holds.
func (l *senderLimits) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.senders)
}

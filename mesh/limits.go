package mesh

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
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

func (l *peerLimits) allow(p peer.ID) bool {
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
	return pl.lim.AllowN(now, 1)
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

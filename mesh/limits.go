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
			var idlest peer.ID
			var oldest time.Time
			for id, x := range l.peers {
				if idlest == "" || x.used.Before(oldest) {
					idlest, oldest = id, x.used
				}
			}
			delete(l.peers, idlest)
		}
		pl = &peerLimit{lim: rate.NewLimiter(l.r, l.burst)}
		l.peers[p] = pl
	}
	pl.used = now
	return pl.lim.AllowN(now, 1)
}

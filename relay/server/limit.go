package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiters are token buckets by key (an identity, an address). Buckets
// that have refilled are dropped when the table grows, so it stays bounded
// by the keys active within a refill time.
type limiters struct {
	mu    sync.Mutex
	m     map[string]*rate.Limiter
	r     rate.Limit
	burst int
}

const maxLimiters = 1 << 16

func newLimiters(r rate.Limit, burst int) *limiters {
	return &limiters{m: map[string]*rate.Limiter{}, r: r, burst: burst}
}

func (l *limiters) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		if len(l.m) >= maxLimiters {
			for k, v := range l.m {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.m, k)
				}
			}
		}
		if len(l.m) >= maxLimiters {
			return false // every bucket is in use: refuse rather than grow
		}
		lim = rate.NewLimiter(l.r, l.burst)
		l.m[key] = lim
	}
	return lim.AllowN(now, 1)
}

// set changes the rate and burst of every bucket, those in use included:
// a bucket keeps the tokens it has, up to the new burst.
func (l *limiters) set(r rate.Limit, burst int, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.r == r && l.burst == burst {
		return
	}
	l.r, l.burst = r, burst
	for _, lim := range l.m {
		lim.SetLimitAt(now, r)
		lim.SetBurstAt(now, burst)
	}
}

package server

import (
	"fmt"
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

// openConns counts the open connections of each identity and address, so
// that no one of either takes every slot of the relay.
type openConns struct {
	mu     sync.Mutex
	total  int
	byID   map[string]int
	byAddr map[string]int
}

func newOpenConns() *openConns {
	return &openConns{byID: map[string]int{}, byAddr: map[string]int{}}
}

// reserve is the share of max_connections kept for identities that have
// no connection open: when the relay is that full, only they get in, so
// that one identity (or a few) with connections to spare cannot lock
// out people who have none.
const reserve = 10 // percent

// take counts a new connection of identity fp from address host, or says
// why the limits l refuse it.
func (o *openConns) take(fp, host string, l *Limits) (ok bool, why string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.total >= l.MaxConnections:
		return false, fmt.Sprintf("the relay is at its limit of %d connections", l.MaxConnections)
	case o.byID[fp] >= l.ConnsPerIdentity:
		return false, fmt.Sprintf("this identity has %d connections open, the limit", o.byID[fp])
	case o.byAddr[host] >= l.ConnsPerAddr:
		return false, fmt.Sprintf("%s has %d connections open, the limit", host, o.byAddr[host])
	case o.byID[fp] > 0 && o.total >= l.MaxConnections-l.MaxConnections*reserve/100:
		return false, "the relay is nearly full; its last connections are kept for identities that have none open"
	}
	o.total++
	o.byID[fp]++
	o.byAddr[host]++
	return true, ""
}

// release uncounts a connection that take counted.
func (o *openConns) release(fp, host string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.total--
	if o.byID[fp]--; o.byID[fp] <= 0 {
		delete(o.byID, fp)
	}
	if o.byAddr[host]--; o.byAddr[host] <= 0 {
		delete(o.byAddr, host)
	}
}

// Refusals recorded in the audit log per key (recordRefusal).
const (
	refusalRate  = 5
	refusalBurst = 20
)

// refusalGate limits the audit records of refusals per key, and counts
// those it holds back until the next one it lets through.
type refusalGate struct {
	lim        *limiters
	mu         sync.Mutex
	unrecorded map[string]int
}

func newRefusalGate() *refusalGate {
	return &refusalGate{lim: newLimiters(refusalRate, refusalBurst), unrecorded: map[string]int{}}
}

// admit says whether a refusal of key may be recorded now, and how many
// were held back since the last that was.
func (g *refusalGate) admit(key string, now time.Time) (ok bool, unrecorded int) {
	allowed := g.lim.allow(key, now)
	g.mu.Lock()
	defer g.mu.Unlock()
	if allowed {
		n := g.unrecorded[key]
		delete(g.unrecorded, key)
		return true, n
	}
	if _, counted := g.unrecorded[key]; counted || len(g.unrecorded) < maxLimiters {
		g.unrecorded[key]++
	}
	return false, 0
}

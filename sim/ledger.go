package sim

import (
	"math"
	"slices"
	"sync"
	"time"
)

// publication is one message: who sent it where and when, and which of
// the room's people were online then (they should get it, live or by
// sync) and offline (they should get it by catch-up when they return).
type publication struct {
	room, sender int
	at           time.Time
	online       []int
	offline      []int
}

// receipt is the first arrival of a message at a peer. It holds no
// pointer, so that the collector, which a run of a thousand nodes keeps
// busy, need not scan a million of them.
type receipt struct {
	after  time.Duration // from publication
	bySync bool          // caught up by sync, not delivered live by the mesh
}

// viewSample is one node's view of its room at one moment.
type viewSample struct {
	known int // peers its gossipsub lists in the room
	truth int // peers really online in the room (relays included)
	hit   int // of known, those really online
	conns int // peers it is connected to
}

// ledger records what happened in a run; summarize turns it into figures.
type ledger struct {
	mu      sync.Mutex
	pubs    []publication
	got     []map[int]receipt // by peer: message index -> first receipt
	appDups int               // a message handed to the application twice
	samples []viewSample
}

func newLedger(peers int) *ledger {
	l := &ledger{got: make([]map[int]receipt, peers)}
	for i := range l.got {
		l.got[i] = map[int]receipt{}
	}
	return l
}

// publish records a message and returns its index.
func (l *ledger) publish(p publication) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pubs = append(l.pubs, p)
	return len(l.pubs) - 1
}

// receive records message msg arriving at peer at time at.
func (l *ledger) receive(peer, msg int, at time.Time, via string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if msg < 0 || msg >= len(l.pubs) || l.pubs[msg].sender == peer {
		return
	}
	if _, dup := l.got[peer][msg]; dup {
		l.appDups++
		return
	}
	l.got[peer][msg] = receipt{after: at.Sub(l.pubs[msg].at), bySync: via == "sync"}
}

func (l *ledger) sample(s viewSample) {
	l.mu.Lock()
	l.samples = append(l.samples, s)
	l.mu.Unlock()
}

// missing counts expected deliveries (to peers online at publication, or
// coming back later) that have not arrived.
func (l *ledger) missing() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i, p := range l.pubs {
		for _, q := range p.online {
			if _, ok := l.got[q][i]; !ok {
				n++
			}
		}
		for _, q := range p.offline {
			if _, ok := l.got[q][i]; !ok {
				n++
			}
		}
	}
	return n
}

// Result holds one run's figures.
type Result struct {
	Label  string
	Config Config
	// Messages published; Expected deliveries (message × peer of its room
	// online when it was sent, not its sender) and how many arrived
	// (Delivered), live (ByMesh) or by catch-up sync (BySync).
	Messages, Expected, Delivered, ByMesh, BySync int
	DeliveryPct                                   float64
	// CatchUp: deliveries due to peers that were offline when the message
	// was sent and came back later, and how many arrived by the end.
	CatchUpExpected, CatchUpDelivered int
	// Latency from publication to first arrival over Delivered (live and
	// sync), and over live arrivals only, in milliseconds.
	P50ms, P99ms, LiveP99ms float64
	// P99ByMinute is P99ms over the messages published in each minute of
	// the run, from the first publication: whether the tail grows as the
	// run goes on.
	P99ByMinute []float64
	// DupsPerDelivery: copies gossipsub received and dropped as already
	// seen (the node's duplicates counter, people's nodes only), per
	// live delivery. AppDups: messages handed to the application twice.
	DupsPerDelivery float64
	AppDups         int
	// BytesPerDelivery: bytes written on every stream of every node
	// (gossipsub, sync, relays included) from the first message to the
	// end, per delivered message (Delivered + CatchUpDelivered).
	BytesPerDelivery float64
	// View: the mean number of peers a node lists in its room (Known),
	// the true number online (Truth), the mean share of the true peers
	// it knows (Recall) and the lowest sampled, and connections.
	ViewKnown, ViewTruth, ViewRecall, ViewMinRecall, ViewConns float64
	// Leaves and Returns of peers; Dropped by any node's queues.
	Leaves, Returns int
	Dropped         int64
	// PublishErrors: publishes the sender's node refused (counted as
	// expected and lost).
	PublishErrors int
	// Process: what the process running every node spent from the first
	// message to the end of the drain (sim/process.go).
	Process Process
	// Wall is the run's wall time, setup and teardown included.
	Wall time.Duration
}

// summarize computes the figures from what the ledger holds, the
// duplicates counted by people's nodes and the bytes sent.
func (l *ledger) summarize(dups int64, bytes int64) Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	var r Result
	r.Messages = len(l.pubs)
	var all, live []time.Duration
	var byMinute [][]time.Duration
	for i, p := range l.pubs {
		r.Expected += len(p.online)
		m := int(p.at.Sub(l.pubs[0].at) / time.Minute)
		for len(byMinute) <= m {
			byMinute = append(byMinute, nil)
		}
		for _, q := range p.online {
			rc, ok := l.got[q][i]
			if !ok {
				continue
			}
			r.Delivered++
			all = append(all, rc.after)
			byMinute[m] = append(byMinute[m], rc.after)
			if rc.bySync {
				r.BySync++
			} else {
				live = append(live, rc.after)
			}
		}
		r.CatchUpExpected += len(p.offline)
		for _, q := range p.offline {
			if _, ok := l.got[q][i]; ok {
				r.CatchUpDelivered++
			}
		}
	}
	r.ByMesh = r.Delivered - r.BySync
	r.DeliveryPct = pct(r.Delivered, r.Expected)
	r.P50ms, r.P99ms = ms(percentile(all, 0.50)), ms(percentile(all, 0.99))
	r.LiveP99ms = ms(percentile(live, 0.99))
	for _, ds := range byMinute {
		r.P99ByMinute = append(r.P99ByMinute, ms(percentile(ds, 0.99)))
	}
	var meshArrivals int
	for _, got := range l.got {
		for _, rc := range got {
			if !rc.bySync {
				meshArrivals++
			}
		}
	}
	if meshArrivals > 0 {
		r.DupsPerDelivery = float64(dups) / float64(meshArrivals)
	}
	r.AppDups = l.appDups
	if d := r.Delivered + r.CatchUpDelivered; d > 0 {
		r.BytesPerDelivery = float64(bytes) / float64(d)
	}
	l.summarizeView(&r)
	return r
}

func (l *ledger) summarizeView(r *Result) {
	if len(l.samples) == 0 {
		return
	}
	r.ViewMinRecall = 1
	for _, s := range l.samples {
		r.ViewKnown += float64(s.known)
		r.ViewTruth += float64(s.truth)
		r.ViewConns += float64(s.conns)
		rec := 1.0
		if s.truth > 0 {
			rec = float64(s.hit) / float64(s.truth)
		}
		r.ViewRecall += rec
		r.ViewMinRecall = math.Min(r.ViewMinRecall, rec)
	}
	n := float64(len(l.samples))
	r.ViewKnown /= n
	r.ViewTruth /= n
	r.ViewConns /= n
	r.ViewRecall /= n
}

func pct(a, b int) float64 {
	if b == 0 {
		return 100
	}
	return 100 * float64(a) / float64(b)
}

// percentile is the nearest-rank percentile p (0 < p ≤ 1) of ds, which it
// sorts; zero for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	k := int(math.Ceil(p*float64(len(ds)))) - 1
	return ds[max(k, 0)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

package mesh

import (
	rtmetrics "runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// What the latency benchmark watches beside the latencies: when this
// process's garbage collections start, and the gossipsub traffic of
// either implementation.
//
// Why the collections: all of BenchmarkMesh's peers share one heap, so a
// collection marks every node's memory at once, and while it marks, the
// messages in flight wait. At 10 messages a second the slowest 1% of
// messages were those in flight while a collection ran, in both
// implementations (docs/performance.md, session 49): the p99 of 500
// messages then says how long the few collections of the run lasted and
// whether they met a message, more than how the mesh delivers.

// gcPoll is how often gcWatch looks at the collector: a collection's
// start and end are known to within it.
const gcPoll = 2 * time.Millisecond

// gcWatch notes when this process's garbage collections run, from the
// runtime's counts: every collection stops the world twice, once at its
// start and once at its end, where it is counted as done; so the
// collections started are the pauses less the collections done.
type gcWatch struct {
	stopped chan struct{}
	done    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	spans   []gcSpan
	open    int // spans[open:] have not ended
}

// gcSpan is one collection, from its start to its end: the time it
// marks, in which every node in the process waits for it at times.
type gcSpan struct{ start, end time.Time }

func watchGC() *gcWatch {
	w := &gcWatch{stopped: make(chan struct{}), done: make(chan struct{})}
	samples := []rtmetrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/sched/pauses/total/gc:seconds"}}
	counts := func() (started, ended uint64) {
		rtmetrics.Read(samples)
		var pauses uint64
		for _, c := range samples[1].Value.Float64Histogram().Counts {
			pauses += c
		}
		ended = samples[0].Value.Uint64()
		return pauses - ended, ended
	}
	// Read here, not in run: a collection between the return and run's
	// first read would be missed.
	started, ended := counts()
	go w.run(counts, started, ended)
	return w
}

// run notes each start and end, until stop. Only a rise counts: the two
// counts are not read at one instant, and a read between a collection's
// count and its last pause sees one start less for a moment. An end
// with no start noted is of a collection that began before the watch.
func (w *gcWatch) run(counts func() (uint64, uint64), started, ended uint64) {
	defer close(w.done)
	tick := time.NewTicker(gcPoll)
	defer tick.Stop()
	for {
		select {
		case <-w.stopped:
			w.mu.Lock()
			for ; w.open < len(w.spans); w.open++ {
				w.spans[w.open].end = time.Now()
			}
			w.mu.Unlock()
			return
		case now := <-tick.C:
			s, e := counts()
			w.mu.Lock()
			for ; started < s; started++ { // more than one within a poll: forced ones
				w.spans = append(w.spans, gcSpan{start: now})
			}
			for ; ended < e; ended++ {
				if w.open < len(w.spans) {
					w.spans[w.open].end = now
					w.open++
				}
			}
			w.mu.Unlock()
		}
	}
}

// stop ends the watch and returns the collections since watchGC, in
// order; one still running ends now. Stopping twice returns the same.
func (w *gcWatch) stop() []gcSpan {
	w.once.Do(func() { close(w.stopped) })
	<-w.done
	return w.spans
}

// ended is how many collections the watch has seen end so far.
func (w *gcWatch) ended() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.open
}

// flight is one measured message: when it was published, and when the
// last of its receivers got it.
type flight struct{ sent, last time.Time }

func (f flight) latency() time.Duration { return f.last.Sub(f.sent) }

// caught reports whether f was in flight while a collection ran; gcs
// are in order.
func (f flight) caught(gcs []gcSpan) bool {
	// The first collection that ends at or after f is sent.
	i, _ := slices.BinarySearchFunc(gcs, f.sent, func(g gcSpan, t time.Time) int { return g.end.Compare(t) })
	return i < len(gcs) && !gcs[i].start.After(f.last)
}

// reportCollections reports how many collections ran during the
// measured phase (gcs), how many messages were in flight while one ran
// (gc-caught), and the p99 latency of the others (p99-ms-uncaught).
func reportCollections(b *testing.B, flights []flight, gcs []gcSpan) {
	var free []time.Duration
	caught := 0
	for _, f := range flights {
		if f.caught(gcs) {
			caught++
			continue
		}
		free = append(free, f.latency())
	}
	slices.Sort(free)
	b.ReportMetric(float64(len(gcs)), "gcs")
	b.ReportMetric(float64(caught), "gc-caught")
	b.ReportMetric(percentileMs(free, 0.99), "p99-ms-uncaught")
}

// percentileMs is percentile p of the sorted latencies, in milliseconds.
func percentileMs(lat []time.Duration, p float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
}

// traffic counts what a node's gossipsub sends and the duplicates it
// receives: the work on the wire that both implementations share, so
// that the benchmark shows whether one sends more. Its counts are for
// all the nodes of a net together.
type traffic struct {
	copies  atomic.Int64 // messages sent, one per RPC that carries it
	bytes   atomic.Int64 // their bytes: data, topic, and the author's fields
	control atomic.Int64 // control entries sent: IDs in IHAVE, IWANT and IDONTWANT, GRAFTs, PRUNEs
	dups    atomic.Int64 // copies received of a message already seen
}

var _ pubsub.RawTracer = (*traffic)(nil)

func (t *traffic) SendRPC(rpc *pubsub.RPC, _ peer.ID) {
	for _, m := range rpc.GetPublish() {
		t.copies.Add(1)
		t.bytes.Add(int64(len(m.GetData()) + len(m.GetTopic()) + len(m.GetFrom()) + len(m.GetSeqno()) + len(m.GetSignature()) + len(m.GetKey())))
	}
	c := rpc.GetControl()
	if c == nil {
		return
	}
	n := len(c.GetGraft()) + len(c.GetPrune())
	for _, ih := range c.GetIhave() {
		n += len(ih.GetMessageIDs())
	}
	for _, iw := range c.GetIwant() {
		n += len(iw.GetMessageIDs())
	}
	for _, d := range c.GetIdontwant() {
		n += len(d.GetMessageIDs())
	}
	t.control.Add(int64(n))
}

func (t *traffic) DuplicateMessage(*pubsub.Message)                   { t.dups.Add(1) }
func (*traffic) AddPeer(peer.ID, protocol.ID)                         {}
func (*traffic) RemovePeer(peer.ID)                                   {}
func (*traffic) Join(string)                                          {}
func (*traffic) Leave(string)                                         {}
func (*traffic) Graft(peer.ID, string)                                {}
func (*traffic) Prune(peer.ID, string)                                {}
func (*traffic) ValidateMessage(*pubsub.Message)                      {}
func (*traffic) DeliverMessage(*pubsub.Message)                       {}
func (*traffic) RejectMessage(*pubsub.Message, string)                {}
func (*traffic) UndeliverableMessage(*pubsub.Message)                 {}
func (*traffic) ThrottlePeer(peer.ID)                                 {}
func (*traffic) RecvRPC(*pubsub.RPC)                                  {}
func (*traffic) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (*traffic) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (*traffic) OnClosedOutboundStream(peer.ID)                       {}
func (*traffic) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}

// trafficCounts is a reading of a traffic's counts.
type trafficCounts struct{ copies, bytes, control, dups int64 }

func (t *traffic) read() trafficCounts {
	return trafficCounts{t.copies.Load(), t.bytes.Load(), t.control.Load(), t.dups.Load()}
}

// report reports the traffic from t0 to t1 per message published
// (copies/msg, control/msg, dups/msg), and the bytes of a copy
// (bytes/copy).
func (t1 trafficCounts) report(b *testing.B, t0 trafficCounts, published int) {
	if published == 0 {
		return
	}
	per := func(v int64) float64 { return float64(v) / float64(published) }
	b.ReportMetric(per(t1.copies-t0.copies), "copies/msg")
	b.ReportMetric(per(t1.control-t0.control), "control/msg")
	b.ReportMetric(per(t1.dups-t0.dups), "dups/msg")
	if c := t1.copies - t0.copies; c > 0 {
		b.ReportMetric(float64(t1.bytes-t0.bytes)/float64(c), "bytes/copy")
	}
}

package mesh

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// putSettled stores, in each of nodes' stores, count envelopes of one
// sender in room, timed two minutes ago: settled, and inside the
// anti-entropy range. It returns their IDs.
func putSettled(t testing.TB, room string, count, seq0 int, nodes ...*Node) []protocol.ID {
	t.Helper()
	key := testKey(t, 50)
	at := time.Now().Add(-2 * time.Minute)
	var (
		recs []store.Record
		ids  []protocol.ID
		prev protocol.ID
	)
	for i := range count {
		seq := uint64(seq0 + i + 1)
		raw, id := envelopeAt(t, key, room, seq, prev, fmt.Sprint("settled ", seq), at.Add(time.Duration(seq)*time.Millisecond))
		env, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, store.Record{ID: id, Env: env, Raw: raw, Via: "test", Received: time.Now()})
		ids = append(ids, id)
		prev = id
	}
	for _, n := range nodes {
		if _, err := n.store.Put(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// pairInRoom starts two peers, each in room "general" with its messages
// taken, connected to each other and knowing each other in the room.
func pairInRoom(t testing.TB, opt ...func(*Config)) (a, b *Node, ra, rb *Room) {
	t.Helper()
	a, b = start(t, newSpec(t, 0), opt...), start(t, newSpec(t, 1), opt...)
	ra, rb = join(t, a, "general"), join(t, b, "general")
	receive(t, ra)
	receive(t, rb)
	connect(t, a, b)
	waitFor(t, "the room's peers to be known", func() bool { return len(ra.Peers()) > 0 && len(rb.Peers()) > 0 })
	return a, b, ra, rb
}

// TestAntiEntropyComparesSummaries: two peers that hold the same settled
// envelopes learn so from their summaries, and page only through the
// recent past, not through the whole range every round; one that lacks
// a settled envelope still gets it, because the summaries differ.
func TestAntiEntropyComparesSummaries(t *testing.T) {
	// A round takes 17 of the peer's sync tokens (a summary, a page):
	// every 500 ms is within the rate limit's 40 a second.
	fast := func(c *Config) { c.AntiEntropy = 500 * time.Millisecond }
	a, b, _, _ := pairInRoom(t, fast)
	// Three pages' worth: paging through them would take three page
	// requests a round.
	putSettled(t, "general", 3*protocol.MaxSyncPage, 0, a, b)

	level := func() float64 { return testutil.ToFloat64(b.metrics.syncs.WithLabelValues("made", "level")) }
	pages := func() float64 { return testutil.ToFloat64(a.metrics.syncs.WithLabelValues("served", "ok")) }
	l0 := level()
	waitFor(t, "b to find a level once", func() bool { return level() > l0 })
	l1, p1 := level(), pages()
	waitFor(t, "b to find a level four more times", func() bool { return level() >= l1+4 })
	l2, p2 := level(), pages()
	// One page a round (the unsettled recent past, empty here), and a
	// round under way at each end of the count.
	if rounds, served := l2-l1, p2-p1; served > rounds+2 {
		t.Errorf("a served %v pages to b's %v level rounds; want at most one a round", served, rounds)
	}
	if s := testutil.ToFloat64(a.metrics.syncs.WithLabelValues("served", "summary")); s < l2 {
		t.Errorf("a served %v summaries for b's %v level rounds", s, l2)
	}

	// A settled envelope that only b holds: a's summary differs from
	// b's, a pages through the range, and takes it.
	only := putSettled(t, "general", 1, 3*protocol.MaxSyncPage, b)[0]
	waitFor(t, "a to take the envelope only b held", func() bool {
		ok, _ := a.store.Has(context.Background(), only)
		return ok
	})
}

// TestLevel: level is true only when the peer's summary of the range
// equals the node's own.
func TestLevel(t *testing.T) {
	a, b, ra, rb := pairInRoom(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	since, until := time.Now().Add(-time.Hour).UnixMilli(), time.Now().UnixMilli()
	if !ra.level(ctx, b.ID(), since, until) {
		t.Error("two empty stores: not level")
	}
	putSettled(t, "general", 10, 0, a, b)
	if !ra.level(ctx, b.ID(), since, until) {
		t.Error("the same ten envelopes: not level")
	}
	putSettled(t, "general", 1, 10, b)
	if ra.level(ctx, b.ID(), since, until) || rb.level(ctx, a.ID(), since, until) {
		t.Error("one envelope more at b: level")
	}
	if !ra.level(ctx, b.ID(), since, time.Now().Add(-10*time.Minute).UnixMilli()) {
		t.Error("before every envelope: not level")
	}
}

// BenchmarkAntiEntropy: one anti-entropy round between two peers that
// hold the same envelopes, 33,000 of them (the range a round covers, 11
// minutes, at 50 messages a second): as it is, comparing summaries
// ("summary"), and as it was, paging through the whole range ("pages").
// CPU per round is the whole process's: both peers' work.
func BenchmarkAntiEntropy(b *testing.B) {
	a, c, ra, _ := pairInRoom(b, func(c *Config) { c.AntiEntropy = -1 })
	putSettled(b, "general", 33000, 0, a, c)
	round := func(b *testing.B, run func()) {
		used0 := usedSoFar(b)
		for b.Loop() {
			run()
		}
		used := usedSoFar(b).since(used0)
		b.ReportMetric(float64(used.cpu.Microseconds())/1000/float64(b.N), "cpu-ms/round")
		b.ReportMetric(float64(used.bytes)/float64(b.N), "B/round")
	}
	b.Run("summary", func(b *testing.B) {
		level := func() float64 { return testutil.ToFloat64(a.metrics.syncs.WithLabelValues("made", "level")) }
		l0 := level()
		round(b, ra.antiEntropy)
		if rounds := level() - l0; rounds != float64(b.N) {
			b.Fatalf("%v of %d rounds found the peers level", rounds, b.N)
		}
	})
	b.Run("pages", func(b *testing.B) {
		round(b, func() {
			now := time.Now()
			since := now.Add(-a.cfg.antiEntropy() - 2*a.cfg.skew()).UnixMilli()
			ctx, cancel := context.WithTimeout(context.Background(), syncFromTimeout)
			defer cancel()
			if _, err := ra.SyncFrom(ctx, c.ID(), since, now.Add(a.cfg.skew()).UnixMilli()); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// TestSummaryCostsSixteenPages: a summary request takes summaryCost of
// the asker's sync rate limit, a page request one; a peer with fewer left
// is refused a summary and still served a page.
func TestSummaryCostsSixteenPages(t *testing.T) {
	frozen := time.Now() // a's limits never refill
	a := start(t, newSpec(t, 0), func(c *Config) { c.Now = func() time.Time { return frozen } })
	b, c := start(t, newSpec(t, 1)), start(t, newSpec(t, 2))
	join(t, a, "general")
	connect(t, b, a)
	connect(t, c, a)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	req := &protocol.SummaryRequest{Room: "general", Since: 0, Until: frozen.UnixMilli()}
	if !a.limits.allowN(b.ID(), syncBurst-summaryCost) || !a.limits.allowN(c.ID(), syncBurst-summaryCost+1) {
		t.Fatal("a fresh bucket did not hold a burst")
	}
	if _, err := b.askSummary(ctx, a.ID(), req); err != nil {
		t.Errorf("b, %d tokens left: %v", summaryCost, err)
	}
	if _, err := c.askSummary(ctx, a.ID(), req); err == nil {
		t.Errorf("c, %d tokens left: served a summary", summaryCost-1)
	}
	page := &protocol.SyncRequest{Room: "general", Since: 0, Until: frozen.UnixMilli(), Limit: 1}
	if _, err := c.syncPage(ctx, a.ID(), page); err != nil {
		t.Errorf("c, %d tokens left: refused a page: %v", summaryCost-1, err)
	}
	// c's summary request, and each time c asked it again.
	if got := testutil.ToFloat64(a.metrics.syncs.WithLabelValues("served", "rate-limited")); got != 1+syncRetries {
		t.Errorf("a refused %v requests for their rate, want %d", got, 1+syncRetries)
	}
}

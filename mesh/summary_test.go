package mesh

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// putSettled stores, in each of nodes' stores, count envelopes of one
// sender in room, timed from a moment after two minutes ago, a
// millisecond apart: settled, and inside the anti-entropy range. It
// returns their IDs.
func putSettled(t testing.TB, room string, count, seq0 int, nodes ...*Node) []protocol.ID {
	t.Helper()
	return putAt(t, time.Now().Add(-2*time.Minute), room, count, seq0, nodes...)
}

// putAt is putSettled from at.
func putAt(t testing.TB, at time.Time, room string, count, seq0 int, nodes ...*Node) []protocol.ID {
	t.Helper()
	key := testKey(t, 50)
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
// envelopes learn so from their summaries, and page nothing, not through
// the whole range every round; one that lacks a settled envelope still
// gets it, because the summaries differ.
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
	// A level round pages nothing: the unsettled recent past is left to
	// the rounds after, whose settled part it is then.
	if rounds, served := l2-l1, p2-p1; served != 0 {
		t.Errorf("a served %v pages to b's %v level rounds; want none", served, rounds)
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

// TestAntiEntropyPagesOnlyWhatDiffers: a round pages through the bucket
// whose summaries differ, not the whole range, nor the recent past.
func TestAntiEntropyPagesOnlyWhatDiffers(t *testing.T) {
	a, b, ra, _ := pairInRoom(t, func(c *Config) { c.AntiEntropy = -1 })
	putSettled(t, "general", 3*protocol.MaxSyncPage, 0, a, b) // three pages, two minutes ago
	only := putAt(t, time.Now().Add(-5*time.Minute), "general", 1, 3*protocol.MaxSyncPage, b)[0]
	served := func() float64 { return testutil.ToFloat64(b.metrics.syncs.WithLabelValues("served", "ok")) }
	partly := func() float64 { return testutil.ToFloat64(a.metrics.syncs.WithLabelValues("made", "partly-level")) }
	s0, p0 := served(), partly()
	ra.antiEntropy()
	waitFor(t, "a to store the envelope only b held", func() bool {
		ok, _ := a.store.Has(context.Background(), only)
		return ok
	})
	if got := partly() - p0; got != 1 {
		t.Errorf("%v rounds partly level, want 1", got)
	}
	// The bucket of the envelope only b held: one page. Paging the whole
	// range would take four. b counts a page after it has sent it, so
	// its count may lag the round a moment.
	waitFor(t, "b to count a page served", func() bool { return served()-s0 >= 1 })
	if got := served() - s0; got != 1 {
		t.Errorf("b served %v pages, want 1", got)
	}
}

// TestUnlevel: the buckets unlevel returns are exactly those in which
// the two peers hold different envelopes.
func TestUnlevel(t *testing.T) {
	a, b, ra, rb := pairInRoom(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	// 44 buckets of 15 s (eleven minutes) up to a minute ago; putSettled's
	// envelopes, a moment after two minutes ago, are in the last four.
	until := time.Now().Add(-time.Minute).UnixMilli()
	req, ok := ra.summaryRequest(until-11*time.Minute.Milliseconds()+5, until)
	if !ok || req.Buckets != 44 || req.Step != summaryStep.Milliseconds() || req.Until() != until {
		t.Fatalf("summaryRequest = %+v, %v; want 44 buckets of 15 s up to %d", req, ok, until)
	}
	if got := ra.unlevel(ctx, b.ID(), req); len(got) != 0 {
		t.Errorf("two empty stores: %v differ", got)
	}
	putSettled(t, "general", 10, 0, a, b)
	if got := ra.unlevel(ctx, b.ID(), req); len(got) != 0 {
		t.Errorf("the same ten envelopes: %v differ", got)
	}
	more := putSettled(t, "general", 1, 10, b)[0]
	rec, err := b.store.Get(ctx, more)
	if err != nil {
		t.Fatal(err)
	}
	k := (rec.Env.Time - req.Since) / req.Step // its bucket
	want := []span{{req.Since + k*req.Step, req.Since + (k+1)*req.Step}}
	if got := ra.unlevel(ctx, b.ID(), req); !slices.Equal(got, want) {
		t.Errorf("one envelope more at b: %v differ, want %v", got, want)
	}
	if got := rb.unlevel(ctx, a.ID(), req); !slices.Equal(got, want) {
		t.Errorf("one envelope fewer at a: %v differ, want %v", got, want)
	}
	early, _ := ra.summaryRequest(until-time.Hour.Milliseconds(), until-10*time.Minute.Milliseconds())
	if got := ra.unlevel(ctx, b.ID(), early); len(got) != 0 {
		t.Errorf("before every envelope: %v differ", got)
	}
}

// TestSummaryRequestAtTheExtremes: summaryRequest covers any range it
// says it covers with a request that encodes, and refuses one it cannot
// cover, at the ends of time too.
func TestSummaryRequestAtTheExtremes(t *testing.T) {
	r := &Room{name: "general"}
	for _, c := range []struct {
		since, until int64
		ok           bool
	}{
		{0, 11 * 60_000, true},
		{math.MinInt64, math.MinInt64 + 120_000, true},
		{math.MaxInt64 - 120_000, math.MaxInt64, true},
		{0, 48 * 3600_000, true},              // a skew of 24 hours: 64 buckets of 45 minutes
		{0, math.MaxInt64, false},             // 292 million years: no 64 buckets hold it
		{math.MinInt64, math.MaxInt64, false}, // longer than int64 holds
		{5, 5, false},
		{6, 5, false},
	} {
		req, ok := r.summaryRequest(c.since, c.until)
		if ok != c.ok {
			t.Errorf("[%d, %d): ok %v, want %v", c.since, c.until, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		if _, err := req.MarshalBinary(); err != nil || req.Since > c.since || req.Until() != c.until {
			t.Errorf("[%d, %d): %+v ends at %d (%v)", c.since, c.until, req, req.Until(), err)
		}
	}
}

// TestSummariesOverTheLimit: summaries reads no more IDs than its limit;
// the bucket in which the count passes it, and every later one, are Over.
func TestSummariesOverTheLimit(t *testing.T) {
	a, _, _, _ := pairInRoom(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ids := putSettled(t, "general", 3, 0, a) // a millisecond apart
	first, err := a.store.Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	// Buckets of a millisecond, one envelope in each of the first three.
	req := &protocol.SummaryRequest{Room: "general", Since: first.Env.Time, Step: 1, Buckets: 5}
	sum, err := a.summaries(ctx, req, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []protocol.Summary{protocol.SummaryOf(ids[:1]), protocol.SummaryOf(ids[1:2]), {Over: true}, {Over: true}, {Over: true}}
	if !slices.Equal(sum.Buckets, want) {
		t.Errorf("summaries with a limit of 2:\n got %+v\nwant %+v", sum.Buckets, want)
	}
	if sum, err = a.summaries(ctx, req, 3); err != nil || sum.Buckets[2] != protocol.SummaryOf(ids[2:]) || sum.Buckets[4] != protocol.SummaryOf(nil) {
		t.Errorf("summaries with a limit of 3: %+v, %v", sum, err)
	}
}

// TestSummaryKeptWhileTheStoreIsTheSame: the summary of a whole bucket is
// kept and given again while the store holds the same envelopes of it,
// and read again once it holds another; a bucket of another width, or
// one before the range of the node's rounds, is not kept.
func TestSummaryKeptWhileTheStoreIsTheSame(t *testing.T) {
	a := start(t, newSpec(t, 0))
	join(t, a, "general")
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	step := summaryStep.Milliseconds()
	m := floorTo(time.Now().Add(-3*time.Minute).UnixMilli(), step)
	ids := putAt(t, time.UnixMilli(m+1000), "general", 10, 0, a)
	req := &protocol.SummaryRequest{Room: "general", Since: m - step, Step: step, Buckets: 3}
	summaries := func() []protocol.Summary {
		t.Helper()
		sum, err := a.summaries(ctx, req, protocol.MaxSummaryCount)
		if err != nil {
			t.Fatal(err)
		}
		return sum.Buckets
	}
	none := protocol.SummaryOf(nil)
	if got, want := summaries(), []protocol.Summary{none, protocol.SummaryOf(ids), none}; !slices.Equal(got, want) {
		t.Fatalf("summaries:\n got %+v\nwant %+v", got, want)
	}
	// Kept: a planted summary with the bucket's stamp is what comes back.
	k := bucketKey{"general", m, m + step}
	kept, ok, n := a.sums.kept(k)
	if !ok || n != 3 {
		t.Fatalf("%d summaries kept, the bucket's among them: %v", n, ok)
	}
	planted := protocol.SummaryOf([]protocol.ID{{7}})
	planted.Count = kept.sum.Count
	a.sums.put(k, kept.stamp, planted, 0)
	if got := summaries()[1]; got != planted {
		t.Fatalf("with the store unchanged, the bucket's summary is %+v, not the one kept", got)
	}
	// One more envelope in the bucket: its stamp changes, and the
	// summary is read again.
	more := putAt(t, time.UnixMilli(m+1000), "general", 1, 10, a)
	if got, want := summaries()[1], protocol.SummaryOf(append(ids, more...)); got != want {
		t.Fatalf("after an envelope more: %+v, want %+v", got, want)
	}
	// Buckets of a second, and buckets before the range of the node's
	// rounds (11 minutes), are answered, and not kept.
	second := &protocol.SummaryRequest{Room: "general", Since: m, Step: 1000, Buckets: 4}
	sum, err := a.summaries(ctx, second, protocol.MaxSummaryCount)
	if err != nil || sum.Buckets[1].Count != 11 {
		t.Fatalf("buckets of a second: %+v, %v", sum, err)
	}
	early := &protocol.SummaryRequest{Room: "general", Since: m - 15*time.Minute.Milliseconds(), Step: step, Buckets: 3}
	if _, err := a.summaries(ctx, early, protocol.MaxSummaryCount); err != nil {
		t.Fatal(err)
	}
	if _, _, n := a.sums.kept(k); n != 3 {
		t.Errorf("%d summaries kept after buckets of a second and early ones, want the 3 first asked for", n)
	}
}

// TestDiffer: a bucket is paged when the summaries differ or either side
// did not count it, and buckets that meet are paged as one range.
func TestDiffer(t *testing.T) {
	req := &protocol.SummaryRequest{Room: "general", Since: 1000, Step: 10, Buckets: 5}
	one, two := protocol.SummaryOf([]protocol.ID{{1}}), protocol.SummaryOf([]protocol.ID{{2}})
	over := protocol.Summary{Over: true}
	mine := &protocol.SummaryResponse{Buckets: []protocol.Summary{one, one, over, one, one}}
	theirs := &protocol.SummaryResponse{Buckets: []protocol.Summary{one, two, one, one, over}}
	want := []span{{1010, 1030}, {1040, 1050}}
	if got := differ(req, mine, theirs); !slices.Equal(got, want) {
		t.Errorf("differ = %v, want %v", got, want)
	}
	if got := differ(req, mine, mine); !slices.Equal(got, []span{{1020, 1030}}) {
		t.Errorf("the same, with one bucket over: %v", got)
	}
}

// BenchmarkAntiEntropy: one anti-entropy round between two peers that
// hold the same envelopes, 33,000 of them (the range a round covers, 11
// minutes, at 50 messages a second): as it is, comparing summaries kept
// from the round before ("summary"); comparing summaries read afresh,
// as every round did before they were kept ("summary-read"); and as it
// was before summaries, paging through the whole range ("pages"). CPU
// per round is the whole process's: both peers' work.
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
	b.Run("summary-read", func(b *testing.B) {
		round(b, func() {
			a.sums.clear()
			c.sums.clear()
			ra.antiEntropy()
		})
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
	req := &protocol.SummaryRequest{Room: "general", Since: 0, Step: protocol.MaxSummaryStep, Buckets: 1}
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

// kept returns the summary kept for k, and how many are kept.
func (c *summaryCache) kept(k bucketKey) (keptSummary, bool, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	return e, ok, len(c.entries)
}

// clear forgets every kept summary.
func (c *summaryCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
}

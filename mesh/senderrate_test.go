package mesh

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// oneSender is a run of valid envelopes of one identity in "general",
// signed before any is sent, so that signing does not pace the sending.
type oneSender struct {
	raws [][]byte
	ids  []protocol.ID
}

func signRun(t testing.TB, key identity.PrivateKey, n int) *oneSender {
	t.Helper()
	au := &testkit.Author{Key: key, Room: "general"}
	s := &oneSender{}
	for i := range n {
		raw, id := au.Next(t, fmt.Sprint("burst ", i))
		s.raws = append(s.raws, raw)
		s.ids = append(s.ids, id)
	}
	return s
}

// floodFrom has a raw peer that is not subscribed (an attacker of the
// attack suite) publish every envelope of s to victim as fast as it can.
// It returns the raw peer and when the first envelope was sent.
func floodFrom(t *testing.T, victim *Node, s *oneSender) (*attacker, time.Time) {
	t.Helper()
	a := newAttacker(t, flood, testKey(t, 99), "general")
	a.connect(t, victim)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	first := time.Now()
	for _, raw := range s.raws {
		if err := a.topic.Publish(ctx, raw); err != nil {
			t.Fatal(err)
		}
	}
	return a, first
}

// judged is how many envelopes n's validator has judged, with any result
// and reason.
func judged(t testing.TB, n *Node) float64 {
	t.Helper()
	return sumValidated(t, n, "")
}

// sumValidated sums n's validated counters of the given result, or of all
// results if result is empty.
func sumValidated(t testing.TB, n *Node, result string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(n.metrics.validated); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && (result == "" || l.GetValue() == result) {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// waitJudgedAll waits until victim has judged all sent envelopes and
// delivered every one it accepted.
func waitJudgedAll(t testing.TB, victim *Node, rc *receiver, sent int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the victim to judge all %d envelopes", sent), func() bool {
		return judged(t, victim) >= float64(sent)
	})
	waitFor(t, "the victim to deliver every envelope it accepted", func() bool {
		return float64(rc.count()) >= validated(victim, "accept", "")
	})
}

// One identity sends 1,500 envelopes as fast as a peer can to a node that
// allows a burst of 100 and 50 a second: the node delivers the burst and
// no more than the rate allows for the time it took, ignores the rest for
// their rate, and does not punish the peer that forwarded them (it may be
// honest).
func TestSenderRateThrottlesOneIdentity(t *testing.T) {
	const sent, burst, perSecond = 1500, 100, 50
	victim := start(t, newSpec(t, 0), func(c *Config) { c.SenderBurst, c.SenderRate = burst, perSecond })
	rc := receive(t, join(t, victim, "general"))
	run := signRun(t, testKey(t, 7), sent)

	a, first := floodFrom(t, victim, run)
	waitJudgedAll(t, victim, rc, sent)
	elapsed := time.Since(first).Seconds() // up to after the last delivery

	got := rc.count()
	ignored := validated(victim, "ignore", "rate")
	t.Logf("sent %d; delivered %d, ignored for rate %v, in %.2f s", sent, got, ignored, elapsed)
	if got < burst {
		t.Errorf("delivered %d, want at least the burst, %d", got, burst)
	}
	if most := burst + perSecond*(elapsed+1); float64(got) > most {
		t.Errorf("delivered %d in %.2f s, want at most %.0f (burst %d + %d/s)", got, elapsed, most, burst, perSecond)
	}
	if ignored < float64(sent-got) {
		t.Errorf("validated{ignore,rate} = %v, want at least %d (sent - delivered)", ignored, sent-got)
	}
	if r := sumValidated(t, victim, "reject"); r != 0 {
		t.Errorf("%v envelopes rejected, want none", r)
	}
	if p := victim.pens.score(a.h.ID()); p != 0 {
		t.Errorf("the forwarding peer was penalised: %v", p)
	}
	waitFor(t, "a score of the forwarding peer", func() bool {
		_, ok := victim.Score(a.h.ID())
		return ok
	})
	if s, _ := victim.Score(a.h.ID()); s <= GraylistThreshold {
		t.Errorf("the forwarding peer scores %v, graylisted (threshold %v)", s, GraylistThreshold)
	}
}

// What was ignored for its rate is not remembered as refused: the seen
// set leaves it undecided, the replay guard has not recorded it, and
// catch-up sync from a peer that has it brings every one, once.
func TestSenderRateThrottledComesBySync(t *testing.T) {
	// A rate of one token in 1,000 s: exactly the burst passes, however
	// slow the machine.
	const sent, burst, perSecond = 200, 20, 0.001
	victim := start(t, newSpec(t, 0), func(c *Config) { c.SenderBurst, c.SenderRate = burst, perSecond })
	rc := receive(t, join(t, victim, "general"))
	run := signRun(t, testKey(t, 7), sent)

	floodFrom(t, victim, run)
	waitJudgedAll(t, victim, rc, sent)
	if got := rc.count(); got != burst {
		t.Fatalf("delivered %d live, want the burst, %d", got, burst)
	}
	var throttled []protocol.ID
	for _, id := range run.ids {
		if !rc.has(id) {
			throttled = append(throttled, id)
			if v := victim.seen.known(id); v != unseen {
				t.Errorf("throttled %s is remembered as %d, want undecided", id, v)
			}
		}
	}
	if got := validated(victim, "ignore", "rate"); got != float64(len(throttled)) {
		t.Errorf("validated{ignore,rate} = %v, want %d", got, len(throttled))
	}

	// A peer that has all of them joins; the victim's catch-up sync with it
	// brings the rest.
	helper := start(t, newSpec(t, 1))
	recs := make([]store.Record, 0, sent)
	for _, raw := range run.raws {
		env, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, storeRecord(env, raw))
	}
	if _, err := helper.store.Put(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	join(t, helper, "general")
	connect(t, helper, victim)
	waitFor(t, fmt.Sprintf("the %d throttled envelopes by sync", len(throttled)), func() bool { return rc.has(throttled...) })
	rc.exactlyOnce(t, "victim", run.ids)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, m := range rc.msgs[burst:] {
		if m.Via != "sync" {
			t.Errorf("throttled %s came by %s, want sync", m.ID, m.Via)
		}
	}
}

// A node's own publishes never meet its sender limit, however small, by
// either publishing path; another identity's envelopes on the same node
// do.
func TestSenderRateSparesOwnPublishes(t *testing.T) {
	const burst, own = 5, 55
	n := start(t, newSpec(t, 40), func(c *Config) { c.SenderBurst, c.SenderRate = burst, 0.001 })
	room := join(t, n, "general")
	rc := receive(t, room)
	au := &testkit.Author{Key: n.cfg.Key, Room: "general"}
	for i := range own {
		raw, id := au.Next(t, fmt.Sprint("own ", i))
		env, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		if i%2 == 0 {
			err = room.PublishChecked(ctx, env, id, raw)
		} else {
			err = room.Publish(ctx, raw) // verified by the validator
		}
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	stored := func() float64 { return testutil.ToFloat64(n.metrics.stored.WithLabelValues("local")) }
	waitFor(t, fmt.Sprintf("all %d own envelopes stored", own), func() bool { return stored() >= own })
	if r := validated(n, "ignore", "rate"); r != 0 {
		t.Fatalf("%v of the node's own envelopes ignored for their rate", r)
	}
	if a := validated(n, "accept", ""); a != own {
		t.Fatalf("accepted %v own envelopes, want %d", a, own)
	}

	// The limit is in force for others: one over the burst is ignored.
	other := signRun(t, testKey(t, 7), burst+1)
	floodFrom(t, n, other)
	waitFor(t, "the other identity's envelopes to be judged", func() bool { return judged(t, n) >= own+burst+1 })
	if r := validated(n, "ignore", "rate"); r != 1 {
		t.Fatalf("%v of another identity's %d envelopes ignored for rate, want 1", r, burst+1)
	}
	waitFor(t, "the burst of the other identity", func() bool { return rc.count() >= burst })
}

// The table of sender buckets never holds more identities than its cap,
// however many send, one by one or at once; an idle bucket, full again,
// goes first; and a busy one that stays is not reset.
func TestSenderRateTableBounded(t *testing.T) {
	const most = 64
	now := time.Unix(1_800_000_000, 0)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	l := newSenderLimits(1, 2, most, clock)
	keys := make([]identity.PublicKey, 4*most)
	for i := range keys {
		keys[i] = testKey(t, 1000+i).Public()
	}

	// most/8 idle identities take one token each, the others drain their
	// buckets; then 1.5 s pass: the idle buckets are full again, the busy
	// ones are not. A new identity finds the table full: the sweep frees
	// just enough, so nothing else goes.
	idle, busy := keys[:most/8], keys[most/8:most]
	for _, k := range idle {
		l.allow(k)
	}
	for _, k := range busy {
		if !l.allow(k) || !l.allow(k) || l.allow(k) {
			t.Fatalf("a burst of 2 not enforced")
		}
	}
	clockMu.Lock()
	now = now.Add(1500 * time.Millisecond)
	clockMu.Unlock()
	l.allow(keys[most])
	for i, k := range idle {
		if _, ok := l.senders[k]; ok {
			t.Errorf("idle identity %d's full bucket was kept", i)
		}
	}
	for i, k := range busy {
		lim, ok := l.senders[k]
		switch {
		case !ok:
			t.Errorf("busy identity %d was dropped while idle ones could go", i)
		case lim.TokensAt(clock()) >= 2:
			t.Errorf("busy identity %d's bucket was reset", i)
		}
	}
	if l.allow(busy[0]) && l.allow(busy[0]) {
		t.Error("a busy identity got more than its 1.5 tokens back")
	}

	// Many identities at once, from concurrent validators.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, k := range keys[g*most : (g+1)*most] {
				l.allow(k)
				if s := l.size(); s > most {
					t.Errorf("the table holds %d identities, cap %d", s, most)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s := l.size(); s > most || s == 0 {
		t.Fatalf("the table holds %d identities, want 1 to %d", s, most)
	}
}

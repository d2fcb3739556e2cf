package mesh

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/protocol"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestOfflinePeerCatchesUpBySync(t *testing.T) {
	a := start(t, newSpec(t, 0))
	b := start(t, newSpec(t, 1))
	cSpec := newSpec(t, 2)
	c := start(t, cSpec)
	roomA, roomB := join(t, a, "general"), join(t, b, "general")
	receive(t, roomB)
	roomC := join(t, c, "general")
	rcC := receive(t, roomC)
	connect(t, a, b)
	connect(t, c, a)
	waitMesh(t, []*Room{roomA, roomB, roomC})

	before := publish(t, roomA, "before the outage")
	waitFor(t, "c to get the first message", func() bool { return rcC.has(before) })
	stop(c)

	var missed []protocol.ID
	for i := range 50 {
		missed = append(missed, publish(t, roomA, fmt.Sprintf("while c is away %d", i)))
	}

	// b commits what it gets right behind showing it; c asks b's store.
	waitFor(t, "b to store all 50", func() bool {
		for _, id := range missed {
			if ok, _ := b.store.Has(context.Background(), id); !ok {
				return false
			}
		}
		return true
	})

	// c comes back on the same store, knowing only b: no relay, and the
	// original publisher not dialled.
	c = start(t, cSpec)
	roomC = join(t, c, "general")
	rcC = receive(t, roomC)
	connect(t, c, b)
	waitFor(t, "c to catch up on all 50", func() bool { return rcC.has(missed...) })
	rcC.exactlyOnce(t, "c after restart", missed)
	rcC.mu.Lock()
	defer rcC.mu.Unlock()
	for _, m := range rcC.msgs {
		if m.Via != "sync" {
			t.Errorf("%s came by %s, want sync", m.ID, m.Via)
		}
	}
}

func TestGapInHashChainTriggersSync(t *testing.T) {
	x := start(t, newSpec(t, 0))
	y := start(t, newSpec(t, 1))
	roomX, roomY := join(t, x, "general"), join(t, y, "general")
	rcY := receive(t, roomY)
	connect(t, x, y)
	waitMesh(t, []*Room{roomX, roomY})
	waitFor(t, "the join-time syncs to finish", func() bool {
		return testutil.ToFloat64(y.metrics.syncs.WithLabelValues("made", "ok")) >= 1 &&
			testutil.ToFloat64(x.metrics.syncs.WithLabelValues("made", "ok")) >= 1
	})

	// x holds e1 and e2 of some sender; y never saw them. Then y hears e3,
	// whose prev is e2, from a peer that cannot serve sync.
	k := testKey(t, 7)
	e1, id1 := envelope(t, k, "general", 1, protocol.ID{}, "one")
	e2, id2 := envelope(t, k, "general", 2, id1, "two")
	e3, id3 := envelope(t, k, "general", 3, id2, "three")
	for _, raw := range [][]byte{e1, e2} {
		env, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := x.store.Put(context.Background(), storeRecord(env, raw)); err != nil {
			t.Fatal(err)
		}
	}
	rp := newRawPeer(t, "general", y)
	rp.publish(t, e3)

	waitFor(t, "the gap to close", func() bool { return rcY.has(id1, id2, id3) })
	rcY.exactlyOnce(t, "y", []protocol.ID{id1, id2, id3})
	rcY.mu.Lock()
	defer rcY.mu.Unlock()
	for _, m := range rcY.msgs {
		want := "sync"
		if m.ID == id3 {
			want = "mesh"
		}
		if m.Via != want {
			t.Errorf("%s came by %s, want %s", m.ID, m.Via, want)
		}
	}
}

func TestChurnSevenOfTenStillDeliver(t *testing.T) {
	nodes, rooms, recv := sparseRoom(t, 10)

	gone := map[int]bool{2: true, 5: true, 8: true}
	for i := range gone {
		stop(nodes[i])
	}
	var alive []int
	for i := range nodes {
		if !gone[i] {
			alive = append(alive, i)
		}
	}
	sent := map[int][]protocol.ID{}
	for round := range 3 {
		for _, i := range alive {
			sent[i] = append(sent[i], publish(t, rooms[i], fmt.Sprintf("after churn %d from %d", round, i)))
		}
	}
	for _, i := range alive {
		var want []protocol.ID
		for _, j := range alive {
			if j != i {
				want = append(want, sent[j]...)
			}
		}
		waitFor(t, fmt.Sprintf("peer %d to get all %d messages", i, len(want)), func() bool { return recv[i].has(want...) })
		recv[i].exactlyOnce(t, fmt.Sprintf("peer %d", i), want)
	}
}

func TestRendezvousThroughDHT(t *testing.T) {
	// The bootstrap node is a DHT server only: it is not in the room, so
	// the room's peers can meet only by finding each other in the DHT.
	boot := start(t, newSpec(t, 100), func(c *Config) { c.DHT = true })
	const n = 10
	nodes := make([]*Node, n)
	rooms := make([]*Room, n)
	recv := make([]*receiver, n)
	for i := range nodes {
		nodes[i] = start(t, newSpec(t, i), func(c *Config) {
			c.DHT = true
			c.Bootstrap = boot.Addrs()[:1]
		})
	}
	for i := range nodes {
		rooms[i] = join(t, nodes[i], "general")
		recv[i] = receive(t, rooms[i])
	}
	waitFor(t, "every room peer to find at least two others", func() bool {
		for _, r := range rooms {
			if len(r.Peers()) < 2 {
				return false
			}
		}
		return true
	})
	id := publish(t, rooms[0], "found you")
	for i := 1; i < n; i++ {
		waitFor(t, fmt.Sprintf("peer %d to get the message", i), func() bool { return recv[i].has(id) })
	}
}

// A message that gossip never brought (here: published before the mesh
// formed, so only the publisher's neighbour got it) and that no later
// message reveals as a gap is picked up by the periodic anti-entropy sync.
func TestAntiEntropyPicksUpWhatGossipMissed(t *testing.T) {
	// The nodes' clocks, which the test moves on instead of waiting.
	var ahead atomic.Int64
	fast := func(c *Config) {
		c.AntiEntropy = 200 * time.Millisecond
		c.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	}
	a, b, c := start(t, newSpec(t, 0), fast), start(t, newSpec(t, 1), fast), start(t, newSpec(t, 2), fast)
	ra, rb, rc := join(t, a, "general"), join(t, b, "general"), join(t, c, "general")
	recA := receive(t, ra)
	receive(t, rb)
	connect(t, a, b)
	connect(t, b, c)
	waitFor(t, "the room's peers to be known", func() bool {
		return len(ra.Peers()) > 0 && len(rb.Peers()) == 2 && len(rc.Peers()) > 0
	})
	id := publish(t, rc, "early bird")
	// Anti-entropy leaves what is newer than summarySettle, rounded down
	// to a whole minute, to the rounds after; a little over a minute
	// more later, a round takes it.
	ahead.Store(int64(summarySettle + summaryStep + time.Second))
	waitFor(t, "a to get the message", func() bool { return recA.has(id) })
	recA.exactlyOnce(t, "a", []protocol.ID{id})
}

// TestSyncRetriesRefusedPage: a peer that refuses a page (its rate limit
// for the asker spent, or all its slots busy) is asked again; the asker
// does not give up on what it is missing.
func TestSyncRetriesRefusedPage(t *testing.T) {
	a := start(t, newSpec(t, 0))
	b := start(t, newSpec(t, 1))
	roomA := join(t, a, "general")
	var ids []protocol.ID
	for i := range 3 {
		ids = append(ids, publish(t, roomA, fmt.Sprintf("held by a %d", i)))
	}
	waitFor(t, "a to store its messages", func() bool {
		for _, id := range ids {
			if ok, _ := a.store.Has(context.Background(), id); !ok {
				return false
			}
		}
		return true
	})
	roomB := join(t, b, "general")
	receive(t, roomB)
	connect(t, b, a)
	// Spend b's whole burst at a: its next request is refused.
	for a.limits.allow(b.ID()) {
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	got, err := roomB.SyncFrom(ctx, a.ID(), now.Add(-time.Hour).UnixMilli(), now.Add(time.Minute).UnixMilli())
	if err != nil {
		t.Fatalf("SyncFrom after a refusal: %v", err)
	}
	// The join-time sync may have brought some already; none is missing.
	if refused := testutil.ToFloat64(a.metrics.syncs.WithLabelValues("served", "rate-limited")); refused < 1 {
		t.Fatalf("a refused %v requests; the test did not exercise a refusal", refused)
	}
	for _, id := range ids {
		if ok, _ := b.store.Has(ctx, id); !ok {
			waitFor(t, "b to store what it synced", func() bool { ok, _ := b.store.Has(ctx, id); return ok })
		}
	}
	t.Logf("synced %d after a refusal", got)
}

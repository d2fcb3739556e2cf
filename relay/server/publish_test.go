package server

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
)

// TestStaleFarAway: an envelope dated 2^58 ms before or after the relay's
// clock is refused as stale. time.Duration(now-t)*time.Millisecond wraps
// to 0 for it, and it used to be acknowledged, stored and delivered.
func TestStaleFarAway(t *testing.T) {
	r := startRelay(t, nil)
	alice := testkit.Key(t)
	c := dial(t, r, alice)
	ctx := ctxT(t)
	for _, tc := range []struct {
		name  string
		shift int64
	}{{"2^58 ms in the past", -1 << 58}, {"2^58 ms in the future", 1 << 58}} {
		a := &testkit.Author{Key: alice, Room: "lobby", Now: func() time.Time { return time.UnixMilli(time.Now().UnixMilli() + tc.shift) }}
		raw, _ := a.Next(t, "far away")
		_, err := c.Publish(ctx, raw)
		if !errors.Is(err, &wire.RelayError{Code: wire.CodeStale}) {
			t.Fatalf("%s: %v, want %s", tc.name, err, wire.CodeStale)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	if pos, err := r.st.LastPos(ctx); err != nil || pos != 0 {
		t.Fatalf("last position stored %d (%v), want 0: nothing stored", pos, err)
	}
}

// TestSkewed: the staleness check at its edges and at the extreme times.
func TestSkewed(t *testing.T) {
	const now = 1_800_000_000_000 // Unix ms
	limit := 5 * time.Minute
	lim := limit.Milliseconds()
	for _, tc := range []struct {
		t    int64
		want bool
	}{
		{now, false},
		{now - lim, false},
		{now + lim, false},
		{now - lim - 1, true},
		{now + lim + 1, true},
		{now - 1<<58, true},
		{now + 1<<58, true},
		{math.MinInt64, true},
		{math.MaxInt64, true},
		{0, true},
	} {
		if got := skewed(now, tc.t, limit); got != tc.want {
			t.Errorf("skewed(now, now%+d) = %v, want %v", tc.t-now, got, tc.want)
		}
	}
	if skewed(math.MaxInt64, math.MinInt64, limit) == false || skewed(math.MinInt64, math.MaxInt64, limit) == false {
		t.Error("the ends of int64 are within the limit of each other")
	}
	if skewed(now, now+1, 1500*time.Microsecond) || !skewed(now, now+2, 1500*time.Microsecond) {
		t.Error("a limit of 1.5 ms: 1 ms must pass and 2 ms not, as the relay did in Durations")
	}
}

// TestBatchSizeMetric: parley_relay_commit_batch_envelopes counts the
// envelopes of commits that had envelopes: none right after start, when
// only the start record was committed, and the connection records do not
// count either.
func TestBatchSizeMetric(t *testing.T) {
	r := startRelay(t, nil)
	alice := testkit.Key(t)
	c := dial(t, r, alice) // its connection record is committed too
	count := func() (uint64, float64) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(r.srv.metrics.batchSize)
		mfs, err := reg.Gather()
		if err != nil || len(mfs) != 1 {
			t.Fatalf("gather: %v, %d families", err, len(mfs))
		}
		h := mfs[0].GetMetric()[0].GetHistogram()
		return h.GetSampleCount(), h.GetSampleSum()
	}
	// Wait until the start and connection records are committed: the
	// connection's record lingers up to auditLinger.
	time.Sleep(10 * auditLinger)
	if n, sum := count(); n != 0 || sum != 0 {
		t.Fatalf("after start: %d batches of %g envelopes, want none", n, sum)
	}
	a := &testkit.Author{Key: alice, Room: "lobby"}
	for range 3 {
		raw, _ := a.Next(t, "hello")
		if _, err := c.Publish(ctxT(t), raw); err != nil {
			t.Fatal(err)
		}
	}
	if n, sum := count(); n != 3 || sum != 3 {
		t.Fatalf("after 3 publishes one at a time: %d batches of %g envelopes in all, want 3 of 3", n, sum)
	}
}

// TestEnqueueWaitsOutsideTheLock: a publisher that waits for room in the
// committer's queue holds no lock: another publisher whose stream ends
// leaves at once, and the sequencer's lock is free.
func TestEnqueueWaitsOutsideTheLock(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := NewServer(context.Background(), Options{Config: testConfig(), Key: testkit.Key(t), Store: st, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	// Not serving: nobody takes from the queue. Fill it.
	alice := testkit.Key(t)
	full := make([]*pending, maxQueued)
	for i := range full {
		full[i] = envelopeAt(alice, "lobby", uint64(i+1))
	}
	if n, err := srv.enqueue(context.Background(), full); n != len(full) || err != nil {
		t.Fatalf("enqueue into an empty queue: %d, %v", n, err)
	}
	waiting := make(chan error, 1)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	go func() {
		_, err := srv.enqueue(wctx, []*pending{envelopeAt(alice, "lobby", maxQueued+1)})
		waiting <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it start waiting
	if !srv.seq.mu.TryLock() {
		t.Fatal("the sequencer's lock is held while a publisher waits for the committer")
	}
	srv.seq.mu.Unlock()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	left := make(chan error, 1)
	go func() {
		_, err := srv.enqueue(ended, []*pending{envelopeAt(alice, "lobby", maxQueued+2)})
		left <- err
	}()
	select {
	case err := <-left:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("enqueue with an ended context: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a publisher whose stream ended still waits behind another's wait for the committer")
	}
	wcancel()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Fatalf("the waiting enqueue: %v, want context.Canceled", err)
	}
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin = ""
	return cfg
}

package mesh

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// confirmRoom is three nodes in a line (a - b - c) in one room, with the
// gossipsub mesh formed, and what each delivers read (receive). Each takes a sender's messages at any rate: the
// benchmark's senders send faster than a person.
func confirmRoom(t testing.TB) (nodes []*Node, rooms []*Room) {
	anyRate := func(c *Config) { c.SenderRate, c.SenderBurst = 1e6, 1e6 }
	for i := range 3 {
		nodes = append(nodes, start(t, newSpec(t, 80+i), anyRate))
	}
	connect(t, nodes[0], nodes[1])
	connect(t, nodes[1], nodes[2])
	for _, n := range nodes {
		r := join(t, n, "confirm")
		receive(t, r)
		rooms = append(rooms, r)
	}
	waitMesh(t, rooms)
	return nodes, rooms
}

// TestConfirmMeansStored: Confirm returns a peer once that peer has the
// envelope in its store, not merely delivered, while the peer's writer
// is pacing the commits of a steady stream from another sender.
func TestConfirmMeansStored(t *testing.T) {
	nodes, rooms := confirmRoom(t)
	a, b := rooms[0], rooms[1]
	for i := range 5 {
		publish(t, rooms[2], fmt.Sprintf("stream %d", i)) // b commits, and paces the next
		id, e := publishEnv(t, a, fmt.Sprintf("mine %d", i))
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		p, err := a.Confirm(ctx, id, e.Time)
		cancel()
		if err != nil {
			t.Fatalf("confirm %d: %v", i, err)
		}
		if p != nodes[1].ID() {
			t.Fatalf("confirm %d: by %s, want a's only peer, b (%s)", i, p, nodes[1].ID())
		}
		has, err := b.n.store.Has(context.Background(), id)
		if err != nil || !has {
			t.Fatalf("confirm %d: b confirmed, but its store has it: %v (%v)", i, has, err)
		}
	}
}

// BenchmarkConfirm: how long a sender waits to hear that a peer stored
// its message, while another member's steady stream (20 messages a
// second) keeps the peers' writers committing about once a second.
// Reported: the median and 99th percentile of publish to Confirm's
// return, and the slowest.
//
//	go test -run '^$' -bench Confirm -benchtime 200x ./mesh
func BenchmarkConfirm(b *testing.B) {
	_, rooms := confirmRoom(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	streamed := make(chan struct{})
	go func() { // the stream, from c
		defer close(streamed)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				publish(b, rooms[2], fmt.Sprintf("stream %d", i))
			}
		}
	}()
	defer func() { cancel(); <-streamed }()
	time.Sleep(3 * time.Second) // the stream under way: commits paced
	var took []time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		id, e := publishEnv(b, rooms[0], fmt.Sprintf("mine %d", i))
		cctx, ccancel := context.WithTimeout(ctx, patience)
		_, err := rooms[0].Confirm(cctx, id, e.Time)
		ccancel()
		if err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
		time.Sleep(time.Duration(i%7) * 13 * time.Millisecond) // not in step with the commits
	}
	b.StopTimer()
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[len(took)*99/100]), "p99-ms")
	b.ReportMetric(ms(took[len(took)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
}

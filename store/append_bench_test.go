package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/cputime"
	"github.com/parleychat/parley/protocol"
)

// BenchmarkAppend: what a mesh node pays to store a steady stream, by
// kind of store: batches of 50 envelopes (a second of a room at 50
// messages a second, as the node's writer commits them) from 20
// senders, into a store that already holds 5,000. The figure to read
// is cpu-ns/envelope (the process's CPU time: on a shared machine the
// wall time, ns/op, one envelope an op, moves with the neighbours).
//
//	go test -run '^$' -bench Append -count 5 ./store
func BenchmarkAppend(b *testing.B) {
	kinds := []struct {
		name string
		opts []Option
	}{
		{"all", nil},                 // tools and tests, and the mesh benchmark's nodes
		{"chat", []Option{Search()}}, // a chat client's, which its mesh node writes, and the client notes shown
		{"relay", []Option{Relay()}},
	}
	for _, k := range kinds {
		b.Run(k.name, func(b *testing.B) { benchAppend(b, k.opts...) })
	}
}

// BenchmarkAppendSenders: the same stream from more and fewer senders,
// in commits of 150 (three seconds at 50 a second, as the mesh node's
// writer takes them) into a store of 9,000. Each sender's envelopes sit
// together in the (sender, room, seq) index, so a commit writes the index
// page of every sender in it: the more senders, the more pages a commit
// and a checkpoint write for the same envelopes (docs/performance.md).
//
//	go test -run '^$' -bench AppendSenders -benchtime 60000x -count 2 ./store
func BenchmarkAppendSenders(b *testing.B) {
	for _, senders := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			benchAppendShape(b, 150, senders, 9000)
		})
	}
}

func benchAppend(b *testing.B, opts ...Option) {
	benchAppendShape(b, 50, 20, 5000, opts...)
}

// benchAppendShape stores a stream from senders in commits of batch
// envelopes into a store that holds before of them.
func benchAppendShape(b *testing.B, batch, senders, before int, opts ...Option) {
	s, err := Open(filepath.Join(b.TempDir(), "parley.db"), opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	keys := make([]identity.PrivateKey, senders)
	for i := range keys {
		keys[i] = key(b, byte(i+1))
	}
	n := before + b.N
	recs := make([]Record, n)
	for i := range recs {
		seq := uint64(i/senders + 1)
		recs[i] = record(b, keys[i%senders], "bench", seq, uint64(i+1), t0.Add(time.Duration(i)*20*time.Millisecond),
			fmt.Sprintf("message %d of a steady stream, about as long as a line people type", i))
	}
	put := func(recs []Record) {
		for len(recs) > 0 {
			m := min(batch, len(recs))
			if _, err := s.Put(ctx, recs[:m]...); err != nil {
				b.Fatal(err)
			}
			if s.search {
				// The chat client's part of it: the trigger noted them
				// unshown, and the client, having shown them, takes
				// the notes out.
				ids := make([]protocol.ID, m)
				for i, r := range recs[:m] {
					ids[i] = r.ID
				}
				if err := s.RemoveUnshown(ctx, ids); err != nil {
					b.Fatal(err)
				}
			}
			recs = recs[m:]
		}
	}
	put(recs[:before])
	b.ResetTimer()
	cpu := cpuTime(b)
	put(recs[before:])
	cpu = cpuTime(b) - cpu
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/envelope")
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	d, err := cputime.Self()
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkUnshown: what a session pays at Join to read a room's
// messages stored and not shown yet, by how many there are (a person who
// only sends from scripts keeps all that arrives meanwhile for listen).
// One op reads them all; cpu-ms/read is the process's CPU a read.
//
//	go test -run '^$' -bench Unshown -benchtime 5x ./store
func BenchmarkUnshown(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprintf("unshown=%d", n), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "parley.db"), Search())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			keys := []identity.PrivateKey{key(b, 1), key(b, 2), key(b, 3)}
			recs := make([]Record, n)
			for i := range recs {
				recs[i] = record(b, keys[i%len(keys)], "bench", uint64(i/len(keys)+1), uint64(i+1), t0.Add(time.Duration(i)*time.Second),
					fmt.Sprintf("message %d, kept for listen", i))
			}
			for len(recs) > 0 {
				m := min(500, len(recs))
				if _, err := s.Put(ctx, recs[:m]...); err != nil {
					b.Fatal(err)
				}
				recs = recs[m:]
			}
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				got, err := s.Unshown(ctx, "bench")
				if err != nil || len(got) != n {
					b.Fatalf("Unshown: %d records, %v; want %d", len(got), err, n)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/read")
		})
	}
}

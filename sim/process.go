package sim

import (
	"fmt"
	"runtime/metrics"
	"time"

	"github.com/parleychat/parley/internal/cputime"
)

// Every node of a simulation runs in one process: one heap, one collector
// and the machine's cores for all of them. A collection marks every
// node's memory at once and slows every node at once, which a person's
// node, in a process of its own with a heap of a few megabytes, never
// sees; and at 1,000 nodes the two cores of the machine the figures in
// docs/performance.md came from are busy. So a run reports what its
// process spent during the traffic beside the latencies (the kernel's
// count of its CPU time, the runtime's of its collector): how much of the
// tail is the process's is then read from the same run, on any machine.

// procSample is the process's running totals at one moment.
type procSample struct {
	at     time.Time
	cpu    time.Duration // user and system time, from the kernel
	gc     float64       // the collector's processor time, s
	cycles uint64        // collections completed
	live   uint64        // heap bytes marked live by the last collection
}

// The runtime adds a collection's processor time to its total when the
// collection ends, so the difference of two samples is the time of the
// collections completed between them.
var procMetrics = []string{
	"/cpu/classes/gc/total:cpu-seconds",
	"/gc/cycles/total:gc-cycles",
	"/gc/heap/live:bytes",
}

func sampleProc() (procSample, error) {
	cpu, err := cputime.Self()
	if err != nil {
		return procSample{}, fmt.Errorf("sim: %w", err)
	}
	ms := make([]metrics.Sample, len(procMetrics))
	for i, name := range procMetrics {
		ms[i].Name = name
	}
	metrics.Read(ms)
	s := procSample{
		at:  time.Now(),
		cpu: cpu,
	}
	// A metric this Go does not have reads as KindBad, and stays zero.
	if v := ms[0].Value; v.Kind() == metrics.KindFloat64 {
		s.gc = v.Float64()
	}
	if v := ms[1].Value; v.Kind() == metrics.KindUint64 {
		s.cycles = v.Uint64()
	}
	if v := ms[2].Value; v.Kind() == metrics.KindUint64 {
		s.live = v.Uint64()
	}
	return s, nil
}

// Process is what the process spent between two samples.
type Process struct {
	// Cores: user and system CPU time over wall time.
	Cores float64
	// GCShare: the collector's part of that CPU time (the runtime's
	// estimate, its marking by goroutines made to assist included).
	GCShare float64
	// Collections completed, and the heap marked live by the last one.
	Collections int
	LiveHeapMB  float64
}

// between returns what the process spent from a to b.
func between(a, b procSample) Process {
	var p Process
	cpu := (b.cpu - a.cpu).Seconds()
	if wall := b.at.Sub(a.at).Seconds(); wall > 0 {
		p.Cores = cpu / wall
	}
	if cpu > 0 {
		p.GCShare = (b.gc - a.gc) / cpu
	}
	p.Collections = int(b.cycles - a.cycles)
	p.LiveHeapMB = float64(b.live) / 1e6
	return p
}

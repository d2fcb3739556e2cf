package sim

import (
	"runtime"
	"testing"
	"time"
)

func TestBetween(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	a := procSample{at: t0, cpu: time.Second, gc: 0.5, cycles: 3, live: 100e6}
	b := procSample{at: t0.Add(2 * time.Second), cpu: 4 * time.Second, gc: 0.8, cycles: 5, live: 800e6}
	p := between(a, b)
	const eps = 1e-9
	if d := p.Cores - 1.5; d > eps || d < -eps {
		t.Errorf("cores %v, want 1.5 (3 s of CPU in 2 s)", p.Cores)
	}
	if d := p.GCShare - 0.1; d > eps || d < -eps {
		t.Errorf("collector's share %v, want 0.1 (0.3 s of 3)", p.GCShare)
	}
	if p.Collections != 2 || p.LiveHeapMB != 800 {
		t.Errorf("%d collections, %v MB live: want 2 and 800 (the later sample's)", p.Collections, p.LiveHeapMB)
	}
	if z := between(a, a); z.Cores != 0 || z.GCShare != 0 || z.Collections != 0 {
		t.Errorf("no time between the samples: %+v, want zeros", z)
	}
}

// sink keeps the allocations of TestSampleProc from being optimized away.
var sink []byte

func TestSampleProc(t *testing.T) {
	a, err := sampleProc()
	if err != nil {
		t.Fatal(err)
	}
	// Work until the kernel has counted some CPU time: its clock has a
	// resolution, and the machine may be busy.
	deadline := time.Now().Add(30 * time.Second)
	var b procSample
	for {
		for range 1000 {
			sink = make([]byte, 4096)
		}
		runtime.GC()
		if b, err = sampleProc(); err != nil {
			t.Fatal(err)
		}
		if b.cpu > a.cpu || time.Now().After(deadline) {
			break
		}
	}
	if b.cpu <= a.cpu {
		t.Fatalf("CPU time %v then %v after 30 s of work", a.cpu, b.cpu)
	}
	if b.cycles <= a.cycles || b.gc <= a.gc {
		t.Errorf("collections %d then %d, their CPU %v then %v s: want both to grow after runtime.GC", a.cycles, b.cycles, a.gc, b.gc)
	}
	if b.live == 0 {
		t.Error("no live heap after a collection")
	}
}

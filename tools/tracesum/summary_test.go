package main

import (
	"bytes"
	"runtime"
	"runtime/trace"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	xtrace "golang.org/x/exp/trace"
)

// spin runs for about d, then returns.
func spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}

// holdAndWait takes mu after another goroutine holds it for a while: a
// block on sync that the summary must show at this function's stack.
func holdAndWait(mu *sync.Mutex, held chan struct{}) {
	<-held
	mu.Lock()
	mu.Unlock() // the wait was the point
}

// TestSummarise traces goroutines of two known kinds, one that runs and
// one that blocks on a mutex, and finds both in the summary.
func TestSummarise(t *testing.T) {
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Skipf("tracing is on already: %v", err)
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		held = make(chan struct{})
	)
	wg.Add(2)
	go func() { defer wg.Done(); spinner() }()
	mu.Lock()
	go func() { defer wg.Done(); holdAndWait(&mu, held) }()
	close(held)
	// Unlock only once holdAndWait is parked on the mutex.
	for deadline := time.Now().Add(time.Minute); !parkedOnMutex(); {
		if time.Now().After(deadline) {
			t.Fatal("holdAndWait did not wait for the mutex within a minute")
		}
		time.Sleep(time.Millisecond)
	}
	mu.Unlock()
	wg.Wait()
	trace.Stop()

	s, err := summarise(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var spun *kind
	for name, k := range s.kinds {
		if strings.HasSuffix(name, "TestSummarise.func1") {
			spun = k
		}
	}
	if spun == nil || spun.runs == 0 || spun.running <= 0 {
		t.Errorf("the spinning goroutine: %+v", spun)
	}
	var waited bool
	for stack, b := range s.blocked {
		if strings.Contains(stack, "holdAndWait") && b.count > 0 && b.total > 0 {
			waited = true
		}
	}
	if !waited {
		t.Errorf("no block on the mutex in holdAndWait: %v", s.blocked)
	}
	var out bytes.Buffer
	s.print(&out, 5)
	if !strings.Contains(out.String(), "runnable ms") {
		t.Errorf("print:\n%s", out.String())
	}
}

func spinner() { spin(20 * time.Millisecond) }

// parkedOnMutex reports whether a goroutine in holdAndWait is parked on a
// mutex, by the goroutines' stacks.
func parkedOnMutex() bool {
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "[sync.Mutex.Lock") && strings.Contains(g, "holdAndWait") {
			return true
		}
	}
	return false
}

// TestTimelineSpread cuts a stretch that crosses two window edges into
// its three parts.
func TestTimelineSpread(t *testing.T) {
	tl := timeline{start: 1_000, started: true}
	ms := xtrace.Time(1_000_000)
	tl.goroutine("k", xtrace.GoRunning, xtrace.GoWaiting, tl.start+15*ms, tl.start+45*ms)
	tl.goroutine("k", xtrace.GoSyscall, xtrace.GoRunning, tl.start+50*ms, tl.start+52*ms)
	var got []int64
	for _, w := range tl.windows {
		got = append(got, w.running["k"])
	}
	if want := []int64{5_000_000, 20_000_000, 5_000_000}; !slices.Equal(got, want) {
		t.Errorf("running by window = %v, want %v", got, want)
	}
	if d := tl.windows[2].syscall["k"]; d != 2_000_000 {
		t.Errorf("system calls in window 2 = %d, want 2000000", d)
	}
}

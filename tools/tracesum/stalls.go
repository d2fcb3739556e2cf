package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/exp/trace"
)

// A stall is a stretch of the trace in which goroutines waited long to
// run. The summary's totals say how long they waited in all; the windows
// say when, and what ran instead and what the runtime was doing then
// (a collection's marking, a stop of the world), which is what a tail
// latency is made of.

// windowSize is the length of one window of the timeline.
const windowSize = 20_000_000 // ns

// window is what happened in one stretch of windowSize.
type window struct {
	waited  int64            // runnable time of the goroutines that got to run in it
	running map[string]int64 // running time by kind of goroutine
	gc, stw int64            // time in a collection and in stops of the world
	syscall map[string]int64 // time in system calls by kind of goroutine
}

// timeline is the trace cut into windows from its first event on.
type timeline struct {
	start   trace.Time
	started bool
	windows []*window
}

func (tl *timeline) at(t trace.Time) *window {
	i := int((t - tl.start) / windowSize)
	for len(tl.windows) <= i {
		tl.windows = append(tl.windows, &window{running: map[string]int64{}, syscall: map[string]int64{}})
	}
	return tl.windows[i]
}

// spread adds the stretch [from, to) to the windows it covers, through add.
func (tl *timeline) spread(from, to trace.Time, add func(w *window, d int64)) {
	for from < to {
		end := tl.start + (from-tl.start)/windowSize*windowSize + windowSize
		end = min(end, to)
		add(tl.at(from), int64(end-from))
		from = end
	}
}

// event takes the timeline's part of one event: goroutine changes are
// given by step, ranges (collections, stops) here.
func (tl *timeline) event(ev trace.Event, open map[string]trace.Time) {
	if !tl.started {
		tl.start, tl.started = ev.Time(), true
	}
	switch ev.Kind() {
	case trace.EventRangeBegin:
		open[ev.Range().Name] = ev.Time()
	case trace.EventRangeEnd:
		name := ev.Range().Name
		begin, ok := open[name]
		if !ok {
			return
		}
		delete(open, name)
		switch {
		case strings.HasPrefix(name, "stop-the-world"):
			tl.spread(begin, ev.Time(), func(w *window, d int64) { w.stw += d })
		case name == "GC concurrent mark phase":
			tl.spread(begin, ev.Time(), func(w *window, d int64) { w.gc += d })
		}
	}
}

// goroutine notes a goroutine of kind that ran, or waited to run, from
// since to t.
func (tl *timeline) goroutine(kind string, from trace.GoState, to trace.GoState, since, t trace.Time) {
	switch {
	case from == trace.GoRunning:
		tl.spread(since, t, func(w *window, d int64) { w.running[kind] += d })
	case from == trace.GoSyscall:
		tl.spread(since, t, func(w *window, d int64) { w.syscall[kind] += d })
	case from == trace.GoRunnable && to == trace.GoRunning:
		tl.at(t).waited += int64(t - since)
	}
}

// print writes the top windows by waiting, each with what ran most.
func (tl *timeline) print(w io.Writer, top int) {
	idx := make([]int, len(tl.windows))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(tl.windows[b].waited, tl.windows[a].waited) })
	var waited int64
	for _, win := range tl.windows {
		waited += win.waited
	}
	fmt.Fprintf(w, "\n%d windows of %d ms; runnable before running, mean a window %.0f ms\n", len(tl.windows), windowSize/1_000_000, ms(waited)/float64(max(len(tl.windows), 1)))
	sys := map[string]int64{}
	for _, win := range tl.windows {
		for k, d := range win.syscall {
			sys[k] += d
		}
	}
	fmt.Fprintf(w, "in system calls, all windows (ms): %s\n", topKinds(sys, 6))
	fmt.Fprintf(w, "%8s %10s %8s %6s %6s  %s | %s\n", "at ms", "waited ms", "ran ms", "gc ms", "stw ms", "ran most (ms)", "in system calls (ms)")
	for _, i := range idx[:min(top, len(idx))] {
		win := tl.windows[i]
		var ran int64
		for _, d := range win.running {
			ran += d
		}
		fmt.Fprintf(w, "%8d %10.0f %8.1f %6.1f %6.1f  %s | %s\n", i*windowSize/1_000_000, ms(win.waited), ms(ran), ms(win.gc), ms(win.stw), topKinds(win.running, 4), topKinds(win.syscall, 2))
	}
}

// topKinds names the n kinds that ran longest, with their times.
func topKinds(running map[string]int64, n int) string {
	var parts []string
	for i, k := range keysBy(running, func(d int64) int64 { return d }) {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.1f", short(k), ms(running[k])))
	}
	return strings.Join(parts, ", ")
}

// short is a function's name without its module's path.
func short(fn string) string {
	if i := strings.LastIndex(fn, "/"); i >= 0 {
		return fn[i+1:]
	}
	return fn
}

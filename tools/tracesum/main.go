// Command tracesum sums an execution trace (runtime/trace, go tool trace)
// by kind of goroutine, named by its outermost function: how long the
// goroutines of each kind ran, how long they were runnable but waited for
// a processor, and how often they were scheduled; then the stacks at which
// goroutines blocked longest on a mutex or a semaphore (the runtime's
// "sync" reasons, which include the end of a collection's marking);
// then the 20 ms windows in which goroutines waited longest to run, each
// with what ran in it, what sat in system calls (which hold a processor),
// and how much of it a collection marked or the world was stopped.
//
//	tracesum [-top N] FILE.trace
//
// The mesh benchmark writes such a trace with MESH_BENCH_TRACE
// (docs/performance.md, "Where the goroutines wait"). A module of its own,
// so that the project does not depend on golang.org/x/exp for a diagnosis.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	top := flag.Int("top", 20, "rows of each table")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: tracesum [-top N] FILE.trace")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracesum:", err)
		os.Exit(1)
	}
	defer f.Close()
	s, err := summarise(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracesum:", err)
		os.Exit(1)
	}
	s.print(os.Stdout, *top)
}

// print writes the two tables, the top rows of each.
func (s *summary) print(w io.Writer, top int) {
	fmt.Fprintf(w, "%-70s %6s %9s %10s %12s\n", "goroutines (outermost function)", "n", "runs", "ran ms", "runnable ms")
	for i, k := range s.kindsByRunning() {
		if i == top {
			break
		}
		c := s.kinds[k]
		fmt.Fprintf(w, "%-70s %6d %9d %10.0f %12.0f\n", k, c.goroutines, c.runs, ms(c.running), ms(c.runnable))
	}
	fmt.Fprintf(w, "\n%8s %10s  %s\n", "blocks", "blocked ms", "stack where goroutines blocked on sync (innermost first)")
	for i, k := range s.stacksByBlocked() {
		if i == top {
			break
		}
		b := s.blocked[k]
		fmt.Fprintf(w, "%8d %10.0f  %s\n", b.count, ms(b.total), k)
	}
	s.time.print(w, top)
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/exp/trace"
)

// kind is what the goroutines of one kind did, in nanoseconds.
type kind struct {
	goroutines int
	runs       int
	running    int64
	runnable   int64
}

// blocks is the time goroutines spent blocked at one stack.
type blocks struct {
	count int
	total int64
}

// summary is a trace summed by kind of goroutine and by blocking stack.
type summary struct {
	kinds   map[string]*kind
	blocked map[string]*blocks
	time    timeline
}

// goroutine is what summarise follows of one goroutine.
type goroutine struct {
	kind  string // "" until a stack names it
	since trace.Time
	stack string // where it blocked on sync, if it did
}

// stackDepth is how many frames of a blocking stack name it.
const stackDepth = 7

// summarise reads a whole trace.
func summarise(r io.Reader) (*summary, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	s := &summary{kinds: map[string]*kind{}, blocked: map[string]*blocks{}}
	gs := map[trace.GoID]*goroutine{}
	open := map[string]trace.Time{} // ranges begun and not yet ended
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read trace: %w", err)
		}
		s.time.event(ev, open)
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		g := gs[id]
		if g == nil {
			g = &goroutine{}
			gs[id] = g
		}
		s.step(g, st, ev.Time())
	}
}

// step accounts for one state change of goroutine g at t.
func (s *summary) step(g *goroutine, st trace.StateTransition, t trace.Time) {
	if g.kind == "" {
		// The goroutine's own stack at any change names it by its
		// outermost frame. (The event's stack would be the waker's.)
		if name := outermost(st.Stack); name != "" {
			g.kind = name
			s.kind(name).goroutines++
		}
	}
	from, to := st.Goroutine()
	k := s.kind(cmp.Or(g.kind, "?"))
	d := int64(t - g.since)
	if g.since != 0 {
		s.time.goroutine(cmp.Or(g.kind, "?"), from, to, g.since, t)
	}
	switch {
	case from == trace.GoRunning:
		k.running += d
	case from == trace.GoRunnable && to == trace.GoRunning:
		k.runnable += d
	case from == trace.GoWaiting && g.stack != "":
		b := s.blocked[g.stack]
		if b == nil {
			b = &blocks{}
			s.blocked[g.stack] = b
		}
		b.count++
		b.total += d
	}
	if to == trace.GoRunning {
		k.runs++
	}
	g.stack = ""
	if to == trace.GoWaiting && strings.HasPrefix(st.Reason, "sync") && !strings.Contains(st.Reason, "Cond") {
		g.stack = frames(st.Stack, stackDepth)
	}
	g.since = t
}

func (s *summary) kind(name string) *kind {
	k := s.kinds[name]
	if k == nil {
		k = &kind{}
		s.kinds[name] = k
	}
	return k
}

// outermost is the function at the bottom of stack, or "".
func outermost(stack trace.Stack) string {
	var last string
	for f := range stack.Frames() {
		last = f.Func
	}
	return last
}

// frames is the innermost n functions of stack, joined.
func frames(stack trace.Stack, n int) string {
	var fs []string
	for f := range stack.Frames() {
		if len(fs) == n {
			break
		}
		fs = append(fs, f.Func)
	}
	return strings.Join(fs, " < ")
}

func (s *summary) kindsByRunning() []string {
	return keysBy(s.kinds, func(k *kind) int64 { return k.running })
}

func (s *summary) stacksByBlocked() []string {
	return keysBy(s.blocked, func(b *blocks) int64 { return b.total })
}

// keysBy returns m's keys, the largest value of by first.
func keysBy[V any](m map[string]V, by func(V) int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(by(m[b]), by(m[a])) })
	return keys
}

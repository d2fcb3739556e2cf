package server

import (
	"context"
	"runtime"
	"sync"
)

// readers run the store reads of subscriptions (history, catching up
// after a lag, the cursor's position) on a few goroutines that live as
// long as the server. A read goes deep into SQLite and grows the stack of
// the goroutine it runs on; a subscription's own goroutine lives as long
// as the subscription, mostly idle, and would keep that stack: about
// 10 KB per idle client (docs/performance.md). The readers keep their
// grown stacks instead, a few of them for the whole relay, so no read
// pays for growing a fresh stack either, as one on a goroutine of its
// own would.
type readers struct {
	jobs chan func() // unbuffered: a job is taken only by an idle reader
	wg   sync.WaitGroup
}

// numReaders is how many store reads of subscriptions run at once: more
// than the cores, since a read may wait for the disk.
func numReaders() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

func startReaders(n int) *readers {
	r := &readers{jobs: make(chan func())}
	for range n {
		r.wg.Go(func() {
			for f := range r.jobs {
				f()
			}
		})
	}
	return r
}

// stop ends the readers once every job given them is done. Nothing may
// call do after it.
func (r *readers) stop() {
	close(r.jobs)
	r.wg.Wait()
}

// do runs f on a reader and waits for it. If ctx ends before a reader
// is free, f does not run and do returns ctx's error. f should stop
// early when ctx ends (it is a store call given ctx), since do waits.
func (r *readers) do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	job := func() {
		defer close(done)
		f()
	}
	select {
	case r.jobs <- job:
	case <-ctx.Done():
		return ctx.Err()
	}
	<-done
	return nil
}

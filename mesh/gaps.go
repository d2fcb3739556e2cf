package mesh

import "time"

// Gaps under load
//
// An envelope whose predecessor in its sender's hash chain is neither
// accepted nor stored when the writer commits it has, most of the time,
// only overtaken it: gossip brings each message by the fastest of several
// paths, and under load one path can be seconds slower than another. The
// writer used to ask for a gap sync at once, which cost two store look-ups
// and a sync with a peer for each such envelope: at 60 peers under load,
// 7 to 8% of the CPU, spent when CPU was scarcest. It now looks again after
// gapWait, and asks for sync only if the predecessor is still missing
// then (checkGap).

// gapWait is how long the writer waits for a missing predecessor before
// it asks for sync.
const gapWait = 2 * time.Second

// gapWatch holds the committed envelopes whose predecessor was missing,
// oldest first, until gapWait has passed for them. Only the writer uses
// it.
type gapWatch struct {
	queue []suspect
	timer *time.Timer // armed for the oldest while the queue is not empty
}

type suspect struct {
	it  inbound
	due time.Time
}

// add holds it until gapWait from now. When the watch holds gapMemory
// envelopes already, it returns the oldest, whose time has not come: the
// caller checks it at once.
func (g *gapWatch) add(it inbound, now time.Time) (early []inbound) {
	if len(g.queue) >= gapMemory {
		early = append(early, g.queue[0].it)
		g.queue = g.queue[1:]
	}
	g.queue = append(g.queue, suspect{it: it, due: now.Add(gapWait)})
	g.arm(now)
	return early
}

// due is the channel that fires when the oldest envelope's time has come,
// or nil while the watch is empty.
func (g *gapWatch) due() <-chan time.Time {
	if len(g.queue) == 0 || g.timer == nil {
		return nil
	}
	return g.timer.C
}

// take removes and returns the envelopes whose time has come.
func (g *gapWatch) take(now time.Time) []inbound {
	var out []inbound
	for len(g.queue) > 0 && !g.queue[0].due.After(now) {
		out = append(out, g.queue[0].it)
		g.queue[0] = suspect{}
		g.queue = g.queue[1:]
	}
	g.arm(now)
	return out
}

// arm sets the timer for the oldest envelope held.
func (g *gapWatch) arm(now time.Time) {
	if len(g.queue) == 0 {
		return
	}
	wait := g.queue[0].due.Sub(now)
	if g.timer == nil {
		g.timer = time.NewTimer(wait)
		return
	}
	g.timer.Reset(wait)
}

// stop stops the timer.
func (g *gapWatch) stop() {
	if g.timer != nil {
		g.timer.Stop()
	}
}

package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// subscribeStream serves a subscription: a room's envelopes after the
// cursor, then Live, then each new one as it is committed: no gap and no
// duplicate at the switch, because the subscription is registered before
// history is read and every live record at or below the last position
// sent is skipped. It ends the stream itself, now if the subscription is
// refused, else when the subscription ends, perhaps long after it
// returns (subStream).
func (s *Server) subscribeStream(ctx context.Context, c *client, str transport.Stream, fw *wire.Writer, body []byte) {
	m, priv, err := s.admitSubscription(ctx, c, body)
	if err != nil {
		s.endRequest(ctx, c, str, fw, err)
		return
	}
	if s.bridge != nil {
		s.bridge.Join(m.Room)
	}
	ss := &subStream{s: s, c: c, str: str, parent: ctx, fw: fw, room: m.Room, cursorID: m.Cursor, id: c.id, priv: priv, running: true}
	// The client ends a subscription by stopping to read (STOP_SENDING),
	// which ends the stream's context, as a closed connection does. No
	// goroutine waits on the stream's read side.
	ss.ctx, ss.cancel = context.WithCancel(ctx)
	ss.stopWatch = context.AfterFunc(str.Context(), ss.cancel)
	ss.stopWake = context.AfterFunc(ss.ctx, ss.kick)
	ss.sub = s.hub.subscribe(m.Room, ss.kick)
	s.metrics.subscriptions.Inc()
	c.streams.Add(1) // until ss.finish: the connection waits for it
	ss.work()
}

// admitSubscription parses a Subscribe frame and checks that the client
// may read the room; priv is a private room's member list.
func (s *Server) admitSubscription(ctx context.Context, c *client, body []byte) (*wire.Subscribe, *privateRoom, error) {
	m, err := wire.ParseSubscribe(body)
	if err != nil {
		return nil, nil, err
	}
	if d := s.policy.Read(c.id, m.Room); !d.Allow {
		return nil, nil, d.Err()
	}
	// A private room's envelopes are for its current members only: not
	// even whether a cursor is one of its envelopes is told to others.
	var priv *privateRoom
	if protocol.IsPrivateRoom(m.Room) {
		if priv, err = s.member(ctx, c.id, m.Room); err != nil {
			return nil, nil, err
		}
	}
	return m, priv, nil
}

// subStream is one subscription's stream: what it has sent, and the
// steps of sending more.
//
// No goroutine waits for an idle subscription. Each event (a batch from
// the hub, a commit, a lag, the stream's end) calls kick, which starts
// a goroutine to work through what is due, unless one is at it; the
// goroutine ends when nothing more is (work). The stream's handler is the
// first such goroutine: it sends the history and Live.
type subStream struct {
	s      *Server
	c      *client
	str    transport.Stream
	parent context.Context // the relay's: ends at shutdown
	ctx    context.Context // ends with the stream, or the relay
	cancel context.CancelFunc
	// stopWatch and stopWake stop the AfterFuncs that end ctx with the
	// stream and kick at ctx's end.
	stopWatch, stopWake func() bool
	fw                  *wire.Writer
	sub                 *subscription
	room                string
	cursorID            protocol.ID // the envelope the client resumes after
	// id is the connection's identity; priv, in a private room, the
	// room's member list, which id must stay on for the stream to go on.
	id   identity.PublicKey
	priv *privateRoom

	// Under mu: running while a goroutine works for the subscription,
	// which then owns everything below; woken if an event came since
	// that goroutine last looked.
	mu      sync.Mutex
	running bool
	woken   bool

	begun bool
	// pos is the last position sent.
	pos int64
	// sent are the live envelopes sent before their commit; a Committed
	// frame confirms them once the disk has them.
	sent []sentRec
}

// kick tells the subscription that something happened: a goroutine works
// on it, unless one is already at it (it looks again) or it has ended
// (running stays true).
func (ss *subStream) kick() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.running {
		ss.woken = true
		return
	}
	ss.running = true
	go ss.work()
}

// work does what is due, again while events came meanwhile, then lets
// the goroutine go; or ends the subscription.
func (ss *subStream) work() {
	for {
		if done, err := ss.step(); done {
			ss.finish(err)
			return
		}
		ss.mu.Lock()
		if !ss.woken {
			ss.running = false
			ss.mu.Unlock()
			return
		}
		ss.woken = false
		ss.mu.Unlock()
	}
}

// step does what is due: at first the history and Live, then what the
// hub brought. done: the subscription ends, with err.
func (ss *subStream) step() (done bool, err error) {
	if ss.ctx.Err() != nil {
		return true, nil
	}
	if !ss.begun {
		ss.begun = true
		if err := ss.begin(); err != nil {
			return true, err
		}
	}
	if ss.sub.lagged.Swap(false) {
		if err := ss.onLagged(); err != nil {
			return true, err
		}
	}
	if ss.sub.commit.Swap(false) {
		if err := ss.onCommit(); err != nil {
			return true, err
		}
	}
	if ss.sub.queue.len() > 0 {
		if err := ss.onBatches(); err != nil {
			return true, err
		}
	}
	return false, nil
}

// finish ends the subscription and its stream.
func (ss *subStream) finish(err error) {
	ss.stopWatch()
	ss.stopWake()
	ss.cancel()
	ss.s.hub.unsubscribe(ss.sub)
	ss.s.metrics.subscriptions.Dec()
	ss.s.endRequest(ss.parent, ss.c, ss.str, ss.fw, err)
	ss.c.streams.Done()
}

type sentRec struct {
	pos int64
	id  protocol.ID
}

// cursor returns the position of the envelope the client resumes after.
func (ss *subStream) cursor(id protocol.ID) (int64, error) {
	var (
		room string
		pos  int64
		err  error
	)
	if rerr := ss.s.readers.do(ss.ctx, func() { room, pos, err = ss.s.st.Position(ss.ctx, id) }); rerr != nil {
		return 0, rerr
	}
	if errors.Is(err, store.ErrNotFound) || (err == nil && room != ss.room) {
		return 0, &wire.RelayError{Code: wire.CodeUnknownCursor, Message: fmt.Sprintf("no envelope %s in room %s", id, ss.room)}
	}
	return pos, err
}

// begin sends the history after the cursor, then Live.
func (ss *subStream) begin() error {
	if ss.cursorID != (protocol.ID{}) {
		pos, err := ss.cursor(ss.cursorID)
		if err != nil {
			return err
		}
		ss.pos = pos
	}
	if err := ss.catchUp(); err != nil {
		return err
	}
	if err := ss.fw.Raw(wire.FrameLive, nil); err != nil {
		return err
	}
	return ss.flush()
}

// onBatches sends the batches queued by the hub, then flushes.
func (ss *subStream) onBatches() error {
	if err := ss.liveQueued(func() bool { return true }); err != nil {
		return err
	}
	return ss.flushIdle()
}

// liveQueued sends the batches queued by the hub while more() holds.
func (ss *subStream) liveQueued(more func() bool) error {
	for more() {
		batch, ok := ss.sub.queue.take()
		if !ok {
			return nil
		}
		if err := ss.live(batch); err != nil {
			return err
		}
	}
	return nil
}

// onCommit confirms what a commit of the room put on disk.
func (ss *subStream) onCommit() error {
	if err := ss.failed(); err != nil {
		return err
	}
	if ss.behind() {
		if err := ss.catchUp(); err != nil {
			return err
		}
	}
	// The committed batch may still be queued: send it first, so that
	// the Committed frame covers it.
	if err := ss.liveQueued(func() bool { return !ss.sub.lagging.Load() }); err != nil {
		return err
	}
	if err := ss.confirm(ss.sub.upTo.Load()); err != nil {
		return err
	}
	return ss.flushIdle()
}

// onLagged: the queue holds what came before the first dropped batch.
// Send it, take new batches again, and read the store for what was
// dropped (now, and at each commit until done).
func (ss *subStream) onLagged() error {
	if err := ss.liveQueued(func() bool { return true }); err != nil {
		return err
	}
	ss.sub.lagging.Store(false)
	return ss.catchUp()
}

// write sends the records past the last position sent; live ones wait
// for their Committed frame. In a private room, an identity removed from
// the member list gets nothing more: the stream ends.
func (ss *subStream) write(recs []store.Record, live bool) error {
	if ss.priv != nil && len(recs) > 0 && !ss.priv.log.IsMember(ss.id) {
		return notMember(ss.id, ss.room)
	}
	for _, r := range recs {
		if r.Pos <= ss.pos {
			continue
		}
		if err := ss.fw.Raw(wire.FrameEnvelope, r.Raw); err != nil {
			return err
		}
		ss.pos = r.Pos
		if live {
			ss.sent = append(ss.sent, sentRec{r.Pos, r.ID})
		}
	}
	return nil
}

// confirm sends a Committed frame for the last live envelope sent at or
// below upTo, if any.
func (ss *subStream) confirm(upTo int64) error {
	i := -1
	for j, r := range ss.sent {
		if r.pos > upTo {
			break
		}
		i = j
	}
	if i < 0 {
		return nil
	}
	id := ss.sent[i].id
	ss.sent = ss.sent[i+1:]
	return ss.fw.Msg(wire.FrameCommitted, &wire.Committed{ID: id})
}

func (ss *subStream) flush() error {
	return ss.fw.Flush() // a timeout is a RelayError with CodeSlowConsumer (deadlineWriter)
}

// flushIdle flushes when no batch is waiting in the queue.
func (ss *subStream) flushIdle() error {
	if ss.sub.queue.len() > 0 {
		return nil
	}
	return ss.flush()
}

// failed: a commit failed after its envelopes went out, perhaps to this
// subscription. Nothing more goes out, not even a Committed frame for a
// later envelope, which would confirm those.
func (ss *subStream) failed() error {
	if ss.sub.failed.Load() {
		return &wire.RelayError{Code: wire.CodeInternal, Message: "the relay failed to store envelopes it had sent; resume from the last committed one"}
	}
	return nil
}

// catchUp reads the store past the last position sent. What it reads is
// committed, and so is everything sent before it. The reads run on the
// server's readers (reader.go), not on this goroutine, which lives as
// long as the subscription and would keep the stack a read grows.
func (ss *subStream) catchUp() error {
	if err := ss.failed(); err != nil {
		return err
	}
	for {
		var (
			page []store.Record
			err  error
		)
		if rerr := ss.s.readers.do(ss.ctx, func() { page, err = ss.s.st.After(ss.ctx, ss.room, ss.pos, wire.MaxFetchLimit) }); rerr != nil {
			return rerr
		}
		if err != nil {
			return err
		}
		if err := ss.write(page, false); err != nil {
			return err
		}
		if len(page) > 0 {
			ss.sent = ss.sent[:0]
			if err := ss.fw.Msg(wire.FrameCommitted, &wire.Committed{ID: page[len(page)-1].ID}); err != nil {
				return err
			}
		}
		if err := ss.flush(); err != nil {
			return err
		}
		if len(page) < wire.MaxFetchLimit {
			return nil
		}
	}
}

// behind: the hub dropped envelopes this subscription has not sent; the
// store has them once they are committed.
func (ss *subStream) behind() bool { return ss.sub.dropped.Load() > ss.pos }

// live sends a batch from the hub, after what was dropped before it.
// While that is not committed yet (envelopes go live before their
// commit), the batch cannot go first: it is dropped too, and comes from
// the store after them.
func (ss *subStream) live(batch []store.Record) error {
	if err := ss.failed(); err != nil {
		return err
	}
	if ss.behind() {
		if err := ss.catchUp(); err != nil {
			return err
		}
	}
	if ss.behind() {
		ss.sub.drop(batch[len(batch)-1].Pos)
		return nil
	}
	return ss.write(batch, true)
}

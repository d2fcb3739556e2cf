package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// subscribeStream sends a room's envelopes after the cursor, then Live,
// then each new one as it is committed: no gap and no duplicate at the
// switch, because the subscription is registered before history is read
// and every live record at or below the last position sent is skipped.
func (s *Server) subscribeStream(ctx context.Context, c *client, str transport.Stream, fw *wire.Writer, body []byte) error {
	m, err := wire.ParseSubscribe(body)
	if err != nil {
		return err
	}
	if d := s.policy.Read(c.id, m.Room); !d.Allow {
		return d.Err()
	}
	// A private room's envelopes are for its current members only: not
	// even whether a cursor is one of its envelopes is told to others.
	var priv *privateRoom
	if protocol.IsPrivateRoom(m.Room) {
		if priv, err = s.member(ctx, c.id, m.Room); err != nil {
			return err
		}
	}
	if s.bridge != nil {
		s.bridge.Join(m.Room)
	}
	sub := s.hub.subscribe(m.Room)
	defer s.hub.unsubscribe(sub)
	s.metrics.subscriptions.Inc()
	defer s.metrics.subscriptions.Dec()
	// The client ends a subscription by stopping to read (STOP_SENDING),
	// which cancels the stream's context, as a closed connection does. No
	// goroutine waits on the stream's read side: an idle subscription costs
	// one goroutine, this one.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(str.Context(), cancel)
	defer stop()

	ss := &subStream{s: s, ctx: ctx, fw: fw, sub: sub, room: m.Room, id: c.id, priv: priv}
	if m.Cursor != (protocol.ID{}) {
		if ss.pos, err = ss.cursor(m.Cursor); err != nil {
			return err
		}
	}
	return ss.run()
}

// subStream is one subscription's stream: what it has sent, and the
// steps of sending more.
type subStream struct {
	s    *Server
	ctx  context.Context // ends with the stream
	fw   *wire.Writer
	sub  *subscription
	room string
	// id is the connection's identity; priv, in a private room, the
	// room's member list, which id must stay on for the stream to go on.
	id   identity.PublicKey
	priv *privateRoom
	// pos is the last position sent.
	pos int64
	// sent are the live envelopes sent before their commit; a Committed
	// frame confirms them once the disk has them.
	sent []sentRec
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

// run sends the history, then Live, then what the hub brings, until the
// stream or the relay ends.
func (ss *subStream) run() error {
	if err := ss.catchUp(); err != nil {
		return err
	}
	if err := ss.fw.Raw(wire.FrameLive, nil); err != nil {
		return err
	}
	if err := ss.flush(); err != nil {
		return err
	}
	for {
		var err error
		select {
		case batch := <-ss.sub.ch:
			err = ss.onBatch(batch)
		case <-ss.sub.commit:
			err = ss.onCommit()
		case <-ss.sub.lagged:
			err = ss.onLagged()
		case <-ss.ctx.Done():
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// onBatch sends a batch from the hub, and flushes if no other waits.
func (ss *subStream) onBatch(batch []store.Record) error {
	if err := ss.live(batch); err != nil {
		return err
	}
	return ss.flushIdle()
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
	for !ss.sub.lagging.Load() && len(ss.sub.ch) > 0 {
		if err := ss.live(<-ss.sub.ch); err != nil {
			return err
		}
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
	for len(ss.sub.ch) > 0 {
		if err := ss.live(<-ss.sub.ch); err != nil {
			return err
		}
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
	if len(ss.sub.ch) > 0 {
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

package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
)

// Delivery is one envelope of a subscription, or a mark that what it
// delivered is committed.
type Delivery struct {
	Envelope
	// Live is false for history (sent before the relay's Live mark) and
	// true for envelopes that arrived while subscribed.
	Live bool
	// Committed marks, instead of an envelope, that every envelope the
	// subscription delivered up to and including ID is on the relay's
	// disk (Env and Raw are nil). Live envelopes go out before their
	// commit, and one whose commit fails may come again later in another
	// position: a cursor kept for a later session must be a committed ID,
	// never merely the last one delivered.
	Committed bool
}

// Subscription is a room's envelopes from a cursor on, across
// reconnections.
type Subscription struct {
	C <-chan Delivery
	// Live is closed once the relay has sent all history up to the
	// moment of subscribing.
	Live <-chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

// Close ends the subscription.
func (s *Subscription) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// Err returns why the subscription ended, once C is closed: nil after
// Close, the relay's refusal otherwise.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Subscribe delivers a room's envelopes after cursor (the zero ID: all
// the relay keeps), then new ones as they are committed. When the
// connection drops it reconnects and resumes after the last envelope
// delivered, so nothing is missed and nothing comes twice: at once when
// the relay ended the connection, and a keep-alive interval and a few
// seconds after a relay went silent (killed, restarted); it backs off
// from about 100 ms to at most 5 s between attempts, from the start again
// once an attempt got through. On a client made by Start it waits for the
// client to connect, however long. C closes when ctx ends, at Close, or
// at a refusal that retrying cannot help (Err says which).
func (c *Client) Subscribe(ctx context.Context, room string, cursor protocol.ID) (*Subscription, error) {
	if err := protocol.ValidRoom(room); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan Delivery, 256)
	live := make(chan struct{})
	s := &Subscription{C: ch, Live: live, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(ch)
		defer cancel()
		var liveOnce sync.Once
		st := &subState{cursor: cursor, given: map[protocol.ID]bool{}}
		var b backoff
		for {
			cursor, given := st.cursor, len(st.order)
			reached := false
			err := c.subscribeOnce(ctx, room, st, ch, func() {
				reached = true
				liveOnce.Do(func() { close(live) })
			})
			if reached || st.cursor != cursor || len(st.order) != given {
				b.reset() // it got somewhere: back off from the start again
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil && !retryable(err) && !errors.Is(err, &wire.RelayError{Code: wire.CodeSlowConsumer}) &&
				!errors.Is(err, &wire.RelayError{Code: wire.CodeInternal}) {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			c.log.Debug("subscription resumes", "room", room, "err", err)
			select {
			case <-time.After(b.wait()):
			case <-ctx.Done():
				return
			case <-c.done:
				return
			}
		}
	}()
	return s, nil
}

// subState is where a subscription stands across connections: the last
// envelope the relay confirmed as committed (the cursor to resume from),
// and the envelopes after it that were delivered already, in order, so
// that a resumed subscription does not deliver them again.
type subState struct {
	cursor protocol.ID
	given  map[protocol.ID]bool
	order  []protocol.ID
}

// committed moves the cursor to id and forgets what it covers.
func (s *subState) committed(id protocol.ID) {
	s.cursor = id
	for i, g := range s.order {
		if g == id {
			for _, d := range s.order[:i+1] {
				delete(s.given, d)
			}
			s.order = s.order[i+1:]
			return
		}
	}
}

func (c *Client) subscribeOnce(ctx context.Context, room string, st *subState, out chan<- Delivery, isLive func()) error {
	body, err := (&wire.Subscribe{Room: room, Cursor: st.cursor}).MarshalBinary()
	if err != nil {
		return err
	}
	conn, err := c.connectWait(ctx)
	if err != nil {
		return err
	}
	str, err := conn.OpenStream(ctx)
	if err != nil {
		return wireError(err)
	}
	defer str.CancelRead(0)
	stop := context.AfterFunc(ctx, func() { str.CancelRead(0); str.CancelWrite(0) })
	defer stop()
	// The write side stays open: closing it ends the subscription.
	if _, err := str.Write(wire.AppendFrame(nil, wire.FrameSubscribe, body)); err != nil {
		return wireError(err)
	}
	defer str.CancelWrite(0)
	fr := wire.NewReaderSize(str, wire.MaxFrameBody, subBuffer)
	live := false
	for {
		t, b, err := readFrame(fr)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		switch t {
		case wire.FrameEnvelope:
			// This and the envelopes already here after it, checked
			// together.
			raws := [][]byte{bytes.Clone(b)}
			for len(raws) < 64 {
				if t, ok := fr.BufferedType(); !ok || t != wire.FrameEnvelope {
					break
				}
				_, b, err := readFrame(fr)
				if err != nil {
					return err
				}
				raws = append(raws, bytes.Clone(b))
			}
			es, perr := parseEnvelopes(raws)
			for _, e := range es {
				if st.given[e.ID] {
					continue // delivered before the connection was lost
				}
				select {
				case out <- Delivery{Envelope: e, Live: live}:
					st.given[e.ID] = true
					st.order = append(st.order, e.ID)
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if perr != nil {
				return perr
			}
		case wire.FrameCommitted:
			m, err := wire.ParseCommitted(b)
			if err != nil {
				return err
			}
			st.committed(m.ID)
			select {
			case out <- Delivery{Envelope: Envelope{ID: m.ID}, Live: live, Committed: true}:
			case <-ctx.Done():
				return ctx.Err()
			}
		case wire.FrameLive:
			live = true
			isLive()
		default:
			return fmt.Errorf("relay: unexpected %s frame on a subscription", t)
		}
	}
}

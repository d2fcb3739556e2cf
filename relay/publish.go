package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
)

// Publish sends an envelope and returns the relay's acknowledgement, which
// it sends only once the envelope is committed to disk. A refusal is a
// *wire.RelayError. A lost connection is retried, within ctx, on a new
// one.
func (c *Client) Publish(ctx context.Context, raw []byte) (*wire.Ack, error) {
	id := protocol.IDOf(raw)
	var res pubResult
	err := c.retry(ctx, "publish", func() error {
		if err := c.witness.Err(); err != nil {
			return err // final: the relay's log does not check out
		}
		res = c.publishOnce(ctx, id, raw)
		return res.err
	})
	if err != nil {
		return nil, fmt.Errorf("relay: publish %s: %w", id, err)
	}
	ack := res.ack
	if err := res.receipt; err != nil {
		return ack, fmt.Errorf("relay: publish %s: %w", id, err)
	}
	return ack, nil
}

func (c *Client) publishOnce(ctx context.Context, id protocol.ID, raw []byte) pubResult {
	ps, err := c.publisher(ctx)
	if err != nil {
		return pubResult{err: err}
	}
	ch := ps.wait(id, raw)
	if err := ps.send(raw); err != nil {
		ps.fail(err)
	}
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		ps.forget(id, ch)
		return pubResult{err: ctx.Err()}
	}
}

// publisher returns the connection's publish stream, opening it if need be.
func (c *Client) publisher(ctx context.Context) (*pubStream, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	for {
		c.mu.Lock()
		switch {
		case c.pub != nil && c.conn == conn && !c.pub.dead():
			ps := c.pub
			c.mu.Unlock()
			return ps, nil
		case c.opening != nil:
			// Another publish opens the stream: wait for it, not for
			// mu across the opening.
			wait := c.opening
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		c.opening = make(chan struct{})
		c.mu.Unlock()
		ps, err := c.openPublisher(ctx, conn)
		c.mu.Lock()
		close(c.opening)
		c.opening = nil
		if err == nil && c.conn == conn {
			c.pub = ps
		}
		c.mu.Unlock()
		return ps, err
	}
}

// openPublisher opens the publish stream on conn and starts its reader.
func (c *Client) openPublisher(ctx context.Context, conn transport.Conn) (*pubStream, error) {
	str, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("relay: open stream: %w", wireError(err))
	}
	ps := &pubStream{str: str, fw: wire.NewWriter(str), waiters: map[protocol.ID][]waiter{}, gone: make(chan struct{}),
		check: c.checkAck, witness: c.witness}
	go ps.read()
	return ps, nil
}

type pubResult struct {
	ack     *wire.Ack
	err     error // the publish failed: refused, or the stream broke
	receipt error // acknowledged, but its audit receipt did not check out
}

// A waiter is a publish waiting for its answer.
type waiter struct {
	ch  chan pubResult
	raw []byte
}

// pubStream is the one stream a client publishes on; answers come back
// in order and are matched to waiters by envelope ID.
type pubStream struct {
	str transport.Stream
	wmu sync.Mutex
	fw  *wire.Writer

	mu      sync.Mutex
	waiters map[protocol.ID][]waiter
	err     error
	gone    chan struct{}

	// check checks an acknowledgement's receipt against the publish. The
	// reader calls it, in the order the answers come: no lock is
	// contended by hundreds of pipelined publishes.
	check   func(ack *wire.Ack, raw []byte) error
	witness *audit.Witness // the one funnel of what read finds wrong in receipts
}

func (ps *pubStream) dead() bool {
	select {
	case <-ps.gone:
		return true
	default:
		return false
	}
}

func (ps *pubStream) wait(id protocol.ID, raw []byte) chan pubResult {
	ch := make(chan pubResult, 1)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.err != nil {
		ch <- pubResult{err: ps.err}
		return ch
	}
	ps.waiters[id] = append(ps.waiters[id], waiter{ch, raw})
	return ch
}

func (ps *pubStream) forget(id protocol.ID, ch chan pubResult) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	w := ps.waiters[id]
	for i, c := range w {
		if c.ch == ch {
			ps.waiters[id] = append(w[:i], w[i+1:]...)
			break
		}
	}
	if len(ps.waiters[id]) == 0 {
		delete(ps.waiters, id)
	}
}

func (ps *pubStream) send(raw []byte) error {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	if err := ps.fw.Raw(wire.FramePublish, raw); err != nil {
		return wireError(err)
	}
	return wireError(ps.fw.Flush())
}

// oldest takes the oldest waiter for id.
func (ps *pubStream) oldest(id protocol.ID) (waiter, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	w := ps.waiters[id]
	if len(w) == 0 {
		return waiter{}, false
	}
	if len(w) == 1 {
		delete(ps.waiters, id)
	} else {
		ps.waiters[id] = w[1:]
	}
	return w[0], true
}

// answer hands r to the oldest waiter for id.
func (ps *pubStream) answer(id protocol.ID, r pubResult) {
	if w, ok := ps.oldest(id); ok {
		w.ch <- r
	}
}

// acknowledged checks an acknowledgement's receipt and hands both to the
// oldest waiter for its ID.
func (ps *pubStream) acknowledged(a *wire.Ack) {
	if w, ok := ps.oldest(a.ID); ok {
		w.ch <- pubResult{ack: a, receipt: ps.check(a, w.raw)}
	}
}

// fail ends the stream: every waiter gets err.
func (ps *pubStream) fail(err error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.err != nil {
		return
	}
	ps.err = err
	for id, w := range ps.waiters {
		for _, c := range w {
			c.ch <- pubResult{err: err}
		}
		delete(ps.waiters, id)
	}
	close(ps.gone)
	ps.str.CancelRead(0)
	ps.str.CancelWrite(0)
}

func (ps *pubStream) read() {
	fr := wire.NewReader(ps.str, wire.MaxFrameBody)
	var (
		lastCheckpoint []byte     // receipts send it only when it changes
		lastProof      [][32]byte // and only the hashes not ending the previous proof
	)
	for {
		t, body, err := readFrame(fr)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			ps.fail(err)
			return
		}
		switch t {
		case wire.FrameAck:
			a, err := wire.ParseAck(body)
			if err != nil {
				ps.fail(err)
				return
			}
			if r := a.Receipt; r != nil {
				if r.Checkpoint == nil {
					if lastCheckpoint == nil {
						ps.fail(ps.witness.Fail(errors.New("a receipt that names no checkpoint")))
						return
					}
					r.Checkpoint = lastCheckpoint
				}
				lastCheckpoint = r.Checkpoint
				if int(r.Shared) > len(lastProof) {
					ps.fail(ps.witness.Fail(fmt.Errorf("a receipt that shares %d hashes with a proof of %d", r.Shared, len(lastProof))))
					return
				}
				if r.Shared > 0 {
					r.Proof = append(r.Proof, lastProof[len(lastProof)-int(r.Shared):]...)
					r.Shared = 0
				}
				lastProof = r.Proof
			}
			ps.acknowledged(a)
		case wire.FrameNack:
			n, err := wire.ParseNack(body)
			if err != nil {
				ps.fail(err)
				return
			}
			e := n.Err
			ps.answer(n.ID, pubResult{err: &e})
		default:
			ps.fail(fmt.Errorf("relay: unexpected %s frame on the publish stream", t))
			return
		}
	}
}

package client

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
)

// Sent is what became of a message sent.
type Sent struct {
	ID   protocol.ID
	Time time.Time
	// Via are the paths that confirmed delivery, in the order they did:
	// relay (acknowledged once committed to the relay's disk) and mesh (a
	// peer of the room has it stored).
	Via []string
	// Ack is the relay's acknowledgement, its audit receipt (if the relay
	// keeps a log) checked against the relay's key and the checkpoints
	// kept before; nil if the relay did not acknowledge.
	Ack *protocol.Ack
	// MeshPeer is the mesh peer that confirmed it, if one did.
	MeshPeer string
	// Failed says why each other path did not confirm.
	Failed []error
}

// Delivered reports whether a path confirmed the message.
func (s Sent) Delivered() bool { return len(s.Via) > 0 }

// otherPaths is how long a delivery waits for the other paths once one
// has confirmed it.
const otherPaths = time.Second

// DefaultPatience is how long the paths have to confirm a message when
// the caller's context has no deadline. What they have not confirmed by
// then stays in the outbox.
const DefaultPatience = 30 * time.Second

// Post signs text as our next message in room (joining it first if need
// be), stores it, in the outbox until a path confirms it, and starts
// sending it on every path. It returns the message's ID once it is
// stored: what becomes of it arrives as DeliveryEvents, the last with
// Done set. The paths have until ctx's deadline (at least a second), or
// DefaultPatience without one, to confirm it; ending ctx otherwise does
// not stop them. The sending belongs to the client: Close ends it.
func (c *Client) Post(ctx context.Context, roomName, text string) (protocol.ID, error) {
	d, err := c.post(ctx, roomName, text)
	if err != nil {
		return protocol.ID{}, err
	}
	return d.id, nil
}

// Send is Post, then waits until one path has confirmed delivery and the
// others have had a moment to (a relay acknowledgement, or a mesh peer
// that has it), or until ctx ends. If no path confirms, the error wraps
// ErrNoPath and says why each failed; the message stays in the outbox
// and is sent again when a path is there. A relay whose audit log does
// not check out is an error wrapping relay.ErrAuditLog, whatever else
// happened. Sent.ID is set whenever the message was stored.
func (c *Client) Send(ctx context.Context, roomName, text string) (Sent, error) {
	d, err := c.post(ctx, roomName, text)
	if err != nil {
		return Sent{}, err
	}
	select {
	case s := <-d.done:
		return s, c.sentErr(s)
	case <-ctx.Done():
		s := Sent{ID: d.id, Time: d.time, Failed: []error{ctx.Err()}}
		return s, fmt.Errorf("%w: no path confirmed it in time: %w (kept, and sent again when a path is there)", ErrNoPath, ctx.Err())
	}
}

// sentErr is the error of a finished delivery.
func (c *Client) sentErr(s Sent) error {
	if c.relay != nil {
		if err := c.relay.auditErr(); err != nil {
			return err
		}
	}
	if s.Delivered() {
		return nil
	}
	return fmt.Errorf("%w: %w (kept, and sent again when a path is there)", ErrNoPath, errors.Join(s.Failed...))
}

// delivery is one message on its way out.
type delivery struct {
	r    *room
	id   protocol.ID
	time time.Time
	msg  signed
	done chan Sent // the outcome, once
}

func (c *Client) post(ctx context.Context, roomName, text string) (*delivery, error) {
	payload, err := (&protocol.Text{Nick: c.cfg.Nick, Body: text}).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("client: send: %w", err)
	}
	if err := c.Join(ctx, roomName); err != nil {
		return nil, err
	}
	c.mu.Lock()
	r := c.rooms[roomName]
	c.mu.Unlock()
	if err := c.awaitHistory(ctx, r); err != nil {
		return nil, err
	}
	// Signing and storing our message is local work that, once begun,
	// finishes: a deadline of the caller's bounds the wait for delivery,
	// and must never lose the message on the way.
	m, err := c.sign.sign(context.WithoutCancel(ctx), r.name, protocol.KindText, payload, &protocol.Text{Nick: c.cfg.Nick, Body: text})
	if err != nil {
		return nil, fmt.Errorf("client: send: %w", err)
	}
	d := &delivery{r: r, id: m.id, time: m.env.Timestamp(), msg: m, done: make(chan Sent, 1)}
	if !c.startDelivery(d, patience(ctx)) {
		return nil, ErrClosed
	}
	return d, nil
}

// awaitHistory waits until the relay's history of the room is merged
// (our Lamport clock must have seen it, or our message would sort before
// messages it answers), or the relay is known to be down.
func (c *Client) awaitHistory(ctx context.Context, r *room) error {
	if r.caughtUp == nil {
		return nil
	}
	select {
	case <-r.caughtUp:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: the relay's history of %s did not arrive: %w", ErrNoPath, r.name, ctx.Err())
	}
}

// patience is how long the paths have to confirm a message sent under
// ctx.
func patience(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Second)
	}
	return DefaultPatience
}

// startDelivery sends d on every path of its room, on a goroutine of the
// client's, unless it is on its way already; false if it is, or if the
// client is closed.
func (c *Client) startDelivery(d *delivery, within time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.inflight[d.id] {
		return false
	}
	c.inflight[d.id] = true
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, within)
		s := c.deliverOut(ctx, d)
		cancel()
		c.mu.Lock()
		delete(c.inflight, d.id)
		c.mu.Unlock()
		d.done <- s
	}()
	return true
}

// pathResult is what one path did with our message.
type pathResult struct {
	via  string
	peer string
	ack  *protocol.Ack
	err  error
}

// deliverOut sends our message on every path of its room, reports each
// path's result as a DeliveryEvent, and returns the outcome once one path
// has confirmed it and the others have had otherPaths to, or all failed.
// Once a path confirms it, it leaves the outbox.
func (c *Client) deliverOut(ctx context.Context, d *delivery) Sent {
	sent := Sent{ID: d.id, Time: d.time}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan pathResult, 2)
	paths := 0
	var gossiped atomic.Bool // the mesh found a peer and published
	if d.r.mesh != nil {
		paths++
		go func() { results <- c.sendMesh(pctx, d, &gossiped) }()
	}
	if c.relay != nil {
		paths++
		go func() {
			ack, err := c.relay.publish(pctx, d.id, d.msg.raw)
			results <- pathResult{via: ViaRelay, ack: ack, err: err}
		}()
	}
	if paths == 0 {
		sent.Failed = append(sent.Failed, errors.New("no mesh and no relay"))
	}
	var grace <-chan time.Time
	for i := range paths {
		var res pathResult
		select {
		case res = <-results:
		case <-grace:
			cancel()
			res = <-results
		}
		c.record(&sent, res)
		if res.err == nil && grace == nil {
			if !gossiped.Load() {
				// The mesh has no peer in the room yet: the relay
				// carries this one alone.
				cancel()
			}
			grace = time.After(otherPaths)
		}
		c.emit(&DeliveryEvent{Room: d.r.name, Sent: copySent(sent), Path: res.via, Err: res.err, Done: i == paths-1})
	}
	if paths == 0 {
		c.emit(&DeliveryEvent{Room: d.r.name, Sent: copySent(sent), Done: true})
	}
	if sent.Delivered() {
		if err := c.st.RemoveOutbox(context.WithoutCancel(ctx), sent.ID); err != nil {
			c.log.Warn("take a sent message out of the outbox", "id", sent.ID, "err", err)
		}
	}
	return sent
}

// record adds a path's result to the outcome.
func (c *Client) record(sent *Sent, res pathResult) {
	if res.err != nil {
		sent.Failed = append(sent.Failed, res.err)
		return
	}
	sent.Via = append(sent.Via, res.via)
	if res.ack != nil {
		sent.Ack = res.ack
	}
	if res.peer != "" {
		sent.MeshPeer = res.peer
	}
}

func copySent(s Sent) Sent {
	s.Via = append([]string(nil), s.Via...)
	s.Failed = append([]error(nil), s.Failed...)
	return s
}

// sendMesh gossips our message in its room and waits until a peer of the
// room confirms it has it stored.
func (c *Client) sendMesh(ctx context.Context, d *delivery, gossiped *atomic.Bool) pathResult {
	res := pathResult{via: ViaMesh}
	if res.err = c.awaitPeer(ctx, d.r); res.err != nil {
		return res
	}
	if res.err = d.r.mesh.PublishChecked(ctx, d.msg.env, d.id, d.msg.raw); res.err != nil {
		return res
	}
	gossiped.Store(true)
	p, err := d.r.mesh.Confirm(ctx, d.id, d.msg.env.Time)
	if err != nil {
		res.err = fmt.Errorf("gossiped to the room, but no peer confirmed it has it: %w", err)
		return res
	}
	res.peer = p.String()
	return res
}

// awaitPeer waits until the room has a mesh peer: right after start the
// node is still dialling its peers and learning what they subscribe to.
func (c *Client) awaitPeer(ctx context.Context, r *room) error {
	if len(r.mesh.Peers()) > 0 {
		return nil
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for len(r.mesh.Peers()) == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("mesh: no peer in room %s: %w", r.name, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// resendOutbox sends our messages that no path took when they were sent,
// in order, room by room, when the room has a path: a peer in its mesh,
// or the relay. A message whose send is still on its way is left to it.
func (c *Client) resendOutbox() {
	c.mu.Lock()
	rooms := make([]*room, 0, len(c.rooms))
	for _, r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.mu.Unlock()
	for _, r := range rooms {
		relayUp := c.relay != nil && c.relay.up()
		if !relayUp && (r.mesh == nil || len(r.mesh.Peers()) == 0) {
			continue // no path yet
		}
		recs, err := c.st.Outbox(c.ctx, r.name)
		if err != nil {
			c.log.Warn("read the outbox", "room", r.name, "err", err)
			continue
		}
		for _, rec := range recs {
			d := &delivery{r: r, id: rec.ID, time: rec.Env.Timestamp(), msg: signed{rec.Env, rec.ID, rec.Raw}, done: make(chan Sent, 1)}
			if !c.startDelivery(d, c.keepEvery) {
				continue // on its way already
			}
			var s Sent
			select {
			case s = <-d.done:
			case <-c.ctx.Done():
				return
			}
			if !s.Delivered() {
				break // in order: the next waits for this one
			}
			c.log.Info("sent a message that no path had taken before", "room", r.name, "id", s.ID, "via", s.Via)
		}
	}
}

// IsAuditError reports whether err is the relay's audit log failing its
// checks: a security error to show the person, never to hide.
func IsAuditError(err error) bool { return errors.Is(err, relay.ErrAuditLog) }

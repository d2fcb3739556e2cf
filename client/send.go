package client

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/store"
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

// otherPaths is how long Send waits for the other paths once one has
// confirmed delivery.
const otherPaths = time.Second

// Send signs a text message and sends it on every path of the room
// (joining it first if need be), and returns once one path has confirmed
// delivery and the others have had a moment to: a relay acknowledgement,
// or a mesh peer that has it. The message is stored locally before it
// leaves, so it is never lost here; if no path confirms before ctx ends,
// the error wraps ErrNoPath and says why each failed. A relay whose audit
// log does not check out is an error wrapping relay.ErrAuditLog, whatever
// else happened.
func (c *Client) Send(ctx context.Context, roomName, text string) (Sent, error) {
	if err := c.Join(ctx, roomName); err != nil {
		return Sent{}, err
	}
	c.mu.Lock()
	r := c.rooms[roomName]
	c.mu.Unlock()
	if r.caughtUp != nil {
		// Our Lamport clock must have seen the room's history, or our
		// message would sort before messages it answers.
		select {
		case <-r.caughtUp:
		case <-ctx.Done():
			return Sent{}, fmt.Errorf("%w: the relay's history of %s did not arrive: %w", ErrNoPath, roomName, ctx.Err())
		}
	}
	// Signing and storing our message is local work that, once begun,
	// finishes: a deadline of the caller's (send --timeout) bounds the
	// wait for delivery, and must never lose the message on the way.
	env, raw, err := c.sign(context.WithoutCancel(ctx), r, text)
	if err != nil {
		return Sent{}, err
	}
	return c.deliverOut(ctx, r, env, raw)
}

// deliverOut sends our envelope on every path of room r and waits as Send
// says. Once a path confirms it, it leaves the outbox.
func (c *Client) deliverOut(ctx context.Context, r *room, env *protocol.Envelope, raw []byte) (Sent, error) {
	sent := Sent{ID: env.ID(), Time: env.Timestamp()}

	type result struct {
		via  string
		peer string
		ack  *protocol.Ack
		err  error
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, 2)
	paths := 0
	var gossiped atomic.Bool // the mesh path found a peer and published
	if r.mesh != nil {
		paths++
		go func() {
			res := result{via: ViaMesh}
			if res.err = c.awaitPeer(pctx, r); res.err == nil {
				if res.err = r.mesh.Publish(pctx, raw); res.err == nil {
					gossiped.Store(true)
					var p peer.ID
					p, res.err = r.mesh.Confirm(pctx, sent.ID, env.Time)
					res.peer = p.String()
				}
			}
			results <- res
		}()
	}
	if c.relay != nil {
		paths++
		go func() {
			ack, err := c.relay.Publish(pctx, raw)
			results <- result{via: ViaRelay, ack: ack, err: err}
		}()
	} else if c.relayErr != nil {
		sent.Failed = append(sent.Failed, fmt.Errorf("relay: %w", c.relayErr))
	}

	var grace <-chan time.Time
	for range paths {
		var res result
		select {
		case res = <-results:
		case <-grace:
			cancel()
			res = <-results
		}
		if res.err != nil {
			sent.Failed = append(sent.Failed, res.err)
			continue
		}
		sent.Via = append(sent.Via, res.via)
		if res.ack != nil {
			sent.Ack = res.ack
		}
		if res.peer != "" {
			sent.MeshPeer = res.peer
		}
		if grace == nil {
			if !gossiped.Load() {
				// The mesh has no peer in the room yet: the relay
				// carries this one alone.
				cancel()
			}
			grace = time.After(otherPaths)
		}
	}
	if c.relay != nil {
		if err := c.relay.AuditError(); err != nil {
			return sent, err
		}
		if a := sent.Ack; a != nil && a.Receipt != nil {
			rc := store.Receipt{Relay: c.relayName, Pos: a.Pos, Index: a.Receipt.Index, Checkpoint: a.Receipt.Checkpoint}
			if err := c.st.PutReceipt(ctx, sent.ID, rc); err != nil {
				c.log.Warn("keep the relay's receipt", "id", sent.ID, "err", err)
			}
		}
		if err := c.keepCheckpoint(ctx); err != nil {
			c.log.Warn("keep the relay's audit checkpoint", "err", err)
		}
	}
	if len(sent.Via) == 0 {
		if len(sent.Failed) == 0 {
			sent.Failed = append(sent.Failed, errors.New("no mesh and no relay"))
		}
		return sent, fmt.Errorf("%w: %w (kept, and sent again when a path is there)", ErrNoPath, errors.Join(sent.Failed...))
	}
	if err := c.st.RemoveOutbox(context.WithoutCancel(ctx), sent.ID); err != nil {
		c.log.Warn("take a sent message out of the outbox", "id", sent.ID, "err", err)
	}
	return sent, nil
}

// resendOutbox sends our messages that no path took when they were sent,
// in order, room by room, when the room has a path: a peer in its mesh,
// or the relay. Each try has every to finish.
func (c *Client) resendOutbox(every time.Duration) {
	c.mu.Lock()
	rooms := make([]*room, 0, len(c.rooms))
	for _, r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.mu.Unlock()
	for _, r := range rooms {
		if c.relay == nil && (r.mesh == nil || len(r.mesh.Peers()) == 0) {
			continue // no path yet
		}
		recs, err := c.st.Outbox(c.ctx, r.name)
		if err != nil {
			c.log.Warn("read the outbox", "room", r.name, "err", err)
			continue
		}
		for _, rec := range recs {
			ctx, cancel := context.WithTimeout(c.ctx, every)
			sent, err := c.deliverOut(ctx, r, rec.Env, rec.Raw)
			cancel()
			if err != nil {
				break // in order: the next waits for this one
			}
			c.log.Warn("sent a message that no path had taken before", "room", r.name, "id", sent.ID, "via", sent.Via)
		}
	}
}

// awaitPeer waits until the room has a mesh peer: right after start the
// node is still dialling its peers and learning what they subscribe to.
func (c *Client) awaitPeer(ctx context.Context, r *room) error {
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

// sign makes our next envelope in room r, linked to the one before, and
// stores it before anything sends it.
func (c *Client) sign(ctx context.Context, r *room, text string) (*protocol.Envelope, []byte, error) {
	payload, err := (&protocol.Text{Nick: c.cfg.Nick, Body: text}).MarshalBinary()
	if err != nil {
		return nil, nil, fmt.Errorf("client: send: %w", err)
	}
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	seq, err := c.alloc.Next(r.name)
	if err != nil {
		return nil, nil, fmt.Errorf("client: send: %w", err)
	}
	e := &protocol.Envelope{
		Kind:    protocol.KindText,
		Room:    r.name,
		Seq:     seq,
		Prev:    r.head,
		Lamport: c.clock.Tick(),
		Time:    c.now().UnixMilli(),
		Payload: payload,
	}
	id, err := e.Sign(c.home.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("client: send: %w", err)
	}
	raw, err := e.MarshalBinary()
	if err != nil {
		return nil, nil, fmt.Errorf("client: send: %w", err)
	}
	// Stored, and in the outbox until a path confirms it, in one
	// transaction.
	b, err := c.st.Begin(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("client: send: %w", err)
	}
	defer b.Rollback()
	if _, err := b.Append(ctx, []store.Record{{ID: id, Env: e, Raw: raw, Via: ViaLocal, Received: c.now()}}); err != nil {
		return nil, nil, fmt.Errorf("client: send: %w", err)
	}
	if err := b.AddOutbox(ctx, r.name, id); err != nil {
		return nil, nil, fmt.Errorf("client: send: %w", err)
	}
	if err := b.Commit(); err != nil {
		return nil, nil, fmt.Errorf("client: send: %w", err)
	}
	r.head = id
	return e, raw, nil
}

// IsAuditError reports whether err is the relay's audit log failing its
// checks: a security error to show the person, never to hide.
func IsAuditError(err error) bool { return errors.Is(err, relay.ErrAuditLog) }

package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
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
	Ack *wire.Ack
	// Relays are the relays that acknowledged it, by address, in the
	// order they did; each one's audit receipt is kept in the store.
	Relays []string
	// MeshPeer is the mesh peer that confirmed it, if one did.
	MeshPeer string
	// Failed says why each other path did not confirm.
	Failed []error
	// Need is how many relays must acknowledge it (relay_ack quorum or
	// all); up to one, any path will do.
	Need int
}

// Delivered reports whether the message is delivered: confirmed by a
// path, or, under relay_ack quorum or all, acknowledged by as many
// relays as that asks.
func (s Sent) Delivered() bool {
	if s.Need <= 1 {
		return len(s.Via) > 0
	}
	return len(s.Relays) >= s.Need
}

// otherPaths is how long a delivery waits for the other paths once one
// has confirmed it: how late a mesh peer's confirmation can be. A peer of
// this version confirms within mesh.MaxConfirmDelay (1.5 s: the sender's
// question makes it commit what it holds); a peer of an earlier version
// commits at its own pace, and confirms up to 2.5 s late (the bound
// before). The longer of the two, with half a second to spare for the
// round trips, so that a mixed network does not report a mesh copy that
// arrived as failed. A relay acknowledges sooner.
const otherPaths = max(mesh.MaxConfirmDelay, earlierConfirmDelay) + 500*time.Millisecond

// earlierConfirmDelay is mesh.MaxConfirmDelay of the versions before
// questions hurried the commit.
const earlierConfirmDelay = 2500 * time.Millisecond

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
// happened: the relay's receipts are proved consistent with the
// checkpoint kept before Send returns (settle). Sent.ID is set whenever
// the message was stored.
func (c *Client) Send(ctx context.Context, roomName, text string) (Sent, error) {
	d, err := c.post(ctx, roomName, text)
	if err != nil {
		return Sent{}, err
	}
	return c.await(ctx, d)
}

// await waits until a path has confirmed a delivery and the others have
// had a moment to, or until ctx ends, and settles the relay's audit
// checks: the end of Send, and of a member-list change.
func (c *Client) await(ctx context.Context, d *delivery) (Sent, error) {
	select {
	case <-d.done:
		c.settle(ctx)
		return d.sent, c.sentErr(d.sent)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The paths have the caller's deadline (or a second, at
			// least), and end now or very soon: their own errors say
			// more.
			<-d.done
			c.settle(ctx)
			return d.sent, c.sentErr(d.sent)
		}
		s := Sent{ID: d.id, Time: d.time, Failed: []error{ctx.Err()}}
		return s, fmt.Errorf("%w: no path confirmed it in time: %w (kept, and sent again when a path is there)", ErrNoPath, ctx.Err())
	}
}

// settleTime bounds the audit check that Send finishes after delivery,
// when the caller's ctx leaves it less.
const settleTime = 10 * time.Second

// settle finishes the relay's audit checks of a delivery; sentErr then
// reports a log that does not check out.
func (c *Client) settle(ctx context.Context) {
	if len(c.relays) == 0 {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTime)
	defer cancel()
	c.relays.settle(sctx)
}

// sentErr is the error of a finished delivery.
func (c *Client) sentErr(s Sent) error {
	if err := c.relays.auditErr(); err != nil {
		return err
	}
	if s.Delivered() {
		return nil
	}
	return fmt.Errorf("%w: %w (kept, and sent again when a path is there)", ErrNoPath, errors.Join(s.Failed...))
}

func (c *Client) post(ctx context.Context, roomName, text string) (*delivery, error) {
	t := &protocol.Text{Nick: c.Nick(), Body: text}
	if _, err := t.MarshalBinary(); err != nil {
		return nil, fmt.Errorf("client: send: %w", err)
	}
	return c.publish(ctx, roomName, t, nil)
}

// publish signs our next envelope in room (joining it first if need be):
// text t as the room's kind of message (a post naming the member-list
// head in a private room), or else member-list change ch. It stores it,
// in the outbox until a path confirms it, and starts sending it on every
// path.
func (c *Client) publish(ctx context.Context, roomName string, t *protocol.Text, ch *protocol.Change) (*delivery, error) {
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
	// and must never lose the message on the way. The room's messages go
	// to its paths in the order they are signed.
	r.postMu.Lock()
	defer r.postMu.Unlock()
	m, err := c.signOne(context.WithoutCancel(ctx), r, t, ch)
	if err != nil {
		return nil, fmt.Errorf("client: send: %w", err)
	}
	if ch != nil {
		if err := c.addChange(ctx, m); err != nil {
			return nil, fmt.Errorf("client: send: %w", err)
		}
	}
	// What no path took before goes first, then this one.
	if err := c.queueOutbox(context.WithoutCancel(ctx), r, patience(ctx)); err != nil {
		c.log.Warn("send the outbox", "room", r.name, "err", err)
	}
	d, _ := c.startDelivery(r, m, patience(ctx))
	if d == nil {
		return nil, ErrClosed
	}
	return d, nil
}

// signOne signs text t or change ch in room r: text in a private room
// sealed end to end.
func (c *Client) signOne(ctx context.Context, r *room, t *protocol.Text, ch *protocol.Change) (signed, error) {
	if ch == nil && protocol.IsPrivateRoom(r.name) {
		return c.signSealed(ctx, r, t)
	}
	kind, payload, err := c.payload(ctx, r.name, t, ch)
	if err != nil {
		return signed{}, err
	}
	return c.sign.sign(ctx, r.name, kind, payload, t, nil)
}

// awaitHistory waits until a relay's history of the room is merged (our
// Lamport clock must have seen it, or our message would sort before
// messages it answers), unless no relay is connected.
func (c *Client) awaitHistory(ctx context.Context, r *room) error {
	if r.caughtUp == nil {
		return nil
	}
	select {
	case <-r.caughtUp:
		return nil
	default:
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.relays.awaitDown(wctx, r.caughtUp) {
		return nil // the history comes once a relay is back
	}
	select {
	case <-r.caughtUp:
		return nil
	case <-c.ctx.Done():
		return ErrClosed
	default:
		return fmt.Errorf("%w: the relays' history of %s did not arrive: %w", ErrNoPath, r.name, ctx.Err())
	}
}

// patience is until when the paths have to confirm a message sent under
// ctx: its deadline, if it has one at least a second away.
func patience(ctx context.Context) time.Time {
	now := time.Now()
	if d, ok := ctx.Deadline(); ok {
		if least := now.Add(time.Second); d.Before(least) {
			return least
		}
		return d
	}
	return now.Add(DefaultPatience)
}

// IsAuditError reports whether err is the relay's audit log failing its
// checks: a security error to show the person, never to hide.
func IsAuditError(err error) bool { return errors.Is(err, relay.ErrAuditLog) }

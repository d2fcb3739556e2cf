package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/store"
)

// relayPath is the session's relay: the connection, where its cursors and
// checkpoint are kept (under the relay's key fingerprint), and the
// subscriptions of the joined rooms.
type relayPath struct {
	c    *Client
	name string        // the relay's key fingerprint
	rc   *relay.Client // nil if the relay could not be reached at start

	mu      sync.Mutex
	lastErr error // why it is not connected, nil while it is
	alarmed bool  // the audit alarm was raised
}

// openRelay connects to the configured relay. A relay that cannot be
// reached is not an error here: the path stays down, each send on it
// fails at once, and RelayError says why.
func (c *Client) openRelay(ctx context.Context) (*relayPath, error) {
	addr, err := relay.ParseAddr(c.cfg.Relay)
	if err != nil {
		return nil, err
	}
	p := &relayPath{c: c, name: addr.Fingerprint}
	kept, err := c.st.RelayCheckpoint(ctx, p.name)
	if err != nil {
		return nil, err
	}
	dctx := ctx
	if d, ok := ctx.Deadline(); ok && c.cfg.Mode == ModeAuto {
		// Leave the mesh half the time if the relay does not answer.
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, time.Until(d)/2)
		defer cancel()
	}
	rc, err := relay.Dial(dctx, addr, c.home.Key, relay.ClientOptions{Log: c.log, Checkpoint: kept})
	var refused *protocol.RelayError
	switch {
	case err == nil:
		p.rc = rc
		c.emit(&RelayEvent{Connected: true})
		c.wg.Add(1)
		go p.watchAudit()
		return p, nil
	case errors.Is(err, relay.ErrWrongRelay), errors.As(err, &refused), errors.Is(err, relay.ErrAuditLog):
		return nil, err
	}
	p.lastErr = fmt.Errorf("%w %s: %w", ErrRelayUnreachable, addr, err)
	c.log.Debug("relay unreachable", "err", err)
	c.emit(&RelayEvent{Err: p.lastErr})
	return p, nil
}

// up reports whether the relay is connected.
func (p *relayPath) up() bool { return p.err() == nil }

func (p *relayPath) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// auditErr returns the security error found in the relay's audit log.
func (p *relayPath) auditErr() error {
	if p.rc == nil {
		return nil
	}
	return p.rc.AuditError()
}

// auditPoll is how often the relay's audit state is looked at, to raise
// the alarm that the checks in the background may have found.
const auditPoll = 500 * time.Millisecond

// watchAudit raises the alarm once when the relay's audit log fails its
// checks.
func (p *relayPath) watchAudit() {
	defer p.c.wg.Done()
	t := time.NewTicker(auditPoll)
	defer t.Stop()
	for {
		select {
		case <-p.c.ctx.Done():
			return
		case <-t.C:
		}
		if p.raiseAudit() {
			return
		}
	}
}

// raiseAudit raises the audit alarm if the relay's log fails its checks,
// once, and reports whether it did (now or before).
func (p *relayPath) raiseAudit() bool {
	err := p.auditErr()
	if err == nil {
		return false
	}
	p.mu.Lock()
	first := !p.alarmed
	p.alarmed = true
	p.mu.Unlock()
	if first {
		p.c.emit(&AlarmEvent{Kind: AlarmAuditLog, Err: err})
	}
	return true
}

// publish sends our envelope to the relay and returns its checked
// acknowledgement, keeping the receipt and the relay's newest checkpoint.
func (p *relayPath) publish(ctx context.Context, id protocol.ID, raw []byte) (*protocol.Ack, error) {
	if p.rc == nil {
		return nil, fmt.Errorf("relay: %w", p.err())
	}
	ack, err := p.rc.Publish(ctx, raw)
	if err != nil {
		p.raiseAudit()
		return nil, err
	}
	// Kept whatever the caller's deadline: the relay has the message.
	kctx := context.WithoutCancel(ctx)
	if ack.Receipt != nil {
		rc := store.Receipt{Relay: p.name, Pos: ack.Pos, Index: ack.Receipt.Index, Checkpoint: ack.Receipt.Checkpoint}
		if err := p.c.st.PutReceipt(kctx, id, rc); err != nil {
			p.c.log.Warn("keep the relay's receipt", "id", id, "err", err)
		}
	}
	if err := p.keepCheckpoint(kctx); err != nil {
		p.c.log.Warn("keep the relay's audit checkpoint", "err", err)
	}
	return ack, nil
}

// keepCheckpoint stores the relay's newest audit checkpoint, so that the
// next session holds the relay to it.
func (p *relayPath) keepCheckpoint(ctx context.Context) error {
	if p.rc == nil || p.rc.AuditError() != nil {
		return nil // keep the last good one: the person has been told
	}
	cp := p.rc.Checkpoint()
	if cp == nil {
		return nil
	}
	return p.c.st.SetRelayCheckpoint(ctx, p.name, cp)
}

func (p *relayPath) close(ctx context.Context) error {
	if p.rc == nil {
		return nil
	}
	return errors.Join(p.keepCheckpoint(ctx), p.rc.Close())
}

// follow subscribes to a room on the relay from the cursor this home
// kept, and hands what comes to the merger until ctx ends or the relay
// refuses the room for good.
func (p *relayPath) follow(ctx context.Context, r *room) {
	c := p.c
	defer c.wg.Done()
	// A Send waiting for the history must never wait for ever.
	defer c.deliver(ctx, arrival{room: r.name, caughtUp: true})
	if p.rc == nil {
		return
	}
	cursor, err := c.st.RelayCursor(ctx, p.name, r.name)
	if err != nil {
		c.log.Error("the relay cursor", "room", r.name, "err", err)
		return
	}
	if c.node != nil {
		// The relay as control plane: the mesh peers it knows in the
		// room, to go peer-to-peer with.
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.meetPeers(ctx, r.name)
		}()
	}
	for attempt := 0; ; attempt++ {
		sub, err := p.rc.Subscribe(ctx, r.name, cursor)
		if err == nil {
			err = p.drain(ctx, r, sub)
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, &protocol.RelayError{Code: protocol.CodeUnknownCursor}) && attempt == 0 {
			// The relay lost what the cursor names: restored from a
			// backup. From the start again; what is here already is not
			// shown twice.
			c.log.Warn("the relay does not know this home's cursor; catching up from the start", "room", r.name)
			cursor = protocol.ID{}
			continue
		}
		if err != nil {
			c.log.Debug("relay subscription ended", "room", r.name, "err", err)
			c.emit(&PathEvent{Room: r.name, Path: ViaRelay, Err: fmt.Errorf("relay subscription to %s: %w", r.name, err)})
		}
		return
	}
}

// drain hands a subscription's envelopes and marks to the merger, with a
// caught-up mark after its history, until it ends, and returns why it
// ended.
func (p *relayPath) drain(ctx context.Context, r *room, sub *relay.Subscription) error {
	defer sub.Close()
	// The subscription puts the history on C before it closes Live: once
	// Live is closed, the history is within what C holds at that moment.
	live, left := sub.Live, -1
	for {
		if left == 0 {
			if !p.c.deliver(ctx, arrival{room: r.name, caughtUp: true}) {
				return ctx.Err()
			}
			left = -1
		}
		select {
		case <-live:
			live, left = nil, len(sub.C)
			continue
		case d, ok := <-sub.C:
			if !ok {
				return sub.Err()
			}
			if left > 0 {
				left--
			}
			a := arrival{room: r.name, id: d.ID, via: ViaRelay, committed: d.Committed}
			if !d.Committed {
				if d.Env.Room != r.name {
					p.c.log.Warn("relay sent an envelope of another room; dropped", "room", r.name, "id", d.ID)
					continue
				}
				a.env, a.raw, a.history = d.Env, d.Raw, !d.Live
			}
			if !p.c.deliver(ctx, a) {
				return ctx.Err()
			}
		}
	}
}

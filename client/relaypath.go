package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// relayPath is one of the session's relays: the connection, dialled in
// the background and again whenever it drops, where its cursors and
// checkpoint are kept (under the relay's key fingerprint), and the
// subscriptions of the joined rooms.
type relayPath struct {
	c    *Client
	name string // the relay's key fingerprint
	addr relay.Addr
	rc   *relay.Client

	mu       sync.Mutex
	state    relay.State
	down     chan struct{} // closed while it is not connected
	alarmed  bool          // the audit alarm was raised
	keptNote []byte        // the checkpoint last stored

	// transport is the one kept in the store as having reached the relay
	// last ("quic", "tcp" or ""), tried first. keepMu orders its writes.
	keepMu    sync.Mutex
	transport string
}

// readyWait bounds how long Open waits for the first connection to the
// relay when its context has no deadline: a relay that does not answer by
// then is dialled again in the background.
const readyWait = 10 * time.Second

// startRelay starts the connection to the relay at addr, in the
// background (firstTry waits for it).
func (c *Client) startRelay(ctx context.Context, addr relay.Addr) (*relayPath, error) {
	p := &relayPath{c: c, name: addr.Fingerprint, addr: addr, down: make(chan struct{})}
	close(p.down) // not connected yet
	kept, err := c.st.RelayCheckpoint(ctx, p.name)
	if err != nil {
		return nil, err
	}
	p.keptNote = kept
	via, err := relay.ParseVia(c.cfg.RelayTransport)
	if err != nil {
		return nil, err
	}
	// The transport that reached this relay last time is tried first.
	if p.transport, err = c.st.RelayTransport(ctx, p.name); err != nil {
		return nil, err
	}
	p.rc, err = relay.Start(addr, c.home.Key, relay.ClientOptions{Log: c.log, Checkpoint: kept, OnState: p.onState,
		Via: via, Prefer: transport.ParseKind(p.transport)})
	if err != nil {
		return nil, err
	}
	c.wg.Add(1)
	go p.watchAudit()
	return p, nil
}

// firstTry waits for the first try's outcome (half of ctx's time at
// most). A relay that cannot be reached is not an error here: it is
// dialled again in the background, each send on it fails at once
// meanwhile, and RelayError says why. A relay with another key, or one
// that refuses us, is: it is closed.
func (p *relayPath) firstTry(ctx context.Context) error {
	wait := readyWait
	if d, ok := ctx.Deadline(); ok {
		// Leave the rest of the time to the work itself.
		wait = time.Until(d) / 2
	}
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	err := p.rc.Ready(rctx)
	var refused *wire.RelayError
	switch {
	case err == nil:
		st := p.rc.State()
		p.setState(st) // before OnState says so: Send waits for the history
		p.keepTransport(ctx, st.Transport.String())
	case errors.Is(err, relay.ErrWrongRelay), errors.As(err, &refused), errors.Is(err, relay.ErrAuditLog),
		errors.Is(err, relay.ErrBadCertificate), errors.Is(err, relay.ErrVersion):
		// Closed for the session, and the state says why: not
		// "connecting".
		p.rc.CloseFor(err)
		p.setState(p.rc.State())
		return err
	default:
		p.c.log.Debug("relay not reached yet; dialling it again in the background", "relay", p.addr, "err", err)
	}
	return nil
}

// onState follows the relay connection's state, on the relay client's
// goroutine: it never blocks.
func (p *relayPath) onState(st relay.State) {
	came := p.setState(st)
	if st.Status == relay.StatusClosed {
		return
	}
	connected := st.Status == relay.StatusConnected
	ev := &RelayEvent{Relay: p.addr.String(), Connected: connected, RTT: st.RTT, Err: p.stateErr(st)}
	if connected {
		ev.Transport = st.Transport.String()
		p.keepTransport(p.c.ctx, ev.Transport)
	}
	p.c.emit(ev)
	if came {
		p.c.kickOutbox()
	}
	if st.Status == relay.StatusRefused {
		p.raiseAudit()
	}
}

// keepTransport keeps the transport that reached the relay, when it is
// not the one kept: the next session tries it first. It counts as kept
// only once the store has it, so that a write cut short (the client
// closing under onState) is made again by close.
func (p *relayPath) keepTransport(ctx context.Context, t string) {
	if transport.ParseKind(t) == 0 {
		return
	}
	p.keepMu.Lock()
	defer p.keepMu.Unlock()
	if t == p.transport {
		return
	}
	if err := p.c.st.SetRelayTransport(ctx, p.name, t); err != nil {
		if ctx.Err() == nil { // not the client closing: close keeps it
			p.c.log.Warn("relay transport not kept", "err", err)
		}
		return
	}
	p.transport = t
}

// setState keeps the relay's state, and reports whether it just became
// connected.
func (p *relayPath) setState(st relay.State) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.state.Status
	p.state = st
	connected := st.Status == relay.StatusConnected
	select {
	case <-p.down:
		if connected {
			p.down = make(chan struct{})
		}
	default:
		if !connected {
			close(p.down)
		}
	}
	return connected && was != relay.StatusConnected
}

// stateErr is why a relay in state st is not connected.
func (p *relayPath) stateErr(st relay.State) error {
	switch st.Status {
	case relay.StatusConnected:
		return nil
	case relay.StatusRefused:
		return st.Err
	case relay.StatusClosed:
		if st.Err != nil {
			return st.Err // closed for a reason: firstTry
		}
	}
	if st.Err == nil {
		return fmt.Errorf("%w %s: connecting", ErrRelayUnreachable, p.addr)
	}
	return fmt.Errorf("%w %s: %w", ErrRelayUnreachable, p.addr, st.Err)
}

// up reports whether the relay is connected.
func (p *relayPath) up() bool { return p.err() == nil }

func (p *relayPath) err() error {
	p.mu.Lock()
	st := p.state
	p.mu.Unlock()
	return p.stateErr(st)
}

// whenDown returns a channel closed while the relay is not connected.
func (p *relayPath) whenDown() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// auditErr returns the security error found in the relay's audit log.
func (p *relayPath) auditErr() error { return p.rc.AuditError() }

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
		p.c.emit(&AlarmEvent{Kind: AlarmAuditLog, Relay: p.addr.String(), Err: err})
	}
	return true
}

// publish sends our envelope to the relay and returns its checked
// acknowledgement, keeping the receipt and the relay's newest checkpoint.
func (p *relayPath) publish(ctx context.Context, id protocol.ID, raw []byte) (*wire.Ack, error) {
	ack, err := p.rc.Publish(ctx, raw)
	var refused *wire.RelayError
	if err != nil && (errors.Is(err, relay.ErrNotConnected) || !p.up()) && !errors.As(err, &refused) && !errors.Is(err, relay.ErrAuditLog) {
		// Failed while the relay is not connected: that is why.
		if why := p.err(); why != nil {
			return nil, fmt.Errorf("%w: %w", why, err)
		}
		return nil, fmt.Errorf("%w %s: %w", ErrRelayUnreachable, p.addr, err)
	}
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
		if err := p.keepCheckpoint(kctx); err != nil {
			p.c.log.Warn("keep the relay's audit checkpoint", "err", err)
		}
	}
	return ack, nil
}

// settle finishes the audit checks of what the relay acknowledged
// (relay.Client.Settle) and keeps the newest checkpoint proved. It
// returns the relay's audit error; a check that cannot be made now is
// logged, and the next session makes it from the checkpoint kept.
func (p *relayPath) settle(ctx context.Context) error {
	err := p.rc.Settle(ctx)
	if errors.Is(err, relay.ErrAuditLog) {
		return err
	}
	if err != nil {
		p.c.log.Warn("relay audit: the consistency check could not be made now; the next session makes it", "err", err)
	}
	if err := p.keepCheckpoint(ctx); err != nil {
		p.c.log.Warn("keep the relay's audit checkpoint", "err", err)
	}
	return nil
}

// keepCheckpoint stores the relay's newest audit checkpoint, so that the
// next session holds the relay to it.
func (p *relayPath) keepCheckpoint(ctx context.Context) error {
	if p.rc.AuditError() != nil {
		return nil // keep the last good one: the person has been told
	}
	cp := p.rc.Checkpoint()
	p.mu.Lock()
	same := cp == nil || bytes.Equal(cp, p.keptNote)
	p.mu.Unlock()
	if same {
		return nil
	}
	if err := p.c.st.SetRelayCheckpoint(ctx, p.name, cp); err != nil {
		return err
	}
	p.mu.Lock()
	p.keptNote = cp
	p.mu.Unlock()
	return nil
}

func (p *relayPath) close(ctx context.Context) error {
	// A session that ends as it connects (a status, a send) may close
	// before onState has kept the transport, or while it does, with the
	// client's context ended: keep it here.
	if st := p.rc.State(); st.Status == relay.StatusConnected {
		p.keepTransport(ctx, st.Transport.String())
	}
	return errors.Join(p.keepCheckpoint(ctx), p.rc.Close())
}

// follow subscribes to a room on the relay from the cursor this home
// kept, and hands what comes to the merger until ctx ends or the relay
// refuses the room for good.
// notMemberRetries is how often follow asks again for a private room's
// subscription that the relay refused because we are not a member (yet).
const notMemberRetries = 40

func (p *relayPath) follow(ctx context.Context, r *room) {
	c := p.c
	defer c.wg.Done()
	// A Send waiting for the history must never wait for ever.
	defer c.deliver(ctx, arrival{room: r.name, relay: p, caughtUp: true, gaveUp: true})
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
			c.meetPeers(ctx, p, r.name)
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
		if errors.Is(err, &wire.RelayError{Code: wire.CodeNotMember}) && attempt < notMemberRetries {
			// A private room whose member list does not have us yet at
			// the relay (our join is on its way): nothing to catch up
			// on now, so a send need not wait; ask again, with growing
			// pauses, for a few minutes.
			// Counted as this relay giving up for now: with several
			// relays, another's history may still be on its way.
			if !c.deliver(ctx, arrival{room: r.name, relay: p, caughtUp: true, gaveUp: true}) {
				return
			}
			select {
			case <-time.After(min(time.Duration(attempt+1)*250*time.Millisecond, 10*time.Second)):
				continue
			case <-ctx.Done():
				return
			}
		}
		if errors.Is(err, &wire.RelayError{Code: wire.CodeUnknownCursor}) && attempt == 0 {
			// The relay lost what the cursor names: restored from a
			// backup. From the start again; what is here already is not
			// shown twice.
			c.log.Warn("the relay does not know this home's cursor; catching up from the start", "room", r.name)
			cursor = protocol.ID{}
			continue
		}
		if err != nil {
			c.log.Debug("relay subscription ended", "room", r.name, "err", err)
			c.emit(&PathEvent{Room: r.name, Path: ViaRelay, Relay: p.addr.String(), Err: fmt.Errorf("relay %s: subscription to %s: %w", p.addr.HostPort, r.name, err)})
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
			if !p.c.deliver(ctx, arrival{room: r.name, relay: p, caughtUp: true}) {
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
			a := arrival{room: r.name, id: d.ID, via: ViaRelay, relay: p, committed: d.Committed}
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

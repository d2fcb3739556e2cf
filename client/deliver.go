package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// delivery is one of our messages on its way out.
type delivery struct {
	r    *room
	id   protocol.ID
	time time.Time
	msg  signed
	ctx  context.Context // bounds the paths' tries

	acked    []*relayPath    // relays whose receipt of it is kept from an attempt before
	results  chan pathResult // from the room's senders
	gossiped chan struct{}   // closed once the mesh has published it
	done     chan struct{}   // closed once sent is final
	sent     Sent

	after Sent // sent and the confirmations that came after it, under mu

	mu       sync.Mutex
	finished bool // deliverOut has returned: a result now is a late one
	open     int  // paths that have not reported yet
}

// report hands a path's result to deliverOut, or, once it has returned,
// to late.
func (c *Client) report(d *delivery, res pathResult) {
	d.mu.Lock()
	d.open--
	if !d.finished {
		d.results <- res // room for one result a path
		d.mu.Unlock()
		return
	}
	done := d.open == 0
	d.mu.Unlock()
	c.late(d, res)
	if done {
		c.release(d)
	}
}

// release forgets d as on its way, once its outcome is final and every
// path has reported: until then the outbox leaves it alone.
func (c *Client) release(d *delivery) {
	c.mu.Lock()
	if c.inflight[d.id] == d {
		delete(c.inflight, d.id)
	}
	c.mu.Unlock()
}

// finish marks d's outcome final, taking into it the confirmations that
// came while deliverOut was giving up.
func (c *Client) finish(d *delivery, sent *Sent) {
	d.mu.Lock()
	d.finished = true
	var late []pathResult
	for len(d.results) > 0 {
		late = append(late, <-d.results)
	}
	d.after = copySent(*sent)
	done := d.open == 0
	d.mu.Unlock()
	for _, res := range late {
		if res.err == nil {
			c.record(sent, res)
			c.late(d, res)
		}
	}
	if done {
		c.release(d)
	}
}

// late takes a path's confirmation that came after its delivery's outcome
// was final (a relay's acknowledgement after the caller's deadline, say).
func (c *Client) late(d *delivery, res pathResult) {
	if res.err != nil {
		return
	}
	d.mu.Lock()
	was := d.after.Delivered()
	c.record(&d.after, res)
	sent := copySent(d.after)
	d.mu.Unlock()
	c.confirmedLate(d, sent, res, !was && sent.Delivered())
}

// confirmedLate says that a path confirmed d after deliverOut gave up
// waiting for it: a DeliveryEvent with Done set says so, and if that
// makes the message delivered (now), it leaves the outbox.
func (c *Client) confirmedLate(d *delivery, sent Sent, res pathResult, now bool) {
	if now {
		if err := c.st.RemoveOutbox(context.WithoutCancel(c.ctx), d.id); err != nil {
			c.log.Warn("take a sent message out of the outbox", "id", d.id, "err", err)
		}
	}
	c.emit(&DeliveryEvent{Room: d.r.name, Sent: sent, Path: res.via, Relay: res.relayAddr(), Done: true})
}

// pathResult is what one path did with our message.
type pathResult struct {
	via   string
	relay *relayPath // when via is ViaRelay
	peer  string
	ack   *wire.Ack
	err   error
}

// name is how the path is called in an error: the mesh, or a relay by
// its host.
func (res pathResult) name() string {
	if res.relay == nil {
		return res.via
	}
	return "relay " + res.relay.addr.HostPort
}

// key names the path: the mesh, or one relay.
func (res pathResult) key() string { return pathKey(res.via, res.relay) }

// relayAddr is the relay's address, if the path is a relay.
func (res pathResult) relayAddr() string {
	if res.relay == nil {
		return ""
	}
	return res.relay.addr.String()
}

func pathKey(via string, p *relayPath) string {
	if p == nil {
		return via
	}
	return via + " " + p.name
}

// sendQueue is how many messages of a room may wait for each path.
const sendQueue = 256

// startDelivery sends m on every path of room r, until the time given,
// on goroutines of the client's. It returns the delivery under way: a new
// one (true), or the one already on its way with m (false). It returns nil
// if the client is closed. Called in the order the room's messages were
// signed, it hands them to each path in that order.
func (c *Client) startDelivery(r *room, m signed, until time.Time) (*delivery, bool) {
	acked := c.ackedBefore(m.id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.ctx.Err() != nil {
		return nil, false
	}
	if d, ok := c.inflight[m.id]; ok {
		return d, false
	}
	ctx, cancel := context.WithDeadline(c.ctx, until)
	d := &delivery{r: r, id: m.id, time: m.env.Timestamp(), msg: m, ctx: ctx, acked: acked,
		results: make(chan pathResult, 1+len(c.relays)), gossiped: make(chan struct{}), done: make(chan struct{})}
	c.inflight[m.id] = d
	paths := c.queue(d)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		sent := c.deliverOut(d, paths)
		c.finish(d, &sent)
		d.sent = sent
		cancel()
		close(d.done)
	}()
	return d, true
}

// sending reports whether the message id is on its way from this client.
func (c *Client) sending(id protocol.ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.inflight[id]
	return ok
}

// queue hands d to the room's senders, under c.mu, and returns the paths
// that took it.
func (c *Client) queue(d *delivery) []pathResult {
	r, paths := d.r, []pathResult(nil)
	if r.meshQ == nil && r.mesh != nil {
		r.meshQ = make(chan *delivery, sendQueue)
		c.wg.Add(1)
		go c.meshSender(r)
	}
	if r.relayQ == nil && len(c.relays) > 0 {
		r.relayQ = make([]chan *delivery, len(c.relays))
		for i, p := range c.relays {
			r.relayQ[i] = make(chan *delivery, sendQueue)
			c.wg.Add(1)
			go c.relaySender(r, p, r.relayQ[i])
		}
	}
	if r.meshQ != nil {
		paths = append(paths, c.hand(d, r.meshQ, pathResult{via: ViaMesh}))
	}
	for i, q := range r.relayQ {
		if slices.Contains(d.acked, c.relays[i]) {
			continue // it has it: its receipt says so
		}
		paths = append(paths, c.hand(d, q, pathResult{via: ViaRelay, relay: c.relays[i]}))
	}
	return paths
}

// ackedBefore returns, under relay_ack quorum or all, the relays whose
// audit receipt of our message id is kept: an attempt before (that the
// outbox now repeats) reached them. They count towards this attempt,
// and are not asked again: the acknowledgements of one relay in one
// attempt and another in the next make the message delivered, as they
// would had they come together. (Under any, one relay is enough and a
// receipt means the message left the outbox already.)
func (c *Client) ackedBefore(id protocol.ID) []*relayPath {
	if c.need <= 1 || c.ctx.Err() != nil {
		return nil
	}
	rcs, err := c.st.Receipts(c.ctx, id)
	if err != nil {
		c.log.Warn("the receipts of a message sent again", "id", id, "err", err)
		return nil
	}
	var out []*relayPath
	for _, p := range c.relays {
		if slices.ContainsFunc(rcs, func(rc store.Receipt) bool { return rc.Relay == p.name }) {
			out = append(out, p)
		}
	}
	return out
}

// hand queues d for the sender of path, and returns the path.
func (c *Client) hand(d *delivery, q chan<- *delivery, path pathResult) pathResult {
	// Counted before a sender can see it; a sender's report does not wait
	// for c.mu before d is finished.
	d.mu.Lock()
	d.open++
	d.mu.Unlock()
	select {
	case q <- d:
	default:
		failed := path
		failed.err = errors.New("too many messages waiting to go out")
		c.report(d, failed)
	}
	return path
}

// relaySender publishes the room's messages to relay p one at a time, in
// the order they were queued: the relay gives positions in the order it
// receives them, and every subscriber sees that order.
func (c *Client) relaySender(r *room, p *relayPath, q <-chan *delivery) {
	defer c.wg.Done()
	for {
		select {
		case d := <-q:
			// The relay has until the delivery's deadline, or
			// DefaultPatience at least: an acknowledgement that comes
			// after the caller stopped waiting is kept all the same.
			until, _ := d.ctx.Deadline()
			if least := time.Now().Add(DefaultPatience); until.Before(least) {
				until = least
			}
			ctx, cancel := context.WithDeadline(c.ctx, until)
			ack, err := p.publish(ctx, d.id, d.msg.raw)
			cancel()
			c.report(d, pathResult{via: ViaRelay, relay: p, ack: ack, err: err})
		case <-c.ctx.Done():
			return
		}
	}
}

// meshSender gossips the room's messages one at a time, in the order they
// were queued, and has a peer confirm each.
func (c *Client) meshSender(r *room) {
	defer c.wg.Done()
	for {
		select {
		case d := <-r.meshQ:
			if err := c.awaitPeer(d.ctx, r); err != nil {
				c.report(d, pathResult{via: ViaMesh, err: err})
				continue
			}
			if err := r.mesh.PublishChecked(d.ctx, d.msg.env, d.id, d.msg.raw); err != nil {
				c.report(d, pathResult{via: ViaMesh, err: err})
				continue
			}
			close(d.gossiped)
			c.wg.Add(1)
			go c.confirmMesh(d)
		case <-c.ctx.Done():
			return
		}
	}
}

// confirmMesh waits until a peer of the room confirms it has our message
// stored.
func (c *Client) confirmMesh(d *delivery) {
	defer c.wg.Done()
	p, err := d.r.mesh.Confirm(d.ctx, d.id, d.msg.env.Time)
	if err != nil {
		c.report(d, pathResult{via: ViaMesh, err: fmt.Errorf("gossiped to the room, but no peer confirmed it has it: %w", err)})
		return
	}
	c.report(d, pathResult{via: ViaMesh, peer: p.String()})
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

// deliverOut collects what the paths did with d, reports each as a
// DeliveryEvent, and returns the outcome once it is delivered (relay_ack)
// and the other paths have had otherPaths to confirm, or every path has
// reported. Once it is delivered, it leaves the outbox.
func (c *Client) deliverOut(d *delivery, paths []pathResult) Sent {
	ctx, cancel := context.WithCancel(d.ctx)
	defer cancel()
	w := c.newWait(d, paths)
	for len(w.waiting) > 0 {
		w.take(w.next(ctx))
	}
	if w.sent.Delivered() {
		if err := c.st.RemoveOutbox(context.WithoutCancel(ctx), d.id); err != nil {
			c.log.Warn("take a sent message out of the outbox", "id", d.id, "err", err)
		}
	}
	return w.sent
}

// deliveryWait is deliverOut's state: the outcome so far, the paths it
// still waits for, and the grace the others have once it is delivered.
type deliveryWait struct {
	c       *Client
	d       *delivery
	sent    Sent
	waiting []pathResult
	grace   <-chan time.Time // nil until delivered; then closedChan once run out
}

// newWait starts waiting for paths, the relays that have d's receipt from
// an attempt before counted at once.
func (c *Client) newWait(d *delivery, paths []pathResult) *deliveryWait {
	w := &deliveryWait{c: c, d: d, sent: Sent{ID: d.id, Time: d.time, Need: c.need}, waiting: slices.Clone(paths)}
	for _, p := range d.acked {
		c.record(&w.sent, pathResult{via: ViaRelay, relay: p})
	}
	if w.sent.Delivered() {
		w.grace = time.After(otherPaths)
	}
	if len(paths) == 0 {
		if !w.sent.Delivered() {
			w.sent.Failed = append(w.sent.Failed, errors.New("no mesh and no relay"))
		}
		c.emit(&DeliveryEvent{Room: d.r.name, Sent: copySent(w.sent), Done: true})
	}
	return w
}

// next is the next path's result: its own, or, once the grace after
// delivery or the delivery's time has run out, that it did not confirm.
func (w *deliveryWait) next(ctx context.Context) pathResult {
	select {
	case res := <-w.d.results:
		return res
	case <-w.grace:
		// Fires once: every path still waiting then has had its time,
		// one after the other.
		w.grace = closedChan
		res := w.waiting[0]
		res.err = fmt.Errorf("%s: not confirmed within %v of delivery", res.name(), otherPaths)
		return res
	case <-ctx.Done():
		return w.c.lastWord(w.d, w.waiting[0], ctx.Err())
	}
}

// take counts a path's result, and reports it as a DeliveryEvent.
func (w *deliveryWait) take(res pathResult) {
	w.waiting = slices.DeleteFunc(w.waiting, func(p pathResult) bool { return p.key() == res.key() })
	if res.err == nil && !gossiped(w.d) {
		// The mesh has no peer in the room yet: the relays carry this
		// one alone.
		if slices.ContainsFunc(w.waiting, func(p pathResult) bool { return p.via == ViaMesh }) {
			w.waiting = slices.DeleteFunc(w.waiting, func(p pathResult) bool { return p.via == ViaMesh })
			w.sent.Failed = append(w.sent.Failed, fmt.Errorf("mesh: no peer in room %s", w.d.r.name))
		}
	}
	w.c.record(&w.sent, res)
	if w.grace == nil && w.sent.Delivered() {
		w.grace = time.After(otherPaths)
	}
	w.c.emit(&DeliveryEvent{Room: w.d.r.name, Sent: copySent(w.sent), Path: res.via, Relay: res.relayAddr(), Err: res.err, Done: len(w.waiting) == 0})
}

// lastWord is a path's result once the delivery's time is up: the
// path's own, which says more, if it comes at once (the senders see the
// same deadline), else that it did not confirm in time.
func (c *Client) lastWord(d *delivery, path pathResult, err error) pathResult {
	select {
	case res := <-d.results:
		return res
	case <-time.After(lastWordWait):
		if p := path.relay; p != nil && !p.up() {
			path.err = fmt.Errorf("%w (%w)", p.err(), err)
			return path
		}
		path.err = fmt.Errorf("%s: not confirmed in time: %w", path.name(), err)
		return path
	}
}

// closedChan is a time channel that is always ready: the grace after
// delivery, once it has run out.
var closedChan = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// lastWordWait is how long lastWord waits for a path's own result.
const lastWordWait = 100 * time.Millisecond

// gossiped reports whether the mesh has published d, or has no part in
// sending it.
func gossiped(d *delivery) bool {
	if d.r.mesh == nil {
		return true
	}
	select {
	case <-d.gossiped:
		return true
	default:
		return false
	}
}

// record adds a path's result to the outcome.
func (c *Client) record(sent *Sent, res pathResult) {
	if res.err != nil {
		sent.Failed = append(sent.Failed, res.err)
		return
	}
	if !slices.Contains(sent.Via, res.via) {
		sent.Via = append(sent.Via, res.via)
	}
	if res.relay != nil {
		sent.Relays = append(sent.Relays, res.relay.addr.String())
	}
	if res.ack != nil && sent.Ack == nil {
		sent.Ack = res.ack
	}
	if res.peer != "" {
		sent.MeshPeer = res.peer
	}
}

func copySent(s Sent) Sent {
	s.Via = append([]string(nil), s.Via...)
	s.Relays = append([]string(nil), s.Relays...)
	s.Failed = append([]error(nil), s.Failed...)
	return s
}

// resendOutbox sends our messages that no path took when they were sent,
// room by room, when the room has a path: a peer in its mesh, or the
// relay.
func (c *Client) resendOutbox() {
	c.mu.Lock()
	rooms := make([]*room, 0, len(c.rooms))
	for _, r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.mu.Unlock()
	for _, r := range rooms {
		if !c.relays.anyUp() && (r.mesh == nil || len(r.mesh.Peers()) == 0) {
			continue // no path yet
		}
		r.postMu.Lock()
		err := c.queueOutbox(c.ctx, r, time.Now().Add(c.keepEvery))
		r.postMu.Unlock()
		if err != nil {
			c.log.Warn("send the outbox", "room", r.name, "err", err)
		}
	}
}

// queueOutbox starts sending, in the order they were signed, the room's
// messages in the outbox whose send is not under way, under r.postMu: so
// that a new message never overtakes an older one that no path took.
func (c *Client) queueOutbox(ctx context.Context, r *room, until time.Time) error {
	recs, err := c.st.Outbox(ctx, r.name)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if d, _ := c.startDelivery(r, signed{rec.Env, rec.ID, rec.Raw}, until); d == nil {
			return ErrClosed
		}
	}
	return nil
}

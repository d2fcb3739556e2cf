package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// End-to-end encryption in the client: a private room's messages are
// sealed here, just before they are signed, and opened in the merger,
// as they are stored (package keyring keeps the keys and says what to
// do).

// askRelayFor bounds the wait for the relay's key packages of members
// whose package we do not have before a sender key is sealed.
const askRelayFor = 3 * time.Second

// signSealed signs text t as a sealed message of private room r: after
// our key package's announcement, if the room has not seen our current
// one, and a new sender key, if ours must be replaced. All of them go
// to the outbox, in this order, and leave in it.
func (c *Client) signSealed(ctx context.Context, r *room, t *protocol.Text) (signed, error) {
	head, members, err := c.postHead(ctx, r.name)
	if err != nil {
		return signed{}, err
	}
	if err := c.announce(ctx, r.name, head); err != nil {
		return signed{}, err
	}
	c.askPackages(ctx, r.name, members)
	if err := c.directReachable(ctx, r.name); err != nil {
		return signed{}, err
	}
	// The list again, as it is now: a removal that arrived while the
	// relay was asked for packages must not get this message's key.
	if head, members, err = c.postHead(ctx, r.name); err != nil {
		return signed{}, err
	}
	ep, err := c.ring.Prepare(ctx, r.name, head, members)
	if err != nil {
		return signed{}, err
	}
	if ep != nil {
		for i := range ep.Keys {
			b, err := ep.Keys[i].MarshalBinary()
			if err != nil {
				return signed{}, err
			}
			if _, err := c.sign.sign(ctx, r.name, protocol.KindKeys, b, nil, nil); err != nil {
				return signed{}, err
			}
		}
		if err := ep.Commit(ctx); err != nil {
			return signed{}, err
		}
	}
	return c.sign.sign(ctx, r.name, protocol.KindSealed, nil, t, func(e *protocol.Envelope) error {
		return c.ring.Seal(ctx, e, head, t)
	})
}

// ErrNoKeyPackage: the other person of a direct room has no key package
// we know of (from a room we share, or the relay): nothing sent to them
// could be opened, so nothing is sent.
var ErrNoKeyPackage = errors.New("client: no key package known")

// directReachable checks, in a direct room, that the other person's key
// package is known: the first message to someone must not be one they
// can never open.
func (c *Client) directReachable(ctx context.Context, room string) error {
	l, err := c.roster(ctx, room)
	if err != nil {
		return err
	}
	other, ok := l.Direct(c.home.Key.Public())
	if !ok {
		return nil
	}
	if _, ok, err := c.ring.PackageOf(ctx, other); err != nil || ok {
		return err
	}
	return fmt.Errorf("%w for %s: they have used none of your relays, nor announced one in a room you share (direct messages to someone new need a relay both use)",
		ErrNoKeyPackage, other.ShortFingerprint())
}

// postHead returns the head a message of ours in private room names
// (the change that let us in: whoever holds it can judge the message,
// whatever else they have seen) and the room's current members.
func (c *Client) postHead(ctx context.Context, room string) (protocol.ID, []identity.PublicKey, error) {
	l, err := c.roster(ctx, room)
	if err != nil {
		return protocol.ID{}, nil, err
	}
	head, member := l.MemberSince(c.home.Key.Public())
	switch {
	case l.Len() == 0:
		return protocol.ID{}, nil, fmt.Errorf("%w: %s: its member list has not arrived", ErrNotMember, room)
	case !member:
		// Members and the relay would refuse it: say so now.
		return protocol.ID{}, nil, fmt.Errorf("%w: %s (removed, or never let in)", ErrNotMember, c.RoomName(room))
	}
	var keys []identity.PublicKey
	for _, m := range l.Members() {
		keys = append(keys, m.Key)
	}
	return head, keys, nil
}

// announce signs the announcement of our current key package in room,
// unless the room has it, and hands a new package to the relay.
func (c *Client) announce(ctx context.Context, room string, head protocol.ID) error {
	pkg, fresh, err := c.ring.Current(ctx)
	if err != nil {
		return err
	}
	if fresh {
		c.putPackage()
	}
	if last, err := c.st.Announced(ctx, room); err != nil || last == pkg.ID() {
		return err
	}
	b, err := (&protocol.Announce{Head: head, Package: pkg}).MarshalBinary()
	if err != nil {
		return err
	}
	if _, err := c.sign.sign(ctx, room, protocol.KindKeyPackage, b, nil, nil); err != nil {
		return err
	}
	return c.st.SetAnnounced(ctx, room, pkg.ID())
}

// announceIfMember announces our key package in private room if we are
// a member, so that the others seal their sender keys to us before we
// say anything, and sends it.
func (c *Client) announceIfMember(ctx context.Context, room string) {
	if !protocol.IsPrivateRoom(room) {
		return
	}
	head, _, err := c.postHead(ctx, room)
	if err != nil {
		return
	}
	if err := c.announce(ctx, room, head); err != nil {
		c.log.Warn("announce our key package", "room", room, "err", err)
		return
	}
	c.kickOutbox()
}

// putPackage hands our current key package to each relay, in the
// background: someone who shares no room with us yet finds it there.
func (c *Client) putPackage() {
	for _, p := range c.relays {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.putPackageOn(p)
		}()
	}
}

// putPackageOn hands our current key package to relay p once it is
// connected.
func (c *Client) putPackageOn(p *relayPath) {
	pkg, _, err := c.ring.Current(c.ctx)
	if err != nil {
		return
	}
	raw, err := pkg.MarshalBinary()
	if err != nil {
		return
	}
	if err := p.rc.Ready(c.ctx); err != nil {
		return // closed before the relay was there: the next session puts it
	}
	// Once begun, the put finishes, even if the session is closing: a
	// short-lived command (chat send) must leave its package behind.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), askRelayFor)
	defer cancel()
	if err := p.rc.PutKeyPackage(ctx, raw); err != nil {
		c.log.Info("hand our key package to the relay", "relay", p.addr, "err", err)
	}
}

// askPackages looks for the key packages of members we have none of:
// in the room's messages stored and not shown yet, then at the
// connected relays, one after the other, for a short while each. A
// member not found gets no copy of our sender key until their package
// comes. (A relay holds the packages of its own clients: a member who
// uses another relay of ours is found there.)
func (c *Client) askPackages(ctx context.Context, room string, members []identity.PublicKey) {
	if len(c.missingPackages(ctx, members)) > 0 {
		if err := c.learnUnshown(ctx, room); err != nil {
			c.log.Warn("key packages stored and not shown", "room", room, "err", err)
		}
	}
	for _, p := range c.relays.connected() {
		missing := c.missingPackages(ctx, members)
		if len(missing) == 0 {
			return
		}
		actx, cancel := context.WithTimeout(ctx, askRelayFor)
		raws, err := p.rc.KeyPackages(actx, missing)
		cancel()
		if err != nil {
			c.log.Info("ask the relay for key packages", "relay", p.addr, "n", len(missing), "err", err)
			continue
		}
		for _, raw := range raws {
			if _, err := c.ring.LearnRaw(ctx, raw); err != nil {
				c.log.Info("a key package from the relay", "relay", p.addr, "err", err)
			}
		}
	}
}

// learnUnshown hands the key ring the key packages announced in room's
// messages stored and not shown yet. The merger learns a package as it
// takes the announcement, but the mesh node stores, unshown, what it
// still holds when a session closes before its merger took it (a short
// command's often does), and a crash leaves the same. A later session
// shows them, but not before it seals (the replay runs behind Join),
// and a silent one (chat send) never does: its sender key would leave
// those members out, and they would be told a message was not sealed
// to them. Reading the unshown costs about 12 µs a message
// (BenchmarkUnshown), so it is done only when a member's package is
// missing.
func (c *Client) learnUnshown(ctx context.Context, room string) error {
	recs, err := c.st.Unshown(ctx, room)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(recs, func(rec store.Record) bool { return rec.Env.Kind == protocol.KindKeyPackage }) {
		return nil
	}
	b, err := c.st.Begin(ctx)
	if err != nil {
		return err
	}
	defer b.Rollback()
	op := c.ring.Opener(b)
	for _, rec := range recs {
		if rec.Env.Kind != protocol.KindKeyPackage {
			continue
		}
		if _, err := op.Receive(ctx, rec.Env, rec.ID, rec.Raw); err != nil {
			return fmt.Errorf("a stored key package: %w", err)
		}
	}
	return b.Commit()
}

// missingPackages are the members, but us, whose key package we have not.
func (c *Client) missingPackages(ctx context.Context, members []identity.PublicKey) []identity.PublicKey {
	var missing []identity.PublicKey
	for _, m := range members {
		if m == c.home.Key.Public() {
			continue
		}
		if _, ok, err := c.ring.PackageOf(ctx, m); err == nil && !ok {
			missing = append(missing, m)
		}
	}
	return missing
}

// receiveSealed hands a batch's arrivals of the end-to-end kinds to the
// key ring, in the batch's transaction: key packages and sender keys
// first, then sealed messages, so that a message that came with its key
// opens at once. What it opened or marked is indexed and noted for the
// events.
func (m *merger) receiveSealed(ctx context.Context, b *store.Batch, o *outcome) error {
	op := m.c.ring.Opener(b)
	for pass := range 2 {
		for i := range o.show {
			a := &o.show[i]
			// The end-to-end kinds belong to private rooms (the mesh and
			// the relay refuse them elsewhere; a relay that serves one
			// anyway is not believed).
			if !isE2E(a.env.Kind) || !protocol.IsPrivateRoom(a.env.Room) || (a.env.Kind == protocol.KindSealed) != (pass == 1) {
				continue
			}
			raw := a.raw
			if raw == nil {
				// The mesh hands over the parsed envelope only; a sealed
				// message kept waiting for its key is kept whole. The
				// parser is strict: the encoding is the signed bytes.
				var err error
				if raw, err = a.env.MarshalBinary(); err != nil {
					return fmt.Errorf("client: %s envelope %s: %w", a.env.Kind, a.id, err)
				}
			}
			changed, err := op.Receive(ctx, a.env, a.id, raw)
			if err != nil {
				return fmt.Errorf("client: %s envelope %s: %w", a.env.Kind, a.id, err)
			}
			for _, s := range changed {
				if s.Status == store.SealedOpened {
					if done, err := b.IndexText(ctx, s.ID, s.Nick, s.Body); err != nil {
						return err
					} else if !done {
						o.notes = append(o.notes, note{id: s.ID, text: &protocol.Text{Nick: s.Nick, Body: s.Body}})
					}
				}
				if s.ID != a.id {
					o.opened = append(o.opened, s)
				} else {
					o.sealed[s.ID] = s
				}
			}
		}
	}
	return op.Flush(ctx)
}

func isE2E(k protocol.Kind) bool {
	return k == protocol.KindKeyPackage || k == protocol.KindKeys || k == protocol.KindSealed
}

// sealedText returns the text of a sealed message as the person sees
// it: opened, waiting for its key, or never to open and why.
func (c *Client) sealedText(ctx context.Context, id protocol.ID) (store.Sealed, error) {
	s, ok, err := c.st.Sealed(ctx, id)
	switch {
	case err != nil:
		return store.Sealed{}, err
	case !ok:
		return store.Sealed{ID: id, Status: store.SealedWaiting}, nil
	}
	return s, nil
}

// emitOpened shows again a sealed message that opened, or never will.
func (c *Client) emitOpened(ctx context.Context, s store.Sealed) {
	rec, err := c.st.Get(ctx, s.ID)
	if errors.Is(err, store.ErrNotFound) && s.Raw != nil {
		// The mesh node stores what it delivered right behind: the
		// envelope the key ring kept while it waited stands in.
		rec.Env, err = protocol.Parse(s.Raw)
	}
	if err != nil {
		c.log.Warn("a sealed message that opened", "id", s.ID, "err", err)
		return
	}
	dirty := false
	if msg, ok := c.message(ctx, s.ID, rec.Env, rec.Via, &dirty, &s); ok && !c.silent {
		c.emit(&OpenedEvent{msg})
	}
	if dirty {
		c.saveContacts()
	}
}

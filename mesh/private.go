package mesh

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/roster"
	"github.com/parleychat/parley/store"
)

// Bounds of the envelopes of a private room that wait for a member-list
// change not known yet (a change naming a parent, a post naming a head):
// how many a room holds, how many of one sender, and for how long.
// Changes have places of their own (an admin's burst, come out of order,
// must not be cut short); posts of senders the list has never known as
// members (outsiders, or newcomers whose join is on its way) share a
// small quota, so that they can never take the places of members' posts,
// and do not make the node ask its peers for anything.
const (
	maxWaiting      = 1024
	maxWaitingOf    = 16
	maxStrangers    = 64
	maxStrangersOf  = 4
	heldFor         = 2 * time.Minute
	releasedBacklog = 64
)

// private is a private room's part of a Room: its member list (shared
// with the client core through Config.Rosters) and what waits for it.
type private struct {
	log *roster.Log

	mu        sync.Mutex
	changes   *roster.Waiting[inbound] // member-list changes
	waiting   *roster.Waiting[inbound] // posts of senders the list knows
	strangers *roster.Waiting[inbound] // posts of senders it does not
	released  chan []inbound           // to resume
}

// waiter is an envelope to hold once the validator has decided on it.
type waiter struct {
	r       *Room
	it      inbound
	missing protocol.ID
}

// openPrivate opens the member list of private room room: loaded from the
// store by the first to open it in this process (the book is shared).
func (n *Node) openPrivate(ctx context.Context, room string) (*private, error) {
	l, left, err := n.rosters.Open(room, func() ([]roster.Stored, error) { return storedChanges(ctx, n.store, room) })
	if err != nil {
		return nil, err
	}
	if left > 0 {
		n.log.Warn("member-list changes in the store that do not resolve", "room", room, "n", left)
	}
	return &private{log: l,
		changes:   roster.NewWaiting[inbound](maxWaiting, maxWaiting, heldFor),
		waiting:   roster.NewWaiting[inbound](maxWaiting, maxWaitingOf, heldFor),
		strangers: roster.NewWaiting[inbound](maxStrangers, maxStrangersOf, heldFor),
		released:  make(chan []inbound, releasedBacklog)}, nil
}

// storedChanges reads the member-list changes of room from st.
func storedChanges(ctx context.Context, st *store.Store, room string) ([]roster.Stored, error) {
	recs, err := st.Changes(ctx, room)
	if err != nil {
		return nil, err
	}
	changes := make([]roster.Stored, len(recs))
	for i, rec := range recs {
		changes[i] = roster.Stored{Env: rec.Env, ID: rec.ID}
	}
	return changes, nil
}

// judge asks the member list about a verified envelope of the room
// (roster.Log.Judge).
func (p *private) judge(env *protocol.Envelope, id protocol.ID) (protocol.ID, error) {
	return p.log.Judge(env, id)
}

// commit adds an accepted change to the member list and returns what
// waited for it. When the change makes this node's identity a member, the
// room's history, refused to it until now, is asked of every peer.
func (r *Room) commit(env *protocol.Envelope, id protocol.ID) []inbound {
	if env.Kind != protocol.KindMember {
		return nil
	}
	p, self := r.priv, r.n.cfg.Key.Public()
	was := p.log.IsMember(self)
	if _, err := p.log.Add(env, id); err != nil {
		return nil // judged a moment ago; a concurrent change cannot undo that
	}
	if !was && p.log.IsMember(self) {
		r.catchUpAll()
	}
	now := r.n.cfg.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	var released []inbound
	for _, w := range []*roster.Waiting[inbound]{p.changes, p.waiting, p.strangers} {
		released = append(released, w.Release(id, now)...)
	}
	if op := protocol.Op(env.Payload[0]); op == protocol.OpCreate || op == protocol.OpAdmin {
		// A new admin: the joins whose issuer was not known as one.
		released = append(released, p.changes.Release(protocol.ID{}, now)...)
	}
	return released
}

// catchUpAll asks every peer of the room for its whole history: the
// member list and messages that were refused to a non-member.
func (r *Room) catchUpAll() {
	until := r.n.cfg.now().Add(r.n.cfg.skew()).UnixMilli()
	for _, p := range r.topic.ListPeers() {
		r.requestSync(syncRequest{peer: p, since: 0, until: until})
	}
}

// hold keeps an envelope that waits for change missing, and asks the peer
// it came from for the room's past, where the change must be. Called once
// the envelope's ID is decided in the seen set, so that its release finds
// it free.
func (r *Room) hold(it inbound, missing protocol.ID) {
	p := r.priv
	now := r.n.cfg.now()
	p.mu.Lock()
	w := p.strangers
	switch {
	case it.env.Kind == protocol.KindMember:
		w = p.changes
	case p.log.Known(it.env.Sender):
		w = p.waiting
	}
	ok := w.Hold(missing, it, string(it.env.Sender.Bytes()), now)
	var again []inbound
	if ok {
		// The change may have come between the judgement and now, and
		// found nothing to release: look once more.
		if _, err := p.judge(it.env, it.id); !errors.Is(err, roster.ErrWaiting) {
			again = w.Release(missing, now)
		}
	}
	p.mu.Unlock()
	if !ok {
		r.n.metrics.drop("waiting")
		return
	}
	r.release(again)
	// Only for a sender the list knows: an outsider's post naming made-up
	// changes must not buy a sync of the room's whole past.
	if w != p.strangers && it.from != "" && it.from != r.n.host.ID() && !missing.IsZero() && r.gaps.claim(missing) == unseen {
		// A member-list change may be older than anything else: all of
		// the room's past (a private room's list is never pruned).
		r.requestSync(syncRequest{peer: it.from, since: 0, until: later(it.env.Time), gap: true})
	}
}

// release hands what waited for a change to resume, without blocking: a
// validator calls it.
func (r *Room) release(items []inbound) {
	if len(items) == 0 {
		return
	}
	select {
	case r.priv.released <- items:
	default:
		for range items {
			r.n.metrics.drop("waiting")
		}
	}
}

// resume judges again, in order, the envelopes whose change has arrived,
// and delivers those the member list admits now. They were ignored while
// they waited, so gossipsub did not forward them: each is published again
// here while it is live, which passes it on (the validator finds it
// accepted: forwardKnown), without showing it twice.
func (r *Room) resume() {
	defer r.wg.Done()
	for {
		var queue []inbound
		select {
		case <-r.ctx.Done():
			return
		case queue = <-r.priv.released:
		}
		for len(queue) > 0 {
			it := queue[0]
			queue = queue[1:]
			if r.n.seen.claim(it.id) != unseen {
				continue
			}
			next, ok := r.admitHeld(it)
			queue = append(queue, next...)
			if !ok {
				r.n.seen.decide(it.id, unseen)
				continue
			}
			r.n.seen.decide(it.id, accepted)
			if r.accept(it) != nil {
				return
			}
			if it.via == "mesh" && protocol.WithinSkew(r.n.cfg.now(), it.env.Time, r.n.cfg.skew()) {
				if err := r.topic.Publish(r.ctx, it.raw); err != nil {
					r.n.log.Debug("forward an envelope that waited", "room", r.name, "id", it.id, "err", err)
				}
			}
		}
	}
}

// admitHeld judges a held envelope again, as sync judges one: the member
// list, then the replay guard with the rules of history. It returns what
// waited for it, if it is a change that is now accepted.
func (r *Room) admitHeld(it inbound) ([]inbound, bool) {
	missing, err := r.priv.judge(it.env, it.id)
	switch {
	case errors.Is(err, roster.ErrWaiting):
		r.hold(it, missing)
		return nil, false
	case err != nil:
		return nil, false
	}
	if err := r.n.guard.Check(it.env, it.id, protocol.History); err != nil {
		return nil, false
	}
	return r.commit(it.env, it.id), true
}

// maySync reports whether peer id may catch up the private room from
// this node: a member, or one that allowed says may.
func (p *private) maySync(id peer.ID, allowed func(identity.PublicKey) bool) bool {
	key, err := identityOf(id)
	return err == nil && (p.log.IsMember(key) || allowed != nil && allowed(key))
}

// identityOf returns the identity whose key is peer ID p's.
func identityOf(p peer.ID) (identity.PublicKey, error) {
	lpk, err := p.ExtractPublicKey()
	if err != nil {
		return identity.PublicKey{}, fmt.Errorf("mesh: key of %s: %w", p, err)
	}
	raw, err := lpk.Raw()
	if err != nil {
		return identity.PublicKey{}, fmt.Errorf("mesh: key of %s: %w", p, err)
	}
	return identity.PublicKeyFromBytes(raw)
}

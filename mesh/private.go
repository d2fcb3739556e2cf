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
// change not known yet (a post naming a head, a change naming a parent):
// how many a room holds, and for how long.
const (
	maxWaiting = 1024
	heldFor    = 2 * time.Minute
)

// private is a private room's part of a Room: its member list (shared
// with the client core through Config.Rosters) and what waits for it.
type private struct {
	log *roster.Log

	mu       sync.Mutex
	waiting  *roster.Waiting[inbound]
	released chan []inbound // to resume
}

// openPrivate loads the member list of private room room from the store,
// unless the book has it already.
func (n *Node) openPrivate(ctx context.Context, room string) (*private, error) {
	l, left, err := n.rosters.Open(room, func() ([]roster.Stored, error) { return storedChanges(ctx, n.store, room) })
	if err != nil {
		return nil, err
	}
	if left > 0 {
		n.log.Warn("member-list changes in the store that do not resolve", "room", room, "n", left)
	}
	return &private{log: l, waiting: roster.NewWaiting[inbound](maxWaiting, heldFor), released: make(chan []inbound, 64)}, nil
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

// judge asks the member list about a verified envelope of the room: nil,
// or an error wrapping roster.ErrWaiting (with the ID waited for) or
// roster.ErrRefused.
func (p *private) judge(env *protocol.Envelope, id protocol.ID) (protocol.ID, error) {
	switch env.Kind {
	case protocol.KindMember:
		missing, err := p.log.Check(env, id)
		if len(missing) > 0 {
			return missing[0], err
		}
		return protocol.ID{}, err
	case protocol.KindPost:
		post, err := protocol.ParsePost(env.Payload)
		if err != nil {
			return protocol.ID{}, fmt.Errorf("%w: %v", roster.ErrRefused, err)
		}
		return post.Head, p.log.Admit(env.Sender, post.Head, env.Time)
	}
	return protocol.ID{}, fmt.Errorf("%w: %s envelope in a private room", roster.ErrRefused, env.Kind)
}

// commit adds an accepted change to the member list and returns what
// waited for it.
func (p *private) commit(env *protocol.Envelope, id protocol.ID, now time.Time) []inbound {
	if env.Kind != protocol.KindMember {
		return nil
	}
	if _, err := p.log.Add(env, id); err != nil {
		return nil // judged a moment ago; a concurrent change cannot undo that
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	released := p.waiting.Release(id, now)
	if op := env.Payload[0]; protocol.Op(op) == protocol.OpCreate || protocol.Op(op) == protocol.OpAdmin {
		// A new admin: the joins whose issuer was not known as one.
		released = append(released, p.waiting.Release(protocol.ID{}, now)...)
	}
	return released
}

// hold keeps an envelope that waits for change missing, and asks the peer
// it came from for the room's recent past, where the change must be.
func (r *Room) hold(it inbound, missing protocol.ID) {
	p := r.priv
	p.mu.Lock()
	ok := p.waiting.Hold(missing, it, r.n.cfg.now())
	p.mu.Unlock()
	if !ok {
		r.n.metrics.drop("waiting")
		return
	}
	if it.from != "" && it.from != r.n.host.ID() && r.gaps.claim(missing) == unseen {
		r.requestSync(syncRequest{peer: it.from, since: it.env.Time - maxGapRange.Milliseconds(), until: it.env.Time + 1, gap: true})
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
// and delivers those the member list admits now. They were held rather
// than accepted, so gossipsub does not forward them: their other copies
// reach the rest of the room.
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
	return r.priv.commit(it.env, it.id, r.n.cfg.now()), true
}

// memberOf reports whether peer p is a member of the private room.
func (p *private) memberOf(id peer.ID) bool {
	key, err := identityOf(id)
	return err == nil && p.log.IsMember(key)
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

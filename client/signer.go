package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// signer makes the person's envelopes: the one place in a home folder
// that hands out their sequence numbers, links their hash chain and ticks
// their Lamport clock. Two signers over one reservations table would hand
// out the same numbers once a block ran out, which the network takes for
// equivocation: the mesh node signs nothing, and a home folder is held
// by one process (its lock).
type signer struct {
	key   identity.PrivateKey
	st    *store.Store
	now   func() time.Time
	alloc protocol.SeqAllocator
	clock *protocol.LamportClock

	mu    sync.Mutex             // one envelope at a time: numbers and chain in order
	heads map[string]protocol.ID // our last envelope in each room, read from the store once
}

func newSigner(key identity.PrivateKey, st *store.Store, clock *protocol.LamportClock, now func() time.Time) *signer {
	return &signer{key: key, st: st, now: now, alloc: protocol.SeqAllocator{Store: st}, clock: clock,
		heads: make(map[string]protocol.ID)}
}

// signed is an envelope we made, as it goes out.
type signed struct {
	env *protocol.Envelope
	id  protocol.ID
	raw []byte
}

// sign makes our next envelope of kind in room and stores it, in the
// outbox until a path confirms it, in one transaction with its search
// entry (text, as the person wrote it): nothing leaves that is not kept.
// seal, if not nil, sets the payload (a sealed message's depends on the
// header): it is called with every field set but the payload and the
// signature.
func (s *signer) sign(ctx context.Context, room string, kind protocol.Kind, payload []byte, text *protocol.Text, seal func(*protocol.Envelope) error) (signed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, err := s.head(ctx, room)
	if err != nil {
		return signed{}, err
	}
	seq, err := s.alloc.Next(room)
	if err != nil {
		return signed{}, err
	}
	e := &protocol.Envelope{
		Kind:    kind,
		Room:    room,
		Seq:     seq,
		Prev:    prev,
		Lamport: s.clock.Tick(),
		Time:    s.now().UnixMilli(),
		Payload: payload,
	}
	e.Sender = s.key.Public()
	if seal != nil {
		if err := seal(e); err != nil {
			return signed{}, err
		}
	}
	id, err := e.Sign(s.key)
	if err != nil {
		return signed{}, err
	}
	raw, err := e.MarshalBinary()
	if err != nil {
		return signed{}, err
	}
	if err := s.keep(ctx, room, signed{e, id, raw}, text); err != nil {
		return signed{}, err
	}
	s.heads[room] = id
	return signed{e, id, raw}, nil
}

// head returns the ID of our last envelope in room, under mu.
func (s *signer) head(ctx context.Context, room string) (protocol.ID, error) {
	if id, ok := s.heads[room]; ok {
		return id, nil
	}
	last, err := s.st.Last(ctx, s.key.Public(), room)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return protocol.ID{}, nil
	case err != nil:
		return protocol.ID{}, fmt.Errorf("our last message in %s: %w", room, err)
	}
	s.heads[room] = last.ID
	return last.ID, nil
}

func (s *signer) keep(ctx context.Context, room string, m signed, text *protocol.Text) error {
	b, err := s.st.Begin(ctx)
	if err != nil {
		return err
	}
	defer b.Rollback()
	if _, err := b.Append(ctx, []store.Record{{ID: m.id, Env: m.env, Raw: m.raw, Via: ViaLocal, Received: s.now()}}); err != nil {
		return err
	}
	if text != nil {
		if _, err := b.IndexText(ctx, m.id, text.Nick, text.Body); err != nil {
			return err
		}
	}
	if text != nil && m.env.Kind == protocol.KindSealed {
		// Its keys are gone once it is sealed: what we wrote is kept as
		// an opened message, as a member who received it keeps it.
		if err := b.PutOpened(ctx, m.id, text.Nick, text.Body, false); err != nil {
			return err
		}
	}
	if err := b.AddOutbox(ctx, room, m.id); err != nil {
		return err
	}
	return b.Commit()
}

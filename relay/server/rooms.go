package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// "My private rooms" (RoomsRequest): the private rooms whose member list
// has the connection's identity as a member now. A client learns so of a
// direct room someone started with it, or of a room it was added to,
// while it was away, without knowing the room's ID.
//
// How the relay finds them. The relay does not keep every member list in
// memory: it opens a room's list from its store the first time it needs
// it (openPrivate), so after a restart it has only the rooms used since.
// Opening every private room of the store to answer one request would
// let any client make a big relay read, resolve and keep every list it
// has. And the store has no lookup by member: a room's changes are found
// by room (the partial index envelopes_changes, over kind-2 envelopes),
// and the keys a change names are inside its payload.
//
// So the relay keeps an index, memberIndex: for each identity key, the
// private rooms whose list has ever named that key as becoming a member
// (a creation's author, a direct room's two people, an add's target, a
// join's author: the only ways roster.Log makes a member). It is a
// superset of the rooms the key is a member of now. It is filled once
// from the store's changes when the relay starts (in the background;
// requests wait for it), and then by each change the relay adds to a
// list (privateRoom.commit: publishes and the mesh's envelopes alike),
// before the store commits that change. A request takes the identity's
// candidates, and asks each room's list, opened as any member check
// opens it, whether the identity is a member now. So one request reads
// only the lists of the rooms that name its own identity, each once in
// the relay's life, and the relay holds, beside the lists it holds
// anyway, about 100 bytes per (key, room), never whole lists of rooms
// nobody asks about. Nothing is removed from the index: a member who is
// removed stays a candidate (the list answers no), and may be added
// again.
//
// Keeping the index in the relay's memory, not in a table of the
// store, costs one read of every change at start. A store table of
// (member key, room) written in the commit's transaction would spare
// that; the index here needs nothing of the store's schema.

// memberIndex maps identity keys to the private rooms that named them
// as members.
type memberIndex struct {
	mu    sync.Mutex
	rooms map[identity.PublicKey]map[roomHash]struct{}
	err   error         // the last failure to build, until one succeeds
	ready chan struct{} // closed once built from the store
}

// roomHash is a private room's ID, as the 20 bytes it encodes: smaller
// in the index than the 34-character ID.
type roomHash = [20]byte

func newMemberIndex() *memberIndex {
	return &memberIndex{rooms: map[identity.PublicKey]map[roomHash]struct{}{}, ready: make(chan struct{})}
}

// note indexes the keys that a member-list change makes members. Any
// other envelope, or a change that does not parse, is nothing to it.
func (x *memberIndex) note(env *protocol.Envelope) {
	if env.Kind != protocol.KindMember {
		return
	}
	h, ok := protocol.PrivateRoomHash(env.Room)
	if !ok {
		return
	}
	c, err := protocol.ParseChange(env.Payload)
	if err != nil {
		return
	}
	var keys []identity.PublicKey
	switch c.Op {
	case protocol.OpCreate, protocol.OpJoin:
		keys = []identity.PublicKey{env.Sender}
	case protocol.OpAdd:
		keys = []identity.PublicKey{c.Target}
	case protocol.OpDirect:
		keys = []identity.PublicKey{env.Sender, c.Target}
	default:
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, k := range keys {
		set := x.rooms[k]
		if set == nil {
			set = map[roomHash]struct{}{}
			x.rooms[k] = set
		}
		set[h] = struct{}{}
	}
}

// candidates returns, in ascending order, the IDs of the private rooms
// that named key as a member and sort after after, once the index is
// built; it waits for that.
func (x *memberIndex) candidates(ctx context.Context, key identity.PublicKey, after string) ([]string, error) {
	select {
	case <-x.ready:
	default:
		x.mu.Lock()
		err := x.err
		x.mu.Unlock()
		if err != nil {
			return nil, &wire.RelayError{Code: wire.CodeInternal, Message: "the relay's index of private rooms is not loaded: " + err.Error()}
		}
		select {
		case <-x.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	x.mu.Lock()
	out := make([]string, 0, len(x.rooms[key]))
	for h := range x.rooms[key] {
		if room := protocol.PrivateRoomFromHash(h); room > after {
			out = append(out, room)
		}
	}
	x.mu.Unlock()
	slices.Sort(out)
	return out, nil
}

// indexRetry is how long the relay waits to build the index again after
// a failure.
const indexRetry = 10 * time.Second

// startMemberIndex builds the index of private room members from the
// store in the background, until it succeeds or ctx ends. The returned
// function waits for it to end.
func (s *Server) startMemberIndex(ctx context.Context) (wait func()) {
	x := s.private.members
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			start := time.Now()
			n, err := s.buildMemberIndex(ctx, x)
			if err == nil {
				x.mu.Lock()
				x.err = nil
				x.mu.Unlock()
				close(x.ready)
				s.log.Debug("index of private room members built", "rooms", n, "took", time.Since(start))
				return
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Error("index of private room members not built; trying again", "err", err, "in", indexRetry)
			x.mu.Lock()
			x.err = err
			x.mu.Unlock()
			t := time.NewTimer(indexRetry)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	}()
	return func() { <-done }
}

// buildMemberIndex adds the changes of every private room in the store
// to x, and returns how many rooms it read. Changes committed meanwhile
// reach x through privateRoom.commit too: adding one twice is nothing.
func (s *Server) buildMemberIndex(ctx context.Context, x *memberIndex) (int, error) {
	rooms, err := s.storedPrivateRooms(ctx)
	if err != nil {
		return 0, err
	}
	for _, room := range rooms {
		recs, err := s.st.Changes(ctx, room)
		if err != nil {
			return 0, err
		}
		for _, r := range recs {
			x.note(r.Env)
		}
	}
	return len(rooms), nil
}

// storedPrivateRooms returns the IDs of the private rooms the store has
// envelopes of, in ascending order. The sequencer read every (sender,
// room) of the store at start (Heads) unless there were too many for it;
// then they are read again here, all of them.
func (s *Server) storedPrivateRooms(ctx context.Context) ([]string, error) {
	set := map[string]struct{}{}
	q := s.seq
	q.known.Lock()
	complete := q.complete
	if complete {
		for k := range q.pairs {
			if protocol.IsPrivateRoom(k.room) {
				set[k.room] = struct{}{}
			}
		}
	}
	q.known.Unlock()
	if !complete {
		if _, err := s.st.Heads(ctx, 1<<40, func(h store.Head) {
			if protocol.IsPrivateRoom(h.Room) {
				set[h.Room] = struct{}{}
			}
		}); err != nil {
			return nil, fmt.Errorf("relay: private rooms of the store: %w", err)
		}
	}
	rooms := make([]string, 0, len(set))
	for r := range set {
		rooms = append(rooms, r)
	}
	slices.Sort(rooms)
	return rooms, nil
}

// privateRoomsOf answers a RoomsRequest: the private rooms the
// connection's identity is a member of now, after the room asked, in
// ascending order, at most wire.MaxRooms of them (End's more then says
// there are more), in Rooms frames of at most wire.MaxRoomsFrame, then
// End. The checks: the body parses (Error 1); the policy lets the
// identity use the relay (13, 14); the identity's rate, the publish
// rate, admins exempt (6), as for PutKeys. A room whose rules do not let
// the identity read it is left out, as a closed room is in FetchIDs.
// Not recorded in the audit log.
func (s *Server) privateRoomsOf(ctx context.Context, c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParseRoomsRequest(body)
	if err != nil {
		return err
	}
	if d := s.policy.connect(c.fp); !d.Allow {
		return d.Err()
	}
	if !s.policy.admin(c.fp) && !s.idRates.allow(c.fp, s.now()) {
		return &wire.RelayError{Code: wire.CodeRateLimited, Message: "over the publish rate, which rooms requests share"}
	}
	cands, err := s.private.members.candidates(ctx, c.id, m.After)
	if err != nil {
		return err
	}
	var (
		rooms []string
		more  bool
	)
	for _, room := range cands {
		if !s.policy.Read(c.id, room).Allow {
			continue
		}
		pr, err := s.openPrivate(ctx, room, false)
		if err != nil {
			return err
		}
		if pr == nil || !pr.log.IsMember(c.id) {
			continue // removed since, or never made a member after all
		}
		if len(rooms) == wire.MaxRooms {
			more = true
			break
		}
		rooms = append(rooms, room)
	}
	for first := true; first || len(rooms) > 0; first = false {
		page := rooms[:min(len(rooms), wire.MaxRoomsFrame)]
		rooms = rooms[len(page):]
		if err := fw.Msg(wire.FrameRooms, &wire.Rooms{Rooms: page}); err != nil {
			return err
		}
	}
	return fw.Msg(wire.FrameEnd, &wire.End{More: more})
}

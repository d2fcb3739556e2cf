package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/roster"
)

// Private rooms (protocol.IsPrivateRoom): the relay judges every
// envelope of one by the room's member list, as the mesh node does
// (package roster): a change its author may make, a post whose sender
// was a member at the head it names. It serves a private room's
// envelopes to its current members only. The member lists are in a
// roster.Book that the relay's mesh node shares (run.go), each loaded
// from the relay's own store the first time the relay needs it.

const (
	// memberWait is the longest a publish waits for the member-list
	// change it names (a post's head, a change's parent) to reach the
	// relay, in all for the publishes read in one go from a stream.
	memberWait = 5 * time.Second
	// memberPoll is how often a waiting publish looks at the member list
	// again, besides being woken when the relay adds a change: the mesh
	// node adds changes to the shared list too.
	memberPoll = 250 * time.Millisecond
)

// privateRooms are the member lists the relay has opened, and the index
// of who was made a member where (rooms.go).
type privateRooms struct {
	book    *roster.Book
	members *memberIndex

	mu    sync.Mutex
	rooms map[string]*privateRoom
}

func newPrivateRooms(book *roster.Book) *privateRooms {
	if book == nil {
		book = roster.NewBook()
	}
	return &privateRooms{book: book, members: newMemberIndex(), rooms: map[string]*privateRoom{}}
}

// privateRoom is one private room's member list, as the relay uses it.
type privateRoom struct {
	log     *roster.Log
	members *memberIndex // what commit tells of the changes it adds

	load   sync.Mutex // held while the list is read from the store
	loaded bool       // guarded by load
	joins  sync.Mutex // held from judging a published join to adding it

	mu    sync.Mutex
	grown chan struct{} // closed, and replaced, when the relay adds a change
}

// growth returns a channel that is closed at the next change the relay
// adds to the list. Take it before judging, so that no change is missed
// between the judging and the wait.
func (pr *privateRoom) growth() <-chan struct{} {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.grown
}

// notify wakes the publishes that wait for a change of the room.
func (pr *privateRoom) notify() {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	close(pr.grown)
	pr.grown = make(chan struct{})
}

// judge asks the member list about a verified envelope of the room
// (roster.Log.Judge): nil, or an error wrapping roster.ErrWaiting (with
// the ID waited for; the zero ID: an admin role not known yet),
// roster.ErrRemoved or roster.ErrRefused.
func (pr *privateRoom) judge(env *protocol.Envelope, id protocol.ID) (protocol.ID, error) {
	return pr.log.Judge(env, id)
}

// isJoin reports whether env is a member-list change of op OpJoin.
func isJoin(env *protocol.Envelope) bool { return isOp(env, protocol.OpJoin) }

// isOp reports whether env is a member-list change of operation op.
func isOp(env *protocol.Envelope, op protocol.Op) bool {
	return env.Kind == protocol.KindMember && len(env.Payload) > 0 && protocol.Op(env.Payload[0]) == op
}

// commit adds a change that judge passed to the list, notes whom it
// makes a member in the index of members (rooms.go), and wakes what
// waits for it. A post has nothing to add.
func (pr *privateRoom) commit(env *protocol.Envelope, id protocol.ID) error {
	if env.Kind != protocol.KindMember {
		return nil
	}
	if _, err := pr.log.Add(env, id); err != nil {
		return err
	}
	if pr.members != nil {
		pr.members.note(env)
	}
	pr.notify()
	return nil
}

// Rosters returns the member lists of private rooms the relay judges
// with: its mesh node must share them (mesh.Config.Rosters).
func (s *Server) Rosters() *roster.Book { return s.private.book }

// openPrivate returns the member list of private room room, read from
// the store the first time. With create false, a room the relay has not
// opened yet and whose store holds no change is not opened: it returns
// nil, so that asking about made-up room IDs costs the relay no memory.
func (s *Server) openPrivate(ctx context.Context, room string, create bool) (*privateRoom, error) {
	p := s.private
	p.mu.Lock()
	pr := p.rooms[room]
	p.mu.Unlock()
	if pr == nil && !create {
		recs, err := s.st.Changes(ctx, room)
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			return nil, nil
		}
	}
	if pr == nil {
		p.mu.Lock()
		if pr = p.rooms[room]; pr == nil {
			// The book may have the log already (the mesh node opened
			// the room, from its own store): the relay loads its own
			// store into it all the same. Adding a change twice is
			// nothing.
			l, _ := p.book.Log(room)
			pr = &privateRoom{log: l, members: p.members, grown: make(chan struct{})}
			p.rooms[room] = pr
		}
		p.mu.Unlock()
	}
	pr.load.Lock()
	defer pr.load.Unlock()
	if !pr.loaded {
		recs, err := s.st.Changes(ctx, room)
		if err != nil {
			return nil, fmt.Errorf("relay: member list of %s: %w", room, err)
		}
		changes := make([]roster.Stored, len(recs))
		for i, r := range recs {
			changes[i] = roster.Stored{Env: r.Env, ID: r.ID}
		}
		if left := pr.log.Load(changes); left > 0 {
			s.log.Warn("member-list changes in the store that do not resolve", "room", room, "n", left)
		}
		pr.loaded = true
		pr.notify()
	}
	return pr, nil
}

// member checks that id is a member of private room room now, for a
// request that reads the room's envelopes. It returns the room's list,
// or an error with CodeNotMember.
func (s *Server) member(ctx context.Context, id identity.PublicKey, room string) (*privateRoom, error) {
	pr, err := s.openPrivate(ctx, room, false)
	if err != nil {
		return nil, err
	}
	if pr == nil || !pr.log.IsMember(id) {
		return nil, notMember(id, room)
	}
	return pr, nil
}

func notMember(id identity.PublicKey, room string) *wire.RelayError {
	return &wire.RelayError{Code: wire.CodeNotMember, Message: fmt.Sprintf("%s is not a member of private room %s", id.ShortFingerprint(), room)}
}

// judgePublish judges a publish of a private room by the member list,
// after the relay's own checks: CodeOK if it passes, else the code and
// text of the Nack. A change that passes is added to the list at once,
// so that the next publish (a post naming it) is judged with it; a join
// passes only if it makes its author a member. A publish that names a
// change the relay does not have waits for it, within the batch's bound,
// after b's publishes that passed so far are queued.
func (s *Server) judgePublish(ctx context.Context, env *protocol.Envelope, id protocol.ID, b *publishBatch) (wire.ErrorCode, string) {
	// Only a room's first change (a creation, or a direct room's start)
	// makes the relay keep a list for a room it does not know: made-up
	// room IDs cost it nothing.
	pr, err := s.openPrivate(ctx, env.Room, isOp(env, protocol.OpCreate) || isOp(env, protocol.OpDirect))
	if err != nil {
		if ctx.Err() != nil {
			return wire.CodeShuttingDown, "the relay is shutting down"
		}
		return wire.CodeInternal, err.Error()
	}
	if pr == nil {
		return wire.CodeNotMember, fmt.Sprintf("private room %s is not known to the relay (its first change never reached it)", env.Room)
	}
	missing, err := pr.judge(env, id)
	if errors.Is(err, roster.ErrWaiting) {
		b.flush()
		if b.until.IsZero() {
			b.until = time.Now().Add(s.memberWait)
		}
		if s.onMemberWait != nil {
			s.onMemberWait(env.Room, missing)
		}
		missing, err = s.awaitChange(ctx, pr, env, id, b.until)
	}
	if err == nil && isJoin(env) {
		// A join that would make nobody a member (an invite used up,
		// revoked, expired) is refused here, so that the joiner learns
		// at once; the mesh keeps such a join, since changes it has not
		// seen might make it count. One join at a time: two joins with
		// the last use of an invite must not both pass.
		pr.joins.Lock()
		if err = pr.log.JoinEffect(env, id); err == nil {
			err = pr.commit(env, id)
		}
		pr.joins.Unlock()
	} else if err == nil {
		err = pr.commit(env, id)
	}
	switch {
	case err == nil:
		return wire.CodeOK, ""
	case errors.Is(err, roster.ErrWaiting):
		return wire.CodeNotMember, unknownChange(env, missing)
	case errors.Is(err, roster.ErrRefused), errors.Is(err, roster.ErrRemoved):
		return wire.CodeNotMember, err.Error()
	case ctx.Err() != nil:
		return wire.CodeShuttingDown, "the relay is shutting down"
	}
	return wire.CodeInternal, err.Error()
}

// awaitChange judges env again each time the room's list grows (and
// every memberPoll), until it no longer waits or until passes.
func (s *Server) awaitChange(ctx context.Context, pr *privateRoom, env *protocol.Envelope, id protocol.ID, until time.Time) (protocol.ID, error) {
	for {
		grown := pr.growth()
		missing, err := pr.judge(env, id)
		left := time.Until(until)
		if !errors.Is(err, roster.ErrWaiting) || left <= 0 {
			return missing, err
		}
		t := time.NewTimer(min(left, memberPoll))
		select {
		case <-grown:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return missing, ctx.Err()
		}
		t.Stop()
	}
}

// unknownChange is the text of the Nack of a publish whose change never
// came.
func unknownChange(env *protocol.Envelope, missing protocol.ID) string {
	switch {
	case missing.IsZero():
		return fmt.Sprintf("the invite's issuer is not known to the relay as an admin of private room %s", env.Room)
	case env.Kind.HasHead():
		return fmt.Sprintf("the member-list head %s this %s names is unknown to the relay", missing, env.Kind)
	}
	return fmt.Sprintf("the member-list change %s this change names is unknown to the relay", missing)
}

// judgeIngest judges an envelope of a private room that came from the
// mesh, and reports whether to store it. The mesh node judged it with
// the same list; the mesh's own sync brings again what waits here.
func (s *Server) judgeIngest(ctx context.Context, env *protocol.Envelope, id protocol.ID) bool {
	pr, err := s.openPrivate(ctx, env.Room, true)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("bridge: member list", "room", env.Room, "err", err)
		}
		return false
	}
	missing, err := pr.judge(env, id)
	if err == nil {
		err = pr.commit(env, id)
	}
	switch {
	case err == nil:
		return true
	case errors.Is(err, roster.ErrWaiting):
		s.log.Debug("bridge: envelope names a member-list change the relay does not have; dropped", "id", id, "room", env.Room, "missing", missing)
	default:
		s.log.Debug("bridge: envelope refused by the member list", "id", id, "room", env.Room, "err", err)
	}
	return false
}

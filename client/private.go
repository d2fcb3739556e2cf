package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/roster"
)

// Errors of private rooms, for errors.Is.
var (
	// ErrNotPrivate: the room is not a private room.
	ErrNotPrivate = errors.New("client: not a private room")
	// ErrNotAdmin: only an admin of the room may do this.
	ErrNotAdmin = errors.New("client: not an admin of the room")
	// ErrNotMember: we are not a member of the private room, or the
	// person named is not.
	ErrNotMember = errors.New("client: not a member of the room")
	// ErrJoinRefused: our join did not make us a member: the invite is
	// used up, revoked or expired, or its issuer is no longer an admin.
	ErrJoinRefused = errors.New("client: the invite did not let us in")
)

// roster returns the member list of private room room, loaded from the
// store the first time (by the mesh node or here: the book is shared).
func (c *Client) roster(ctx context.Context, room string) (*roster.Log, error) {
	if !protocol.IsPrivateRoom(room) {
		return nil, fmt.Errorf("%w: %s", ErrNotPrivate, room)
	}
	l, left, err := c.rosters.Open(room, func() ([]roster.Stored, error) {
		recs, err := c.st.Changes(ctx, room)
		if err != nil {
			return nil, err
		}
		changes := make([]roster.Stored, len(recs))
		for i, rec := range recs {
			changes[i] = roster.Stored{Env: rec.Env, ID: rec.ID}
		}
		return changes, nil
	})
	if left > 0 {
		c.log.Warn("member-list changes in the store that do not resolve", "room", room, "n", left)
	}
	return l, err
}

// relayMaySync is the mesh's MaySync: the relays we use may catch up our
// private rooms from our node.
func (c *Client) relayMaySync() func(identity.PublicKey) bool {
	addrs, err := c.cfg.Relays.Addrs()
	if len(addrs) == 0 || err != nil {
		return nil
	}
	return func(key identity.PublicKey) bool {
		return slices.ContainsFunc(addrs, func(a relay.Addr) bool { return a.Fingerprint == key.Fingerprint() })
	}
}

// payload encodes what publish signs in the clear: text t in a public
// room, or change ch of a private room's member list with the list's
// heads as parents. (A private room's text is sealed: signSealed.)
func (c *Client) payload(ctx context.Context, room string, t *protocol.Text, ch *protocol.Change) (protocol.Kind, []byte, error) {
	if !protocol.IsPrivateRoom(room) {
		b, err := t.MarshalBinary()
		return protocol.KindText, b, err
	}
	l, err := c.roster(ctx, room)
	if err != nil {
		return 0, nil, err
	}
	if ch.Op != protocol.OpCreate && ch.Op != protocol.OpJoin && ch.Op != protocol.OpDirect {
		ch.Parents, _ = l.ParentsFor(c.home.Key.Public())
	}
	b, err := ch.MarshalBinary()
	return protocol.KindMember, b, err
}

// addChange adds a change we signed to the room's member list.
func (c *Client) addChange(ctx context.Context, m signed) error {
	l, err := c.roster(ctx, m.env.Room)
	if err != nil {
		return err
	}
	_, err = l.Add(m.env, m.id)
	return err
}

// change signs and sends a change of room's member list, and waits for a
// path to confirm it, as Send does.
func (c *Client) change(ctx context.Context, room string, ch *protocol.Change) (Sent, error) {
	d, err := c.publish(ctx, room, nil, ch)
	if err != nil {
		return Sent{}, err
	}
	return c.await(ctx, d)
}

// CreateRoom makes a private room named name, with us as its first member
// and admin, and joins it. It returns the room's ID, which nobody can
// guess: others come in with an invite (Invite).
func (c *Client) CreateRoom(ctx context.Context, name string) (string, Sent, error) {
	if err := protocol.ValidRoomName(name); err != nil {
		return "", Sent{}, fmt.Errorf("client: create room: %w", err)
	}
	ch := &protocol.Change{Op: protocol.OpCreate, Name: name}
	if _, err := rand.Read(ch.Nonce[:]); err != nil {
		return "", Sent{}, fmt.Errorf("client: create room: %w", err)
	}
	room := protocol.PrivateRoomID(c.home.Key.Public(), ch.Nonce)
	if len(c.relays) == 0 {
		// A new room has no peer yet: its list goes to the first
		// member who joins, from our store. Nothing to wait for.
		d, err := c.publish(ctx, room, nil, ch)
		if err != nil {
			return "", Sent{}, err
		}
		c.announceIfMember(ctx, room)
		return room, Sent{ID: d.id, Time: d.time}, nil
	}
	// With a relay, the relay must have it before we may go offline:
	// newcomers join through it.
	sent, err := c.change(ctx, room, ch)
	if err == nil {
		c.announceIfMember(ctx, room)
	}
	return room, sent, err
}

// admin returns the member list of room, if we are an admin of it.
func (c *Client) admin(ctx context.Context, room string) (*roster.Log, error) {
	l, err := c.roster(ctx, room)
	if err != nil {
		return nil, err
	}
	if !l.IsAdmin(c.home.Key.Public()) {
		return nil, fmt.Errorf("%w: %s", ErrNotAdmin, c.RoomName(room))
	}
	return l, nil
}

// Invite makes an invite code to private room room, good for uses joins
// until ttl from now, and records it on the member list so that every
// admin can list and revoke it. Joining with it needs no admin online.
func (c *Client) Invite(ctx context.Context, room string, uses int, ttl time.Duration) (*roster.Code, error) {
	l, err := c.admin(ctx, room)
	if err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("client: invite: expiry %s is not in the future", ttl)
	}
	// The member list's next clock: its joins sort after all we have
	// seen, and a removal we have seen is older than the invite.
	code, err := roster.NewCode(rand.Reader, c.home.Key, room, l.Clock()+1, c.now().Add(ttl), uses)
	if err != nil {
		return nil, fmt.Errorf("client: invite: %w", err)
	}
	// The record is for listing and revoking; joining does not need it,
	// so it goes out as paths allow (the outbox keeps it meanwhile).
	if _, err := c.publish(ctx, room, nil, code.Record(nil)); err != nil {
		return nil, fmt.Errorf("client: record the invite: %w", err)
	}
	return code, nil
}

// JoinCode joins the private room of an invite code: it joins the room,
// sends our join change and waits until the member list (synced from the
// relay or the room's peers) makes us a member, or ctx ends. It returns
// the room's ID.
func (c *Client) JoinCode(ctx context.Context, text string) (string, error) {
	code, err := roster.ParseCode(text)
	if err != nil {
		return "", err
	}
	if !c.now().Before(code.Expires()) {
		return "", fmt.Errorf("%w: it expired at %s", ErrJoinRefused, code.Expires().Format(time.RFC3339))
	}
	self := c.home.Key.Public()
	if l, err := c.roster(ctx, code.Room); err == nil && l.IsMember(self) {
		return code.Room, c.Join(ctx, code.Room)
	}
	ch, err := code.Join(self)
	if err != nil {
		return "", err
	}
	if _, err := c.change(ctx, code.Room, ch); err != nil {
		return "", err
	}
	if err := c.awaitMembership(ctx, code.Room); err != nil {
		return code.Room, err
	}
	c.announceIfMember(ctx, code.Room)
	return code.Room, nil
}

// awaitMembership waits until the member list of room has us as a
// member, asking the room's mesh peers for its history again and again
// (they refused it before our join reached them).
func (c *Client) awaitMembership(ctx context.Context, room string) error {
	l, err := c.roster(ctx, room)
	if err != nil {
		return err
	}
	self := c.home.Key.Public()
	pause := 100 * time.Millisecond
	for !l.IsMember(self) {
		c.syncRoom(ctx, room)
		if l.IsMember(self) {
			break
		}
		select {
		case <-time.After(pause):
			pause = min(2*pause, 2*time.Second)
		case <-ctx.Done():
			if l.Len() > 1 {
				return fmt.Errorf("%w: the room's member list arrived without our join taking effect", ErrJoinRefused)
			}
			// Nobody answered: not a refusal, and the join is kept.
			return fmt.Errorf("%w: no member or relay has confirmed our join yet: %w", ErrNoPath, ctx.Err())
		case <-c.ctx.Done():
			return ErrClosed
		}
	}
	return nil
}

// syncRoom asks each mesh peer of room for its history.
func (c *Client) syncRoom(ctx context.Context, room string) {
	c.mu.Lock()
	r := c.rooms[room]
	c.mu.Unlock()
	if r == nil || r.mesh == nil {
		return
	}
	until := c.now().Add(time.Minute).UnixMilli()
	for _, p := range r.mesh.Peers() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := r.mesh.SyncFrom(sctx, p, 0, until); err != nil {
			c.log.Debug("sync a private room", "room", room, "peer", p, "err", err)
		}
		cancel()
	}
}

// member checks that key is a member of room.
func member(l *roster.Log, key identity.PublicKey) error {
	if !l.IsMember(key) {
		return fmt.Errorf("%w: %s", ErrNotMember, key.ShortFingerprint())
	}
	return nil
}

// Remove removes member key from private room room (we must be an admin).
// Their later posts are refused by every member and by the relay.
func (c *Client) Remove(ctx context.Context, room string, key identity.PublicKey) (Sent, error) {
	l, err := c.admin(ctx, room)
	if err != nil {
		return Sent{}, err
	}
	if err := member(l, key); err != nil {
		return Sent{}, err
	}
	return c.change(ctx, room, &protocol.Change{Op: protocol.OpRemove, Target: key})
}

// SetAdmin makes member key an admin of room, or drops their role.
func (c *Client) SetAdmin(ctx context.Context, room string, key identity.PublicKey, admin bool) (Sent, error) {
	l, err := c.admin(ctx, room)
	if err != nil {
		return Sent{}, err
	}
	if err := member(l, key); err != nil {
		return Sent{}, err
	}
	op := protocol.OpAdmin
	if !admin {
		op = protocol.OpUnadmin
	}
	return c.change(ctx, room, &protocol.Change{Op: op, Target: key})
}

// Rename renames private room room (we must be an admin).
func (c *Client) Rename(ctx context.Context, room, name string) (Sent, error) {
	if _, err := c.admin(ctx, room); err != nil {
		return Sent{}, err
	}
	if err := protocol.ValidRoomName(name); err != nil {
		return Sent{}, err
	}
	return c.change(ctx, room, &protocol.Change{Op: protocol.OpRename, Name: name})
}

// Revoke revokes the invite whose key is key: later joins with it are
// void everywhere.
func (c *Client) Revoke(ctx context.Context, room string, key identity.PublicKey) (Sent, error) {
	if _, err := c.admin(ctx, room); err != nil {
		return Sent{}, err
	}
	return c.change(ctx, room, &protocol.Change{Op: protocol.OpRevoke, Target: key})
}

// Leave leaves a room: in a private room we first remove ourselves from
// its member list (so that members and the relay stop handing us its
// messages), then, as for any room, leave it on every path and take it
// off the home folder's room list. Its history stays; what it did not
// deliver stays in the outbox, and goes out when the room is joined
// again. Leaving a room not joined only takes it off the list.
func (c *Client) Leave(ctx context.Context, room string) error {
	if protocol.IsPrivateRoom(room) {
		l, err := c.roster(ctx, room)
		if err != nil {
			return err
		}
		if l.IsMember(c.home.Key.Public()) {
			if _, err := c.change(ctx, room, &protocol.Change{Op: protocol.OpRemove, Target: c.home.Key.Public()}); err != nil {
				return err
			}
		}
	}
	return c.leavePaths(ctx, room)
}

// RoomMember is a member of a private room as the person sees them.
type RoomMember struct {
	Key   identity.PublicKey
	Admin bool
	// Nick and Trust are what the contact book says of the key.
	Nick  string
	Trust identity.Trust
	Self  bool
}

// Members returns the members of private room room, admins first.
func (c *Client) Members(ctx context.Context, room string) ([]RoomMember, error) {
	l, err := c.roster(ctx, room)
	if err != nil {
		return nil, err
	}
	self := c.home.Key.Public()
	var out []RoomMember
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range l.Members() {
		rm := RoomMember{Key: m.Key, Admin: m.Admin, Self: m.Key == self, Trust: identity.TrustNew}
		if ct, ok := c.contacts.ByKey(m.Key); ok {
			rm.Nick, rm.Trust = ct.Nick, ct.Trust()
		}
		out = append(out, rm)
	}
	return out, nil
}

// Invites returns the invites of private room room that its member list
// knows.
func (c *Client) Invites(ctx context.Context, room string) ([]roster.Invite, error) {
	l, err := c.roster(ctx, room)
	if err != nil {
		return nil, err
	}
	return l.Invites(), nil
}

// RoomName returns the display name of a room: a private room's name from
// its member list, a public room's ID.
func (c *Client) RoomName(room string) string {
	if !protocol.IsPrivateRoom(room) {
		return room
	}
	l, err := c.roster(context.Background(), room)
	switch {
	case err != nil:
	case l.Name() != "":
		return l.Name()
	default:
		if other, ok := l.Direct(c.home.Key.Public()); ok {
			return c.directName(other)
		}
	}
	return room
}

// judgeRelayed leaves out of batch what the relay delivered in a private
// room and the member list refuses. It does not change batch, which a
// failed merge takes again.
func (c *Client) judgeRelayed(ctx context.Context, batch []arrival) []arrival {
	var kept []arrival
	for i, a := range batch {
		if a.via != ViaRelay || a.mark() || a.stored || a.env == nil || !protocol.IsPrivateRoom(a.room) {
			if kept != nil {
				kept = append(kept, a)
			}
			continue
		}
		err := c.admitRelayed(ctx, a.env, a.id)
		if err == nil {
			if kept != nil {
				kept = append(kept, a)
			}
			continue
		}
		c.log.Warn("the relay delivered what the member list refuses; not shown", "room", a.room, "id", a.id, "err", err)
		if kept == nil {
			kept = append(make([]arrival, 0, len(batch)), batch[:i]...)
		}
	}
	if kept == nil {
		return batch
	}
	return kept
}

// admitRelayed judges an envelope of a private room that the relay
// delivered: a relay is trusted with nothing, so the member list decides
// here as the mesh's validator does. A change is added to the list.
func (c *Client) admitRelayed(ctx context.Context, env *protocol.Envelope, id protocol.ID) error {
	l, err := c.roster(ctx, env.Room)
	if err != nil {
		return err
	}
	if env.Kind == protocol.KindMember {
		_, err := l.Add(env, id)
		return err
	}
	_, err = l.Judge(env, id)
	return err
}

// ResolveRoom returns the room ID that text names: a room ID, "@" and a
// person (the direct room with them: Person says how), or the name
// of a private room of this home. A name that is also a public room this
// home joined, or the name of two private rooms, is ambiguous: the error
// lists the IDs to use instead (a room's admin chooses its name, which
// must not be a way to take over another room's messages).
func (c *Client) ResolveRoom(ctx context.Context, text string) (string, error) {
	if protocol.IsPrivateRoom(text) {
		return text, nil
	}
	if room, ok, err := c.directRoom(text); ok {
		return room, err
	}
	rooms, err := c.st.Rooms(ctx)
	if err != nil {
		return "", err
	}
	var match []string
	public := false
	for _, r := range rooms {
		switch {
		case r == text:
			public = true
		case protocol.IsPrivateRoom(r) && c.RoomName(r) == text:
			match = append(match, r)
		}
	}
	switch {
	case len(match) == 0:
		if err := protocol.ValidRoom(text); err != nil {
			return "", fmt.Errorf("client: no private room of this home is named %q, and %w", text, err)
		}
		return text, nil
	case len(match) == 1 && !public:
		return match[0], nil
	}
	if public {
		match = append(match, text)
	}
	return "", fmt.Errorf("%w: %q names %d rooms; use one of their IDs: %s", ErrAmbiguousRoom, text, len(match), strings.Join(match, ", "))
}

// ErrAmbiguousRoom: a room name that names more than one room.
var ErrAmbiguousRoom = errors.New("client: ambiguous room name")

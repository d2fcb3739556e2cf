package client

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// Direct messages: a direct room is a private room of two people whose
// ID both derive from their keys (protocol.DirectRoomID), started by
// whichever writes first, sealed like any private room. "@" and a
// person's fingerprint (or key) names it wherever a room is taken.

// DirectPrefix starts the name of a direct room: "@" and the other
// person's fingerprint prefix, nickname or key.
const DirectPrefix = "@"

// Person returns the key that text names: a public key in full
// (identity.ParsePublicKey's forms), the nickname of one verified
// contact, or the fingerprint prefix of one contact. A nickname is
// self-asserted: only one the person verified names anyone, and two
// verified contacts with one nickname are an error, never a guess.
func (c *Client) Person(text string) (identity.PublicKey, error) {
	if k, err := identity.ParsePublicKey(text); err == nil {
		return k, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var named []identity.Contact
	for _, ct := range c.contacts.List() {
		if ct.Verified && ct.Nick == text {
			named = append(named, ct)
		}
	}
	switch len(named) {
	case 1:
		return named[0].Key, nil
	case 0:
	default:
		return identity.PublicKey{}, fmt.Errorf("client: %d verified contacts go by %q: give a fingerprint prefix", len(named), text)
	}
	ct, err := c.contacts.Find(text)
	if err != nil {
		return identity.PublicKey{}, fmt.Errorf("client: %q is not a key, nor a contact's fingerprint or nickname: %w", text, err)
	}
	return ct.Key, nil
}

// Direct returns the direct room with who, after starting it if its
// member list has no start yet (our start goes out like any change, and
// the relay must take it before anything may be sent there).
func (c *Client) Direct(ctx context.Context, who identity.PublicKey) (string, error) {
	self := c.home.Key.Public()
	if who == self {
		return "", fmt.Errorf("client: a direct room needs two people: %s is you", who.ShortFingerprint())
	}
	room := protocol.DirectRoomID(self, who)
	l, err := c.roster(ctx, room)
	if err != nil {
		return "", err
	}
	if l.IsMember(self) {
		return room, c.Join(ctx, room)
	}
	if _, err := c.change(ctx, room, &protocol.Change{Op: protocol.OpDirect, Target: who}); err != nil {
		return "", err
	}
	c.announceIfMember(ctx, room)
	return room, nil
}

// directRoom resolves "@PERSON" to the direct room with that person.
func (c *Client) directRoom(text string) (string, bool, error) {
	who, ok := strings.CutPrefix(text, DirectPrefix)
	if !ok {
		return "", false, nil
	}
	key, err := c.Person(who)
	if err != nil {
		return "", true, err
	}
	return protocol.DirectRoomID(c.home.Key.Public(), key), true, nil
}

// directName is the name a direct room is shown by: "@" and the other
// person's nickname, or their short fingerprint.
func (c *Client) directName(other identity.PublicKey) string {
	c.mu.Lock()
	ct, ok := c.contacts.ByKey(other)
	c.mu.Unlock()
	if ok && ct.Nick != "" {
		return DirectPrefix + ct.Nick
	}
	return DirectPrefix + other.ShortFingerprint()
}

// findEvery is how often a session asks the relay for the private rooms
// it is in.
const findEvery = time.Minute

// foundRooms is what findRooms remembers: when it last asked, and what
// it reported, so that each room is reported once a session.
type foundRooms struct {
	asked    time.Time
	reported map[string]bool
}

// findRooms asks the relays, at most every findEvery, for the private
// rooms we are in, and reports those this home has not joined
// (RoomFoundEvent): someone who writes to us first is seen without our
// knowing the room's ID. It runs on tend's goroutine.
func (c *Client) findRooms() {
	f := &c.found
	up := c.relays.connected()
	if len(up) == 0 || (!f.asked.IsZero() && c.now().Sub(f.asked) < findEvery) {
		return
	}
	f.asked = c.now()
	ctx, cancel := context.WithTimeout(c.ctx, askRelayFor)
	defer cancel()
	var rooms []string
	for _, p := range up {
		in, err := p.rc.PrivateRooms(ctx)
		if err != nil {
			c.log.Info("ask the relay for our private rooms", "relay", p.addr, "err", err)
			continue
		}
		rooms = append(rooms, in...)
	}
	known, err := c.st.Rooms(ctx)
	if err != nil {
		return
	}
	joined := make(map[string]bool, len(known))
	for _, r := range known {
		joined[r] = true
	}
	if f.reported == nil {
		f.reported = make(map[string]bool)
	}
	for _, r := range rooms {
		if !joined[r] && !f.reported[r] {
			f.reported[r] = true
			c.emit(&RoomFoundEvent{Room: r})
		}
	}
}

package client

import (
	"context"
	"fmt"
	"strings"

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
// (identity.ParsePublicKey's forms), or the fingerprint prefix or
// nickname of one contact.
func (c *Client) Person(text string) (identity.PublicKey, error) {
	if k, err := identity.ParsePublicKey(text); err == nil {
		return k, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ct, ok := c.contacts.Lookup(text); ok {
		return ct.Key, nil
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

package client

import (
	"context"
	"fmt"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/roster"
)

// ID is a message's ID (protocol.ID), named here for front ends.
type ID = protocol.ID

// Trust is what the contact book says of a sender's key (identity.Trust),
// named here so that a front end needs no package below this one.
type Trust = identity.Trust

// The trust marks a front end shows.
const (
	TrustNew        = identity.TrustNew
	TrustKnown      = identity.TrustKnown
	TrustVerified   = identity.TrustVerified
	TrustKeyChanged = identity.TrustKeyChanged
)

// PublicKey is a person's identity key (identity.PublicKey).
type PublicKey = identity.PublicKey

// Contact is one person of the contact book (identity.Contact).
type Contact = identity.Contact

// InviteCode is an invite to a private room (Invite, JoinCode).
type InviteCode = roster.Code

// Contacts returns the contact book as this session holds it, with the
// trust each contact's messages show now.
func (c *Client) Contacts() []Contact {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.contacts.List()
}

// TrustOf returns what the contact book says of key seen with nick.
func (c *Client) TrustOf(nick string, key identity.PublicKey) Trust {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.contacts.TrustOf(nick, key)
}

// Verify marks the contact whose fingerprint starts with prefix as
// verified, in this session and in the home folder's contact book: what
// chat verify does, for a session that holds the home folder.
func (c *Client) Verify(prefix string) (Contact, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ct, err := c.contacts.Verify(prefix)
	if err != nil {
		return Contact{}, fmt.Errorf("client: verify: %w", err)
	}
	if err := c.home.SaveContacts(c.contacts); err != nil {
		return Contact{}, fmt.Errorf("client: verify: %w", err)
	}
	return ct, nil
}

// leavePaths leaves room on every path and takes it off the home folder's
// room list. Its history stays; what it did not deliver stays in the
// outbox, and goes out when the room is joined again. Leaving a room not
// joined only takes it off the list.
func (c *Client) leavePaths(ctx context.Context, name string) error {
	c.joinMu.Lock()
	defer c.joinMu.Unlock()
	c.mu.Lock()
	r, joined := c.rooms[name]
	delete(c.rooms, name)
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if joined {
		r.stop() // its readers, the relay subscription with them
		if r.mesh != nil {
			r.mesh.Leave()
		}
	}
	if err := c.st.RemoveRoom(ctx, name); err != nil {
		return fmt.Errorf("client: leave %s: %w", name, err)
	}
	return nil
}

// Nick returns the nickname our messages carry.
func (c *Client) Nick() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Nick
}

// SetNick makes nick the nickname of the messages we send from now on,
// and remembers it in the home folder's config file.
func (c *Client) SetNick(nick string) error {
	if err := identity.ValidNick(nick); err != nil {
		return fmt.Errorf("client: nickname: %w", err)
	}
	if err := c.home.RememberNick(nick); err != nil {
		return fmt.Errorf("client: nickname: %w", err)
	}
	c.mu.Lock()
	c.cfg.Nick = nick
	c.mu.Unlock()
	return nil
}

// RoomPeers returns the peer IDs of the mesh peers known to be in room.
func (c *Client) RoomPeers(name string) []string {
	c.mu.Lock()
	r, ok := c.rooms[name]
	c.mu.Unlock()
	if !ok || r.mesh == nil {
		return nil
	}
	var out []string
	for _, p := range r.mesh.Peers() {
		out = append(out, p.String())
	}
	return out
}

// IsPrivateRoom reports whether room is the ID of a private room.
func IsPrivateRoom(room string) bool { return protocol.IsPrivateRoom(room) }

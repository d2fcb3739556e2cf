package client

import (
	"context"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// Message is a message as the person sees it.
type Message struct {
	ID      protocol.ID
	Room    string
	Sender  identity.PublicKey
	Nick    string
	Lamport uint64
	Time    time.Time // the sender's clock
	Text    string
	// Via is the path that delivered it first (mesh, sync, relay) for a
	// message that just arrived; for history, every path that delivered
	// it, comma-separated in the order they did (local for our own sent
	// here).
	Via string
	// Trust is what the contact book says of the sender's key, with the
	// nickname it claims; zero for our own messages (Own).
	Trust identity.Trust
	// Claims is, when Trust is TrustKeyChanged, the verified contact
	// whose nickname this key claims.
	Claims *identity.Contact
	// Own is set on the messages signed with our identity: sent here, or
	// from another device of ours.
	Own bool
	// Receipts are, on our own messages in History, the audit receipts
	// of the relays that acknowledged the message, each checked then.
	Receipts []store.Receipt
	// Gap is set when the sender's previous message in the room (its
	// hash chain's link) is not here: something of theirs is missing
	// until sync fills it.
	Gap bool
	// Sealed is set on a message that was sealed end to end (a private
	// room's). Waiting is set while its key has not arrived: its text is
	// empty, and an OpenedEvent brings it once the key comes. Never
	// says why one will never open; its text is empty too.
	Sealed  bool
	Waiting bool
	Never   string
}

// message makes the Message of an envelope: its text, the sender's trust
// (observing the sender in the contact book when observe is not nil, and
// raising the alarm of a key that claims a verified contact's nickname)
// and whether the sender's chain has a gap before it.
//
// A sealed message's text is known if the caller has it; if nil, it is
// looked up in the store.
func (c *Client) message(ctx context.Context, id protocol.ID, e *protocol.Envelope, via string, observe *bool, known *store.Sealed) (Message, bool) {
	t, ok := textOf(e)
	var sealed store.Sealed
	if e.Kind == protocol.KindSealed && protocol.IsPrivateRoom(e.Room) {
		var err error
		if known != nil {
			sealed = *known
		} else if sealed, err = c.sealedText(ctx, id); err != nil {
			c.log.Warn("a sealed message", "id", id, "err", err)
		}
		t, ok = &protocol.Text{Nick: sealed.Nick, Body: sealed.Body}, true
	}
	if !ok {
		c.log.Debug("not a text message; not shown", "id", id, "kind", e.Kind)
		return Message{}, false
	}
	m := Message{
		ID: id, Room: e.Room, Sender: e.Sender, Nick: t.Nick, Lamport: e.Lamport,
		Time: e.Timestamp(), Text: t.Body, Via: via, Own: e.Sender == c.home.Key.Public(),
	}
	if e.Kind == protocol.KindSealed {
		m.Sealed = true
		switch sealed.Status {
		case store.SealedOpened:
		case store.SealedNever:
			m.Text, m.Never = "", sealed.Body
		default:
			m.Text, m.Waiting = "", true
		}
	}
	if m.Sealed && m.Nick == "" {
		observe = nil // not open: no nickname to note yet (its OpenedEvent notes it)
	}
	if !m.Own {
		c.trust(&m, observe)
	}
	if e.Prev != (protocol.ID{}) {
		// The seen set belongs to the merger: only its calls (observe
		// set) may look at it.
		if observe == nil || !c.merge.seen.has(e.Prev) {
			has, err := c.st.Has(ctx, e.Prev)
			m.Gap = err == nil && !has
		}
	}
	return m, true
}

// trust fills in the sender's trust; with observe set, it records the
// sender in the contact book and raises the alarm of a changed key.
func (c *Client) trust(m *Message, observe *bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if observe == nil {
		m.Trust = c.contacts.TrustOf(m.Nick, m.Sender)
	} else {
		var err error
		if m.Trust, err = c.contacts.Observe(m.Nick, m.Sender, c.now()); err != nil {
			c.log.Warn("a sender's nickname", "nick", m.Nick, "err", err)
			m.Trust = c.contacts.TrustOf(m.Nick, m.Sender)
		}
		*observe = *observe || c.contacts.Unsaved()
	}
	if m.Trust == identity.TrustKeyChanged {
		if ct, ok := c.contacts.Claimed(m.Nick, m.Sender); ok {
			m.Claims = &ct
		}
		if observe != nil {
			c.emit(&AlarmEvent{Kind: AlarmKeyChanged, Room: m.Room, Sender: m.Sender, Nick: m.Nick, ID: m.ID})
		}
	}
}

func (c *Client) saveContacts() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.home.SaveContacts(c.contacts); err != nil {
		c.log.Error("save the contact book", "err", err)
	}
}

// History returns the last limit messages of room in display order
// (Lamport clock, then time, then ID); with words in query, only those
// whose text or nickname holds every word.
func (c *Client) History(ctx context.Context, room, query string, limit int) ([]Message, error) {
	recs, err := c.st.Search(ctx, room, query, limit)
	if err != nil {
		return nil, err
	}
	return c.messages(ctx, recs), nil
}

// HistoryBefore returns, in display order, the last limit messages of
// room that come before msg: the page of history above it, for a front
// end that loads history as the person scrolls back.
func (c *Client) HistoryBefore(ctx context.Context, room string, msg Message, limit int) ([]Message, error) {
	recs, err := c.st.HistoryBefore(ctx, room, msg.Lamport, msg.Time.UnixMilli(), msg.ID, limit)
	if err != nil {
		return nil, err
	}
	return c.messages(ctx, recs), nil
}

// messages makes the Messages of stored records.
func (c *Client) messages(ctx context.Context, recs []store.Record) []Message {
	var out []Message
	for _, r := range recs {
		m, ok := c.message(ctx, r.ID, r.Env, r.Via, nil, nil)
		if !ok {
			continue
		}
		if m.Own {
			if rcs, err := c.st.Receipts(ctx, r.ID); err == nil {
				m.Receipts = rcs
			}
		}
		out = append(out, m)
	}
	return out
}

package client

import (
	"context"
	"strings"
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
	// it, comma-separated in the order they did (local for our own).
	Via string
	// Trust is what the contact book says of the sender's key under the
	// nickname it claims; zero for our own messages (Own).
	Trust identity.Trust
	// Own is set on the messages we sent, in History.
	Own bool
	// Receipt is, on our own messages in History, the relay's audit
	// receipt, checked when the relay acknowledged the message.
	Receipt *store.Receipt
	// Gap is set when the sender's previous message in the room (its
	// hash chain's link) is not here: something of theirs is missing
	// until sync fills it.
	Gap bool
}

// seenMemory is how many message IDs the merger remembers, to show each
// message once whichever paths deliver it. An older message that comes
// again is still caught: the store knows it.
const seenMemory = 1 << 16

// seenSet is a bounded set of IDs: the oldest are forgotten first.
type seenSet struct {
	ids  map[protocol.ID]struct{}
	ring []protocol.ID
	next int
}

func newSeenSet(n int) *seenSet {
	return &seenSet{ids: make(map[protocol.ID]struct{}, n), ring: make([]protocol.ID, n)}
}

func (s *seenSet) has(id protocol.ID) bool { _, ok := s.ids[id]; return ok }

func (s *seenSet) add(id protocol.ID) {
	if s.has(id) {
		return
	}
	if old := s.ring[s.next]; old != (protocol.ID{}) {
		delete(s.ids, old)
	}
	s.ring[s.next] = id
	s.ids[id] = struct{}{}
	s.next = (s.next + 1) % len(s.ring)
}

// maxMerge bounds the arrivals handled (and stored) in one batch.
const maxMerge = 512

// merge is the one place where the paths meet. It takes the arrivals in
// batches, stores what the relay delivered (the mesh node stores what it
// accepted itself), shows each message once, whichever path was first,
// notes the other paths on the stored message, and moves the relay
// cursors once what they point at is stored.
func (c *Client) merge() {
	defer c.mergeW.Done()
	defer close(c.out)
	batch := make([]arrival, 0, maxMerge)
	retry := time.NewTicker(viaRetry)
	defer retry.Stop()
	for {
		var a arrival
		select {
		case in, ok := <-c.in:
			if !ok {
				return
			}
			a = in
		case <-retry.C:
			c.notePaths()
			continue
		}
		batch = append(batch[:0], a)
	more:
		for len(batch) < maxMerge {
			select {
			case a, ok := <-c.in:
				if !ok {
					break more
				}
				batch = append(batch, a)
			default:
				break more
			}
		}
		if !c.mergeBatch(batch) {
			return
		}
	}
}

// A path noted on a message that the mesh node has not stored yet (it
// commits right behind what it shows) is noted again every viaRetry,
// up to viaTries times.
const (
	viaRetry = 100 * time.Millisecond
	viaTries = 50
)

type pendingVia struct {
	id    protocol.ID
	via   string
	tries int
}

// addVia notes that a message also came by path via.
func (c *Client) addVia(id protocol.ID, via string) {
	c.pending = append(c.pending, pendingVia{id: id, via: via})
	c.notePaths()
}

// notePaths notes the pending paths on the stored messages.
func (c *Client) notePaths() {
	keep := c.pending[:0]
	for _, p := range c.pending {
		ok, err := c.st.AddVia(c.ctx, p.id, p.via)
		if err != nil {
			c.log.Warn("note a message's path", "id", p.id, "err", err)
			continue
		}
		if p.tries++; !ok && p.tries < viaTries {
			keep = append(keep, p)
		}
	}
	clear(c.pending[len(keep):])
	c.pending = keep
}

func (c *Client) mergeBatch(batch []arrival) bool {
	ctx := c.ctx
	me := c.home.Key.Public()
	now := c.now()

	// The relay's envelopes go to the store in one transaction.
	var recs []store.Record
	var idx []int
	for i, a := range batch {
		if a.via == ViaRelay && !a.caughtUp && !c.seen.has(a.id) {
			recs = append(recs, store.Record{ID: a.id, Env: a.env, Raw: a.raw, Via: ViaRelay, Received: now})
			idx = append(idx, i)
		}
	}
	stored := make(map[int]store.Result, len(idx))
	if len(recs) > 0 {
		res, err := c.st.Append(ctx, recs)
		if err != nil {
			// Nothing moves the relay cursor past an envelope that is
			// not stored: the next session gets these again.
			c.log.Error("store the relay's envelopes", "err", err)
			return ctx.Err() == nil
		}
		for j, r := range res {
			stored[idx[j]] = r.Result
		}
	}

	cursors := make(map[string]protocol.ID)
	var show []arrival
	var caughtUp []string
	dirty := false
	for i, a := range batch {
		if a.caughtUp {
			caughtUp = append(caughtUp, a.room)
			continue
		}
		c.clock.Witness(a.env.Lamport)
		if a.via == ViaRelay {
			cursors[a.room] = a.id
		}
		if c.seen.has(a.id) {
			c.addVia(a.id, a.via)
			continue
		}
		if a.via == ViaRelay {
			switch stored[i] {
			case store.Duplicate:
				// Stored before: by an earlier session, by our own Send,
				// or by the mesh node a moment ago, in which case the
				// mesh's copy, behind in the queue, is the one shown.
				c.addVia(a.id, a.via)
				continue
			case store.Equivocation:
				c.log.Warn("equivocation: the sender signed two messages with one number; the second is kept as evidence only",
					"sender", a.env.Sender.Fingerprint(), "room", a.room, "seq", a.env.Seq)
				continue
			}
		}
		c.seen.add(a.id)
		if a.env.Sender == me {
			continue // our own, from another device or echoed by the relay
		}
		show = append(show, a)
	}
	for room, id := range cursors {
		if err := c.st.SetRelayCursor(ctx, c.relayName, room, id); err != nil {
			c.log.Error("keep the relay cursor", "room", room, "err", err)
		}
	}

	for _, a := range show {
		m, ok := c.message(ctx, a.id, a.env, a.via, now, &dirty)
		if !ok {
			continue
		}
		select {
		case c.out <- m:
		case <-ctx.Done():
			return false
		}
	}
	if dirty {
		c.saveContacts()
	}
	for _, name := range caughtUp {
		c.mu.Lock()
		if r, ok := c.rooms[name]; ok {
			close(r.caughtUp)
		}
		c.mu.Unlock()
	}
	return true
}

// message makes the Message of an envelope: its text, the sender's trust
// (observing the sender in the contact book when observe is not nil) and
// whether the sender's chain has a gap before it.
func (c *Client) message(ctx context.Context, id protocol.ID, e *protocol.Envelope, via string, now time.Time, observe *bool) (Message, bool) {
	if e.Kind != protocol.KindText {
		return Message{}, false
	}
	t, err := protocol.ParseText(e.Payload)
	if err != nil {
		c.log.Warn("a message's text does not parse", "id", id, "err", err)
		return Message{}, false
	}
	m := Message{
		ID: id, Room: e.Room, Sender: e.Sender, Nick: t.Nick, Lamport: e.Lamport,
		Time: e.Timestamp(), Text: t.Body, Via: via,
	}
	c.mu.Lock()
	switch {
	case e.Sender == c.home.Key.Public():
	case observe != nil:
		m.Trust, _ = c.contacts.Observe(t.Nick, e.Sender, now)
		*observe = *observe || m.Trust == identity.TrustNew // a contact added
	default:
		m.Trust = trustOf(c.contacts, t.Nick, e.Sender)
	}
	c.mu.Unlock()
	// The seen set belongs to the merger: only its calls (observe set)
	// may look at it.
	if e.Prev != (protocol.ID{}) && (observe == nil || !c.seen.has(e.Prev)) {
		has, err := c.st.Has(ctx, e.Prev)
		m.Gap = err == nil && !has
	}
	return m, true
}

// trustOf is the trust of key under nick, without changing the book.
func trustOf(book *identity.Contacts, nick string, key identity.PublicKey) identity.Trust {
	ct, ok := book.Lookup(nick)
	switch {
	case !ok:
		return identity.TrustNew
	case ct.Key != key:
		return identity.TrustKeyChanged
	}
	return ct.Trust()
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

// messages makes the Messages of stored records.
func (c *Client) messages(ctx context.Context, recs []store.Record) []Message {
	var out []Message
	for _, r := range recs {
		m, ok := c.message(ctx, r.ID, r.Env, r.Via, time.Time{}, nil)
		if !ok {
			continue
		}
		m.Own = r.Env.Sender == c.home.Key.Public()
		if m.Own {
			if rc, ok, err := c.st.Receipt(ctx, r.ID); err == nil && ok {
				m.Receipt = &rc
			}
		}
		out = append(out, m)
	}
	return out
}

// HasVia reports whether a stored via list names path p.
func HasVia(via, p string) bool {
	for _, v := range strings.Split(via, ",") {
		if v == p {
			return true
		}
	}
	return false
}

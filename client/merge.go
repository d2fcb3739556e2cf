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

// seenSet is a bounded set of IDs, each with the path that delivered it
// first: the oldest are forgotten first.
type seenSet struct {
	ids  map[protocol.ID]string
	ring []protocol.ID
	next int
}

func newSeenSet(n int) *seenSet {
	return &seenSet{ids: make(map[protocol.ID]string, n), ring: make([]protocol.ID, n)}
}

func (s *seenSet) has(id protocol.ID) bool { _, ok := s.ids[id]; return ok }

// via returns the path that delivered id first, if id is in the set.
func (s *seenSet) via(id protocol.ID) (string, bool) { v, ok := s.ids[id]; return v, ok }

func (s *seenSet) add(id protocol.ID, via string) {
	if s.has(id) {
		return
	}
	if old := s.ring[s.next]; old != (protocol.ID{}) {
		delete(s.ids, old)
	}
	s.ring[s.next] = id
	s.ids[id] = via
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
			c.flushShown()
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

// addVia queues the note that a message also came by path via; notePaths
// writes it.
func (c *Client) addVia(id protocol.ID, via string) {
	c.pending = append(c.pending, pendingVia{id: id, via: via})
}

// notePaths notes the pending paths on the stored messages.
func (c *Client) notePaths() {
	keep := c.pending[:0]
	for _, p := range c.pending {
		ok, err := c.st.AddVia(context.WithoutCancel(c.ctx), p.id, p.via)
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
	// Store writes are not cancelled at Close: the merger finishes what
	// it took, so that nothing it stored is left unnoted.
	ctx := context.WithoutCancel(c.ctx)
	me := c.home.Key.Public()
	now := c.now()

	// What the relay delivered is stored, the relay cursors moved and
	// the messages to show noted as unshown, all in one transaction: a
	// crash keeps all of it or none, and nothing the cursor passed is
	// lost or left unshown. A relay copy of a message the mesh showed
	// first is stored too (with both paths), so that the cursor never
	// passes one that the mesh node has not committed yet.
	var (
		recs     []store.Record
		idx      []int
		cursors  = make(map[string]protocol.ID)
		show     []arrival
		caughtUp []string
		unshown  = make(map[string][]protocol.ID)
		dirty    bool
	)
	for i, a := range batch {
		if a.via == ViaRelay && !a.caughtUp {
			via := ViaRelay
			if first, ok := c.seen.via(a.id); ok && first != ViaRelay {
				via = first + "," + ViaRelay
			}
			recs = append(recs, store.Record{ID: a.id, Env: a.env, Raw: a.raw, Via: via, Received: now})
			idx = append(idx, i)
		}
	}
	b, err := c.st.Begin(ctx)
	if err != nil {
		c.log.Error("store the relay's envelopes", "err", err)
		return c.ctx.Err() == nil
	}
	defer b.Rollback()
	stored := make(map[int]store.Result, len(idx))
	if len(recs) > 0 {
		res, err := b.Append(ctx, recs)
		if err != nil {
			// Nothing moves the relay cursor past an envelope that is
			// not stored: the next session gets these again.
			c.log.Error("store the relay's envelopes", "err", err)
			c.markCaughtUp(batch)
			return c.ctx.Err() == nil
		}
		for j, r := range res {
			stored[idx[j]] = r.Result
		}
	}
	for i, a := range batch {
		switch {
		case a.caughtUp:
			caughtUp = append(caughtUp, a.room)
			continue
		case a.stored:
			// Stored before and not shown then: shown now, once.
			if !c.seen.has(a.id) {
				c.seen.add(a.id, a.via)
				show = append(show, a)
			}
			continue
		}
		c.clock.Witness(a.env.Lamport)
		if a.via == ViaRelay {
			cursors[a.room] = a.id
			switch stored[i] {
			case store.Stored:
				if c.seen.has(a.id) {
					continue // stored with the mesh's path and the relay's
				}
			case store.Duplicate:
				// Stored before: by the mesh node (its path is noted
				// here), by an earlier session, or by our own Send. If
				// the mesh node stored it a moment ago and this is the
				// first we hear of it, the mesh's copy, behind in the
				// queue, is the one shown.
				c.addVia(a.id, a.via)
				continue
			case store.Equivocation:
				c.log.Warn("equivocation: the sender signed two messages with one number; the second is kept as evidence only",
					"sender", a.env.Sender.Fingerprint(), "room", a.room, "seq", a.env.Seq)
				continue
			}
		} else if c.seen.has(a.id) {
			c.addVia(a.id, a.via)
			continue
		}
		c.seen.add(a.id, a.via)
		if a.env.Sender == me {
			continue // our own, from another device or echoed by the relay
		}
		show = append(show, a)
		unshown[a.room] = append(unshown[a.room], a.id)
	}
	for room, ids := range unshown {
		if err := b.AddUnshown(ctx, room, ids); err != nil {
			c.log.Error("note unshown messages", "room", room, "err", err)
			return c.ctx.Err() == nil
		}
	}
	for room, id := range cursors {
		if err := b.SetRelayCursor(ctx, c.relayName, room, id); err != nil {
			c.log.Error("keep the relay cursor", "room", room, "err", err)
			return c.ctx.Err() == nil
		}
	}
	if err := b.Commit(); err != nil {
		c.log.Error("store the relay's envelopes", "err", err)
		c.markCaughtUp(batch)
		return c.ctx.Err() == nil
	}
	c.notePaths()

	for _, a := range show {
		m, ok := c.message(ctx, a.id, a.env, a.via, now, &dirty)
		if !ok || c.silent {
			continue
		}
		select {
		case c.out <- m:
		case <-c.ctx.Done():
			return false
		}
	}
	if dirty {
		c.saveContacts()
	}
	c.closeCaughtUp(caughtUp)
	return true
}

// markCaughtUp passes on the caught-up marks of a batch that could not be
// stored: a Send waiting for them must not wait for ever.
func (c *Client) markCaughtUp(batch []arrival) {
	var rooms []string
	for _, a := range batch {
		if a.caughtUp {
			rooms = append(rooms, a.room)
		}
	}
	c.closeCaughtUp(rooms)
}

func (c *Client) closeCaughtUp(rooms []string) {
	for _, name := range rooms {
		c.mu.Lock()
		if r, ok := c.rooms[name]; ok {
			r.caughtOnce.Do(func() { close(r.caughtUp) })
		}
		c.mu.Unlock()
	}
}

// Shown notes that the application showed these messages: they are not
// shown again when the room is next joined. Messages handed out by
// Messages and never noted shown come again in the next session.
func (c *Client) Shown(ids ...protocol.ID) {
	c.shownMu.Lock()
	c.shownQ = append(c.shownQ, ids...)
	c.shownMu.Unlock()
}

// flushShown writes the shown notes.
func (c *Client) flushShown() {
	c.shownMu.Lock()
	ids := c.shownQ
	c.shownQ = nil
	c.shownMu.Unlock()
	if len(ids) == 0 {
		return
	}
	if err := c.st.RemoveUnshown(context.WithoutCancel(c.ctx), ids); err != nil {
		c.log.Warn("note shown messages", "err", err)
	}
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

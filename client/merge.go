package client

import (
	"context"
	"time"

	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

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

// A note (a path, a search entry) on a message that the mesh node has not
// stored yet (it commits right behind what it shows, within
// mesh.MaxStoreDelay under a steady stream) is tried again at every merge and every
// noteRetry, for noteWait. The shown notes of such messages are tried
// again every noteRetry, up to noteTries times. The wait is counted in
// time, not tries: a busy room merges many times a second, and tries
// counted per merge ran out before the node's commit.
const (
	noteRetry = 100 * time.Millisecond
	noteWait  = mesh.MaxStoreDelay + 3*time.Second
	noteTries = int(noteWait / noteRetry)
)

// Merge retries: a batch that could not be stored is tried again, after
// a pause that doubles from mergeRetryMin up to mergeRetryMax, until it
// is stored or the session ends.
const (
	mergeRetryMin = 50 * time.Millisecond
	mergeRetryMax = 5 * time.Second
)

// note is something to write on a stored message once the mesh node has
// stored it: another path that delivered it, or its search entry.
type note struct {
	id     protocol.ID
	via    string         // a path, or empty
	text   *protocol.Text // a search entry, or nil
	giveUp time.Time      // when it is dropped if its message is still not stored
}

// merger is the one place where the paths meet. It takes the arrivals in
// batches, stores what the relay delivered (the mesh node stores what it
// accepted itself), shows each message once, whichever path was first,
// notes the other paths on the stored message, and moves the relay
// cursors to what the relay confirmed committed. Its state changes only
// once a batch's transaction has committed: a batch that fails is tried
// again whole, so that nothing is swallowed.
type merger struct {
	c       *Client
	seen    *seenSet
	pending []note
	// fault, if set (tests), is asked before each commit and fails it
	// with its error.
	fault func() error
}

func newMerger(c *Client) *merger { return &merger{c: c, seen: newSeenSet(seenMemory)} }

func (m *merger) run() {
	defer m.c.mergeW.Done()
	batch := make([]arrival, 0, maxMerge)
	tick := time.NewTicker(noteRetry)
	defer tick.Stop()
	for {
		select {
		case a, ok := <-m.c.in:
			if !ok {
				return
			}
			batch = append(batch[:0], a)
		case <-tick.C:
			m.writeNotes()
			m.c.flushShown()
			continue
		}
	more:
		for len(batch) < maxMerge {
			select {
			case a, ok := <-m.c.in:
				if !ok {
					break more
				}
				batch = append(batch, a)
			default:
				break more
			}
		}
		if !m.mergeRetrying(batch) {
			return
		}
	}
}

// mergeRetrying merges batch, trying again after a store error until it
// succeeds; false if the session ended first.
func (m *merger) mergeRetrying(batch []arrival) bool {
	pause := mergeRetryMin
	for {
		err := m.mergeBatch(batch)
		if err == nil {
			return true
		}
		m.c.log.Error("store what the paths delivered; trying again", "n", len(batch), "err", err)
		select {
		case <-time.After(pause):
			pause = min(2*pause, mergeRetryMax)
		case <-m.c.ctx.Done():
			// Not shown now: what the relay delivered comes again from
			// the cursor (which did not move), and what the mesh node
			// stored is noted unshown by the store itself.
			return false
		}
	}
}

// outcome is what merging a batch decided, applied once it is committed.
type outcome struct {
	seen     map[protocol.ID]string // first paths, to add to the seen set
	show     []arrival
	also     []AlsoViaEvent
	notes    []note
	alarms   []AlarmEvent
	synced   map[syncKey]int
	caughtUp []arrival // marks: a relay's history of a room is in, or it gave up
	unshown  map[string][]protocol.ID
	cursors  map[cursorKey]protocol.ID
	opened   []store.Sealed               // sealed messages shown before, opened or marked now
	sealed   map[protocol.ID]store.Sealed // what became of the sealed messages shown now
}

type syncKey struct{ room, path string }

// cursorKey is a relay's cursor of a room.
type cursorKey struct {
	relay *relayPath
	room  string
}

// seenVia returns the path that delivered id first: in this batch, or
// before.
func (m *merger) seenVia(o *outcome, id protocol.ID) (string, bool) {
	if v, ok := o.seen[id]; ok {
		return v, true
	}
	return m.seen.via(id)
}

func (m *merger) mergeBatch(batch []arrival) error {
	c := m.c
	// Store writes are not cancelled at Close: the merger finishes what
	// it took, so that nothing it stored is left unnoted.
	ctx := context.WithoutCancel(c.ctx)
	o := &outcome{seen: map[protocol.ID]string{}, synced: map[syncKey]int{},
		unshown: map[string][]protocol.ID{}, cursors: map[cursorKey]protocol.ID{}, sealed: map[protocol.ID]store.Sealed{}}

	// What the relay delivered is stored, the relay cursors moved and
	// the messages to show noted as unshown, all in one transaction: a
	// crash keeps all of it or none.
	b, err := c.st.Begin(ctx)
	if err != nil {
		return err
	}
	defer b.Rollback()
	batch = m.c.judgeRelayed(ctx, batch)
	stored, err := m.storeRelayed(ctx, b, o, batch)
	if err != nil {
		return err
	}
	for i, a := range batch {
		m.decide(o, a, stored[i])
	}
	if err := m.receiveSealed(ctx, b, o); err != nil {
		return err
	}
	if err := m.write(ctx, b, o); err != nil {
		return err
	}
	if m.fault != nil {
		if err := m.fault(); err != nil {
			return err
		}
	}
	if err := b.Commit(); err != nil {
		return err
	}
	m.apply(ctx, o)
	return nil
}

// storeRelayed appends the envelopes the relay delivered, and returns
// what the store did with each (by index in batch).
func (m *merger) storeRelayed(ctx context.Context, b *store.Batch, o *outcome, batch []arrival) (map[int]store.Result, error) {
	var (
		recs []store.Record
		idx  []int
	)
	now := m.c.now()
	first := map[protocol.ID]string{} // mesh paths earlier in this batch
	for i, a := range batch {
		switch {
		case a.mark() || a.stored:
		case a.via == ViaRelay:
			via := m.c.viaNote(a)
			if f, ok := m.seen.via(a.id); ok && f != ViaRelay {
				via = f + "," + via
			} else if f, ok := first[a.id]; ok {
				via = f + "," + via
			}
			recs = append(recs, store.Record{ID: a.id, Env: a.env, Raw: a.raw, Via: via, Received: now})
			idx = append(idx, i)
		default:
			if _, ok := first[a.id]; !ok {
				first[a.id] = a.via
			}
		}
	}
	stored := make(map[int]store.Result, len(idx))
	if len(recs) == 0 {
		return stored, nil
	}
	res, err := b.Append(ctx, recs)
	if err != nil {
		return nil, err
	}
	for j, r := range res {
		stored[idx[j]] = r.Result
	}
	return stored, nil
}

// decide says what becomes of one arrival: shown, noted as another path
// of a message shown, kept as evidence, or a mark that moves a cursor.
func (m *merger) decide(o *outcome, a arrival, res store.Result) {
	switch {
	case a.caughtUp:
		o.caughtUp = append(o.caughtUp, a)
		return
	case a.committed:
		o.cursors[cursorKey{a.relay, a.room}] = a.id
		return
	case a.stored:
		// Stored before and not shown then: shown now, once.
		if _, ok := m.seenVia(o, a.id); !ok {
			o.seen[a.id] = a.via
			o.show = append(o.show, a)
		}
		return
	}
	m.c.clock.Witness(a.env.Lamport)
	if a.history || a.via == ViaSync {
		path := a.via
		o.synced[syncKey{a.room, path}]++
	}
	_, seen := m.seenVia(o, a.id)
	if a.via == ViaRelay {
		switch res {
		case store.Stored:
			if seen {
				o.also = append(o.also, AlsoViaEvent{ID: a.id, Room: a.room, Via: a.via, Relay: a.relayAddr()})
				return // stored with the mesh's path and the relay's
			}
		case store.Duplicate:
			// Stored before: by the mesh node (its path is noted here),
			// by an earlier session, or by our own Send. If the mesh
			// node stored it a moment ago and this is the first we hear
			// of it, the mesh's copy, behind in the queue, is the one
			// shown.
			o.notes = append(o.notes, note{id: a.id, via: m.c.viaNote(a)})
			if seen {
				o.also = append(o.also, AlsoViaEvent{ID: a.id, Room: a.room, Via: a.via, Relay: a.relayAddr()})
			}
			return
		case store.Equivocation:
			o.alarms = append(o.alarms, AlarmEvent{Kind: AlarmEquivocation, Room: a.room, Sender: a.env.Sender, ID: a.id})
			return
		}
	} else if seen {
		o.notes = append(o.notes, note{id: a.id, via: m.c.viaNote(a)})
		o.also = append(o.also, AlsoViaEvent{ID: a.id, Room: a.room, Via: a.via, Relay: a.relayAddr()})
		return
	}
	if a.via == ViaMesh && a.env.Sender == m.c.home.Key.Public() && m.c.sending(a.id) {
		// Ours, on its way from this process: the mesh node hands it
		// back when a peer passed it on (a relay's bridge, from our relay
		// path) before our own publish, which waits for a peer in the
		// room, reached the node. Another path of our message, as the
		// relay's echo is.
		o.notes = append(o.notes, note{id: a.id, via: m.c.viaNote(a)})
		return
	}
	o.seen[a.id] = a.via
	// Ours too, when it comes from another device with our identity: the
	// relay's echo of what this process sent is a duplicate of what Send
	// stored, and the mesh's copy is caught above.
	o.show = append(o.show, a)
	o.unshown[a.room] = append(o.unshown[a.room], a.id)
}

// relayAddr is the address of the relay that delivered a, if one did.
func (a arrival) relayAddr() string {
	if a.relay == nil {
		return ""
	}
	return a.relay.addr.String()
}

// viaNote is the path noted on a stored message that a delivered: the
// path, and with several relays, which relay (relay:HOST:PORT: the
// via list is for people to read; the receipts name relays by key).
func (c *Client) viaNote(a arrival) string {
	if a.via != ViaRelay || a.relay == nil || len(c.relays) < 2 {
		return a.via
	}
	return ViaRelay + ":" + a.relay.addr.HostPort
}

// write adds a batch's unshown notes, search entries and cursors to its
// transaction.
func (m *merger) write(ctx context.Context, b *store.Batch, o *outcome) error {
	for room, ids := range o.unshown {
		if err := b.AddUnshown(ctx, room, ids); err != nil {
			return err
		}
	}
	for i := range o.show {
		a := &o.show[i]
		t, ok := textOf(a.env)
		if !ok {
			continue
		}
		// What the relay delivered is in this transaction; what the mesh
		// node delivered may not be stored yet, and is noted later.
		if done, err := b.IndexText(ctx, a.id, t.Nick, t.Body); err != nil {
			return err
		} else if !done {
			o.notes = append(o.notes, note{id: a.id, text: t})
		}
	}
	for k, id := range o.cursors {
		if err := b.SetRelayCursor(ctx, k.relay.name, k.room, id); err != nil {
			return err
		}
	}
	return nil
}

// apply makes a committed batch's outcome seen and shown.
func (m *merger) apply(ctx context.Context, o *outcome) {
	c := m.c
	for id, via := range o.seen {
		m.seen.add(id, via)
	}
	giveUp := c.now().Add(noteWait)
	for _, n := range o.notes {
		n.giveUp = giveUp
		m.pending = append(m.pending, n)
	}
	m.writeNotes()
	dirty := false
	for _, a := range o.show {
		var known *store.Sealed
		if s, ok := o.sealed[a.id]; ok {
			known = &s
		}
		msg, ok := c.message(ctx, a.id, a.env, a.via, &dirty, known)
		if !ok || c.silent {
			continue
		}
		if !c.ev.push(c.ctx, &MessageEvent{msg}) {
			break // closing: the rest stay unshown for the next session
		}
	}
	if dirty {
		c.saveContacts()
	}
	for _, s := range o.opened {
		c.emitOpened(ctx, s)
	}
	for _, e := range o.also {
		c.emit(&e)
	}
	for i := range o.alarms {
		c.log.Info("equivocation: the sender signed two messages with one number; the second is kept as evidence only",
			"sender", o.alarms[i].Sender.Fingerprint(), "room", o.alarms[i].Room)
		c.emit(&o.alarms[i])
	}
	for k, n := range o.synced {
		c.emit(&SyncEvent{Room: k.room, Path: k.path, N: n})
	}
	for _, a := range o.caughtUp {
		c.mu.Lock()
		r, ok := c.rooms[a.room]
		c.mu.Unlock()
		if ok && r.relayCaughtUp(a.relay, a.gaveUp, len(c.relays)) {
			c.emit(&SyncEvent{Room: a.room, Path: ViaRelay, Done: true})
		}
	}
}

// writeNotes writes the pending notes on the stored messages; those whose
// message is not stored yet wait for the next try.
func (m *merger) writeNotes() {
	ctx := context.WithoutCancel(m.c.ctx)
	now := m.c.now()
	keep := m.pending[:0]
	for _, n := range m.pending {
		var (
			ok  bool
			err error
		)
		if n.text != nil {
			ok, err = m.c.st.IndexText(ctx, n.id, n.text.Nick, n.text.Body)
		} else {
			ok, err = m.c.st.AddVia(ctx, n.id, n.via)
		}
		if err != nil {
			m.c.log.Warn("note on a stored message", "id", n.id, "err", err)
		}
		if !ok && now.Before(n.giveUp) {
			keep = append(keep, n)
		}
	}
	clear(m.pending[len(keep):])
	m.pending = keep
}

// textOf decodes the text of a message: a public room's text envelope,
// or a private room's post. Member-list changes have none.
func textOf(e *protocol.Envelope) (*protocol.Text, bool) {
	switch e.Kind {
	case protocol.KindText:
		t, err := protocol.ParseText(e.Payload)
		return &t, err == nil
	case protocol.KindPost:
		p, err := protocol.ParsePost(e.Payload)
		return &p.Text, err == nil
	}
	return nil, false
}

// Shown notes that the application showed these messages: they are not
// shown again when the room is next joined. Messages handed out by
// Events and never noted shown come again in the next session.
func (c *Client) Shown(ids ...protocol.ID) {
	c.shownMu.Lock()
	c.shownQ = append(c.shownQ, ids...)
	c.shownMu.Unlock()
}

// flushShown writes the shown notes. A message the mesh node has not
// stored yet gets its unshown note when it is stored (the store's
// trigger): its shown note is written again on the next flushes, until
// it is stored.
func (c *Client) flushShown() {
	ctx := context.WithoutCancel(c.ctx)
	c.shownMu.Lock()
	ids, again := c.shownQ, c.shownAgain
	c.shownQ, c.shownAgain = nil, nil
	c.shownMu.Unlock()
	for _, s := range again {
		ids = append(ids, s.id)
	}
	if len(ids) == 0 {
		return
	}
	if err := c.st.RemoveUnshown(ctx, ids); err != nil {
		c.log.Warn("note shown messages", "err", err)
	}
	missing, err := c.st.Missing(ctx, ids)
	if err != nil {
		c.log.Warn("note shown messages", "err", err)
		return
	}
	tries := make(map[protocol.ID]int, len(again))
	for _, s := range again {
		tries[s.id] = s.tries
	}
	var later []shownNote
	for _, id := range missing {
		if tries[id] < noteTries {
			later = append(later, shownNote{id, tries[id] + 1})
		}
	}
	c.shownMu.Lock()
	c.shownAgain = append(c.shownAgain, later...)
	c.shownMu.Unlock()
}

// shownNote is a shown note to write again: its message was not stored
// yet.
type shownNote struct {
	id    protocol.ID
	tries int
}

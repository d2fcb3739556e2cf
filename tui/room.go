package tui

import (
	"strings"

	"github.com/parleychat/parley/client"
)

// entry is one item of a room's scrollback: a message, or a notice of the
// UI's own (a command's answer, a warning), which only this screen shows.
type entry struct {
	msg    *client.Message // nil for a notice
	notice string
	warn   bool
	del    *delivery // what became of our own message sent here
	gap    bool      // the sender's message before this one is missing

	rows  []string // rendered at width w
	width int
}

// room is a room as the UI holds it: its scrollback and where the person
// is in it, what they have not read, and who is there.
type room struct {
	name    string
	title   string // a private room's name, from its member list; empty for a public room
	entries []*entry
	byID    map[client.ID]*entry

	// anchor is the entry shown at the bottom of the pane while the
	// person scrolls back; -1 follows the newest. New messages never move
	// it: they count in newBelow until the person comes back down.
	anchor   int
	newBelow int

	unread  int  // messages that arrived while the room was not shown
	mention bool // one of them names us

	loading  bool // a page of history is on its way
	complete bool // the whole stored history is loaded
	wantTop  bool // Home was pressed: go on to the oldest as pages arrive

	gaps    []*entry                     // the entries showing a gap before them
	peers   map[string]bool              // mesh peer IDs in the room
	members map[client.PublicKey]*member // who spoke here
}

// member is someone seen in a room.
type member struct {
	nick        string
	fingerprint string
	peerID      string
	trust       client.Trust
	own         bool
}

func newRoom(name string) *room {
	return &room{name: name, byID: map[client.ID]*entry{}, anchor: -1,
		peers: map[string]bool{}, members: map[client.PublicKey]*member{}}
}

// label is how the room is shown: #name for a public room, ~title for a
// private one (its ID until its member list has arrived), @nick for a
// direct room (its title already says so).
func (r *room) label() string {
	switch {
	case !isPrivate(r.name):
		return "#" + r.name
	case strings.HasPrefix(r.title, client.DirectPrefix):
		return r.title
	case r.title != "":
		return "~" + r.title
	}
	return "~" + r.name
}

// add appends an entry at the bottom; it returns false for a message
// already here.
func (r *room) add(e *entry) bool {
	if e.msg != nil {
		if _, dup := r.byID[e.msg.ID]; dup {
			return false
		}
		r.byID[e.msg.ID] = e
		r.see(e.msg)
		r.noteGap(e)
	}
	r.entries = append(r.entries, e)
	if r.anchor >= 0 {
		r.newBelow++
	}
	return true
}

// addHistory puts older messages, in display order, above what the room
// holds; those it holds already are skipped. The view stays where it is.
func (r *room) addHistory(msgs []client.Message) {
	// One allocation for the entries of a page, which may be thousands.
	es := make([]entry, len(msgs))
	older := make([]*entry, 0, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		if _, dup := r.byID[m.ID]; dup {
			continue
		}
		e := &es[i]
		e.msg = m
		r.byID[m.ID] = e
		r.see(m)
		r.noteGap(e)
		older = append(older, e)
	}
	if len(older) == 0 {
		return
	}
	r.entries = append(older, r.entries...)
	if r.anchor >= 0 {
		r.anchor += len(older)
	}
}

// see notes the sender of m among the room's members, and closes the gap
// before a later message of theirs that m may fill.
func (r *room) see(m *client.Message) {
	mb, ok := r.members[m.Sender]
	if !ok { // a fingerprint costs a hash: once per person
		mb = &member{fingerprint: m.Sender.Fingerprint(), peerID: m.Sender.PeerID()}
		r.members[m.Sender] = mb
	}
	mb.nick, mb.trust, mb.own = m.Nick, m.Trust, m.Own
	kept := r.gaps[:0]
	for _, e := range r.gaps {
		if e.msg.Sender == m.Sender && e.msg.Lamport > m.Lamport {
			e.gap = false
			continue
		}
		kept = append(kept, e)
	}
	r.gaps = kept
}

// noteGap keeps e among the entries showing a gap before them.
func (r *room) noteGap(e *entry) {
	if e.msg != nil && e.msg.Gap {
		e.gap = true
		r.gaps = append(r.gaps, e)
	}
}

// bottom is the index of the entry at the bottom of the pane.
func (r *room) bottom() int {
	if r.anchor < 0 {
		return len(r.entries) - 1
	}
	return r.anchor
}

// scrollUp moves the view n entries back.
func (r *room) scrollUp(n int) {
	if len(r.entries) == 0 {
		return
	}
	r.anchor = max(r.bottom()-n, 0)
}

// scrollDown moves the view n entries forward, following the newest
// again once it is reached.
func (r *room) scrollDown(n int) {
	if r.anchor < 0 {
		return
	}
	r.anchor += n
	if r.anchor >= len(r.entries)-1 {
		r.toBottom()
	}
}

func (r *room) toTop() {
	if len(r.entries) > 0 {
		r.anchor = 0
	}
}

func (r *room) toBottom() { r.anchor, r.newBelow = -1, 0 }

// oldest is the oldest message the room holds, if it holds one.
func (r *room) oldest() (client.Message, bool) {
	for _, e := range r.entries {
		if e.msg != nil && e.msg.ID != (client.ID{}) {
			return *e.msg, true
		}
	}
	return client.Message{}, false
}

// atTop reports whether the oldest entry held is in view: time to load
// more history.
func (r *room) atTop() bool { return r.anchor == 0 }

// jump scrolls to the message id, if the room holds it.
func (r *room) jump(id client.ID) bool {
	for i, e := range r.entries {
		if e.msg != nil && e.msg.ID == id {
			r.anchor = i
			if i == len(r.entries)-1 {
				r.toBottom()
			}
			return true
		}
	}
	return false
}

// read marks the room read: it is being shown.
func (r *room) read() { r.unread, r.mention = 0, false }

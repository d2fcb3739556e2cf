package tui

import (
	"context"
	"fmt"
	"regexp"

	tea "charm.land/bubbletea/v2"
	"github.com/parleychat/parley/client"
)

// event takes one event of the session.
func (m *Model) event(ev client.Event) {
	switch e := ev.(type) {
	case *client.MessageEvent:
		m.message(e.Message)
	case *client.OpenedEvent:
		m.opened(e.Message)
	case *client.DeliveryEvent:
		m.delivered(e)
	case *client.PeerEvent:
		m.peer(e)
	case *client.RelayEvent:
		m.relayEvent(e)
	case *client.PathsEvent:
		m.paths = *e
	case *client.PathEvent:
		if i := m.find(e.Room); i >= 0 {
			m.rooms[i].add(&entry{notice: fmt.Sprintf("the %s stopped carrying #%s: %v", e.Path, e.Room, e.Err), warn: true})
		}
	case *client.AlarmEvent:
		m.alarmed(e)
	}
}

// message shows a message that arrived.
func (m *Model) message(msg client.Message) {
	i := m.find(msg.Room)
	if i < 0 {
		m.rooms = append(m.rooms, newRoom(msg.Room))
		i = len(m.rooms) - 1
	}
	r := m.rooms[i]
	if !r.add(&entry{msg: &msg}) {
		return
	}
	m.s.Shown(msg.ID)
	if msg.Own {
		return
	}
	mention := m.mentions(msg.Text)
	if i != m.cur || r.anchor >= 0 {
		r.unread++
		r.mention = r.mention || mention
	}
	if i == m.cur && r.anchor < 0 {
		r.unread = 0
	}
	if mention {
		m.ring()
	}
}

// mentions reports whether text names us: our nickname as a word.
func (m *Model) mentions(text string) bool {
	if m.nick == "" {
		return false
	}
	if m.mention == nil || m.mentionOf != m.nick {
		m.mention = regexp.MustCompile(`(?i)(^|[^a-z0-9_.-])@?` + regexp.QuoteMeta(m.nick) + `($|[^a-z0-9_-])`)
		m.mentionOf = m.nick
	}
	return m.mention.MatchString(text)
}

// delivered updates the delivery state of one of our messages.
func (m *Model) delivered(e *client.DeliveryEvent) {
	for _, r := range m.rooms {
		if en, ok := r.byID[e.Sent.ID]; ok && en.msg.Own {
			if en.del == nil { // from history: the outbox sends it again
				en.del = &delivery{}
			}
			en.del.apply(e)
			return
		}
	}
	if len(m.early) < 1024 { // the post's ID is not back yet
		m.early[e.Sent.ID] = append(m.early[e.Sent.ID], e)
	}
}

func (m *Model) peer(e *client.PeerEvent) {
	i := m.find(e.Room)
	if i < 0 {
		return
	}
	if e.Joined {
		m.rooms[i].peers[e.Peer] = true
	} else {
		delete(m.rooms[i].peers, e.Peer)
	}
}

func (m *Model) alarmed(e *client.AlarmEvent) {
	switch e.Kind {
	case client.AlarmAuditLog:
		m.alarm = fmt.Sprintf("SECURITY: the relay's audit log does not check out: %v. The relay may be hiding or rewriting messages: tell its operator and the people in your rooms.", e.Err)
		m.ring()
	case client.AlarmKeyChanged:
		if i := m.find(e.Room); i >= 0 {
			m.rooms[i].add(&entry{warn: true, notice: fmt.Sprintf(
				"KEY CHANGED: %q now writes with the key %s, not the one you verified. It may be someone else. Compare fingerprints with them out of band, then /verify the new one.",
				e.Nick, e.Sender.Fingerprint())})
		}
	case client.AlarmEquivocation:
		if i := m.find(e.Room); i >= 0 {
			m.rooms[i].add(&entry{warn: true, notice: fmt.Sprintf(
				"SECURITY: %s signed two different messages with one number; the second is kept as evidence and not shown.", e.Sender.Fingerprint())})
		}
	}
}

// retrust updates the trust marks after a verification.
func (m *Model) retrust() {
	book := map[client.PublicKey]client.Contact{}
	for _, ct := range m.s.Contacts() {
		book[ct.Key] = ct
	}
	for _, r := range m.rooms {
		for key, mb := range r.members {
			if ct, ok := book[key]; ok && ct.Verified && !ct.Replaced {
				mb.trust = client.TrustVerified
			}
		}
		for _, e := range r.entries {
			if e.msg == nil || e.msg.Own {
				continue
			}
			if ct, ok := book[e.msg.Sender]; ok && ct.Verified && !ct.Replaced {
				e.msg.Trust, e.rows = client.TrustVerified, nil
			}
		}
	}
}

func (m *Model) roomsOpened(msg roomsMsg) tea.Cmd {
	if msg.err != nil {
		m.noticeWarn("the rooms of this home folder: " + msg.err.Error())
	}
	names := msg.rooms
	first := m.firstRoom()
	if m.opt.Room == "" && len(names) > 0 {
		first = names[0]
	}
	var cmds []tea.Cmd
	cmds = append(cmds, m.join(first, true))
	for _, n := range names {
		if n != first {
			cmds = append(cmds, m.join(n, false))
		}
	}
	return tea.Batch(cmds...)
}

// joinedMsg says a join ended.
type joinedMsg struct {
	room string
	show bool
	err  error
}

// join joins room, and shows it if show.
func (m *Model) join(name string, show bool) tea.Cmd {
	i := m.find(name)
	if i < 0 {
		m.rooms = append(m.rooms, newRoom(name))
		i = len(m.rooms) - 1
	}
	if show {
		m.show(i)
	}
	s, ctx := m.s, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		return joinedMsg{room: name, show: show, err: s.Join(ctx, name)}
	}
}

func (m *Model) joined(msg joinedMsg) tea.Cmd {
	i := m.find(msg.room)
	if i < 0 {
		return nil
	}
	if msg.err != nil {
		m.rooms[i].add(&entry{notice: fmt.Sprintf("could not join #%s: %v", msg.room, msg.err), warn: true})
		return nil
	}
	for _, p := range m.s.RoomPeers(msg.room) {
		m.rooms[i].peers[p] = true
	}
	if isPrivate(msg.room) {
		m.rooms[i].title = m.s.RoomName(msg.room)
	}
	return m.loadHistory(m.rooms[i], m.opt.historyLimit())
}

// historyMsg is a page of a room's stored history: the last limit
// messages, or the last limit before a message the room holds.
type historyMsg struct {
	room  string
	limit int
	msgs  []client.Message
	err   error
}

// historyPage is how many older messages one scroll to the top loads:
// a page takes a few milliseconds of the screen's time, whatever the
// size of the room.
const historyPage = 1000

// loadHistory loads the last limit messages of r.
func (m *Model) loadHistory(r *room, limit int) tea.Cmd {
	r.loading = true
	name, s, ctx := r.name, m.s, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		msgs, err := s.History(ctx, name, "", limit)
		return historyMsg{room: name, limit: limit, msgs: msgs, err: err}
	}
}

func (m *Model) historyLoaded(msg historyMsg) tea.Cmd {
	i := m.find(msg.room)
	if i < 0 {
		return nil
	}
	r := m.rooms[i]
	r.loading = false
	if msg.err != nil {
		r.add(&entry{notice: "history: " + msg.err.Error(), warn: true})
		return nil
	}
	r.complete = len(msg.msgs) < msg.limit
	r.addHistory(msg.msgs)
	if r.wantTop {
		r.toTop()
		if i == m.cur {
			return m.moreHistory()
		}
	}
	return nil
}

// moreHistory loads the page above the oldest message the room holds,
// once the top of what it holds is in view.
func (m *Model) moreHistory() tea.Cmd {
	r := m.room()
	if !r.atTop() || r.complete || r.loading {
		return nil
	}
	oldest, ok := r.oldest()
	if !ok {
		return nil
	}
	r.loading = true
	name, s, ctx := r.name, m.s, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		msgs, err := s.HistoryBefore(ctx, name, oldest, historyPage)
		return historyMsg{room: name, limit: historyPage, msgs: msgs, err: err}
	}
}

// postedMsg says a post of ours was signed and stored (or not).
type postedMsg struct {
	room string
	seq  int
	id   client.ID
	err  error
}

// post sends text to the room shown: it shows at once as "sending", and
// the delivery events update it in place.
func (m *Model) post(text string) tea.Cmd {
	r := m.room()
	m.posts++
	seq := m.posts
	msg := &client.Message{Room: r.name, Sender: m.opt.Key, Nick: m.nick, Text: text, Own: true, Time: m.opt.now()}
	e := &entry{msg: msg, del: &delivery{}}
	r.entries = append(r.entries, e)
	if m.opt.Key != (client.PublicKey{}) {
		r.see(msg) // we are among the room's members as soon as we speak
	}
	r.toBottom()
	m.sending[seq] = e
	name, s, ctx := r.name, m.s, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		id, err := s.Post(ctx, name, text)
		return postedMsg{room: name, seq: seq, id: id, err: err}
	}
}

func (m *Model) posted(msg postedMsg) {
	e := m.sending[msg.seq]
	delete(m.sending, msg.seq)
	if e == nil {
		return
	}
	if msg.err != nil {
		e.del.kept, e.del.why, e.rows = true, msg.err.Error(), nil
		e.warn = true
		return
	}
	e.msg.ID = msg.id
	if i := m.find(msg.room); i >= 0 {
		m.rooms[i].byID[msg.id] = e
	}
	for _, ev := range m.early[msg.id] {
		e.del.apply(ev)
	}
	delete(m.early, msg.id)
}

func (m *Model) left(msg leftMsg) {
	if msg.err != nil {
		m.noticeWarn(msg.err.Error())
		return
	}
	i := m.find(msg.room)
	if i < 0 {
		return
	}
	m.rooms = append(m.rooms[:i], m.rooms[i+1:]...)
	if m.cur >= i && m.cur > 0 {
		m.cur--
	}
	m.notice(fmt.Sprintf("left #%s (its history stays; /join %s to come back)", msg.room, msg.room))
}

// ring asks for the terminal bell, once for the events taken together.
func (m *Model) ring() {
	if m.opt.Bell {
		m.bell = true
	}
	m.bells++
}

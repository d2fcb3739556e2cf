package tui

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
	"github.com/parleychat/parley/client"
)

// screen is what fills the window: the chat, or a view over it.
type screen int

const (
	screenChat screen = iota
	screenHelp
	screenSearch
	screenFirstRun
)

// Model is the UI's state. Update changes it in answer to keys and to the
// session's events; every call to the session that may block runs in a
// tea.Cmd, so that the UI never waits on the network.
type Model struct {
	s    Session
	opt  Options
	keys KeyMap
	st   styles
	ctx  context.Context

	rooms []*room
	cur   int
	input input

	width, height int
	screen        screen
	search        searchView
	helpTop       int // the help view's first row shown
	nick          string

	relays []relayView       // as Options.Relays
	paths  client.PathsEvent // how the mesh peers are reached
	alarm  string            // the relay's audit log failed its checks: shown until quit

	posts     int                                   // our lines posted, for postedMsg
	sending   map[int]*entry                        // posted, ID not known yet
	early     map[client.ID][]*client.DeliveryEvent // for a post whose ID is not known yet
	quitting  bool
	fps       map[client.PublicKey]string // fingerprints computed: a hash each
	mention   *regexp.Regexp              // a mention of mentionOf, our nickname
	mentionOf string
	firstErr  string // why the nickname typed at the first run was refused
	bell      bool   // ring the bell after these events
	bells     int    // rung (or not, without Options.Bell): for tests
}

// New makes the UI's model for session s. ctx bounds everything the UI
// asks of the session.
func New(ctx context.Context, s Session, opt Options) *Model {
	m := &Model{s: s, opt: opt, keys: DefaultKeyMap(), st: newStyles(), ctx: ctx,
		input: newInput(), nick: opt.Nick,
		sending: map[int]*entry{}, fps: map[client.PublicKey]string{}, early: map[client.ID][]*client.DeliveryEvent{}}
	for _, a := range opt.Relays {
		m.relays = append(m.relays, relayView{addr: a})
	}
	if opt.FirstRun {
		m.screen = screenFirstRun
		m.input.set(opt.Nick)
	}
	return m
}

// Init starts reading the session's events and opens the rooms.
func (m *Model) Init() tea.Cmd {
	return tea.Batch(m.readEvents(), m.openRooms())
}

// roomsMsg is the rooms joined in the home folder before.
type roomsMsg struct {
	rooms []string
	err   error
}

func (m *Model) openRooms() tea.Cmd {
	s, ctx := m.s, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		rooms, err := s.Rooms(ctx)
		return roomsMsg{rooms, err}
	}
}

// eventsMsg is what the session handed out since the last one: read in
// batches, so that a busy room costs one redraw per batch, not per
// message.
type eventsMsg []client.Event

// eventsEndedMsg: the session closed its event stream.
type eventsEndedMsg struct{}

// maxBatch bounds the events taken into one update.
const maxBatch = 512

func (m *Model) readEvents() tea.Cmd {
	events := m.s.Events()
	return func() tea.Msg {
		ev, ok := <-events
		if !ok {
			return eventsEndedMsg{}
		}
		batch := eventsMsg{ev}
		for len(batch) < maxBatch {
			select {
			case ev, ok := <-events:
				if !ok {
					return batch
				}
				batch = append(batch, ev)
			default:
				return batch
			}
		}
		return batch
	}
}

// Update answers one message.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tea.KeyPressMsg:
		return m, m.key(msg)
	case tea.PasteMsg:
		m.input.insert(msg.Content)
	case tea.MouseWheelMsg:
		return m, m.wheel(msg)
	case eventsMsg:
		cmds := []tea.Cmd{m.readEvents()}
		for _, ev := range msg {
			if f, ok := ev.(*client.RoomFoundEvent); ok {
				cmds = append(cmds, m.found(f.Room))
				continue
			}
			m.event(ev)
		}
		if m.bell {
			m.bell = false
			cmds = append(cmds, tea.Raw("\a"))
		}
		return m, tea.Batch(cmds...)
	case eventsEndedMsg:
		if !m.quitting {
			m.quitting = true
			return m, tea.Quit
		}
	default:
		return m, m.result(msg)
	}
	return m, nil
}

// result takes the answer of a command's work.
func (m *Model) result(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case roomsMsg:
		return m.roomsOpened(msg)
	case joinedMsg:
		return m.joined(msg)
	case createdMsg:
		return m.created(msg)
	case codeJoinedMsg:
		return m.codeJoined(msg)
	case directMsg:
		return m.directOpened(msg)
	case inviteMsg:
		return m.invited(msg)
	case historyMsg:
		return m.historyLoaded(msg)
	case postedMsg:
		m.posted(msg)
	case leftMsg:
		m.left(msg)
	case nickMsg:
		if msg.err != nil && m.screen == screenFirstRun {
			m.firstErr = msg.err.Error()
			break
		}
		if msg.err != nil {
			m.noticeWarn(msg.err.Error())
			break
		}
		m.nick = msg.nick
		if m.screen == screenFirstRun {
			m.screen = screenChat
			m.input.take()
		}
		m.notice("you are now " + msg.nick)
	case verifiedMsg:
		if msg.err != nil {
			m.noticeWarn(msg.err.Error())
			break
		}
		m.notice(fmt.Sprintf("verified: %s %s", msg.contact.Nick, msg.contact.Key.Fingerprint()))
		m.retrust()
	case searchMsg:
		m.searched(msg)
	case noticeMsg:
		r := m.room()
		if i := m.find(msg.room); i >= 0 {
			r = m.rooms[i]
		}
		r.add(&entry{notice: msg.text, warn: msg.warn})
	}
	return nil
}

// room is the room shown.
func (m *Model) room() *room {
	if len(m.rooms) == 0 {
		m.rooms = append(m.rooms, newRoom(m.firstRoom()))
	}
	return m.rooms[min(m.cur, len(m.rooms)-1)]
}

func (m *Model) firstRoom() string {
	if m.opt.Room != "" {
		return m.opt.Room
	}
	return "lobby"
}

// find returns the index of room name, or -1.
func (m *Model) find(name string) int {
	for i, r := range m.rooms {
		if r.name == name {
			return i
		}
	}
	return -1
}

func (m *Model) notice(text string)     { m.room().add(&entry{notice: text}) }
func (m *Model) noticeWarn(text string) { m.room().add(&entry{notice: text, warn: true}) }

// show makes room i the one shown.
func (m *Model) show(i int) tea.Cmd {
	if i < 0 || i >= len(m.rooms) {
		return nil
	}
	m.cur = i
	m.rooms[i].read()
	return nil
}

// key answers a key press.
func (m *Model) key(k tea.KeyPressMsg) tea.Cmd {
	switch m.screen {
	case screenHelp:
		switch {
		case key.Matches(k, m.keys.Quit):
			return m.cmdQuit("")
		case key.Matches(k, m.keys.HistoryPrev):
			m.helpTop = max(m.helpTop-1, 0)
		case key.Matches(k, m.keys.HistoryNext):
			m.helpTop++
		case key.Matches(k, m.keys.PageUp):
			m.helpTop = max(m.helpTop-m.paneHeight()/2, 0)
		case key.Matches(k, m.keys.PageDown):
			m.helpTop += m.paneHeight() / 2
		default:
			m.screen = screenChat // any other key closes the help
		}
		return nil
	case screenSearch:
		if cmd, done := m.searchKey(k); done {
			return cmd
		}
	case screenFirstRun:
		return m.firstRunKey(k)
	}
	switch {
	case key.Matches(k, m.keys.Quit):
		return m.cmdQuit("")
	case key.Matches(k, m.keys.Help):
		return m.cmdHelp("")
	case key.Matches(k, m.keys.Close):
		m.screen = screenChat
	case key.Matches(k, m.keys.Redraw):
		return tea.ClearScreen
	case key.Matches(k, m.keys.NextRoom):
		return m.show((m.cur + 1) % len(m.rooms))
	case key.Matches(k, m.keys.PrevRoom):
		return m.show((m.cur + len(m.rooms) - 1) % len(m.rooms))
	case key.Matches(k, m.keys.RoomN):
		return m.show(int(k.Code - '1'))
	case key.Matches(k, m.keys.Activity):
		return m.nextActive()
	case key.Matches(k, m.keys.PageUp):
		m.room().wantTop = false
		m.room().scrollUp(max(m.paneHeight()/2, 1))
		return m.moreHistory()
	case key.Matches(k, m.keys.PageDown):
		m.room().wantTop = false
		m.room().scrollDown(max(m.paneHeight()/2, 1))
	case key.Matches(k, m.keys.Top):
		m.room().wantTop = true
		m.room().toTop()
		return m.moreHistory()
	case key.Matches(k, m.keys.Bottom):
		m.room().wantTop = false
		m.room().toBottom()
	case key.Matches(k, m.keys.Send):
		return m.enter(m.input.take())
	case key.Matches(k, m.keys.Newline):
		m.input.insert("\n")
	case key.Matches(k, m.keys.Complete):
		m.input.complete(m.candidates)
	case key.Matches(k, m.keys.HistoryPrev):
		m.input.prev()
	case key.Matches(k, m.keys.HistoryNext):
		m.input.next()
	default:
		m.edit(k)
	}
	return nil
}

// edit applies a key that changes the input line.
func (m *Model) edit(k tea.KeyPressMsg) {
	switch k.String() {
	case "backspace", "ctrl+h":
		m.input.backspace()
	case "delete", "ctrl+d":
		m.input.deleteForward()
	case "left", "ctrl+b":
		m.input.move(-1)
	case "right", "ctrl+f":
		m.input.move(1)
	case "ctrl+a":
		m.input.move(-len(m.input.text))
	case "ctrl+e":
		m.input.move(len(m.input.text))
	case "ctrl+u":
		m.input.text, m.input.pos = m.input.text[m.input.pos:], 0
	case "ctrl+w":
		m.input.deleteWord()
	default:
		if k.Text != "" {
			m.input.insert(k.Text)
		}
	}
}

// wheel scrolls the message pane.
func (m *Model) wheel(w tea.MouseWheelMsg) tea.Cmd {
	m.room().wantTop = false
	switch w.Button {
	case tea.MouseWheelUp:
		m.room().scrollUp(3)
		return m.moreHistory()
	case tea.MouseWheelDown:
		m.room().scrollDown(3)
	}
	return nil
}

// nextActive shows the next room with unread messages, mentions first.
func (m *Model) nextActive() tea.Cmd {
	for _, wantMention := range []bool{true, false} {
		for d := 1; d < len(m.rooms); d++ {
			i := (m.cur + d) % len(m.rooms)
			r := m.rooms[i]
			if r.unread > 0 && (!wantMention || r.mention) {
				return m.show(i)
			}
		}
	}
	return nil
}

func (m *Model) firstRunKey(k tea.KeyPressMsg) tea.Cmd {
	switch {
	case key.Matches(k, m.keys.Quit):
		return m.cmdQuit("")
	case key.Matches(k, m.keys.Send):
		nick := strings.TrimSpace(m.input.String())
		if nick == "" {
			nick = m.opt.Nick
		}
		return m.cmdNick(nick)
	default:
		m.edit(k)
	}
	return nil
}

// fingerprint is key's fingerprint, computed once.
func (m *Model) fingerprint(key client.PublicKey) string {
	fp, ok := m.fps[key]
	if !ok {
		fp = key.Fingerprint()
		m.fps[key] = fp
	}
	return fp
}

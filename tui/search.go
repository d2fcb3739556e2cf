package tui

import (
	"fmt"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
	"github.com/parleychat/parley/client"
)

// searchView lists the messages a /search found; Enter jumps to the one
// selected in its room.
type searchView struct {
	room    string
	query   string
	results []client.Message
	sel     int
}

func (m *Model) searched(msg searchMsg) {
	if msg.err != nil {
		m.noticeWarn("search: " + msg.err.Error())
		return
	}
	if len(msg.results) == 0 {
		m.notice(fmt.Sprintf("nothing in #%s holds %q", msg.room, msg.query))
		return
	}
	m.search = searchView{room: msg.room, query: msg.query, results: msg.results, sel: len(msg.results) - 1}
	m.screen = screenSearch
}

// searchKey answers a key in the search view; done is false for a key
// the chat screen should take (none: the view takes them all).
func (m *Model) searchKey(k tea.KeyPressMsg) (tea.Cmd, bool) {
	sv := &m.search
	switch {
	case key.Matches(k, m.keys.Quit):
		return m.cmdQuit(""), true
	case key.Matches(k, m.keys.Close):
		m.screen = screenChat
	case key.Matches(k, m.keys.HistoryPrev):
		sv.sel = max(sv.sel-1, 0)
	case key.Matches(k, m.keys.HistoryNext):
		sv.sel = min(sv.sel+1, len(sv.results)-1)
	case key.Matches(k, m.keys.PageUp):
		sv.sel = max(sv.sel-m.paneHeight(), 0)
	case key.Matches(k, m.keys.PageDown):
		sv.sel = min(sv.sel+m.paneHeight(), len(sv.results)-1)
	case key.Matches(k, m.keys.Send):
		m.screen = screenChat
		return m.jump(sv.results[sv.sel]), true
	}
	return nil, true
}

// jump shows the room of msg scrolled to it, loading history as far back
// as it needs.
func (m *Model) jump(msg client.Message) tea.Cmd {
	i := m.find(msg.Room)
	if i < 0 {
		return nil
	}
	m.show(i)
	r := m.rooms[i]
	if r.jump(msg.ID) {
		return nil
	}
	// Older than what the room holds: hold it, in place.
	r.addHistory([]client.Message{msg})
	r.jump(msg.ID)
	return nil
}

package tui

import (
	"context"
	"fmt"
	"strings"

	tea "charm.land/bubbletea/v2"
	"github.com/parleychat/parley/client"
)

// Direct messages: /msg PERSON [TEXT] opens the direct room with PERSON
// (a key, or a contact's fingerprint prefix or nickname), started on
// first use, and sends TEXT there, sealed end to end like every private
// room's message.

// directMsg: the direct room with someone is there (or not), and the
// text to send in it.
type directMsg struct {
	who, room, text string
	err             error
}

func (m *Model) cmdMsg(arg string) tea.Cmd {
	who, text, _ := strings.Cut(arg, " ")
	if who == "" {
		m.noticeWarn("usage: /msg PERSON [TEXT]  (a key, or a contact's fingerprint prefix or nickname: /contacts lists them)")
		return nil
	}
	s, ctx := m.s, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		key, err := s.Person(who)
		if err != nil {
			return directMsg{who: who, err: err}
		}
		room, err := s.Direct(ctx, key)
		return directMsg{who: who, room: room, text: strings.TrimSpace(text), err: err}
	}
}

// directOpened shows the direct room and sends the text.
func (m *Model) directOpened(msg directMsg) tea.Cmd {
	if msg.err != nil {
		m.noticeWarn(fmt.Sprintf("no direct room with %s: %v", msg.who, msg.err))
		return nil
	}
	cmd := m.join(msg.room, true)
	if msg.text == "" {
		return cmd
	}
	return tea.Batch(cmd, m.post(msg.text))
}

// sealedText is how a sealed message that is not open shows: waiting for
// its key, or never to open and why; "" for any other message.
func sealedText(msg *client.Message) string {
	switch {
	case msg.Waiting:
		return "[waiting for key]"
	case msg.Never != "":
		return "[cannot be opened: " + msg.Never + "]"
	}
	return ""
}

// opened replaces a sealed message shown as waiting for its key with the
// same message, opened now, or marked as never to open.
func (m *Model) opened(msg client.Message) {
	i := m.find(msg.Room)
	if i < 0 {
		return
	}
	e, ok := m.rooms[i].byID[msg.ID]
	if !ok || e.msg == nil {
		m.message(msg)
		return
	}
	*e.msg = msg
	e.rows = nil
}

// found joins a private room the relay says we are in and this home had
// not joined (someone wrote to us first), without leaving the room on
// screen, and says so.
func (m *Model) found(room string) tea.Cmd {
	if m.find(room) >= 0 {
		return nil
	}
	m.notice(fmt.Sprintf("you are in a private room this home had not joined (%s): joined; ctrl+n shows it", room))
	return m.join(room, false)
}

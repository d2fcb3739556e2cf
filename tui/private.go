package tui

import (
	"context"
	"fmt"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/parleychat/parley/client"
)

// Private rooms: /create makes one, /invite prints a code in one, and
// /join takes a code as well as a room.

// inviteTTL and inviteUses are what /invite's code allows: one person,
// within a week. chat room invite sets others.
const (
	inviteTTL  = 7 * 24 * time.Hour
	inviteUses = 1
)

// createdMsg: a private room was made, or not.
type createdMsg struct {
	room, name string
	err        error
}

// codeJoinedMsg: an invite code let us into a room, or not.
type codeJoinedMsg struct {
	room string
	err  error
}

// inviteMsg: an invite code was made for a room, or not.
type inviteMsg struct {
	room string
	code *client.InviteCode
	err  error
}

func (m *Model) cmdCreate(arg string) tea.Cmd {
	if arg == "" {
		m.noticeWarn("usage: /create NAME  (a private room: only those you invite can read or post)")
		return nil
	}
	s, ctx := m.s, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		room, _, err := s.CreateRoom(ctx, arg)
		return createdMsg{room: room, name: arg, err: err}
	}
}

func (m *Model) created(msg createdMsg) tea.Cmd {
	if msg.room == "" {
		m.noticeWarn(fmt.Sprintf("could not create %q: %v", msg.name, msg.err))
		return nil
	}
	cmd := m.join(msg.room, true)
	text := fmt.Sprintf("created the private room %q (%s): /invite makes a code to let someone in", msg.name, msg.room)
	if msg.err != nil {
		text += fmt.Sprintf("; no path has it yet (%v), it goes out when one is there", msg.err)
	}
	m.notice(text)
	return cmd
}

// joinCode joins the private room of an invite code.
func (m *Model) joinCode(code string) tea.Cmd {
	s, ctx := m.s, m.ctx
	m.notice("joining with the invite code...")
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		room, err := s.JoinCode(ctx, code)
		return codeJoinedMsg{room: room, err: err}
	}
}

func (m *Model) codeJoined(msg codeJoinedMsg) tea.Cmd {
	if msg.err != nil {
		m.noticeWarn(fmt.Sprintf("could not join with the code: %v", msg.err))
		return nil
	}
	cmd := m.join(msg.room, true)
	m.notice(fmt.Sprintf("you are a member of %q (%s)", m.s.RoomName(msg.room), msg.room))
	return cmd
}

// invitePrivate makes an invite code for the current private room.
func (m *Model) invitePrivate(room string) tea.Cmd {
	s, ctx := m.s, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		code, err := s.Invite(ctx, room, inviteUses, inviteTTL)
		return inviteMsg{room: room, code: code, err: err}
	}
}

func (m *Model) invited(msg inviteMsg) tea.Cmd {
	if msg.err != nil {
		m.noticeWarn(fmt.Sprintf("could not make an invite: %v", msg.err))
		return nil
	}
	m.notice(fmt.Sprintf("invite code for %q, one person, until %s; send it as you would a password. They run chat join CODE, or /join CODE here:\n%s",
		m.s.RoomName(msg.room), msg.code.Expires().Format("2006-01-02 15:04"), msg.code.String()))
	return nil
}

// isCode reports whether a /join argument is an invite code.
func isCode(arg string) bool { return strings.HasPrefix(strings.ToLower(arg), "invite-") }

// isPrivate reports whether room is a private room's ID ("p:" and 32
// base32 characters; protocol.IsPrivateRoom decides, through client).
func isPrivate(room string) bool { return client.IsPrivateRoom(room) }

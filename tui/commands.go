package tui

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/parleychat/parley/client"
)

// command is a slash command: what it takes, what it does, and how.
type command struct {
	name, args, help string
	run              func(m *Model, arg string) tea.Cmd
}

// commands are the slash commands, in the order /help lists them.
func commands() []command {
	return []command{
		{"join", "ROOM|CODE", "join a room and show it, or a private room with an invite code", (*Model).cmdJoin},
		{"create", "NAME", "make a private room, with you as its admin", (*Model).cmdCreate},
		{"part", "[ROOM]", "leave this room (or ROOM); its history stays", (*Model).cmdPart},
		{"nick", "NAME", "change your nickname (a-z 0-9 - _ .)", (*Model).cmdNick},
		{"msg", "PERSON [TEXT]", "a direct message, sealed end to end, to a contact or a key", (*Model).cmdMsg},
		{"invite", "", "an invite code for this private room, or how to bring someone into a public one", (*Model).cmdInvite},
		{"peers", "", "the mesh peers in this room", (*Model).cmdPeers},
		{"verify", "FINGERPRINT", "mark a contact verified, after comparing fingerprints out of band", (*Model).cmdVerify},
		{"contacts", "", "the people you have seen, and how far you trust them", (*Model).cmdContacts},
		{"search", "WORDS", "search the stored messages of this room", (*Model).cmdSearch},
		{"relay", "", "the relays: state, address and key", (*Model).cmdRelay},
		{"help", "", "keys and commands", (*Model).cmdHelp},
		{"quit", "", "quit (unsent messages stay in the outbox)", (*Model).cmdQuit},
	}
}

// opTimeout bounds what a command asks of the session.
const opTimeout = 30 * time.Second

// enter handles a line the person entered: a command, or a message. A
// line with a leading slash is never sent as a message unless it is
// escaped with a second one ("//shrug" sends "/shrug").
func (m *Model) enter(line string) tea.Cmd {
	if strings.TrimSpace(line) == "" {
		return nil
	}
	switch {
	case strings.HasPrefix(line, "//"):
		return m.post(line[1:])
	case strings.HasPrefix(line, "/"):
		name, arg, _ := strings.Cut(line[1:], " ")
		arg = strings.TrimSpace(arg)
		for _, c := range commands() {
			if c.name == name {
				return c.run(m, arg)
			}
		}
		m.noticeWarn(fmt.Sprintf("no command /%s: /help lists them (send a line that starts with / as //...)", name))
		return nil
	}
	return m.post(line)
}

// noticeMsg is a command's answer, shown in room (the current one if
// empty).
type noticeMsg struct {
	room string
	text string
	warn bool
}

func (m *Model) cmdJoin(arg string) tea.Cmd {
	if arg == "" || strings.ContainsAny(arg, " \t") {
		m.noticeWarn("usage: /join ROOM")
		return nil
	}
	if isCode(arg) {
		return m.joinCode(arg)
	}
	name := strings.TrimPrefix(arg, "#")
	return m.join(name, true)
}

func (m *Model) cmdPart(arg string) tea.Cmd {
	name := strings.TrimPrefix(arg, "#")
	if name == "" {
		name = m.room().name
	}
	if m.find(name) < 0 {
		m.noticeWarn(fmt.Sprintf("not in #%s", name))
		return nil
	}
	s := m.s
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		return leftMsg{room: name, err: s.Leave(ctx, name)}
	}
}

func (m *Model) cmdNick(arg string) tea.Cmd {
	if arg == "" {
		m.notice(fmt.Sprintf("you are %s; /nick NAME changes it", m.nick))
		return nil
	}
	s := m.s
	return func() tea.Msg { return nickMsg{nick: arg, err: s.SetNick(arg)} }
}

func (m *Model) cmdInvite(string) tea.Cmd {
	if isPrivate(m.room().name) {
		return m.invitePrivate(m.room().name)
	}
	m.notice(fmt.Sprintf("#%s is a public room: tell them its name (/join %s) and your fingerprint %s. For a closed group, /create a private room.",
		m.room().name, m.room().name, m.opt.Fingerprint))
	return nil
}

func (m *Model) cmdPeers(string) tea.Cmd {
	r := m.room()
	if len(r.peers) == 0 {
		m.notice(fmt.Sprintf("no mesh peer in #%s", r.name))
		return nil
	}
	var lines []string
	for p := range r.peers {
		who := "(has not spoken here)"
		for _, mb := range r.members {
			if mb.peerID == p {
				who = mb.nick + " " + mb.fingerprint
			}
		}
		lines = append(lines, p+" "+who)
	}
	sort.Strings(lines)
	m.notice(fmt.Sprintf("%d mesh %s in #%s:\n%s", len(lines), plural(len(lines), "peer", "peers"), r.name, strings.Join(lines, "\n")))
	return nil
}

func (m *Model) cmdVerify(arg string) tea.Cmd {
	if arg == "" {
		m.noticeWarn("usage: /verify FINGERPRINT (compare it with them out of band first; /contacts lists fingerprints)")
		return nil
	}
	s := m.s
	return func() tea.Msg {
		ct, err := s.Verify(arg)
		return verifiedMsg{contact: ct, err: err}
	}
}

func (m *Model) cmdContacts(string) tea.Cmd {
	list := m.s.Contacts()
	if len(list) == 0 {
		m.notice("no contacts yet: people you see are added as they speak")
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s:", len(list), plural(len(list), "contact", "contacts"))
	for _, ct := range list {
		mark := "known"
		switch {
		case ct.Replaced:
			mark = "replaced"
		case ct.Verified:
			mark = "verified"
		}
		fmt.Fprintf(&b, "\n%-8s %-16s %s", mark, ct.Nick, ct.Key.Fingerprint())
	}
	m.notice(b.String())
	return nil
}

func (m *Model) cmdSearch(arg string) tea.Cmd {
	if arg == "" {
		m.noticeWarn("usage: /search WORDS")
		return nil
	}
	room := m.room().name
	s := m.s
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		msgs, err := s.History(ctx, room, arg, 200)
		return searchMsg{room: room, query: arg, results: msgs, err: err}
	}
}

func (m *Model) cmdHelp(string) tea.Cmd {
	m.screen, m.helpTop = screenHelp, 0
	return nil
}

func (m *Model) cmdQuit(string) tea.Cmd {
	m.quitting = true
	return tea.Quit
}

// candidates are the completions of word: commands first on the line,
// then rooms (#name) and the nicknames of the room.
func (m *Model) candidates(word string, first bool) []string {
	var out []string
	if first && strings.HasPrefix(word, "/") {
		for _, c := range commands() {
			if strings.HasPrefix("/"+c.name, word) {
				out = append(out, "/"+c.name)
			}
		}
		return out
	}
	if strings.HasPrefix(word, "#") || strings.HasPrefix(m.input.String(), "/join ") || strings.HasPrefix(m.input.String(), "/part ") {
		w := strings.TrimPrefix(word, "#")
		for _, r := range m.rooms {
			if strings.HasPrefix(r.name, w) {
				out = append(out, word[:len(word)-len(w)]+r.name)
			}
		}
		return out
	}
	seen := map[string]bool{}
	for _, mb := range m.room().members {
		if mb.own || seen[mb.nick] || !strings.HasPrefix(mb.nick, word) {
			continue
		}
		seen[mb.nick] = true
		if first {
			out = append(out, mb.nick+":")
		} else {
			out = append(out, mb.nick)
		}
	}
	sort.Strings(out)
	return out
}

// messages a command's work sends back to Update.
type (
	leftMsg struct {
		room string
		err  error
	}
	nickMsg struct {
		nick string
		err  error
	}
	verifiedMsg struct {
		contact client.Contact
		err     error
	}
	searchMsg struct {
		room, query string
		results     []client.Message
		err         error
	}
)

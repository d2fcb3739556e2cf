package tui

import (
	"fmt"
	"strings"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/parleychat/parley/client"
)

// The smallest window the UI draws in.
const (
	minWidth  = 60
	minHeight = 15
)

const (
	roomsWidth   = 16 // the room list, its border included
	membersWidth = 20 // the member list, shown from wideWidth on
	wideWidth    = 90
)

// View draws the screen.
func (m *Model) View() tea.View {
	v := tea.NewView(m.Render())
	v.AltScreen = true
	v.MouseMode = tea.MouseModeCellMotion
	v.WindowTitle = "parley #" + m.room().name
	if m.width >= minWidth && m.height >= minHeight && m.screen != screenHelp && m.screen != screenSearch {
		x, y := m.cursor()
		v.Cursor = tea.NewCursor(x, y)
	}
	return v
}

// Render is the screen as text, without the terminal's settings: what
// View shows, and what the golden files hold.
func (m *Model) Render() string {
	if m.width == 0 || m.height == 0 {
		return ""
	}
	if m.width < minWidth || m.height < minHeight {
		return fit(fmt.Sprintf("The window is %dx%d: Parley needs at least %dx%d. Make it larger, or press Ctrl+C to quit.",
			m.width, m.height, minWidth, minHeight), m.width, m.height)
	}
	var rows []string
	rows = append(rows, m.alarmRows()...)
	body := m.height - 2 - len(rows)
	switch m.screen {
	case screenHelp:
		rows = append(rows, m.helpRows(body)...)
	case screenSearch:
		rows = append(rows, m.searchRows(body)...)
	default:
		rows = append(rows, m.chatRows(body)...)
	}
	rows = append(rows, m.statusRow(), m.inputRow())
	return strings.Join(rows, "\n")
}

// fit wraps text to a width×height block.
func fit(text string, width, height int) string {
	rows := strings.Split(ansi.Wordwrap(text, width, ""), "\n")
	for len(rows) < height {
		rows = append(rows, "")
	}
	return strings.Join(rows[:height], "\n")
}

// pad cuts or pads a row to exactly width cells.
func pad(s string, width int) string {
	w := ansi.StringWidth(s)
	if w > width {
		s = ansi.Truncate(s, width, "…")
		w = ansi.StringWidth(s)
	}
	if w < width {
		s += strings.Repeat(" ", width-w)
	}
	return s
}

func (m *Model) alarmRows() []string {
	if m.alarm == "" {
		return nil
	}
	var out []string
	for _, r := range strings.Split(ansi.Wordwrap(clean(m.alarm), m.width-2, ""), "\n") {
		out = append(out, m.st.alarm.Render(pad(" "+r, m.width)))
	}
	return out
}

// paneWidth is the message pane's width.
func (m *Model) paneWidth() int {
	w := m.width - roomsWidth
	if m.width >= wideWidth {
		w -= membersWidth
	}
	return w
}

// paneHeight is the message pane's height.
func (m *Model) paneHeight() int {
	h := m.height - 2
	if m.alarm != "" {
		h -= len(m.alarmRows())
	}
	return max(h, 1)
}

func (m *Model) chatRows(height int) []string {
	left := m.roomRows(height)
	var mid []string
	if m.screen == screenFirstRun {
		mid = m.firstRunRows(height)
	} else {
		mid = m.messageRows(m.room(), m.paneWidth(), height)
	}
	var right []string
	if m.width >= wideWidth {
		right = m.memberRows(height)
	}
	out := make([]string, height)
	for i := range out {
		row := pad(left[i], roomsWidth-1) + "│" + pad(mid[i], m.paneWidth())
		if right != nil {
			row += "│" + pad(right[i], membersWidth-1)
		}
		out[i] = row
	}
	return out
}

func (m *Model) roomRows(height int) []string {
	out := make([]string, 0, height)
	for i, r := range m.rooms {
		if len(out) == height {
			break
		}
		mark := ""
		switch {
		case r.mention:
			mark = fmt.Sprintf(" %d@", r.unread)
		case r.unread > 0:
			mark = fmt.Sprintf(" %d", r.unread)
		}
		name := r.label()
		if w := roomsWidth - 1 - len(mark) - 2; ansi.StringWidth(name) > w {
			name = ansi.Truncate(name, w, "…")
		}
		row := pad(fmt.Sprintf("%d %s", (i+1)%10, name), roomsWidth-1-len(mark)) + mark
		switch {
		case i == m.cur:
			row = m.st.active.Render(row)
		case r.mention:
			row = m.st.mention.Render(row)
		case r.unread > 0:
			row = lipgloss.NewStyle().Bold(true).Render(row)
		}
		out = append(out, row)
	}
	for len(out) < height {
		out = append(out, "")
	}
	return out
}

func (m *Model) memberRows(height int) []string {
	r := m.room()
	out := []string{m.st.dim.Render(fmt.Sprintf("%d here, %d seen", len(r.peers), len(r.members)))}
	for _, mb := range sortedMembers(r) {
		if len(out) == height {
			break
		}
		on := " "
		if r.peers[mb.peerID] || mb.own {
			on = "•"
		}
		out = append(out, on+trustMark(mb.trust, mb.own)+nickStyle(mb.fingerprint).Render(mb.nick))
	}
	for len(out) < height {
		out = append(out, "")
	}
	return out
}

// trustMark is the mark before a nickname: ✓ verified, + new, ! key
// changed, nothing for known and for ourselves.
func trustMark(t client.Trust, own bool) string {
	switch {
	case own:
		return " "
	case t == client.TrustVerified:
		return "✓"
	case t == client.TrustNew:
		return "+"
	case t == client.TrustKeyChanged:
		return "!"
	}
	return " "
}

// messageRows is the message pane: the rows of the entries that end at
// the room's bottom entry, and the bar that says what is below.
func (m *Model) messageRows(r *room, width, height int) []string {
	out := make([]string, height)
	n := height
	if r.anchor >= 0 {
		n-- // the last row says what is below
		bar := "── more below: End ──"
		if r.newBelow > 0 {
			bar = fmt.Sprintf("── %d new below: End ──", r.newBelow)
		}
		out[height-1] = m.st.notice.Render(bar)
	}
	var rows []string
	for i := r.bottom(); i >= 0 && len(rows) < n; i-- {
		er := m.entryRows(r.entries[i], width)
		rows = append(er, rows...)
	}
	if len(rows) > n {
		rows = rows[len(rows)-n:]
	}
	copy(out[n-len(rows):n], rows)
	return out
}

// entryRows renders an entry at width, from its cache when nothing it
// shows has changed.
func (m *Model) entryRows(e *entry, width int) []string {
	if e.rows != nil && e.width == width && e.del == nil && !e.gap {
		return e.rows
	}
	var rows []string
	if e.msg == nil {
		style := m.st.notice
		if e.warn {
			style = m.st.warn
		}
		for _, r := range wrap("-- "+clean(e.notice), width, width) {
			rows = append(rows, style.Render(r))
		}
	} else {
		rows = m.messageLines(e, width)
	}
	e.rows, e.width = rows, width
	return rows
}

// indent is where the rows of a message after its first begin.
const indent = 6

// messageLines is a message: its time, the sender's trust mark and
// nickname, its text wrapped under it, then what became of it (ours) or
// the gap before it.
func (m *Model) messageLines(e *entry, width int) []string {
	msg := e.msg
	nick := msg.Nick
	if nick == "" { // a sealed message not open: its nickname is sealed too
		nick = msg.Sender.ShortFingerprint()
	}
	who := nickStyle(m.fingerprint(msg.Sender)).Render(nick)
	if msg.Own {
		who = lipgloss.NewStyle().Bold(true).Render(nick)
	}
	mark := trustMark(msg.Trust, msg.Own)
	if msg.Trust == client.TrustKeyChanged && !msg.Own {
		who += m.st.warn.Render(" [KEY CHANGED]")
	} else if msg.Trust == client.TrustNew && !msg.Own {
		who += m.st.dim.Render(" (new)")
	}
	head := msg.Time.In(m.opt.location()).Format("15:04") + " " + mark + who + " "
	headW := ansi.StringWidth(head)
	var rows []string
	text, render := msg.Text, func(r string) string { return r }
	if s := sealedText(msg); s != "" {
		style := m.st.dim
		if msg.Never != "" {
			style = m.st.warn
		}
		text, render = s, func(r string) string { return style.Render(r) }
	}
	for i, r := range wrap(clean(text), width-headW, width-indent) {
		if i == 0 {
			rows = append(rows, head+render(r))
		} else {
			rows = append(rows, strings.Repeat(" ", indent)+render(r))
		}
	}
	if e.del != nil {
		state := strings.Repeat(" ", indent) + "⋯ " + e.del.String()
		style := m.st.dim
		if e.del.kept {
			style = m.st.warn
			if e.del.why != "" {
				state += ": " + e.del.why
			}
		}
		rows = append(rows, style.Render(ansi.Truncate(state, width, "…")))
	}
	if e.gap {
		rows = append(rows, m.st.warn.Render(ansi.Truncate(
			strings.Repeat(" ", indent)+fmt.Sprintf("↑ a message of %s's before this one has not arrived yet", msg.Nick), width, "…")))
	}
	return rows
}

func (m *Model) statusRow() string {
	r := m.room()
	fp := m.opt.Fingerprint
	if len(fp) > 15 {
		fp = fp[:15]
	}
	parts := []string{fp, m.nick, m.opt.Mode,
		fmt.Sprintf("%s %d mesh %s", r.label(), len(r.peers), plural(len(r.peers), "peer", "peers"))}
	if p := pathsState(m.paths); p != "" {
		parts = append(parts, p)
	}
	if len(m.relays) > 0 {
		parts = append(parts, m.relayState())
	}
	return m.st.status.Render(pad(" "+strings.Join(parts, " · "), m.width))
}

// pathsState says how the mesh peers are reached: "1 direct,
// 2 hole-punched, 1 circuit"; nothing without any.
func pathsState(p client.PathsEvent) string {
	var out []string
	for _, c := range []struct {
		n    int
		what string
	}{{p.Direct, "direct"}, {p.HolePunched, "hole-punched"}, {p.Circuit, "circuit"}} {
		if c.n > 0 {
			out = append(out, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	return strings.Join(out, ", ")
}

// inputLine is the input as one row: new lines show as ↵.
func (m *Model) inputLine() (prompt string, text []rune) {
	prompt = m.room().label() + "> "
	if m.screen == screenFirstRun {
		prompt = "nickname> "
	}
	return prompt, []rune(strings.ReplaceAll(m.input.String(), "\n", "↵"))
}

func (m *Model) inputRow() string {
	prompt, text := m.inputLine()
	avail := m.width - len(prompt) - 1
	start := max(0, m.input.pos-avail)
	return pad(prompt+string(text[start:]), m.width)
}

func (m *Model) cursor() (int, int) {
	prompt, text := m.inputLine()
	avail := m.width - len(prompt) - 1
	start := max(0, m.input.pos-avail)
	return len(prompt) + ansi.StringWidth(string(text[start:m.input.pos])), m.height - 1
}

package tui

import (
	"fmt"
	"sort"
	"strings"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"
)

// sortedMembers lists a room's members: those here first, then by
// nickname.
func sortedMembers(r *room) []*member {
	out := make([]*member, 0, len(r.members))
	for _, mb := range r.members {
		out = append(out, mb)
	}
	sort.Slice(out, func(i, j int) bool {
		hi, hj := r.peers[out[i].peerID] || out[i].own, r.peers[out[j].peerID] || out[j].own
		if hi != hj {
			return hi
		}
		if out[i].nick != out[j].nick {
			return out[i].nick < out[j].nick
		}
		return out[i].fingerprint < out[j].fingerprint
	})
	return out
}

// helpRows is the help view: the key map, the commands and the marks,
// in two columns where the window is wide enough; Up and Down scroll it
// where it is not tall enough.
func (m *Model) helpRows(height int) []string {
	bold := lipgloss.NewStyle().Bold(true)
	keys := []string{bold.Render("Keys")}
	for _, b := range m.keys.bindings() {
		h := b.Help()
		keys = append(keys, fmt.Sprintf("  %-14s %s", h.Key, h.Desc))
	}
	cmds := []string{bold.Render("Commands") + " (a line starting with / is never sent: // sends one)"}
	for _, c := range commands() {
		cmds = append(cmds, fmt.Sprintf("  %-22s %s", "/"+c.name+" "+c.args, c.help))
	}
	marks := []string{bold.Render("Marks"),
		"  ✓ verified  + new  ! KEY CHANGED (not the key you verified)  • here now",
		"  under your messages: sending, stored by N mesh peers, relayed (receipt",
		"  checked), or not delivered yet (kept in the outbox, sent again later)"}
	var rows []string
	if m.width >= 150 {
		right := append(append(cmds, ""), marks...)
		for i := range max(len(keys), len(right)) {
			l, r := "", ""
			if i < len(keys) {
				l = keys[i]
			}
			if i < len(right) {
				r = right[i]
			}
			rows = append(rows, pad(l, 62)+r)
		}
	} else {
		rows = append(append(append(append(keys, ""), cmds...), ""), marks...)
	}
	head := m.st.dim.Render("Parley help: ↑↓ pgup pgdn scroll, any other key closes")
	m.helpTop = min(m.helpTop, max(len(rows)-(height-1), 0))
	return fitRows(append([]string{head}, rows[m.helpTop:]...), m.width, height)
}

// searchRows is the search view: the results, the selected one marked.
func (m *Model) searchRows(height int) []string {
	sv := &m.search
	head := fmt.Sprintf("%d %s in #%s for %q: ↑↓ select, enter jumps to it, esc closes",
		len(sv.results), plural(len(sv.results), "message", "messages"), sv.room, sv.query)
	rows := []string{lipgloss.NewStyle().Bold(true).Render(pad(head, m.width))}
	n := height - 1
	first := max(0, min(sv.sel-n/2, len(sv.results)-n))
	for i := first; i < len(sv.results) && len(rows) < height; i++ {
		r := sv.results[i]
		row := pad(fmt.Sprintf("%s %s: %s", r.Time.In(m.opt.location()).Format("01-02 15:04"), r.Nick, strings.ReplaceAll(clean(r.Text), "\n", " ")), m.width)
		if i == sv.sel {
			row = m.st.selected.Render(row)
		}
		rows = append(rows, row)
	}
	return fitRows(rows, m.width, height)
}

// firstRunRows is the welcome of a new home folder.
func (m *Model) firstRunRows(height int) []string {
	text := []string{
		"Welcome to Parley.",
		"",
		"You are " + m.opt.Fingerprint,
		"",
		"This fingerprint is you: your messages are signed with the key behind it.",
		"Share it with the people you talk to (chat id prints it), and compare",
		"theirs out of band (in person, by phone) before you /verify them.",
		"",
		"Choose the nickname your messages carry (a-z 0-9 - _ .), then Enter.",
		"Others see it beside your key's colour; it is not unique, the key is.",
	}
	if m.firstErr != "" {
		text = append(text, "", m.st.warn.Render(m.firstErr))
	}
	var rows []string
	for _, t := range text {
		rows = append(rows, strings.Split(ansi.Wordwrap(t, m.paneWidth(), ""), "\n")...)
	}
	return fitRows(rows, m.paneWidth(), height)
}

// fitRows pads rows to width and height.
func fitRows(rows []string, width, height int) []string {
	out := make([]string, height)
	for i := range out {
		if i < len(rows) {
			out[i] = pad(rows[i], width)
		} else {
			out[i] = strings.Repeat(" ", width)
		}
	}
	return out
}

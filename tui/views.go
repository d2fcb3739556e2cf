package tui

import (
	"fmt"
	"sort"
	"strings"

	"charm.land/lipgloss/v2"
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

// helpRows is the help view: the key map, the commands and the marks.
func (m *Model) helpRows(height int) []string {
	bold := lipgloss.NewStyle().Bold(true)
	rows := []string{bold.Render("Keys") + m.st.dim.Render("  (any key closes this help)")}
	for _, b := range m.keys.bindings() {
		h := b.Help()
		rows = append(rows, fmt.Sprintf("  %-14s %s", h.Key, h.Desc))
	}
	rows = append(rows, "", bold.Render("Commands")+m.st.dim.Render("  (a line starting with / is never sent; // sends one /)"))
	for _, c := range commands() {
		rows = append(rows, fmt.Sprintf("  %-26s %s", "/"+c.name+" "+c.args, c.help))
	}
	rows = append(rows, "", bold.Render("Marks"),
		"  ✓ verified   + new   ! KEY CHANGED (not the key you verified)   • in the room now",
		"  under your messages: sending, stored by N mesh peers, relayed (receipt checked),",
		"  or not delivered yet (kept in the outbox and sent again when a path is there)")
	return fitRows(rows, m.width, height)
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
		row := pad(fmt.Sprintf("%s %s: %s", r.Time.Local().Format("01-02 15:04"), r.Nick, strings.ReplaceAll(r.Text, "\n", " ")), m.width)
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
	return fitRows(text, m.paneWidth(), height)
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

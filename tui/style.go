package tui

import (
	"hash/fnv"

	"charm.land/lipgloss/v2"
)

// styles are the UI's looks. Colours are dropped by the renderer on a
// terminal without them, and with NO_COLOR set; what a colour says is
// always said in text too (a mark, a word).
type styles struct {
	status   lipgloss.Style
	alarm    lipgloss.Style
	dim      lipgloss.Style
	notice   lipgloss.Style
	warn     lipgloss.Style
	active   lipgloss.Style
	mention  lipgloss.Style
	verified lipgloss.Style
	selected lipgloss.Style
}

func newStyles() styles {
	return styles{
		status:   lipgloss.NewStyle().Reverse(true),
		alarm:    lipgloss.NewStyle().Bold(true).Reverse(true).Foreground(lipgloss.Red),
		dim:      lipgloss.NewStyle().Faint(true),
		notice:   lipgloss.NewStyle().Foreground(lipgloss.Cyan),
		warn:     lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Red),
		active:   lipgloss.NewStyle().Bold(true).Reverse(true),
		mention:  lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Yellow),
		verified: lipgloss.NewStyle().Foreground(lipgloss.Green),
		selected: lipgloss.NewStyle().Reverse(true),
	}
}

// nickColours are readable on dark and light backgrounds alike.
var nickColours = []string{"1", "2", "3", "4", "5", "6", "9", "10", "11", "12", "13", "14", "166", "172", "135", "37"}

// nickStyle colours a nickname by its sender's key, not its text: the
// same person has the same colour in every session, and two people who
// chose one nickname most likely differ.
func nickStyle(fingerprint string) lipgloss.Style {
	h := fnv.New32a()
	h.Write([]byte(fingerprint))
	c := nickColours[h.Sum32()%uint32(len(nickColours))]
	return lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color(c))
}

package tui

import (
	"strings"
	"unicode"

	"github.com/charmbracelet/x/ansi"
)

// clean makes text from the network safe to draw: control characters
// (escape sequences that would move the cursor, retitle the window or
// recolour the screen) become visible "�"; new lines stay.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n':
			return r
		case r == '\t':
			return ' '
		case unicode.IsControl(r), r == '\u2028', r == '\u2029':
			return '�'
		}
		return r
	}, s)
}

// wrap breaks plain text into rows: the first at most first cells wide,
// the others at most rest, breaking between words where it can and
// inside a word longer than a row. New lines in text start new rows.
func wrap(text string, first, rest int) []string {
	var rows []string
	width := max(first, 1)
	for _, para := range strings.Split(text, "\n") {
		row, rowW := "", 0
		for _, word := range strings.Fields(para) {
			w := ansi.StringWidth(word)
			if rowW > 0 && rowW+1+w > width { // the word goes on the next row
				rows, row, rowW, width = append(rows, row), "", 0, max(rest, 1)
			}
			for rowW == 0 && w > width { // a word longer than a row
				head := ansi.Truncate(word, width, "")
				rows, width = append(rows, head), max(rest, 1)
				word = strings.TrimPrefix(word, head)
				w = ansi.StringWidth(word)
			}
			if rowW > 0 {
				row, rowW = row+" ", rowW+1
			}
			row, rowW = row+word, rowW+w
		}
		rows, width = append(rows, row), max(rest, 1)
	}
	return rows
}

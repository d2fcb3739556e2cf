package tui

import (
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"
)

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		text        string
		first, rest int
		want        []string
	}{
		{"", 10, 10, []string{""}},
		{"one two three", 20, 20, []string{"one two three"}},
		{"one two three", 8, 20, []string{"one two", "three"}},
		{"one two three four", 7, 5, []string{"one two", "three", "four"}},
		{"abcdefghij kl", 4, 4, []string{"abcd", "efgh", "ij", "kl"}},
		{"a\nb c", 10, 10, []string{"a", "b c"}},
		{"日本語のテキスト", 6, 6, []string{"日本語", "のテキ", "スト"}},
	} {
		got := wrap(tc.text, tc.first, tc.rest)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("wrap(%q, %d, %d) = %q, want %q", tc.text, tc.first, tc.rest, got, tc.want)
		}
		for i, r := range got {
			if w, limit := ansi.StringWidth(r), map[bool]int{true: tc.first, false: tc.rest}[i == 0]; w > limit {
				t.Errorf("wrap(%q): row %q is %d wide, limit %d", tc.text, r, w, limit)
			}
		}
	}
}

// Text from the network never reaches the terminal as a control
// sequence: a message cannot move the cursor, retitle the window or
// clear the screen.
func TestCleanDisarmsEscapes(t *testing.T) {
	evil := "hi\x1b[2J\x1b]0;pwned\x07\rthere\u009b31m\nnext"
	got := clean(evil)
	for _, c := range []string{"\x1b", "\x07", "\r", "\u009b"} {
		if strings.Contains(got, c) {
			t.Errorf("clean left %q in %q", c, got)
		}
	}
	if !strings.Contains(got, "\nnext") {
		t.Errorf("clean dropped the new line: %q", got)
	}
}

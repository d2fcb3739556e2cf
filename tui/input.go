package tui

import (
	"strings"
	"unicode"
)

// input is the line being typed: its text (which may hold new lines, from
// a paste or Alt+Enter), the cursor, the lines typed before (Up and Down)
// and the state of a Tab completion.
type input struct {
	text []rune
	pos  int

	past    []string // lines entered, oldest first
	pastAt  int      // len(past) when not browsing
	draft   string   // what was typed before browsing began
	maxPast int

	// Tab completion: the candidates for the word being completed and
	// which one is shown; reset by any other key.
	cands   []string
	candAt  int
	wordAt  int // where the completed word starts
	wordEnd int
}

func newInput() input { return input{maxPast: 200} }

func (in *input) String() string { return string(in.text) }

func (in *input) set(s string) {
	in.text = []rune(s)
	in.pos = len(in.text)
}

func (in *input) insert(s string) {
	in.cands = nil
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	r := []rune(s)
	in.text = append(in.text[:in.pos], append(r, in.text[in.pos:]...)...)
	in.pos += len(r)
}

func (in *input) backspace() {
	in.cands = nil
	if in.pos > 0 {
		in.text = append(in.text[:in.pos-1], in.text[in.pos:]...)
		in.pos--
	}
}

func (in *input) deleteForward() {
	in.cands = nil
	if in.pos < len(in.text) {
		in.text = append(in.text[:in.pos], in.text[in.pos+1:]...)
	}
}

// deleteWord deletes the word before the cursor (Ctrl+W).
func (in *input) deleteWord() {
	in.cands = nil
	i := in.pos
	for i > 0 && unicode.IsSpace(in.text[i-1]) {
		i--
	}
	for i > 0 && !unicode.IsSpace(in.text[i-1]) {
		i--
	}
	in.text = append(in.text[:i], in.text[in.pos:]...)
	in.pos = i
}

func (in *input) move(d int) {
	in.cands = nil
	in.pos = min(max(in.pos+d, 0), len(in.text))
}

// take returns the line and empties the input, keeping the line for Up.
func (in *input) take() string {
	s := string(in.text)
	in.text, in.pos, in.cands = nil, 0, nil
	if strings.TrimSpace(s) != "" && (len(in.past) == 0 || in.past[len(in.past)-1] != s) {
		in.past = append(in.past, s)
		if len(in.past) > in.maxPast {
			in.past = in.past[1:]
		}
	}
	in.pastAt = len(in.past)
	return s
}

// prev shows the line typed before the one shown (Up).
func (in *input) prev() {
	if in.pastAt == 0 {
		return
	}
	if in.pastAt == len(in.past) {
		in.draft = string(in.text)
	}
	in.pastAt--
	in.set(in.past[in.pastAt])
}

// next shows the line typed after the one shown, or the draft (Down).
func (in *input) next() {
	if in.pastAt >= len(in.past) {
		return
	}
	in.pastAt++
	if in.pastAt == len(in.past) {
		in.set(in.draft)
		return
	}
	in.set(in.past[in.pastAt])
}

// complete replaces the word before the cursor with the next candidate
// that starts with it, as candidates(word, first) offers them: first is
// whether the word is the line's first. Pressing Tab again cycles.
func (in *input) complete(candidates func(word string, first bool) []string) {
	if in.cands != nil {
		in.candAt = (in.candAt + 1) % len(in.cands)
		in.replaceWord(in.cands[in.candAt])
		return
	}
	start := in.pos
	for start > 0 && !unicode.IsSpace(in.text[start-1]) {
		start--
	}
	word := string(in.text[start:in.pos])
	first := strings.TrimSpace(string(in.text[:start])) == ""
	cands := candidates(word, first)
	if len(cands) == 0 {
		return
	}
	in.wordAt, in.wordEnd = start, in.pos
	in.replaceWord(cands[0])
	if len(cands) > 1 {
		in.cands, in.candAt = cands, 0
	}
}

func (in *input) replaceWord(w string) {
	r := []rune(w)
	rest := append([]rune(nil), in.text[in.wordEnd:]...)
	in.text = append(append(in.text[:in.wordAt:in.wordAt], r...), rest...)
	in.wordEnd = in.wordAt + len(r)
	in.pos = in.wordEnd
}

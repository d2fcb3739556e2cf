package wire

import (
	"slices"
	"strings"
	"testing"
)

func TestParseALPN(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"parley-relay/1", 1, true},
		{"parley-relay/12", 12, true},
		{"parley-relay/255", 255, true},
		{"parley-relay/256", 0, false},
		{"parley-relay/0", 0, false},
		{"parley-relay/01", 0, false}, // one spelling per version
		{"parley-relay/", 0, false},
		{"parley-relay/1a", 0, false},
		{"parley-relay/-1", 0, false},
		{"parley-relay/1000", 0, false},
		{"Parley-relay/1", 0, false},
		{"h2", 0, false},
		{"", 0, false},
	} {
		v, ok := ParseALPN(tc.in)
		if v != tc.want || ok != tc.ok {
			t.Errorf("ParseALPN(%q) = %d, %v; want %d, %v", tc.in, v, ok, tc.want, tc.ok)
		}
		if ok && ALPN(v) != tc.in {
			t.Errorf("ALPN(%d) = %q, want %q", v, ALPN(v), tc.in)
		}
	}
}

func TestChoose(t *testing.T) {
	relay := Versions{Min: 2, Max: 3}
	for _, tc := range []struct {
		offered []string
		want    string
	}{
		{[]string{"parley-relay/3", "parley-relay/2"}, "parley-relay/3"},
		{[]string{"parley-relay/2", "parley-relay/3"}, "parley-relay/3"}, // the highest, whatever the order
		{[]string{"parley-relay/4", "parley-relay/2"}, "parley-relay/2"},
		{[]string{"h2", "parley-relay/2"}, "parley-relay/2"},
		{[]string{"parley-relay/1"}, "parley-relay/1"},                   // too old: chosen, to be refused
		{[]string{"parley-relay/5", "parley-relay/4"}, "parley-relay/5"}, // too new: likewise
		{[]string{"h2"}, ""},
		{nil, ""},
	} {
		if got := relay.Choose(tc.offered); got != tc.want {
			t.Errorf("Choose(%q) = %q, want %q", tc.offered, got, tc.want)
		}
	}
	if got := (Versions{Min: 1, Max: 3}).ALPNs(); !slices.Equal(got, []string{"parley-relay/3", "parley-relay/2", "parley-relay/1"}) {
		t.Errorf("ALPNs: %q", got)
	}
	if got := Current.ALPNs(); len(got) == 0 || got[len(got)-1] != ALPN(Current.Min) {
		t.Errorf("Current.ALPNs(): %q", got)
	}
}

// TestRefusal: a version the relay does not speak is refused with a text
// that names the client's version and the relay's, and says who should
// upgrade.
func TestRefusal(t *testing.T) {
	relay := Versions{Min: 2, Max: 3}
	for _, tc := range []struct {
		alpn string
		bad  bool
		has  []string
	}{
		{"parley-relay/2", false, nil},
		{"parley-relay/3", false, nil},
		{"parley-relay/1", true, []string{"version 1", "versions 2 to 3", "upgrade the client"}},
		{"parley-relay/4", true, []string{"version 4", "versions 2 to 3", "upgrade the relay"}},
		{"", true, []string{"no relay protocol version", "versions 2 to 3"}},
	} {
		msg, bad := relay.Refusal(tc.alpn)
		if bad != tc.bad {
			t.Errorf("Refusal(%q): refused %v, want %v (%q)", tc.alpn, bad, tc.bad, msg)
		}
		for _, h := range tc.has {
			if !strings.Contains(msg, h) {
				t.Errorf("Refusal(%q) = %q, does not say %q", tc.alpn, msg, h)
			}
		}
		if len(msg) > MaxErrorMessage {
			t.Errorf("Refusal(%q) is %d bytes, more than an Error frame holds", tc.alpn, len(msg))
		}
	}
}

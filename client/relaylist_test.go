package client

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
)

// TestRelayList: the config's relay is one address or a list, --relay
// adds addresses (a list with commas, or the flag again); a relay named
// twice, or a bad address, is refused with the relay named.
func TestRelayList(t *testing.T) {
	a := relay.AddrOf(testkit.Key(t).Public(), "127.0.0.1:4433").String()
	b := relay.AddrOf(testkit.Key(t).Public(), "127.0.0.2:4433").String()
	for _, tc := range []struct {
		file string
		want []string
	}{
		{``, nil},
		{`relay = ""`, nil},
		{`relay = "` + a + `"`, []string{a}},
		{`relay = ["` + a + `", "` + b + `"]`, []string{a, b}},
	} {
		c, err := ParseConfig([]byte(tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if !slices.Equal(c.Relays, tc.want) {
			t.Errorf("%s: relays %q, want %q", tc.file, c.Relays, tc.want)
		}
	}
	if _, err := ParseConfig([]byte(`relay = 7`)); !errors.Is(err, ErrConfig) {
		t.Errorf("relay = 7: %v, want ErrConfig", err)
	}
	var l RelayList
	l.Set(a + ", " + b)
	l.Set(a)
	if !slices.Equal(l, RelayList{a, b, a}) {
		t.Fatalf("--relay A,B --relay A: %q", l)
	}
	if _, err := l.Addrs(); err == nil || !strings.Contains(err.Error(), "named twice") {
		t.Errorf("a relay named twice: %v", err)
	}
	c := DefaultConfig()
	c.Relays = RelayList{a, "nonsense"}
	if err := c.Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("a bad address among good: %v, want ErrConfig", err)
	}
}

// TestRelayAck: how many relays must acknowledge a message under each
// relay_ack, and when a send counts as delivered.
func TestRelayAck(t *testing.T) {
	for _, tc := range []struct {
		ack          string
		relays, need int
	}{
		{"", 0, 0}, {"any", 3, 1}, {"quorum", 1, 1}, {"quorum", 2, 2}, {"quorum", 3, 2},
		{"quorum", 4, 3}, {"all", 3, 3}, {"all", 0, 0},
	} {
		need, err := relayNeed(tc.ack, tc.relays)
		if err != nil || need != tc.need {
			t.Errorf("relay_ack %q of %d relays: need %d, %v; want %d", tc.ack, tc.relays, need, err, tc.need)
		}
	}
	if _, err := relayNeed("most", 3); err == nil {
		t.Error("relay_ack most: accepted")
	}
	for _, tc := range []struct {
		sent Sent
		want bool
	}{
		{Sent{}, false},
		{Sent{Via: []string{ViaMesh}}, true},                                  // no relay: the mesh
		{Sent{Via: []string{ViaMesh}, Need: 1}, true},                         // any: the mesh will do
		{Sent{Via: []string{ViaRelay}, Relays: []string{"a"}, Need: 1}, true}, // any: one relay
		{Sent{Via: []string{ViaMesh, ViaRelay}, Relays: []string{"a"}, Need: 2}, false},
		{Sent{Via: []string{ViaRelay}, Relays: []string{"a", "b"}, Need: 2}, true},
	} {
		if got := tc.sent.Delivered(); got != tc.want {
			t.Errorf("%+v: delivered %v, want %v", tc.sent, got, tc.want)
		}
	}
}

package tui

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/client"
)

// TestSeveralRelays: the status row counts the connected relays, each
// RelayEvent changes its own relay's state, and /relay lists each with
// its state and why it is down.
func TestSeveralRelays(t *testing.T) {
	f := newFake()
	opt := testOptions()
	one, two := "SHA256:one@127.0.0.1:4433", "SHA256:two@127.0.0.2:4433"
	opt.Relays = []string{one, two}
	m := newModel(t, f, opt)
	if got := m.statusRow(); !strings.Contains(got, "relays 0 of 2 connected") {
		t.Fatalf("status before any event: %q", got)
	}
	m.relayEvent(&client.RelayEvent{Relay: two, Connected: true, Transport: "quic", RTT: 3 * time.Millisecond})
	m.relayEvent(&client.RelayEvent{Relay: one, Err: errors.New("connection refused")})
	if got := m.statusRow(); !strings.Contains(got, "relays 1 of 2 connected") {
		t.Fatalf("status with two up and one down: %q", got)
	}
	m.cmdRelay("")
	var text string
	for _, e := range m.room().entries {
		text += e.notice + "\n"
	}
	for _, want := range []string{"address 127.0.0.1:4433", "state   down: connection refused", "address 127.0.0.2:4433", "relay connected quic 3ms"} {
		if !strings.Contains(text, want) {
			t.Errorf("/relay does not say %q:\n%s", want, text)
		}
	}
}

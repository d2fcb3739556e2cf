package tui

import (
	"fmt"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/parleychat/parley/client"
)

// relayView is what the screen knows of one relay: its last RelayEvent.
type relayView struct {
	addr      string // FINGERPRINT@HOST:PORT
	known     bool
	connected bool
	rtt       time.Duration
	transport string // quic or tcp, while connected
	err       string
}

// state is the relay's state in a few words.
func (r relayView) state() string {
	switch {
	case !r.known:
		return "connecting"
	case r.connected:
		return fmt.Sprintf("connected %s %dms", r.transport, r.rtt.Milliseconds())
	}
	return "down"
}

func (r relayView) detail() string {
	if r.err != "" {
		return r.state() + ": " + r.err
	}
	return r.state()
}

// relayEvent keeps what e says of its relay (the first, if e names none).
func (m *Model) relayEvent(e *client.RelayEvent) {
	i := 0
	for j, r := range m.relays {
		if r.addr == e.Relay {
			i = j
		}
	}
	if i >= len(m.relays) {
		return
	}
	r := &m.relays[i]
	r.known, r.connected, r.rtt, r.transport, r.err = true, e.Connected, e.RTT, e.Transport, ""
	if e.Err != nil {
		r.err = e.Err.Error()
	}
}

// relayState is the relays' state in a few words: the one relay's, or
// how many of several are connected.
func (m *Model) relayState() string {
	if len(m.relays) == 1 {
		return "relay " + m.relays[0].state()
	}
	up := 0
	for _, r := range m.relays {
		if r.connected {
			up++
		}
	}
	return fmt.Sprintf("relays %d of %d connected", up, len(m.relays))
}

func (m *Model) cmdRelay(string) tea.Cmd {
	if len(m.relays) == 0 {
		m.notice("no relay: peer to peer only (--relay FINGERPRINT@HOST:PORT, or relay in config.toml)")
		return nil
	}
	var out []string
	for _, r := range m.relays {
		key, addr, _ := strings.Cut(r.addr, "@")
		out = append(out, fmt.Sprintf("relay %s\naddress %s\nkey     %s\nstate   %s", r.state(), addr, key, r.detail()))
	}
	m.notice(strings.Join(out, "\n\n"))
	return nil
}

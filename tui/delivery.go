package tui

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/parleychat/parley/client"
)

// delivery is what became of one of our messages, as the line under it
// says: sending, then stored by mesh peers and relayed with its audit
// receipt checked, or kept in the outbox when no path took it. It only
// ever moves forward: a confirmation that comes late (the outbox sent
// the message again) turns "not delivered yet" into delivered, and the
// relays that acknowledged one attempt still count in the next.
type delivery struct {
	meshPeers []string // the mesh peers that confirmed they have it
	relays    []string // the relays that acknowledged it, committed to their disk
	need      int      // how many relays must (relay_ack quorum or all); up to 1: any path
	receipt   bool     // and an audit receipt checked out
	kept      bool     // a send ended with no path: in the outbox
	why       string   // why the paths did not take it, when kept
}

// apply takes one DeliveryEvent of the message.
func (d *delivery) apply(e *client.DeliveryEvent) {
	d.need = max(d.need, e.Sent.Need)
	switch {
	case e.Err == nil && e.Path == client.ViaMesh:
		if p := e.Sent.MeshPeer; p != "" && !slices.Contains(d.meshPeers, p) {
			d.meshPeers = append(d.meshPeers, p)
		}
	case e.Err == nil && e.Path == client.ViaRelay:
		d.addRelay(cmp.Or(e.Relay, "relay"))
		d.receipt = d.receipt || (e.Sent.Ack != nil && e.Sent.Ack.Receipt != nil)
	}
	// Every relay the attempt counts, those whose receipt was kept from
	// an attempt before (of another session, say) included.
	for _, r := range e.Sent.Relays {
		d.addRelay(r)
	}
	if e.Done {
		d.kept = !d.delivered()
		if d.kept {
			d.why = whyKept(e.Sent.Failed)
		}
	}
}

func (d *delivery) addRelay(r string) {
	if !slices.Contains(d.relays, r) {
		d.relays = append(d.relays, r)
	}
}

// delivered is client.Sent.Delivered over every attempt.
func (d *delivery) delivered() bool {
	if d.need > 1 {
		return len(d.relays) >= d.need
	}
	return len(d.relays) > 0 || len(d.meshPeers) > 0
}

// String is the delivery state as the message line shows it.
func (d *delivery) String() string {
	var parts []string
	if n := len(d.meshPeers); n > 0 {
		parts = append(parts, fmt.Sprintf("stored by %d mesh %s", n, plural(n, "peer", "peers")))
	}
	if n := len(d.relays); n > 0 {
		parts = append(parts, d.relayed(n))
	}
	switch {
	case d.kept:
		parts = append(parts, "not delivered yet (in the outbox)")
	case len(parts) == 0:
		return "sending"
	}
	return strings.Join(parts, ", ")
}

// relayed says how many relays acknowledged it, of how many must.
func (d *delivery) relayed(n int) string {
	s := "relayed"
	switch {
	case d.need > 1:
		s = fmt.Sprintf("relayed by %d of the %d relays needed", n, d.need)
	case n > 1:
		s = fmt.Sprintf("relayed by %d relays", n)
	}
	if d.receipt {
		s += ", receipt checked"
	}
	return s
}

// whyKept is the first reason a path gave, shortened to one line.
func whyKept(errs []error) string {
	if len(errs) == 0 {
		return ""
	}
	s := errs[0].Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

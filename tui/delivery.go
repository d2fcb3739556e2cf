package tui

import (
	"fmt"
	"slices"
	"strings"

	"github.com/parleychat/parley/client"
)

// delivery is what became of one of our messages, as the line under it
// says: sending, then stored by mesh peers and relayed with its audit
// receipt checked, or kept in the outbox when no path took it. It only
// ever moves forward: a confirmation that comes late (the outbox sent
// the message again) turns "not delivered yet" into delivered.
type delivery struct {
	meshPeers []string // the mesh peers that confirmed they have it
	relayed   bool     // the relay acknowledged it, committed to its disk
	receipt   bool     // and its audit receipt checked out
	kept      bool     // a send ended with no path: in the outbox
	why       string   // why the paths did not take it, when kept
}

// apply takes one DeliveryEvent of the message.
func (d *delivery) apply(e *client.DeliveryEvent) {
	switch {
	case e.Err == nil && e.Path == client.ViaMesh:
		if p := e.Sent.MeshPeer; p != "" && !slices.Contains(d.meshPeers, p) {
			d.meshPeers = append(d.meshPeers, p)
		}
	case e.Err == nil && e.Path == client.ViaRelay:
		d.relayed = true
		d.receipt = d.receipt || (e.Sent.Ack != nil && e.Sent.Ack.Receipt != nil)
	}
	if e.Done {
		d.kept = !d.delivered()
		if d.kept {
			d.why = whyKept(e.Sent.Failed)
		}
	}
}

func (d *delivery) delivered() bool { return d.relayed || len(d.meshPeers) > 0 }

// String is the delivery state as the message line shows it.
func (d *delivery) String() string {
	var parts []string
	if n := len(d.meshPeers); n > 0 {
		parts = append(parts, fmt.Sprintf("stored by %d mesh %s", n, plural(n, "peer", "peers")))
	}
	switch {
	case d.relayed && d.receipt:
		parts = append(parts, "relayed, receipt checked")
	case d.relayed:
		parts = append(parts, "relayed")
	}
	switch {
	case len(parts) > 0:
		return strings.Join(parts, ", ")
	case d.kept:
		return "not delivered yet (in the outbox)"
	}
	return "sending"
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

package mesh

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/multiformats/go-multiaddr"
)

// PathKind is how a connection reaches a peer.
type PathKind string

const (
	// PathDirect: a connection dialled or accepted directly.
	PathDirect PathKind = "direct"
	// PathHolePunched: a direct connection that hole punching (DCUtR) made
	// through both peers' NATs.
	PathHolePunched PathKind = "hole-punched"
	// PathCircuit: a connection through a circuit relay, limited in time
	// and bytes by the relay. Gossipsub does not use it; the node's own
	// protocols do (see feed.go).
	PathCircuit PathKind = "circuit"
)

// Path is one connection to a peer.
type Path struct {
	Peer peer.ID
	Kind PathKind
	// Transport is the transport of the connection, or for a circuit of
	// its leg to the relay: "quic", "tcp", "webtransport", "websocket",
	// "webrtc" or "other".
	Transport string
	// Remote is the peer's address as the connection sees it; for a
	// circuit, the relay's address followed by /p2p/<relay>/p2p-circuit.
	Remote string
	// Relay is the relay of a circuit.
	Relay   peer.ID
	Inbound bool
	Opened  time.Time
}

// Paths returns every open connection to a peer and how it goes, ordered
// by peer and then by kind (direct, hole-punched, circuit).
func (n *Node) Paths() []Path {
	conns := n.host.Network().Conns()
	out := make([]Path, 0, len(conns))
	for _, c := range conns {
		out = append(out, n.pathOf(c))
	}
	rank := map[PathKind]int{PathDirect: 0, PathHolePunched: 1, PathCircuit: 2}
	slices.SortFunc(out, func(a, b Path) int {
		return cmp.Or(cmp.Compare(a.Peer, b.Peer), cmp.Compare(rank[a.Kind], rank[b.Kind]), a.Opened.Compare(b.Opened))
	})
	return out
}

func (n *Node) pathOf(c network.Conn) Path {
	st := c.Stat()
	remote := c.RemoteMultiaddr()
	p := Path{
		Peer:      c.RemotePeer(),
		Kind:      PathDirect,
		Transport: transportOf(remote),
		Remote:    remote.String(),
		Inbound:   st.Direction == network.DirInbound,
		Opened:    st.Opened,
	}
	switch {
	case st.Limited || isCircuit(remote):
		p.Kind = PathCircuit
		p.Relay = relayOf(remote)
	case n.punches.punched(c.ID()):
		p.Kind = PathHolePunched
	}
	return p
}

// transportOf names the transport of a connection's remote address.
func transportOf(a multiaddr.Multiaddr) string {
	names := map[int]string{
		multiaddr.P_WEBTRANSPORT:  "webtransport",
		multiaddr.P_WEBRTC:        "webrtc",
		multiaddr.P_WEBRTC_DIRECT: "webrtc",
		multiaddr.P_WS:            "websocket",
		multiaddr.P_WSS:           "websocket",
		multiaddr.P_QUIC_V1:       "quic",
		multiaddr.P_TCP:           "tcp",
	}
	// The outermost transport before any circuit decides: QUIC under
	// WebTransport is WebTransport, TCP under a WebSocket a WebSocket.
	best := "other"
	for _, c := range a {
		code := c.Protocol().Code
		if code == multiaddr.P_CIRCUIT {
			break
		}
		if name, ok := names[code]; ok {
			best = name
		}
	}
	return best
}

// relayOf returns the relay of a circuit address: the peer named just
// before /p2p-circuit.
func relayOf(a multiaddr.Multiaddr) peer.ID {
	var relay peer.ID
	for _, c := range a {
		switch c.Protocol().Code {
		case multiaddr.P_P2P:
			if id, err := peer.Decode(c.Value()); err == nil {
				relay = id
			}
		case multiaddr.P_CIRCUIT:
			return relay
		}
	}
	return ""
}

// punches follows hole punching (it is the hole punching service's event
// tracer) and remembers which connections it made, until they close.
type punches struct {
	mu      sync.Mutex
	nw      network.Network             // nil until the host exists
	before  map[peer.ID]map[string]bool // direct connections when a punch began
	made    map[string]bool             // connection IDs made by punching
	notify  func(peer.ID, error)
	metrics *metrics
}

func newPunches(notify func(peer.ID, error), m *metrics) *punches {
	return &punches{before: map[peer.ID]map[string]bool{}, made: map[string]bool{}, notify: notify, metrics: m}
}

// attach gives the tracker the host's network, once the host exists;
// detach stops following it.
func (t *punches) attach(nw network.Network) (detach func()) {
	t.mu.Lock()
	t.nw = nw
	t.mu.Unlock()
	b := &network.NotifyBundle{DisconnectedF: func(nw network.Network, c network.Conn) {
		gone := nw.Connectedness(c.RemotePeer()) == network.NotConnected
		t.mu.Lock()
		delete(t.made, c.ID())
		if gone {
			delete(t.before, c.RemotePeer()) // a punch that never ended
		}
		t.mu.Unlock()
	}}
	nw.Notify(b)
	return func() { nw.StopNotify(b) }
}

func (t *punches) punched(connID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.made[connID]
}

// Trace implements holepunch.EventTracer. The service calls it on its own
// goroutines, synchronously: it only records.
func (t *punches) Trace(evt *holepunch.Event) {
	switch evt.Type {
	case holepunch.StartHolePunchEvtT:
		t.mu.Lock()
		if t.nw != nil {
			t.before[evt.Remote] = directConns(t.nw, evt.Remote)
		}
		t.mu.Unlock()
	case holepunch.EndHolePunchEvtT:
		end, ok := evt.Evt.(*holepunch.EndHolePunchEvt)
		if !ok {
			return
		}
		t.ended(evt.Remote, end)
	}
}

// ended marks the direct connections to p that were not there when the
// punch began as punched. It does so whatever this side's attempt
// reported: when both ends dial at once, the connection that wins may be
// the other end's, and this end's own attempt fail.
func (t *punches) ended(p peer.ID, end *holepunch.EndHolePunchEvt) {
	t.mu.Lock()
	if t.nw != nil {
		before := t.before[p]
		for id := range directConns(t.nw, p) {
			if !before[id] {
				t.made[id] = true
			}
		}
	}
	delete(t.before, p)
	t.mu.Unlock()

	var err error
	result := "ok"
	if !end.Success {
		err = errors.New(end.Error)
		result = "failed"
	}
	t.metrics.punches.WithLabelValues(result).Inc()
	if t.notify != nil {
		t.notify(p, err)
	}
}

// directConns returns the IDs of the connections to p that are not relayed.
func directConns(nw network.Network, p peer.ID) map[string]bool {
	out := make(map[string]bool)
	for _, c := range nw.ConnsToPeer(p) {
		if !c.Stat().Limited && !isCircuit(c.RemoteMultiaddr()) {
			out[c.ID()] = true
		}
	}
	return out
}

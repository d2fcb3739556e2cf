package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/multiformats/go-multiaddr"
)

// maxRelays bounds how many relays a node remembers; a client uses one or
// a few.
const maxRelays = 16

// relaySet holds the circuit relays a node knows: those of Config.Relays
// and those AddRelay adds. AutoRelay draws its candidates from it, and
// Connect dials through its relays.
type relaySet struct {
	mu      sync.Mutex
	order   []peer.ID // as added: candidates come in this order
	addrs   map[peer.ID][]multiaddr.Multiaddr
	changed chan struct{} // closed, and replaced, when a relay is added
}

func newRelaySet() *relaySet {
	return &relaySet{addrs: make(map[peer.ID][]multiaddr.Multiaddr), changed: make(chan struct{})}
}

// add adds relays, or addresses of relays it has; past maxRelays it adds
// no new relay and says so.
func (rs *relaySet) add(ais ...peer.AddrInfo) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	full, grew := false, false
	for _, ai := range ais {
		old, known := rs.addrs[ai.ID]
		if !known && len(rs.order) >= maxRelays {
			full = true
			continue
		}
		if !known {
			rs.order = append(rs.order, ai.ID)
			grew = true
		}
		for _, a := range ai.Addrs {
			if !slices.ContainsFunc(old, a.Equal) {
				old = append(old, a)
				grew = true
			}
		}
		rs.addrs[ai.ID] = old
	}
	if grew {
		close(rs.changed)
		rs.changed = make(chan struct{})
	}
	if full {
		return fmt.Errorf("mesh: at most %d relays", maxRelays)
	}
	return nil
}

// list returns the relays, and a channel closed when one is added.
func (rs *relaySet) list() ([]peer.AddrInfo, <-chan struct{}) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]peer.AddrInfo, 0, len(rs.order))
	for _, id := range rs.order {
		out = append(out, peer.AddrInfo{ID: id, Addrs: slices.Clone(rs.addrs[id])})
	}
	return out, rs.changed
}

func (rs *relaySet) has(id peer.ID) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	_, ok := rs.addrs[id]
	return ok
}

// source is AutoRelay's peer source: the known relays, up to num. While
// none is known it waits for one (or for ctx, which AutoRelay ends when it
// stops), so that a relay the client learns of after start is used at
// once rather than at AutoRelay's next look.
func (rs *relaySet) source(ctx context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, min(num, maxRelays))
	go func() {
		defer close(out)
		for {
			ais, changed := rs.list()
			if len(ais) > 0 {
				for _, ai := range ais[:min(num, len(ais))] {
					out <- ai // buffered for all of them
				}
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// circuitAddrs returns, for each known relay other than target, the
// address of target through it: /p2p/<relay>/p2p-circuit. The circuit
// transport reaches the relay over a connection it has, or at the relay's
// addresses in the peerstore.
func (rs *relaySet) circuitAddrs(target peer.ID) []multiaddr.Multiaddr {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []multiaddr.Multiaddr
	for _, id := range rs.order {
		if id == target {
			continue
		}
		a, err := multiaddr.NewMultiaddr("/p2p/" + id.String() + "/p2p-circuit")
		if err != nil {
			continue
		}
		out = append(out, a)
	}
	return out
}

// AddRelay adds circuit relays, given as multiaddrs each ending in
// /p2p/<peer ID> (several addresses of one relay may be given). The node
// dials peers through them when it cannot reach them directly, and, with
// Config.AutoRelay, keeps a slot on one so that peers can reach it. A
// client calls it with its relay's mesh addresses, which the relay's
// Peers answer lists first.
func (n *Node) AddRelay(addrs []string) error {
	ais, err := parseAddrs(addrs)
	if err != nil {
		return err
	}
	ais = slices.DeleteFunc(mergeAddrInfos(ais), func(ai peer.AddrInfo) bool { return ai.ID == n.host.ID() })
	if len(ais) == 0 {
		return errors.New("mesh: add relay: only this node's own addresses")
	}
	for _, ai := range ais {
		// Kept while the node runs: a relay is configured, not met.
		n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
	}
	return n.relays.add(ais...)
}

// mergeAddrInfos merges the addresses of one peer given apart, keeping the
// peers' order.
func mergeAddrInfos(ais []peer.AddrInfo) []peer.AddrInfo {
	var out []peer.AddrInfo
	at := make(map[peer.ID]int)
	for _, ai := range ais {
		i, ok := at[ai.ID]
		if !ok {
			at[ai.ID] = len(out)
			out = append(out, peer.AddrInfo{ID: ai.ID})
			i = len(out) - 1
		}
		out[i].Addrs = append(out[i].Addrs, ai.Addrs...)
	}
	return out
}

// throughRelays adds to ai its addresses through the known relays, unless
// ai is a relay or is given through one already. Go-libp2p dials direct
// addresses first and, when the peer has a public one, relayed ones half
// a second later.
func (n *Node) throughRelays(ai peer.AddrInfo) peer.AddrInfo {
	if n.relays.has(ai.ID) || slices.ContainsFunc(ai.Addrs, isCircuit) {
		return ai
	}
	ai.Addrs = append(slices.Clone(ai.Addrs), n.relays.circuitAddrs(ai.ID)...)
	return ai
}

// isCircuit reports whether a goes through a circuit relay.
func isCircuit(a multiaddr.Multiaddr) bool {
	_, err := a.ValueForProtocol(multiaddr.P_CIRCUIT)
	return err == nil
}

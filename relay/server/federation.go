package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Federation: several relays serving one network. Each keeps its own
// store, policy and audit log; they meet in the mesh, where each relay's
// node is one more peer. What a relay's clients publish, its bridge
// gossips; what another relay's clients publish reaches it by gossip, and
// what it missed while it was down, by the mesh's catch-up sync when it
// meets the others again. A relay's policy judges what comes from the
// mesh as it judges its clients (the node's Policy): what it refuses, it
// neither stores nor forwards, and the relay that passed it on is not
// penalised for having another policy.
//
// The federation section of the config names the other relays by their
// mesh addresses. A relay keeps a connection to each, dialled again when
// it drops; lets them catch up on private rooms, as a member would (their
// nodes are no members, but keep those rooms for members); and carries,
// from the start, the rooms of its store and of the config, so that it
// catches up on them even before a client of its own asks.

// federationRedial bounds the pause between dials of a federated relay
// that cannot be reached; the first pauses are shorter.
const (
	federationRedialMin = time.Second
	federationRedialMax = 30 * time.Second
)

// maxCarriedRooms bounds the rooms of the store a relay carries from the
// start; rooms past it are carried once a client asks for them.
const maxCarriedRooms = 10_000

// federation is the other relays of the network, as the config names
// them.
type federation struct {
	peers []peer.AddrInfo
	keys  map[identity.PublicKey]bool
}

// newFederation reads the mesh addresses of the other relays; self, the
// relay's own identity, is left out of them.
func newFederation(addrs []string, self identity.PublicKey) (*federation, error) {
	f := &federation{keys: map[identity.PublicKey]bool{}}
	for _, a := range addrs {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil {
			return nil, fmt.Errorf("federation.relays %q: %w", a, err)
		}
		key, err := mesh.IdentityOf(ai.ID)
		if err != nil {
			return nil, fmt.Errorf("federation.relays %q: %w", a, err)
		}
		if key == self || f.keys[key] {
			continue
		}
		f.keys[key] = true
		f.peers = append(f.peers, *ai)
	}
	return f, nil
}

// member reports whether key is one of the other relays.
func (f *federation) member(key identity.PublicKey) bool { return f.keys[key] }

// keep keeps node connected to each of the other relays until ctx ends:
// one goroutine a relay, on wg.
func (f *federation) keep(ctx context.Context, node *mesh.Node, log *slog.Logger, wg *sync.WaitGroup) {
	for _, ai := range f.peers {
		wg.Go(func() { keepConnected(ctx, node, ai, log) })
	}
}

// gauges are parley_relay_federation_relays{state}: how many of the other
// relays node is connected to now, and how many it is not.
func (f *federation) gauges(node *mesh.Node) []prometheus.Collector {
	count := func(want bool) func() float64 {
		return func() float64 {
			n := 0
			for _, ai := range f.peers {
				if (node.Host().Network().Connectedness(ai.ID) == network.Connected) == want {
					n++
				}
			}
			return float64(n)
		}
	}
	opts := func(state string) prometheus.GaugeOpts {
		return prometheus.GaugeOpts{Name: "parley_relay_federation_relays", ConstLabels: prometheus.Labels{"state": state},
			Help: "The other relays of the federation (federation.relays), by whether the mesh node is connected to them now."}
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(opts("connected"), count(true)),
		prometheus.NewGaugeFunc(opts("unreachable"), count(false)),
	}
}

// keepConnected dials ai whenever node is not connected to it, with
// pauses (redial) between tries, until ctx ends.
func keepConnected(ctx context.Context, node *mesh.Node, ai peer.AddrInfo, log *slog.Logger) {
	h := node.Host()
	var r redial
	for {
		if h.Network().Connectedness(ai.ID) == network.Connected {
			r.up(time.Now())
		} else {
			if r.down(time.Now()) {
				log.Info("federation: the connection to a relay dropped soon after it was made; dialling it less often", "peer", ai.ID, "in", r.wait())
			}
			dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := h.Connect(dctx, ai)
			cancel()
			switch {
			case err == nil:
				if r.connected(time.Now()) {
					log.Info("federation: connected to a relay", "peer", ai.ID)
				}
			case ctx.Err() == nil:
				r.failed()
				log.Debug("federation: relay not reached; dialling again", "peer", ai.ID, "in", r.wait(), "err", err)
			}
		}
		select {
		case <-time.After(r.wait()):
		case <-ctx.Done():
			return
		}
	}
}

// redial is keepConnected's pause before it looks again: it doubles, up
// to federationRedialMax, while the relay cannot be reached or its
// connections drop soon after they are made (a relay that accepts and
// then hangs up is not dialled every second), and starts over once a
// connection has held for federationStable.
type redial struct {
	pause time.Duration
	since time.Time // when the connection in hand was made, or first seen
	flaps bool      // the connection before dropped within federationStable
}

// federationStable is how long a connection to another relay must hold
// for the pause to start over.
const federationStable = time.Minute

// wait is the pause before keepConnected looks again.
func (r *redial) wait() time.Duration { return max(r.pause, federationRedialMin) }

// up notes the relay connected at now.
func (r *redial) up(now time.Time) {
	if r.since.IsZero() {
		r.since = now // it dialled us
	}
	if now.Sub(r.since) >= federationStable {
		r.pause, r.flaps = federationRedialMin, false
	}
}

// down notes, at now, that the relay is not connected, before a dial,
// and reports whether its connections have just begun to flap.
func (r *redial) down(now time.Time) bool {
	began := false
	if !r.since.IsZero() && now.Sub(r.since) < federationStable {
		r.failed() // it dropped soon after it was made: as if it had failed
		began, r.flaps = !r.flaps, true
	}
	r.since = time.Time{}
	return began
}

// failed notes a dial that failed.
func (r *redial) failed() { r.pause = min(2*r.wait(), federationRedialMax) }

// connected notes a dial that succeeded at now, and reports whether it
// is news worth a line in the log: not while the connections flap.
func (r *redial) connected(now time.Time) bool {
	r.since = now
	return !r.flaps
}

// carry joins the bridge to the rooms the relay carries from the start:
// those of the config, then those of its store.
func carry(ctx context.Context, b *MeshBridge, st *store.Store, rooms []string, log *slog.Logger) {
	stored, err := st.StoredRooms(ctx, maxCarriedRooms)
	if err != nil {
		log.Warn("federation: the store's rooms; carried once a client asks for them", "err", err)
	}
	for _, room := range append(append([]string(nil), rooms...), stored...) {
		b.Join(room)
	}
}

// MeshAddrs are the mesh addresses of the relay with key, as cfg has its
// node listen: what the other relays of a network put in their
// federation.relays. An address on every interface (0.0.0.0, ::) is
// given as it is: the other relays need this host's own address there.
func MeshAddrs(key identity.PublicKey, cfg Config) ([]string, error) {
	id, err := mesh.PeerID(key)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(cfg.P2PListen))
	for _, a := range cfg.P2PListen {
		out = append(out, a+"/p2p/"+id.String())
	}
	return out, nil
}

package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/relay"
)

// Finding relays. Relays announce the rooms they carry on the DHT, and
// anyone can announce anything there: a relay found is only a candidate.
// A client uses a relay when it was given its key (Config.Relays), or
// when a relay it was given vouches for it (lists its key in its relay
// info: the relays of its federation, named by its operator). Any other
// relay is unknown and not used: it could be a stranger collecting who
// talks when, or taking messages and keeping them. FindRelays changes no
// config: the person adds a relay with --relay or in config.toml.

// RelayTrust is how far a relay found is trusted.
type RelayTrust int

const (
	// TrustUnknown: found, but neither given nor vouched for; not used.
	TrustUnknown RelayTrust = iota
	// TrustGiven: its key is one of Config.Relays.
	TrustGiven
	// TrustVouched: a relay of Config.Relays vouches for it.
	TrustVouched
	// TrustRefused: it gave no valid answer: unreachable, malformed, or
	// naming another key than the peer that sent it.
	TrustRefused
)

func (t RelayTrust) String() string {
	switch t {
	case TrustGiven:
		return "given"
	case TrustVouched:
		return "vouched"
	case TrustRefused:
		return "refused"
	default:
		return "unknown"
	}
}

// FoundRelay is a relay the DHT named for a room.
type FoundRelay struct {
	// Addr is the client address it gave (FINGERPRINT@HOST:PORT), its
	// fingerprint checked against its mesh identity; empty if refused.
	Addr string
	// Key is its key, as its mesh peer ID (authenticated by libp2p) says.
	Key   identity.PublicKey
	Peer  peer.ID
	Trust RelayTrust
	// VouchedBy is the address of the configured relay that vouches for
	// it (TrustVouched).
	VouchedBy string
	// Err is why it was refused (TrustRefused).
	Err error
}

// Bounds of FindRelays.
const (
	maxFoundRelays = 32
	findTimeout    = 30 * time.Second
)

// ErrNoMesh: finding relays needs the session's mesh node.
var ErrNoMesh = errors.New("client: finding relays needs the mesh (not in mode relay)")

// FindRelays asks the DHT, through the configured relays' mesh nodes,
// for the relays of room, asks each for its info and says how far each is
// trusted. It takes at most 30 seconds and finds at most 32 relays.
func (c *Client) FindRelays(ctx context.Context, room string) ([]FoundRelay, error) {
	if c.node == nil {
		return nil, ErrNoMesh
	}
	ctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	given, err := c.cfg.Relays.Addrs()
	if err != nil {
		return nil, err
	}
	seeds := c.relayMeshNodes(ctx, room)
	if len(seeds) == 0 {
		return nil, errors.New("client: finding relays: no configured relay's mesh node known (is a relay connected, with a mesh listener?)")
	}
	h := c.node.Host()
	found, err := mesh.FindProviders(ctx, h, seeds, mesh.RelayKey(room), maxFoundRelays)
	if err != nil {
		return nil, fmt.Errorf("client: finding relays of %s: %w", room, err)
	}
	return classify(ctx, h, found, given, vouchers(ctx, h, seeds, given)), nil
}

// relayMeshNodes are the mesh nodes of the connected configured relays:
// the peer ID from the key each proved, the addresses from those it
// gives for room's peers or the peerstore's.
func (c *Client) relayMeshNodes(ctx context.Context, room string) []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, p := range c.relays {
		key := p.rc.RelayKey()
		if key.IsZero() || !p.up() {
			continue
		}
		id, err := mesh.PeerID(key)
		if err != nil {
			continue
		}
		ai := peer.AddrInfo{ID: id, Addrs: c.node.Host().Peerstore().Addrs(id)}
		addrs, err := p.rc.Peers(ctx, room)
		if err != nil {
			c.log.Debug("finding relays: the relay's peers", "relay", p.addr.String(), "err", err)
		}
		for _, a := range addrs {
			if full, err := peer.AddrInfoFromString(a); err == nil && full.ID == id {
				ai.Addrs = append(ai.Addrs, full.Addrs...)
			}
		}
		if len(ai.Addrs) > 0 {
			out = append(out, ai)
		}
	}
	return out
}

// vouchers maps each key a configured relay vouches for to that relay's
// address. Each seed is a configured relay's mesh node (its peer ID is
// the key the relay proved); its info must name one of given.
func vouchers(ctx context.Context, h host.Host, seeds []peer.AddrInfo, given []relay.Addr) map[identity.PublicKey]string {
	out := map[identity.PublicKey]string{}
	for _, s := range seeds {
		key, info, err := askChecked(ctx, h, s)
		if err != nil || !isGiven(key, given) {
			continue
		}
		for _, k := range info.Vouches {
			if _, ok := out[k]; !ok {
				out[k] = info.Addr
			}
		}
	}
	return out
}

// classify asks each relay found for its info and says how far it is
// trusted.
func classify(ctx context.Context, h host.Host, found []peer.AddrInfo, given []relay.Addr, vouched map[identity.PublicKey]string) []FoundRelay {
	out := make([]FoundRelay, 0, len(found))
	for _, ai := range found {
		key, info, err := askChecked(ctx, h, ai)
		f := FoundRelay{Key: key, Peer: ai.ID, Addr: info.Addr}
		switch by, ok := vouched[key]; {
		case err != nil:
			f.Trust, f.Err, f.Addr = TrustRefused, err, ""
		case isGiven(key, given):
			f.Trust = TrustGiven
		case ok:
			f.Trust, f.VouchedBy = TrustVouched, by
		}
		out = append(out, f)
	}
	slices.SortStableFunc(out, func(a, b FoundRelay) int {
		if c := cmp.Compare(a.Trust.rank(), b.Trust.rank()); c != 0 {
			return c
		}
		return strings.Compare(a.Key.Fingerprint(), b.Key.Fingerprint())
	})
	return out
}

// rank orders relays found: given, vouched, unknown, refused.
func (t RelayTrust) rank() int {
	return [...]int{TrustGiven: 0, TrustVouched: 1, TrustUnknown: 2, TrustRefused: 3}[t]
}

// askChecked asks ai for its relay info and checks that the address it
// gives names the key of its peer ID.
func askChecked(ctx context.Context, h host.Host, ai peer.AddrInfo) (identity.PublicKey, mesh.RelayInfo, error) {
	key, err := mesh.IdentityOf(ai.ID)
	if err != nil {
		return identity.PublicKey{}, mesh.RelayInfo{}, fmt.Errorf("client: relay %s: %w", ai.ID, err)
	}
	h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
	info, err := mesh.AskRelayInfo(ctx, h, ai.ID)
	if err != nil {
		return key, mesh.RelayInfo{}, err
	}
	if err := checkInfo(key, info); err != nil {
		return key, mesh.RelayInfo{}, err
	}
	return key, info, nil
}

// ErrRelayMismatch: a relay's info names another key than the peer that
// sent it.
var ErrRelayMismatch = errors.New("client: the relay's address names another key than its mesh identity")

// checkInfo checks that info's address parses and names key.
func checkInfo(key identity.PublicKey, info mesh.RelayInfo) error {
	a, err := relay.ParseAddr(info.Addr)
	if err != nil {
		return fmt.Errorf("client: relay %s: %w", key.ShortFingerprint(), err)
	}
	if a.Fingerprint != key.Fingerprint() {
		return fmt.Errorf("%w: %s says %s", ErrRelayMismatch, key.Fingerprint(), a.Fingerprint)
	}
	return nil
}

func isGiven(key identity.PublicKey, given []relay.Addr) bool {
	for _, a := range given {
		if a.Fingerprint == key.Fingerprint() {
			return true
		}
	}
	return false
}

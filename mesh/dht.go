package mesh

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multihash"
	"github.com/parleychat/parley/identity"
)

// Finding relays on the DHT. A relay announces itself (Announce) under a
// key of the room it carries; anyone asks who announced it (Providers,
// or FindProviders from a node without a DHT of its own). Anyone can
// announce anything on a DHT: what is found is a list of candidates, and
// the relay-info protocol below only tells who a candidate says it is
// and whom it vouches for. Whom to trust is the caller's decision.

// ErrNoDHT is returned by Announce and Providers on a node started
// without Config.DHT.
var ErrNoDHT = errors.New("mesh: the node does not run the DHT (Config.DHT)")

// RelayKey is the DHT key under which the relays of room announce
// themselves.
func RelayKey(room string) string { return "parley-relay/" + room }

// dhtCID is the content ID the DHT stores key under: the SHA-256 of the
// key, as a raw multihash CID.
func dhtCID(key string) (cid.Cid, error) {
	sum := sha256.Sum256([]byte(key))
	mh, err := multihash.Encode(sum[:], multihash.SHA2_256)
	if err != nil {
		return cid.Undef, fmt.Errorf("mesh: DHT key: %w", err)
	}
	return cid.NewCidV1(cid.Raw, mh), nil
}

// Announce makes the node a provider of key on the DHT. A provider record
// expires (the DHT's own provider validity, hours): announce again
// periodically to stay listed.
func (n *Node) Announce(ctx context.Context, key string) error {
	if n.dht == nil {
		return ErrNoDHT
	}
	c, err := dhtCID(key)
	if err != nil {
		return err
	}
	if err := n.dht.Provide(ctx, c, true); err != nil {
		return fmt.Errorf("mesh: announce %q: %w", key, err)
	}
	return nil
}

// Providers asks the DHT for at most limit providers of key.
func (n *Node) Providers(ctx context.Context, key string, limit int) ([]peer.AddrInfo, error) {
	if n.dht == nil {
		return nil, ErrNoDHT
	}
	return providers(ctx, n.dht, n.host.ID(), key, limit)
}

// seedDialTimeout bounds the dial of each seed of FindProviders.
const seedDialTimeout = 10 * time.Second

// FindProviders asks for at most limit providers of key from a node that
// does not run the DHT: a DHT client, on h, for the time of the question,
// that queries the DHT servers among seeds (a relay's mesh node is one)
// and those they name. It waits, within ctx, until a seed is in its
// routing table.
func FindProviders(ctx context.Context, h host.Host, seeds []peer.AddrInfo, key string, limit int) ([]peer.AddrInfo, error) {
	if len(seeds) == 0 {
		return nil, errors.New("mesh: find providers: no DHT server to ask")
	}
	d, err := dht.New(h,
		dht.ProtocolPrefix("/parley"),
		dht.Mode(dht.ModeClient),
		dht.BootstrapPeers(seeds...),
	)
	if err != nil {
		return nil, fmt.Errorf("mesh: DHT client: %w", err)
	}
	defer d.Close()
	for _, s := range seeds {
		// An error is the seed's: the others may answer.
		cctx, cancel := context.WithTimeout(ctx, seedDialTimeout)
		_ = h.Connect(cctx, s)
		cancel()
	}
	if err := awaitRoutingTable(ctx, d); err != nil {
		return nil, err
	}
	return providers(ctx, d, h.ID(), key, limit)
}

// awaitRoutingTable waits until d knows a DHT server, or ctx ends.
func awaitRoutingTable(ctx context.Context, d *dht.IpfsDHT) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for d.RoutingTable().Size() == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("mesh: find providers: no DHT server reached: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// providers collects at most limit providers of key from d, leaving self
// out.
func providers(ctx context.Context, d *dht.IpfsDHT, self peer.ID, key string, limit int) ([]peer.AddrInfo, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("mesh: find providers: limit %d", limit)
	}
	c, err := dhtCID(key)
	if err != nil {
		return nil, err
	}
	var out []peer.AddrInfo
	for ai := range d.FindProvidersAsync(ctx, c, limit) {
		if ai.ID != self {
			out = append(out, ai)
		}
	}
	if len(out) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("mesh: find providers of %q: %w", key, ctx.Err())
	}
	return out, nil
}

// RelayInfoProtocol is the stream protocol on which a relay's mesh node
// says who it is for clients and whom it vouches for: the node writes one
// RelayInfo (EncodeRelayInfo) and closes the stream.
const RelayInfoProtocol = protocol.ID("/parley/relay-info/1.0.0")

// Bounds of a relay info.
const (
	relayInfoVersion   = 1
	MaxRelayInfoAddr   = 255
	MaxRelayInfoVouch  = 64
	MaxRelayInfoSize   = 3 + MaxRelayInfoAddr + MaxRelayInfoVouch*32
	relayInfoTimeout   = 10 * time.Second
	relayInfoKeyLength = 32
)

// RelayInfo is what a relay says of itself: its client address
// (FINGERPRINT@HOST:PORT, as relay addr prints it) and the keys of the
// relays it vouches for (its federation).
type RelayInfo struct {
	Addr    string
	Vouches []identity.PublicKey
}

// ErrRelayInfo is wrapped by every error of a malformed relay info.
var ErrRelayInfo = errors.New("mesh: malformed relay info")

// EncodeRelayInfo encodes info: a version byte (1); the address's length
// (1 byte) and the address; the number of vouched keys (1 byte) and each
// key (32 bytes).
func EncodeRelayInfo(info RelayInfo) ([]byte, error) {
	if len(info.Addr) == 0 || len(info.Addr) > MaxRelayInfoAddr {
		return nil, fmt.Errorf("%w: address of %d bytes (1 to %d)", ErrRelayInfo, len(info.Addr), MaxRelayInfoAddr)
	}
	if len(info.Vouches) > MaxRelayInfoVouch {
		return nil, fmt.Errorf("%w: %d vouched relays (at most %d)", ErrRelayInfo, len(info.Vouches), MaxRelayInfoVouch)
	}
	b := make([]byte, 0, 3+len(info.Addr)+relayInfoKeyLength*len(info.Vouches))
	b = append(b, relayInfoVersion, byte(len(info.Addr)))
	b = append(b, info.Addr...)
	b = append(b, byte(len(info.Vouches)))
	for _, k := range info.Vouches {
		b = append(b, k.Bytes()...)
	}
	return b, nil
}

// ParseRelayInfo parses what EncodeRelayInfo gives, strictly: another
// version, a length past the bounds or the bytes, an address that is not
// printable UTF-8, a key that is not a valid Ed25519 key, a key twice, or
// a byte after the last key is refused. That the address names the key
// of the peer that sent it is the caller's check.
func ParseRelayInfo(b []byte) (RelayInfo, error) {
	if len(b) > MaxRelayInfoSize {
		return RelayInfo{}, fmt.Errorf("%w: %d bytes (at most %d)", ErrRelayInfo, len(b), MaxRelayInfoSize)
	}
	if len(b) < 3 || b[0] != relayInfoVersion {
		return RelayInfo{}, fmt.Errorf("%w: want version %d and an address", ErrRelayInfo, relayInfoVersion)
	}
	n := int(b[1])
	if n == 0 || len(b) < 3+n {
		return RelayInfo{}, fmt.Errorf("%w: address of %d bytes in %d", ErrRelayInfo, n, len(b))
	}
	addr := string(b[2 : 2+n])
	if !printable(addr) {
		return RelayInfo{}, fmt.Errorf("%w: the address is not printable text", ErrRelayInfo)
	}
	count, rest := int(b[2+n]), b[3+n:]
	if count > MaxRelayInfoVouch || len(rest) != count*relayInfoKeyLength {
		return RelayInfo{}, fmt.Errorf("%w: %d vouched keys in %d bytes", ErrRelayInfo, count, len(rest))
	}
	info := RelayInfo{Addr: addr}
	seen := map[identity.PublicKey]bool{}
	for i := range count {
		k, err := identity.PublicKeyFromBytes(rest[i*relayInfoKeyLength : (i+1)*relayInfoKeyLength])
		if err != nil {
			return RelayInfo{}, fmt.Errorf("%w: vouched key %d: %w", ErrRelayInfo, i, err)
		}
		if seen[k] {
			return RelayInfo{}, fmt.Errorf("%w: vouched key %d given twice", ErrRelayInfo, i)
		}
		seen[k] = true
		info.Vouches = append(info.Vouches, k)
	}
	return info, nil
}

// printable reports whether s is valid UTF-8 with no control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// ServeRelayInfo answers RelayInfoProtocol on h with info(), until
// the returned function removes the handler.
func ServeRelayInfo(h host.Host, info func() RelayInfo) (stop func(), err error) {
	if _, err := EncodeRelayInfo(info()); err != nil {
		return nil, err
	}
	h.SetStreamHandler(RelayInfoProtocol, func(s network.Stream) {
		defer s.Close()
		b, err := EncodeRelayInfo(info())
		if err != nil {
			s.Reset()
			return
		}
		_ = s.SetWriteDeadline(time.Now().Add(relayInfoTimeout))
		if _, err := s.Write(b); err != nil {
			s.Reset()
		}
	})
	return func() { h.RemoveStreamHandler(RelayInfoProtocol) }, nil
}

// AskRelayInfo asks peer p, on h, for its relay info: at most
// MaxRelayInfoSize bytes, within ctx and at most 10 seconds. The peer's
// identity is libp2p's authenticated peer ID: the caller checks the
// answer against it.
func AskRelayInfo(ctx context.Context, h host.Host, p peer.ID) (RelayInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, relayInfoTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, p, RelayInfoProtocol)
	if err != nil {
		return RelayInfo{}, fmt.Errorf("mesh: relay info of %s: %w", p, err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetReadDeadline(dl)
	}
	_ = s.CloseWrite()
	b, err := io.ReadAll(io.LimitReader(s, MaxRelayInfoSize+1))
	if err != nil {
		return RelayInfo{}, fmt.Errorf("mesh: relay info of %s: %w", p, err)
	}
	info, err := ParseRelayInfo(b)
	if err != nil {
		return RelayInfo{}, fmt.Errorf("relay info of %s: %w", p, err)
	}
	return info, nil
}

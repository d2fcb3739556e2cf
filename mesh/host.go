package mesh

import (
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p"
	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/parleychat/parley/identity"
)

// defaultListen: QUIC first (one UDP socket, no head-of-line blocking),
// TCP for networks that block UDP.
var defaultListen = []string{
	"/ip4/0.0.0.0/udp/0/quic-v1",
	"/ip6/::/udp/0/quic-v1",
	"/ip4/0.0.0.0/tcp/0",
	"/ip6/::/tcp/0",
}

// libp2pKey converts an identity key to libp2p's form.
func libp2pKey(k identity.PrivateKey) (lcrypto.PrivKey, error) {
	lk, err := lcrypto.UnmarshalEd25519PrivateKey(k.Ed25519())
	if err != nil {
		return nil, fmt.Errorf("mesh: identity key: %w", err)
	}
	return lk, nil
}

// PeerID returns the libp2p peer ID of an identity.
func PeerID(pk identity.PublicKey) (peer.ID, error) {
	lpk, err := lcrypto.UnmarshalEd25519PublicKey(pk.Bytes())
	if err != nil {
		return "", fmt.Errorf("mesh: public key: %w", err)
	}
	return peer.IDFromPublicKey(lpk)
}

// hostFor returns the host cfg gives, checked against its key, or a new
// one.
func hostFor(cfg *Config, punches *punches, relays *relaySet) (host.Host, error) {
	if cfg.Host == nil {
		return newHost(cfg, punches, relays)
	}
	want, err := PeerID(cfg.Key.Public())
	if err != nil {
		return nil, err
	}
	if cfg.Host.ID() != want {
		return nil, fmt.Errorf("mesh: the host is %s, the key's peer is %s", cfg.Host.ID(), want)
	}
	return cfg.Host, nil
}

// newHost makes the libp2p host: the identity key as host key, QUIC and
// TCP, resource and connection limits set here rather than left to
// defaults, hole punching (traced by punches) and the circuit relay v2
// client on; AutoRelay, drawing on relays, and the AutoNAT service as cfg
// says.
func newHost(cfg *Config, punches *punches, relays *relaySet) (host.Host, error) {
	key, err := libp2pKey(cfg.Key)
	if err != nil {
		return nil, err
	}
	listen := cfg.ListenAddrs
	if len(listen) == 0 {
		listen = defaultListen
	}

	// Start from go-libp2p's scaled defaults, then bound what a chat node
	// needs: a few hundred connections, a few thousand streams, 512 MiB.
	// A circuit relay holds a connection to each peer with a slot on
	// it, on top.
	slots := rcmgr.LimitVal(cfg.Circuit.slots())
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	limits := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns:           512 + slots,
			ConnsInbound:    256 + slots,
			ConnsOutbound:   256,
			Streams:         8192,
			StreamsInbound:  4096,
			StreamsOutbound: 4096,
			Memory:          512 << 20,
			FD:              1024 + slots,
		},
		ProtocolDefault: rcmgr.ResourceLimits{Streams: 2048, StreamsInbound: 1024, StreamsOutbound: 1024},
		PeerDefault:     rcmgr.ResourceLimits{Conns: 8, Streams: 512, StreamsInbound: 256, StreamsOutbound: 256},
	}.Build(scaling.AutoScale())
	var rmOpts []rcmgr.Option
	if cfg.Registerer != nil {
		rcmgr.MustRegisterWith(cfg.Registerer)
		str, err := rcmgr.NewStatsTraceReporter()
		if err != nil {
			return nil, fmt.Errorf("mesh: resource manager metrics: %w", err)
		}
		rmOpts = append(rmOpts, rcmgr.WithTraceReporter(str))
	} else {
		rmOpts = append(rmOpts, rcmgr.WithMetricsDisabled())
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), rmOpts...)
	if err != nil {
		return nil, fmt.Errorf("mesh: resource manager: %w", err)
	}
	low, high := cfg.ConnLow, cfg.ConnHigh
	if low == 0 {
		low = defaultConnLow + int(slots)
	}
	if high == 0 {
		high = defaultConnHigh + int(slots)
	}
	cm, err := connmgr.NewConnManager(low, high)
	if err != nil {
		return nil, fmt.Errorf("mesh: connection manager: %w", err)
	}

	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(listen...),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.EnableRelay(),
		libp2p.EnableHolePunching(holePunchTracer(cfg, punches)),
		libp2p.UserAgent("parley/1"),
	}
	opts = append(opts, natOptions(cfg, relays)...)
	if cfg.Registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("mesh: libp2p host: %w", err)
	}
	return h, nil
}

// holePunchTracer has the hole punching service report to punches, and to
// its Prometheus metrics when the node has a registry.
func holePunchTracer(cfg *Config, punches *punches) holepunch.Option {
	if cfg.Registerer == nil {
		return holepunch.WithTracer(punches)
	}
	mt := holepunch.NewMetricsTracer(holepunch.WithRegisterer(cfg.Registerer))
	return holepunch.WithMetricsAndEventTracer(mt, punches)
}

// hasPublicAddr reports whether the node will listen on a public address:
// one of listen, or, for an unspecified one (0.0.0.0, ::) or none given,
// one of the machine's interfaces.
func hasPublicAddr(listen []string) bool {
	wild := len(listen) == 0
	for _, l := range listen {
		a, err := multiaddr.NewMultiaddr(l)
		if err != nil {
			continue
		}
		if manet.IsIPUnspecified(a) {
			wild = true
		} else if manet.IsPublicAddr(a) {
			return true
		}
	}
	if !wild {
		return false
	}
	ifaces, err := manet.InterfaceMultiaddrs()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(ifaces, manet.IsPublicAddr)
}

// natOptions are the host options for reaching and being reached across
// NATs: AutoRelay with the node's relays as candidates, and the AutoNAT
// service.
func natOptions(cfg *Config, relays *relaySet) []libp2p.Option {
	var opts []libp2p.Option
	if cfg.AutoRelay {
		opts = append(opts,
			libp2p.EnableAutoRelayWithPeerSource(relays.source,
				// One relay is enough to start with: AutoRelay's default
				// waits minutes for four candidates.
				autorelay.WithMinCandidates(1),
				// A refused reservation is asked again after a minute,
				// not AutoRelay's default hour.
				autorelay.WithBackoff(time.Minute),
			),
		)
		// AutoRelay runs only while AutoNAT thinks the node unreachable,
		// which takes AutoNAT minutes and several peers to decide; see
		// Config.AutoRelay. A node with a public address of its own is
		// left to AutoNAT: forced private, go-libp2p would advertise
		// only its circuit addresses while it holds a slot, and every
		// peer would reach it through the relay first.
		if !hasPublicAddr(cfg.ListenAddrs) {
			opts = append(opts, libp2p.ForceReachabilityPrivate())
		}
	}
	if cfg.NATService {
		opts = append(opts, libp2p.EnableNATService())
	}
	return opts
}

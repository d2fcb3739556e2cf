package mesh

import (
	"log/slog"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/roster"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Node. Key and Store are required; every other field
// has a default, given with it.
type Config struct {
	// Key is the person's identity; the libp2p host key is the same key.
	Key identity.PrivateKey
	// Store keeps accepted envelopes, sequence reservations and, through
	// them, the replay state.
	Store *store.Store

	// ListenAddrs are multiaddrs to listen on. If empty, QUIC and TCP on
	// every interface, on ports the system picks.
	ListenAddrs []string
	// Bootstrap are multiaddrs, each ending in /p2p/<peer ID>, to dial at
	// start and to seed the DHT with.
	Bootstrap []string
	// MDNS turns on discovery on the local network.
	MDNS bool
	// DHT turns on the Kademlia DHT (on the /parley prefix, never mixed
	// with the public IPFS DHT) as a rendezvous for the peers of a room.
	DHT bool

	// Rosters holds the member lists of private rooms, shared with the
	// client core so that both judge with one list. If nil, the node
	// keeps its own. A private room's list is loaded from Store when the
	// room is joined, unless Rosters has it already.
	Rosters *roster.Book
	// MaySync, if not nil, says who besides a private room's members may
	// catch up its history from this node: the client allows the relays
	// it uses, whose mesh nodes are no members but keep the room for
	// those who are (and would otherwise miss what was said peer to peer
	// while they were down).
	MaySync func(identity.PublicKey) bool

	// Policy, if not nil, is asked about every envelope that passed the
	// signature check, live or by sync; an error refuses it: the node
	// neither keeps nor forwards it, nor serves it by sync. A refusal is
	// no fault of the peer that passed it on, which is not penalised: a
	// relay's node sets it to the relay's policy, and the relays of one
	// network may have different policies.
	Policy func(*protocol.Envelope) error

	// Skew is the largest accepted clock difference for live envelopes.
	// If zero, protocol.DefaultSkew.
	Skew time.Duration
	// Retention is how long envelopes are kept for history and sync.
	// If zero, 30 days.
	Retention time.Duration
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time

	// AntiEntropy is how often a room syncs the recent past with one random
	// peer of the room, to pick up what gossip missed and no later message
	// revealed as a gap. If zero, one minute; if negative, never.
	AntiEntropy time.Duration

	// SenderRate and SenderBurst limit the live envelopes each sender
	// identity may have accepted: a token bucket per identity, filled at
	// SenderRate per second up to SenderBurst, whichever peers forward
	// them. An envelope over the rate is ignored (not shown, not
	// forwarded, no peer penalised) and not remembered, so catch-up sync
	// can still bring it; the node's own publishes and sync are not
	// counted. If zero (or negative), 200 and 1000, the relay's
	// publish_rate and burst.
	SenderRate  float64
	SenderBurst int

	// ConnLow and ConnHigh are the connection manager's watermarks: above
	// high it closes connections down to low. If zero, 64 and 128.
	ConnLow, ConnHigh int
	// QueueSize is the length of the validation queue, of each peer's
	// outbound queue and of each room's subscription buffer. Gossipsub's
	// default of 32 drops messages silently under load. If zero, 8192.
	QueueSize int

	// Circuit, if not nil, makes the node a circuit relay (v2): peers
	// behind NATs reserve a slot on it, and others reach them through it
	// until hole punching connects them directly. The relay's mesh node
	// sets it; people's nodes do not.
	Circuit *CircuitConfig
	// NATService answers AutoNAT dial-back requests, by which a peer that
	// leaves AutoNAT to decide learns whether it is reachable from outside.
	NATService bool
	// AutoRelay makes the node reachable behind a NAT: it keeps a slot on
	// one of its relays (Relays, and those AddRelay adds) and advertises
	// addresses through it, and hole punching turns the relayed
	// connections peers make into direct ones. The node then takes itself
	// to be unreachable from outside from the start, as most people's
	// machines are, rather than waiting for AutoNAT's verdict, which takes
	// a minute and more and needs peers that run the AutoNAT service.
	AutoRelay bool
	// Relays are circuit relays, multiaddrs ending in /p2p/<peer ID>, known
	// at start; AddRelay adds more. Connect and AddPeers dial through them
	// too when a peer has no direct address that works.
	Relays []string
	// OnHolePunch, if not nil, is called after each hole punching attempt
	// with peer p: err is nil when it made a direct connection. It runs on
	// libp2p's goroutine and must not block.
	OnHolePunch func(p peer.ID, err error)
	// Host, if not nil, is the libp2p host to run on instead of one the
	// node makes: a simulation's in-process host (go-libp2p's mocknet).
	// Its identity must be Key's; ListenAddrs, Circuit, NATService,
	// AutoRelay and hole punching are then the host's business. The node
	// closes it.
	Host host.Host

	// Registerer receives the node's Prometheus metrics and libp2p's. If
	// nil, no metrics are registered (never on the global registry).
	Registerer prometheus.Registerer
	// Logger receives the node's logs. If nil, they are discarded.
	Logger *slog.Logger

	// tracer, if not nil, is told of the node's gossipsub events beside
	// its own tracer: the benchmark counts the traffic of both
	// implementations with it.
	tracer pubsub.RawTracer
}

const (
	defaultRetention = 30 * 24 * time.Hour
	defaultQueue     = 8192
	defaultConnLow   = 64
	defaultConnHigh  = 128

	defaultSenderRate  = 200
	defaultSenderBurst = 1000
)

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Config) skew() time.Duration {
	if c.Skew > 0 {
		return c.Skew
	}
	return protocol.DefaultSkew
}

func (c *Config) retention() time.Duration {
	if c.Retention > 0 {
		return c.Retention
	}
	return defaultRetention
}

func (c *Config) antiEntropy() time.Duration {
	if c.AntiEntropy == 0 {
		return time.Minute
	}
	return c.AntiEntropy
}

// rosters is Rosters, or a book of the node's own.
func (c *Config) rosters() *roster.Book {
	if c.Rosters != nil {
		return c.Rosters
	}
	return roster.NewBook()
}

func (c *Config) senderRate() float64 {
	if c.SenderRate > 0 { // NaN too is not > 0
		return c.SenderRate
	}
	return defaultSenderRate
}

func (c *Config) senderBurst() int {
	if c.SenderBurst > 0 {
		return c.SenderBurst
	}
	return defaultSenderBurst
}

func (c *Config) queueSize() int {
	if c.QueueSize > 0 {
		return c.QueueSize
	}
	return defaultQueue
}

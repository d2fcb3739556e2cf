package mesh

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/multiformats/go-multiaddr"
	"github.com/parleychat/parley/identity"
)

// CircuitConfig are the limits of a node's circuit relay service. A zero
// field takes the default given with it.
//
// A relayed connection carries libp2p's own encryption end to end: the
// relay passes bytes it cannot read, and learns only which two peers talk,
// when, and how much.
type CircuitConfig struct {
	// MaxReservations is how many peers may hold a slot at once. 1024.
	MaxReservations int
	// MaxCircuits is how many relayed connections one peer may have open
	// at once, as either end. 16.
	MaxCircuits int
	// ReservationTTL is how long a slot lasts; peers renew theirs a few
	// minutes before it ends. One hour.
	ReservationTTL time.Duration
	// Duration and Data bound each relayed connection: the relay resets it
	// after Duration, or once Data bytes have passed in either direction.
	// Ten minutes and 1 MiB: hole punching replaces a relayed connection
	// within seconds when it can, and a conversation that stays relayed
	// (both ends behind symmetric NATs) keeps its other paths.
	Duration time.Duration
	Data     int64

	// Allow, if not nil, says who may hold a slot and who may open or
	// receive a relayed connection: both ends of one are asked.
	Allow func(identity.PublicKey) bool
}

// Defaults of CircuitConfig.
const (
	DefaultCircuitReservations = 1024
	DefaultCircuitsPerPeer     = 16
	DefaultCircuitTTL          = time.Hour
	DefaultCircuitDuration     = 10 * time.Minute
	DefaultCircuitData         = 1 << 20
)

// Bounds that Check holds a CircuitConfig to.
const (
	// MinCircuitTTL: AutoRelay renews a slot once less than two minutes
	// of it are left, looking every minute, so a shorter slot can lapse.
	MinCircuitTTL = 2 * time.Minute
	// MinCircuitDuration is long enough for hole punching: three attempts
	// of at most ten seconds.
	MinCircuitDuration = 30 * time.Second
	// MinCircuitData lets the largest envelope through.
	MinCircuitData = 64 << 10
)

// Check reports the first field out of bounds. Zero fields are defaults
// and pass.
func (c *CircuitConfig) Check() error {
	switch {
	case c.MaxReservations < 0 || c.MaxCircuits < 0 || c.ReservationTTL < 0 || c.Duration < 0 || c.Data < 0:
		return errors.New("mesh: circuit limits must not be negative")
	case c.ReservationTTL != 0 && c.ReservationTTL < MinCircuitTTL:
		return fmt.Errorf("mesh: circuit reservation TTL %s: want at least %s", c.ReservationTTL, MinCircuitTTL)
	case c.Duration != 0 && c.Duration < MinCircuitDuration:
		return fmt.Errorf("mesh: circuit duration %s: want at least %s", c.Duration, MinCircuitDuration)
	case c.Data != 0 && c.Data < MinCircuitData:
		return fmt.Errorf("mesh: circuit data limit %d bytes: want at least %d", c.Data, MinCircuitData)
	}
	return nil
}

// slots is how many peers may hold a slot on the node at once: 0 if it
// is no circuit relay.
func (c *CircuitConfig) slots() int {
	if c == nil {
		return 0
	}
	return cmp.Or(c.MaxReservations, DefaultCircuitReservations)
}

// Slots per IP address and per AS (IPv6). go-libp2p's defaults, 8 and 32,
// would leave the ninth person behind one office or carrier NAT without a
// slot; a community's relay serves many behind one.
const (
	circuitSlotsPerIP  = 64
	circuitSlotsPerASN = 256
)

// resources are the relay service's limits: go-libp2p's defaults, with
// those of c over them.
func (c *CircuitConfig) resources() relayv2.Resources {
	rc := relayv2.DefaultResources()
	rc.MaxReservations = c.slots()
	rc.MaxReservationsPerIP = min(circuitSlotsPerIP, rc.MaxReservations)
	rc.MaxReservationsPerASN = min(circuitSlotsPerASN, rc.MaxReservations)
	rc.MaxCircuits = cmp.Or(c.MaxCircuits, DefaultCircuitsPerPeer)
	rc.ReservationTTL = cmp.Or(c.ReservationTTL, DefaultCircuitTTL)
	rc.Limit = &relayv2.RelayLimit{
		Duration: cmp.Or(c.Duration, DefaultCircuitDuration),
		Data:     cmp.Or(c.Data, DefaultCircuitData),
	}
	return rc
}

// startCircuit starts the circuit relay service on h. It runs whatever
// AutoNAT thinks of the host's reachability (libp2p's EnableRelayService
// waits for "public", which a lone relay never hears): the operator who
// configured it knows the host is reachable. Close stops it.
func startCircuit(h host.Host, c *CircuitConfig, mt relayv2.MetricsTracer) (*relayv2.Relay, error) {
	opts := []relayv2.Option{relayv2.WithResources(c.resources())}
	if c.Allow != nil {
		opts = append(opts, relayv2.WithACL(circuitACL{c.Allow}))
	}
	if mt != nil {
		opts = append(opts, relayv2.WithMetricsTracer(mt))
	}
	r, err := relayv2.New(h, opts...)
	if err != nil {
		return nil, fmt.Errorf("mesh: circuit relay service: %w", err)
	}
	return r, nil
}

// circuitACL admits the peers whose identity Allow admits.
type circuitACL struct{ allow func(identity.PublicKey) bool }

func (a circuitACL) admits(p peer.ID) bool {
	key, err := identityOf(p)
	return err == nil && a.allow(key)
}

func (a circuitACL) AllowReserve(p peer.ID, _ multiaddr.Multiaddr) bool { return a.admits(p) }

func (a circuitACL) AllowConnect(src peer.ID, _ multiaddr.Multiaddr, dest peer.ID) bool {
	return a.admits(src) && a.admits(dest)
}

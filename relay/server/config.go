package server

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/strictoml"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
)

// Config is a relay's configuration: the file config.toml in its data
// folder, overridden by flags. Every field has a default, so an empty
// file is a working relay.
type Config struct {
	// Listen is the QUIC (UDP) address clients connect to.
	Listen string `toml:"listen"`
	// ListenTCP is the TCP address of the relay over TLS, for clients
	// whose network blocks UDP. Empty: Listen's address and port, so
	// that a relay address stays one address (on port 0, a number free
	// on both); "off": none.
	ListenTCP string `toml:"listen_tcp"`
	// Advertise is the HOST:PORT put in the address that `relay addr`
	// prints, when Listen's host is not one clients can reach.
	Advertise string `toml:"advertise"`
	// P2PListen are the mesh node's libp2p multiaddrs.
	P2PListen []string `toml:"p2p_listen"`
	// Bootstrap are mesh peers to dial at start (multiaddrs with /p2p/).
	Bootstrap []string `toml:"bootstrap"`
	// MDNS finds mesh peers on the local network. Off by default: a
	// relay is a public server, and has no business announcing itself
	// on the network it runs in; turn it on for a relay on a LAN.
	MDNS bool `toml:"mdns"`
	// Admin is the HTTP address of /metrics, /healthz and /debug/pprof/;
	// empty turns it off.
	Admin string `toml:"admin"`

	Policy     PolicyConfig     `toml:"policy"`
	Limits     Limits           `toml:"limits"`
	Retention  RetentionConfig  `toml:"retention"`
	Audit      AuditConfig      `toml:"audit"`
	Store      StoreConfig      `toml:"store"`
	Circuit    CircuitConfig    `toml:"circuit"`
	Federation FederationConfig `toml:"federation"`
}

// FederationConfig makes the relay one of several serving one network
// (federation.go). Read at start.
type FederationConfig struct {
	// Relays are the other relays' mesh addresses, multiaddrs ending in
	// /p2p/<peer ID>, as `relay addr --mesh` prints them.
	Relays []string `toml:"relays"`
	// Rooms are carried from the start, before any client asks for
	// them; the rooms of the store are too.
	Rooms []string `toml:"rooms"`
}

// CircuitConfig is the mesh node's circuit relay (v2) service, through
// which people behind NATs reach each other until hole punching connects
// them directly. Its settings take effect when the relay starts.
type CircuitConfig struct {
	// Enabled runs the service, and the AutoNAT service with it. On by
	// default; only identities the relay admits may use it.
	Enabled         bool     `toml:"enabled"`
	MaxReservations int      `toml:"max_reservations"` // peers holding a slot at once
	MaxCircuits     int      `toml:"max_circuits"`     // relayed connections open at once, per peer
	ReservationTTL  Duration `toml:"reservation_ttl"`  // a slot's life; peers renew theirs before its end
	Duration        Duration `toml:"duration"`         // each relayed connection, at most
	DataBytes       int64    `toml:"data_bytes"`       // each relayed connection, each direction, at most
}

// meshConfig is c for the mesh node, admitting whom allow admits; nil
// when the service is off.
func (c CircuitConfig) meshConfig(allow func(identity.PublicKey) bool) *mesh.CircuitConfig {
	if !c.Enabled {
		return nil
	}
	return &mesh.CircuitConfig{
		MaxReservations: c.MaxReservations,
		MaxCircuits:     c.MaxCircuits,
		ReservationTTL:  c.ReservationTTL.Duration,
		Duration:        c.Duration.Duration,
		Data:            c.DataBytes,
		Allow:           allow,
	}
}

// AuditConfig turns the tamper-evident audit log on or off.
type AuditConfig struct {
	// Enabled records every decision in the audit log and gives every
	// acknowledged publish its receipt. On by default; off only to
	// measure what it costs.
	Enabled bool `toml:"enabled"`
}

// StoreConfig tunes how the relay's SQLite database is opened. Read at
// start.
type StoreConfig struct {
	// CacheSize is the writer connection's page cache, in bytes; 0 is
	// SQLite's 2 MB. The message-ID index takes a random page per
	// insert: a cache that holds it saves a read per publish in a large
	// store.
	CacheSize int64 `toml:"cache_size"`
	// MmapSize is how much of the database file the connections read
	// through a memory map instead of read calls, in bytes; 0: none.
	MmapSize int64 `toml:"mmap_size"`
	// CheckpointPages is how many 4-KiB pages the write-ahead log
	// holds before SQLite copies it into the database (a checkpoint,
	// run by the commit that crosses it).
	CheckpointPages int `toml:"checkpoint_pages"`
}

// Bounds of the store settings: the cache at least SQLite's default and
// at most 64 GiB; the map at most SQLite's own limit (larger is
// silently capped); the log from 1,000 pages (SQLite's default, 4 MiB)
// to 1,000,000 (4 GiB).
const (
	minStoreCache      = 2 << 20
	maxStoreCache      = 64 << 30
	maxStoreMmap       = 0x7fff0000
	minCheckpointPages = 1000
	maxCheckpointPages = 1_000_000
)

// validate appends what is wrong with c to bad.
func (c StoreConfig) validate(bad func(string, ...any)) {
	if c.CacheSize != 0 && (c.CacheSize < minStoreCache || c.CacheSize > maxStoreCache) {
		bad("store.cache_size %d: want 0 (SQLite's default) or %d to %d bytes", c.CacheSize, minStoreCache, int64(maxStoreCache))
	}
	if c.MmapSize < 0 || c.MmapSize > maxStoreMmap {
		bad("store.mmap_size %d: want 0 (none) to %d bytes", c.MmapSize, maxStoreMmap)
	}
	if c.CheckpointPages < minCheckpointPages || c.CheckpointPages > maxCheckpointPages {
		bad("store.checkpoint_pages %d: want %d to %d", c.CheckpointPages, minCheckpointPages, maxCheckpointPages)
	}
}

// PolicyConfig is the part of the policy that the config file holds; the
// allow and ban lists and invites are in the store, changed by commands.
type PolicyConfig struct {
	// Mode is open, allowlist or invite.
	Mode string `toml:"mode"`
	// Admins are fingerprints (SHA256:...) of identities that may always
	// connect, read and post, and are never rate-limited or banned.
	Admins []string `toml:"admins"`
	// Rooms restrict who may read and who may post, per room. An empty
	// list, or a room not named here, allows everyone the relay admits.
	Rooms map[string]RoomRule `toml:"rooms"`
}

// RoomRule lists the fingerprints that may read or post in one room.
type RoomRule struct {
	Read []string `toml:"read"`
	Post []string `toml:"post"`
}

// Limits protect the relay and the clients it serves from each other.
type Limits struct {
	MaxEnvelope      int      `toml:"max_envelope"`       // bytes
	PublishRate      float64  `toml:"publish_rate"`       // envelopes per second per identity
	PublishBurst     int      `toml:"publish_burst"`      //
	AddrRate         float64  `toml:"addr_rate"`          // new connections per second per IP address
	AddrBurst        int      `toml:"addr_burst"`         //
	MaxConnections   int      `toml:"max_connections"`    // at once, in all
	ConnsPerIdentity int      `toml:"conns_per_identity"` // at once, per client identity
	ConnsPerAddr     int      `toml:"conns_per_address"`  // at once, per IP address
	MaxStreams       int      `toml:"max_streams"`        // concurrent streams per connection
	HandshakeTimeout Duration `toml:"handshake_timeout"`  //
	IdleTimeout      Duration `toml:"idle_timeout"`       //
	WriteTimeout     Duration `toml:"write_timeout"`      // a client that reads nothing for this long is dropped
	QueueSize        int      `toml:"queue_size"`         // envelopes queued per subscription
	RetryAbove       int      `toml:"retry_above"`        // new QUIC connections per second above which Retry checks addresses (0: always)
	Skew             Duration `toml:"skew"`               // accepted difference of an envelope's clock from the relay's
}

// RetentionConfig says how much history the relay keeps.
type RetentionConfig struct {
	MaxAge   Duration `toml:"max_age"`   // 0: no age limit
	MaxBytes int64    `toml:"max_bytes"` // envelope bytes; 0: no size limit
}

// Duration is a time.Duration written as in Go ("90s", "1h30m").
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// DefaultConfig is the configuration of an empty config file.
func DefaultConfig() Config {
	return Config{
		Listen:    "0.0.0.0:4433",
		P2PListen: []string{"/ip4/0.0.0.0/udp/4434/quic-v1", "/ip4/0.0.0.0/tcp/4434"},
		MDNS:      false,
		Admin:     "127.0.0.1:4435",
		Policy:    PolicyConfig{Mode: "open"},
		Limits: Limits{
			MaxEnvelope:      protocol.MaxEnvelopeSize,
			PublishRate:      200,
			PublishBurst:     1000,
			AddrRate:         20,
			AddrBurst:        100,
			MaxConnections:   10000,
			ConnsPerIdentity: 8,
			ConnsPerAddr:     64,
			MaxStreams:       100,
			HandshakeTimeout: Duration{10 * time.Second},
			IdleTimeout:      Duration{60 * time.Second},
			WriteTimeout:     Duration{10 * time.Second},
			QueueSize:        64,
			RetryAbove:       256,
			Skew:             Duration{protocol.DefaultSkew},
		},
		Retention: RetentionConfig{MaxAge: Duration{30 * 24 * time.Hour}},
		Audit:     AuditConfig{Enabled: true},
		// A 40-MiB write-ahead log: at a steady stream of publishes a
		// page changed by many commits is copied into the database once.
		Store: StoreConfig{CheckpointPages: 10000},
		// A relayed conversation lasts until hole punching, seconds
		// away, moves it to a direct connection; behind symmetric NATs,
		// where it cannot, ten minutes and 1 MiB each way carry a long
		// chat, and the relay's own path carries the rest.
		Circuit: CircuitConfig{
			Enabled:         true,
			MaxReservations: mesh.DefaultCircuitReservations,
			MaxCircuits:     mesh.DefaultCircuitsPerPeer,
			ReservationTTL:  Duration{mesh.DefaultCircuitTTL},
			Duration:        Duration{mesh.DefaultCircuitDuration},
			DataBytes:       mesh.DefaultCircuitData,
		},
	}
}

// ListenTCP off: the relay listens on QUIC only.
const ListenTCPOff = "off"

// ErrConfig: the configuration does not load or is not valid.
var ErrConfig = errors.New("relay: config")

// LoadConfig reads the config file at path over the defaults. A key the
// relay does not know is an error, so a typo never passes silently.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := strictoml.Decode(data, &c); err != nil {
		return c, fmt.Errorf("%w %s: %w", ErrConfig, path, err)
	}
	return c, c.Validate()
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen %q: %v", c.Listen, err)
	}
	if c.ListenTCP != "" && c.ListenTCP != ListenTCPOff {
		if _, _, err := net.SplitHostPort(c.ListenTCP); err != nil {
			bad("listen_tcp %q: %v (or \"off\")", c.ListenTCP, err)
		}
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			bad("advertise %q: %v", c.Advertise, err)
		}
	}
	if c.Admin != "" {
		if _, _, err := net.SplitHostPort(c.Admin); err != nil {
			bad("admin %q: %v", c.Admin, err)
		}
	}
	if _, err := wire.ParsePolicyMode(c.Policy.Mode); err != nil {
		bad("policy.mode: %v", err)
	}
	checkFP := func(where, fp string) {
		if _, err := relay.ParseAddr(fp + "@h:1"); err != nil {
			bad("%s: %q is not a key fingerprint (SHA256:...)", where, fp)
		}
	}
	for _, fp := range c.Policy.Admins {
		checkFP("policy.admins", fp)
	}
	for room, rule := range c.Policy.Rooms {
		if err := protocol.ValidRoom(room); err != nil {
			bad("policy.rooms.%s: %v", room, err)
		}
		for _, fp := range rule.Read {
			checkFP("policy.rooms."+room+".read", fp)
		}
		for _, fp := range rule.Post {
			checkFP("policy.rooms."+room+".post", fp)
		}
	}
	l := c.Limits
	if l.MaxEnvelope < 512 || l.MaxEnvelope > protocol.MaxEnvelopeSize {
		bad("limits.max_envelope %d: want 512 to %d", l.MaxEnvelope, protocol.MaxEnvelopeSize)
	}
	if !rateOK(l.PublishRate) || l.PublishBurst < 1 || !rateOK(l.AddrRate) || l.AddrBurst < 1 {
		bad("limits: rates and bursts must be positive, rates at most %d (what Info carries)", uint32(math.MaxUint32))
	}
	if l.MaxConnections < 1 || l.MaxStreams < 4 || l.QueueSize < 16 || l.RetryAbove < 0 {
		bad("limits: max_connections >= 1, max_streams >= 4, queue_size >= 16, retry_above >= 0")
	}
	if l.ConnsPerIdentity < 1 || l.ConnsPerAddr < 1 {
		bad("limits: conns_per_identity and conns_per_address must be positive")
	}
	if l.HandshakeTimeout.Duration <= 0 || l.IdleTimeout.Duration <= 0 || l.WriteTimeout.Duration <= 0 || l.Skew.Duration <= 0 {
		bad("limits: timeouts and skew must be positive")
	}
	if l.Skew.Duration > maxSkew {
		bad("limits.skew %s: at most %s", l.Skew, maxSkew)
	}
	if c.Retention.MaxAge.Duration < 0 || c.Retention.MaxBytes < 0 {
		bad("retention: max_age and max_bytes must not be negative")
	}
	if c.Retention.MaxAge.Duration > 0 && c.Retention.MaxAge.Duration/2 < l.Skew.Duration {
		// History must outlive the skew window, or an envelope pruned
		// while its time is still accepted could be stored twice.
		// (max_age/2 < skew: 2*skew overflows for a skew of 292 years.)
		bad("retention.max_age %s: want at least twice limits.skew (%s)", c.Retention.MaxAge, l.Skew)
	}
	c.Store.validate(bad)
	if ci := c.Circuit; ci.Enabled {
		if ci.MaxReservations < 1 || ci.MaxCircuits < 1 {
			bad("circuit: max_reservations and max_circuits must be positive")
		}
		if ci.ReservationTTL.Duration < mesh.MinCircuitTTL {
			bad("circuit.reservation_ttl %s: want at least %s", ci.ReservationTTL, mesh.MinCircuitTTL)
		}
		if ci.Duration.Duration < mesh.MinCircuitDuration {
			bad("circuit.duration %s: want at least %s, time for hole punching", ci.Duration, mesh.MinCircuitDuration)
		}
		if ci.DataBytes < mesh.MinCircuitData {
			bad("circuit.data_bytes %d: want at least %d, the largest envelope", ci.DataBytes, mesh.MinCircuitData)
		}
	}
	for _, a := range c.Federation.Relays {
		if _, err := newFederation([]string{a}, identity.PublicKey{}); err != nil {
			bad("%v", err)
		}
	}
	for _, room := range c.Federation.Rooms {
		if err := protocol.ValidRoom(room); err != nil {
			bad("federation.rooms %q: %v", room, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return nil
}

// rateOK reports whether r is a rate: above zero and at most what the
// Info frame carries (a u32). NaN fails every comparison, so "r <= 0"
// alone lets it through; this does not.
func rateOK(r float64) bool { return r > 0 && r <= math.MaxUint32 }

// maxSkew bounds limits.skew: a day is far more than any clock is off,
// and the relay computes twice the skew (retention, its mesh node's sync
// windows), which must not overflow.
const maxSkew = 24 * time.Hour

// policyHash identifies the policy part of the configuration, so that a
// change to it raises the policy version.
func (c *Config) policyHash() []byte {
	p := c.Policy
	p.Admins = slices.Sorted(slices.Values(p.Admins))
	b, _ := json.Marshal(p) // maps marshal with sorted keys
	h := sha256.Sum256(b)
	return h[:]
}

// ConfigTemplate is the commented config file `relay init` writes. Every
// setting shows its default.
const ConfigTemplate = `# Parley relay configuration. Every setting below shows its default;
# uncomment one to change it. Flags of "relay serve" override this file.
# An unknown key is an error.

# QUIC (UDP) address clients connect to.
# listen = "0.0.0.0:4433"

# TCP address of the relay over TLS 1.3, for clients whose network blocks
# UDP: "" is listen's address and port (one address for both), "off"
# turns it off. Port 443 gets through most firewalls.
# listen_tcp = ""

# HOST:PORT that "relay addr" prints, when clients reach the relay by
# another name than the listen address (a DNS name, a public IP).
# advertise = "relay.example.org:4433"

# The relay's mesh node: libp2p listen addresses, peers to dial at start,
# and discovery on the local network (mDNS). mDNS is off: a public relay
# should not announce itself on its network. For a relay on a LAN, whose
# peers should find it by themselves, set mdns = true.
# p2p_listen = ["/ip4/0.0.0.0/udp/4434/quic-v1", "/ip4/0.0.0.0/tcp/4434"]
# bootstrap = []
# mdns = false

# /metrics (Prometheus), /healthz and /debug/pprof/ (profiles). Keep it on
# loopback, or behind a firewall; "" turns it off.
# admin = "127.0.0.1:4435"

[policy]
# open: anyone not banned; allowlist: only identities on the allow list
# ("relay allow"); invite: the allow list, which invite tokens join
# ("relay invite").
mode = "%s"
# Fingerprints that may always connect, read and post.
# admins = ["SHA256:..."]

# Who may read and who may post in a room; an empty list allows everyone
# the relay admits.
# [policy.rooms.announcements]
# read = []
# post = ["SHA256:..."]

[limits]
# max_envelope = 65536       # bytes
# publish_rate = 200.0       # envelopes per second per identity
# publish_burst = 1000
# addr_rate = 20.0           # new connections per second per IP address
# addr_burst = 100
# max_connections = 10000
# conns_per_identity = 8     # open at once per client identity
# conns_per_address = 64     # open at once per IP address (people behind NAT)
# max_streams = 100          # concurrent streams per connection
# handshake_timeout = "10s"
# idle_timeout = "1m0s"
# write_timeout = "10s"      # a client that reads nothing this long is dropped
# queue_size = 64            # batches queued per subscription (more while they
#                            # hold at most 512 envelopes); past it a
#                            # subscription reads the store instead
# retry_above = 256          # new connection attempts per second above which
#                            # QUIC Retry checks client addresses
# skew = "5m0s"              # accepted difference of an envelope's clock

[retention]
# max_age = "720h0m0s"       # 30 days; "0s" keeps everything
# max_bytes = 0              # envelope bytes kept; 0: no size limit

[audit]
# Every decision of the relay in a tamper-evident log, and a receipt with
# every acknowledged publish (docs/audit.md). Turn it off only to measure
# what it costs.
# enabled = true

[store]
# The relay's SQLite database. Read at start.
# cache_size = 0             # bytes of page cache for the writer; 0: SQLite's
#                            # 2 MB. A large store's message-ID index takes a
#                            # random page per publish.
# mmap_size = 0              # bytes of the file read through a memory map
# checkpoint_pages = 10000   # 4-KiB pages of write-ahead log between
#                            # checkpoints (about 40 MiB)

[circuit]
# The mesh node relays connections between people behind NATs, who then
# try to connect directly (hole punching); it answers AutoNAT probes too.
# Only identities the relay admits may use it. The relay sees encrypted
# bytes only, but learns who talks to whom. Read at start.
# enabled = true
# max_reservations = 1024    # people holding a slot at once
# max_circuits = 16          # relayed connections at once, per person
# reservation_ttl = "1h0m0s" # renewed by the client before it ends
# duration = "10m0s"         # each relayed connection, at most
# data_bytes = 1048576       # each relayed connection, each way, at most

[federation]
# The other relays of one network (docs/operations.md, "Several relays"):
# their mesh addresses, as "relay addr --mesh" prints them, with the
# host's public address in place of 0.0.0.0. The relay keeps a connection
# to each, exchanges the rooms it carries with them through the mesh,
# catches up from them after an outage, and lets them catch up on
# private rooms. Its own policy still decides what it stores and
# forwards. Read at start. For example:
#   relays = ["/dns4/relay2.example.org/udp/4434/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
# relays = []
# Rooms carried from the start, before any client asks for them (the
# rooms already in the store are carried too), as in rooms = ["general"].
# rooms = []
`

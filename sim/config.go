// Package sim runs Parley's mesh under churn on go-libp2p's mocknet: real
// mesh nodes (gossipsub, validators, replay guard, catch-up sync, a SQLite
// store each) on in-process links with latency, people leaving and coming
// back, relays as long-lived mesh nodes, and the figures of issue 22:
// delivery, latency, duplicates, bytes per delivered message and what each
// node sees of its room.
//
// A run is a Sim made from a Config; Run returns a Result. cmd/simulate
// runs several and prints the table.
package sim

import (
	"errors"
	"fmt"
	"time"
)

// Config describes one run. Zero fields take the defaults given with them.
type Config struct {
	// Peers are people's nodes, all online at the start; Rooms is how many
	// rooms they are spread over (peer i is in room i mod Rooms).
	Peers, Rooms int
	// LatencyMin and LatencyMax bound each link's one-way latency, drawn
	// uniformly per link. Defaults 20 ms and 150 ms.
	LatencyMin, LatencyMax time.Duration
	// ChurnPerMin is the share of Peers that leave per minute (0.1 is 10%);
	// each comes back, with its store, after an offline spell drawn
	// uniformly from OfflineMin to OfflineMax (defaults 10 s and 60 s).
	ChurnPerMin            float64
	OfflineMin, OfflineMax time.Duration
	// Rate is messages per second over the whole network, each from a
	// random online peer of a random room. Default 20.
	Rate float64
	// Duration is how long messages are published and peers churn.
	// Default 1 minute.
	Duration time.Duration
	// Warmup is how long the network forms before the first message.
	// Default 5 s.
	Warmup time.Duration
	// Drain bounds the wait after Duration, once every peer that left has
	// come back, for the last deliveries (live or by catch-up sync); the
	// wait ends early when every expected delivery has arrived. Default
	// 30 s.
	Drain time.Duration
	// Relays are long-lived mesh nodes in every room that every peer knows
	// and dials at start. KillRelayAt, if positive, stops relay 0 that far
	// into Duration, for good.
	Relays      int
	KillRelayAt time.Duration
	// Bootstrap is how many live peers of its room a node dials when it
	// starts, besides the relays: what a rendezvous (a relay's room peer
	// list, the DHT) hands out. Default 8.
	Bootstrap int
	// SampleEvery is how often each node's view of its room is sampled.
	// Default 5 s.
	SampleEvery time.Duration
	// AntiEntropy is passed to every node (mesh.Config.AntiEntropy); zero
	// keeps the mesh's default (one minute).
	AntiEntropy time.Duration
	// Parallel bounds how many nodes start or stop at once. Default 8.
	Parallel int
	// Seed makes the run's choices (latencies, senders, who leaves, for how
	// long) repeatable; what the network does with them is timing.
	Seed uint64
	// Dir holds the nodes' stores. Required.
	Dir string
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.LatencyMin, 20*time.Millisecond)
	def(&c.LatencyMax, 150*time.Millisecond)
	def(&c.OfflineMin, 10*time.Second)
	def(&c.OfflineMax, 60*time.Second)
	def(&c.Duration, time.Minute)
	def(&c.Warmup, 5*time.Second)
	def(&c.Drain, 30*time.Second)
	def(&c.SampleEvery, 5*time.Second)
	if c.Rooms == 0 {
		c.Rooms = 1
	}
	if c.Rate == 0 {
		c.Rate = 20
	}
	if c.Bootstrap == 0 {
		c.Bootstrap = 8
	}
	if c.Parallel == 0 {
		c.Parallel = 8
	}
}

func (c *Config) check() error {
	switch {
	case c.Dir == "":
		return errors.New("sim: no folder for the stores")
	case c.Peers < 2 || c.Rooms < 1 || c.Peers < 2*c.Rooms:
		return fmt.Errorf("sim: %d peers in %d rooms: want at least 2 a room", c.Peers, c.Rooms)
	case c.LatencyMax < c.LatencyMin || c.OfflineMax < c.OfflineMin:
		return errors.New("sim: a range's top is below its bottom")
	case c.ChurnPerMin < 0 || c.Rate <= 0 || c.Relays < 0:
		return errors.New("sim: negative churn or relays, or no message rate")
	case c.KillRelayAt > 0 && (c.Relays == 0 || c.KillRelayAt >= c.Duration):
		return errors.New("sim: a relay is killed only if there is one, within Duration")
	}
	return nil
}

// Label names the run: "100p 10%/min 3r (1 killed)".
func (c Config) Label() string {
	s := fmt.Sprintf("%dp %g%%/min %dr", c.Peers, c.ChurnPerMin*100, c.Relays)
	if c.KillRelayAt > 0 {
		s += " (1 killed)"
	}
	return s
}

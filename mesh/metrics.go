package mesh

import (
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts what the node does with envelopes, and every message that
// gossipsub or the node drops, so that no loss is silent.
type metrics struct {
	validated *prometheus.CounterVec // by result: accept, reject, ignore, with reason
	stored    *prometheus.CounterVec // by via: mesh, sync, local
	drops     *prometheus.CounterVec // by where: validation queue, subscriber, outbound, writer
	syncs     *prometheus.CounterVec // by side and result
	dups      prometheus.Counter     // copies gossipsub dropped by message ID
	repairs   prometheus.Counter     // connections closed to repair a peer's rooms
	punches   *prometheus.CounterVec // hole punching attempts, by result
	feeds     *prometheus.CounterVec // circuit feeds, by side and result

	// Plain counters that tests and benchmarks read without a registry.
	verifications atomic.Int64
	dropped       atomic.Int64
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		validated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "parley", Subsystem: "mesh", Name: "envelopes_validated_total",
			Help: "Envelopes checked by the gossipsub validator, by result and reason.",
		}, []string{"result", "reason"}),
		stored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "parley", Subsystem: "mesh", Name: "envelopes_stored_total",
			Help: "Envelopes committed to the store, by the path that brought them.",
		}, []string{"via"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "parley", Subsystem: "mesh", Name: "dropped_total",
			Help: "Messages dropped because a queue was full, by queue.",
		}, []string{"queue"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "parley", Subsystem: "mesh", Name: "sync_requests_total",
			Help: "Catch-up sync requests, by side (served, made) and result.",
		}, []string{"side", "result"}),
		dups: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "parley", Subsystem: "mesh", Name: "duplicates_total",
			Help: "Copies of a message that gossipsub dropped because it had seen its ID.",
		}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "parley", Subsystem: "mesh", Name: "peer_repairs_total",
			Help: "Connections to a peer closed and dialled again because gossipsub lost the peer's rooms while it stayed connected.",
		}),
		punches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "parley", Subsystem: "mesh", Name: "hole_punches_total",
			Help: "Hole punching attempts (DCUtR) with peers reached through a circuit relay, by result.",
		}, []string{"result"}),
		feeds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "parley", Subsystem: "mesh", Name: "circuit_feeds_total",
			Help: "Feeds of a room's envelopes over circuit relay connections, by side (served, followed) and how they ended.",
		}, []string{"side", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.validated, m.stored, m.drops, m.syncs, m.dups, m.repairs, m.punches, m.feeds} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) drop(queue string) {
	m.dropped.Add(1)
	m.drops.WithLabelValues(queue).Inc()
}

// tracer turns gossipsub's drop events into metrics and keeps track of
// each topic's mesh. Gossipsub calls it synchronously from its event loop,
// so it only counts and records.
type tracer struct {
	m       *metrics
	mesh    *meshView
	repairs *repairs
}

// meshView is which peers gossipsub has grafted into each topic's mesh.
type meshView struct {
	mu     sync.Mutex
	topics map[string]map[peer.ID]bool
}

func (v *meshView) set(topic string, p peer.ID, in bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.topics == nil {
		v.topics = make(map[string]map[peer.ID]bool)
	}
	if v.topics[topic] == nil {
		v.topics[topic] = make(map[peer.ID]bool)
	}
	if in {
		v.topics[topic][p] = true
	} else {
		delete(v.topics[topic], p)
	}
}

func (v *meshView) removePeer(p peer.ID) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, peers := range v.topics {
		delete(peers, p)
	}
}

func (v *meshView) size(topic string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.topics[topic])
}

var _ pubsub.RawTracer = tracer{}

func (t tracer) RejectMessage(msg *pubsub.Message, reason string) {
	switch reason {
	case pubsub.RejectValidationQueueFull, pubsub.RejectValidationThrottled:
		t.m.drop("validation")
	}
}
func (t tracer) DuplicateMessage(*pubsub.Message)                   { t.m.dups.Inc() }
func (t tracer) UndeliverableMessage(*pubsub.Message)               { t.m.drop("subscriber") }
func (t tracer) DropRPC(*pubsub.RPC, peer.ID)                       { t.m.drop("outbound") }
func (tracer) AddPeer(peer.ID, protocol.ID)                         {}
func (t tracer) RemovePeer(p peer.ID)                               { t.mesh.removePeer(p) }
func (tracer) Join(string)                                          {}
func (tracer) Leave(string)                                         {}
func (t tracer) Graft(p peer.ID, topic string)                      { t.mesh.set(topic, p, true) }
func (t tracer) Prune(p peer.ID, topic string)                      { t.mesh.set(topic, p, false) }
func (tracer) ValidateMessage(*pubsub.Message)                      {}
func (tracer) DeliverMessage(*pubsub.Message)                       {}
func (tracer) ThrottlePeer(peer.ID)                                 {}
func (tracer) RecvRPC(*pubsub.RPC)                                  {}
func (tracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (tracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (t tracer) OnClosedOutboundStream(p peer.ID)                   { t.repairs.streamClosed(p) }
func (tracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}

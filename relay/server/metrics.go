package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's Prometheus metrics, registered on the registry
// the caller passes (never the global one).
type metrics struct {
	connections prometheus.Gauge
	refused     *prometheus.CounterVec // by code
	publishes   *prometheus.CounterVec // by result: stored, duplicate, or a refusal code
	// The publishes counters of the two answers every Ack gives, looked
	// up once.
	publishStored, publishDuplicate prometheus.Counter
	stored                          prometheus.Counter
	liveEarly, liveLate             prometheus.Counter // new envelopes handed to live subscriptions
	subscriptions                   prometheus.Gauge
	dropped                         *prometheus.CounterVec // streams ended by the relay, by code
	bridgeDropped                   prometheus.Counter
	unrecorded                      prometheus.Counter // refusals past recordRefusal's rate
	commitSeconds                   prometheus.Histogram
	batchSize                       prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "parley_relay_connections",
			Help: "Authenticated client connections open now."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_relay_connections_refused_total",
			Help: "Connections refused after the handshake, by reason."}, []string{"reason"}),
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_relay_publishes_total",
			Help: "Publish requests, by result."}, []string{"result"}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_relay_envelopes_stored_total",
			Help: "New envelopes committed, from clients and from the mesh."}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "parley_relay_subscriptions",
			Help: "Live subscriptions now."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_relay_streams_ended_total",
			Help: "Streams the relay ended with an error, by reason."}, []string{"reason"}),
		bridgeDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_relay_bridge_dropped_total",
			Help: "Envelopes of relay clients not gossiped into the mesh because the bridge's queue was full."}),
		unrecorded: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_relay_audit_refusals_unrecorded_total",
			Help: "Refusals not recorded one by one in the audit log, past the rate per identity or address; the next record counts them."}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_relay_commit_seconds",
			Help: "Time of one group commit.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_relay_commit_batch_envelopes",
			Help: "Envelopes per group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
	}
	live := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_relay_live_envelopes_total",
		Help: "New envelopes handed to live subscriptions: early, as soon as checked; late, once written into the commit's transaction."}, []string{"when"})
	m.liveEarly, m.liveLate = live.WithLabelValues("early"), live.WithLabelValues("late")
	m.publishStored = m.publishes.WithLabelValues("stored")
	m.publishDuplicate = m.publishes.WithLabelValues("duplicate")
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	for _, c := range []prometheus.Collector{m.connections, m.refused, m.publishes, m.stored, live, m.subscriptions, m.dropped, m.bridgeDropped, m.unrecorded, m.commitSeconds, m.batchSize} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

package mesh

import (
	"fmt"
	"regexp"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Peer scoring. The one thing that must cost a peer dearly is forwarding an
// envelope that no honest peer forwards (the validator's Reject). Such a
// message costs rejectPenalty through the application-specific score, which
// no topic's positive score can offset (topic scores are capped at
// TopicScoreCap, together), so a single one puts the peer below the
// graylist threshold, and gossipsub ignores its RPCs, for penaltyTime.
// Gossipsub's own invalid-delivery counter adds to it in the topic.
// Everything else is mild: time in the mesh and first deliveries earn a
// little; colocation is not punished (peers on one LAN or host are
// normal for a chat).
const (
	gossipThreshold   = -10
	publishThreshold  = -50
	graylistThreshold = -80
)

// GraylistThreshold is the score below which gossipsub ignores a peer.
const GraylistThreshold = graylistThreshold

const (
	topicScoreCap = 50
	// rejectPenalty is what one rejected envelope costs: below the
	// graylist threshold even with the best possible topic score.
	rejectPenalty = graylistThreshold - topicScoreCap - 20
	penaltyTime   = time.Hour
	maxPenalised  = 4096
)

// penalties are the application-specific scores of peers that forwarded
// rejected envelopes. At most maxPenalised are kept; when full, the one
// whose penalty ends first is dropped.
type penalties struct {
	mu    sync.Mutex
	now   func() time.Time
	peers map[peer.ID]penalty
}

type penalty struct {
	count int
	until time.Time
}

func (p *penalties) add(id peer.ID) {
	if id == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.peers == nil {
		p.peers = make(map[peer.ID]penalty)
	}
	if _, ok := p.peers[id]; !ok && len(p.peers) >= maxPenalised {
		dropEarliest(p.peers, func(pen penalty) time.Time { return pen.until })
	}
	pen := p.peers[id]
	pen.count++
	pen.until = p.now().Add(penaltyTime)
	p.peers[id] = pen
}

func (p *penalties) score(id peer.ID) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	pen, ok := p.peers[id]
	if !ok {
		return 0
	}
	if p.now().After(pen.until) {
		delete(p.peers, id)
		return 0
	}
	return float64(pen.count) * rejectPenalty
}

func peerScoreParams(app func(peer.ID) float64) *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		Topics:                    map[string]*pubsub.TopicScoreParams{},
		TopicScoreCap:             topicScoreCap,
		AppSpecificScore:          app,
		AppSpecificWeight:         1,
		IPColocationFactorWeight:  0,
		BehaviourPenaltyWeight:    -1,
		BehaviourPenaltyDecay:     pubsub.ScoreParameterDecay(10 * time.Minute),
		BehaviourPenaltyThreshold: 10,
		DecayInterval:             time.Second,
		DecayToZero:               0.01,
		RetainScore:               time.Hour,
		SeenMsgTTL:                deliveryRecordTTL,
	}
}

// deliveryRecordTTL is how long the peer score keeps its record of a
// message: its verdict and who delivered it. The scores above use it only
// while copies of the message are still arriving: to credit the first
// deliverer (first deliveries) and to charge everyone who forwards a copy
// of an envelope found invalid (invalid deliveries). Honest peers send a
// copy within seconds: gossipsub forwards on arrival and advertises a
// message for 3 heartbeats (3 s) from a cache of 5. Records are dropped
// once a minute, so one lives 10 to 70 s. Gossipsub's default, 2 minutes,
// kept a record (about 250 bytes, and a map) of every message for 2 to 3
// minutes: under a steady stream, the largest thing in a node's heap
// (docs/performance.md).
const deliveryRecordTTL = 10 * time.Second

func peerScoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:             gossipThreshold,
		PublishThreshold:            publishThreshold,
		GraylistThreshold:           graylistThreshold,
		AcceptPXThreshold:           10,
		OpportunisticGraftThreshold: 5,
	}
}

func topicScoreParams() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		TopicWeight:                    1,
		TimeInMeshWeight:               0.01,
		TimeInMeshQuantum:              time.Second,
		TimeInMeshCap:                  300,
		FirstMessageDeliveriesWeight:   0.1,
		FirstMessageDeliveriesDecay:    pubsub.ScoreParameterDecay(10 * time.Minute),
		FirstMessageDeliveriesCap:      100,
		InvalidMessageDeliveriesWeight: -100,
		InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(time.Hour),
	}
}

// A remote peer may subscribe only to Parley room topics: at most
// maxTopicsPerRPC in one RPC, and at most maxTopicsPerPeer at once, so that
// no peer can make gossipsub track topics without bound.
const (
	maxTopicsPerRPC  = 100
	maxTopicsPerPeer = 256
)

var roomTopic = regexp.MustCompile(`^/parley/1/room/[a-z0-9._:-]{1,64}$`)

// topicCap is the subscription filter. It forgets a peer when its last
// connection closes.
type topicCap struct {
	mu    sync.Mutex
	peers map[peer.ID]map[string]bool
}

func (f *topicCap) CanSubscribe(topic string) bool { return roomTopic.MatchString(topic) }

func (f *topicCap) FilterIncomingSubscriptions(p peer.ID, subs []*pb.RPC_SubOpts) ([]*pb.RPC_SubOpts, error) {
	if len(subs) > maxTopicsPerRPC {
		return nil, fmt.Errorf("mesh: %d subscriptions in one RPC, limit %d", len(subs), maxTopicsPerRPC)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.peers == nil {
		f.peers = make(map[peer.ID]map[string]bool)
	}
	have := f.peers[p]
	if have == nil {
		have = make(map[string]bool)
		f.peers[p] = have
	}
	out := make([]*pb.RPC_SubOpts, 0, len(subs))
	for _, sub := range subs {
		topic := sub.GetTopicid()
		if !roomTopic.MatchString(topic) {
			continue
		}
		switch {
		case !sub.GetSubscribe():
			delete(have, topic)
		case have[topic]:
		case len(have) >= maxTopicsPerPeer:
			continue // over the cap: not tracked
		default:
			have[topic] = true
		}
		out = append(out, sub)
	}
	return out, nil
}

func (f *topicCap) forget(p peer.ID) {
	f.mu.Lock()
	delete(f.peers, p)
	f.mu.Unlock()
}

package mesh

import (
	"regexp"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Peer scoring. The one thing that must cost a peer dearly is forwarding an
// envelope that no honest peer forwards (the validator's Reject): one such
// message scores -100 in that topic, below the graylist threshold of -80,
// and gossipsub then ignores the peer's RPCs. It decays over an hour.
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

func peerScoreParams() *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		Topics:                    map[string]*pubsub.TopicScoreParams{},
		TopicScoreCap:             50,
		AppSpecificScore:          func(peer.ID) float64 { return 0 },
		AppSpecificWeight:         1,
		IPColocationFactorWeight:  0,
		BehaviourPenaltyWeight:    -1,
		BehaviourPenaltyDecay:     pubsub.ScoreParameterDecay(10 * time.Minute),
		BehaviourPenaltyThreshold: 10,
		DecayInterval:             time.Second,
		DecayToZero:               0.01,
		RetainScore:               time.Hour,
	}
}

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

// A remote peer may subscribe only to Parley room topics, and to at most
// maxTopicsPerRPC of them in one RPC.
const maxTopicsPerRPC = 100

func topicFilter() pubsub.SubscriptionFilter {
	return pubsub.NewRegexpSubscriptionFilter(regexp.MustCompile(`^/parley/1/room/[a-z0-9._:-]{1,64}$`))
}

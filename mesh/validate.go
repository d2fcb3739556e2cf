package mesh

import (
	"context"
	"errors"
	"strings"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/protocol"
)

// Topic names carry the protocol version, so that a network can run two
// versions side by side while it upgrades.
const topicPrefix = "/parley/1/room/"

func topicName(room string) string { return topicPrefix + room }

func roomOf(topic string) (string, bool) {
	return strings.CutPrefix(topic, topicPrefix)
}

// messageID is gossipsub's message ID: the envelope ID, so that the same
// envelope is the same message on every path (content addressing).
func messageID(m *pb.Message) string {
	id := protocol.IDOf(m.Data)
	return string(id[:])
}

// verified is what the validator hands on with an accepted message, so that
// nothing after it parses or verifies the envelope again.
type verified struct {
	env *protocol.Envelope
	id  protocol.ID
}

// validate is the topic validator: the whole envelope check, once per
// message. Gossipsub drops a copy whose ID it has seen, but a copy that
// arrives while the first is still being validated gets here too; the
// seen-ID set drops it before any work. It does no I/O: storage is the writer's job, so a slow disk never stalls
// validation.
//
// Reject (the forwarding peer is penalised) is for what no honest peer
// forwards: malformed, oversized, forged, or for another room, or refused by
// policy. Ignore (no penalty) is for what an honest peer may well forward:
// a newer version or kind, a duplicate, a late or early envelope, and the
// second of two equivocating envelopes, which honest peers forward before
// they know of the first.
func (n *Node) validate(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	room, ok := roomOf(msg.GetTopic())
	if !ok {
		return n.result(pubsub.ValidationReject, "topic")
	}
	if len(msg.Data) > protocol.MaxEnvelopeSize {
		return n.result(pubsub.ValidationReject, "size")
	}
	if !n.seen.claim(protocol.IDOf(msg.Data)) {
		return n.result(pubsub.ValidationIgnore, "seen")
	}
	n.metrics.verifications.Add(1)
	env, id, err := protocol.ParseVerify(msg.Data)
	switch {
	case errors.Is(err, protocol.ErrUnknownVersion):
		return n.result(pubsub.ValidationIgnore, "version")
	case errors.Is(err, protocol.ErrBadSignature):
		return n.result(pubsub.ValidationReject, "signature")
	case err != nil:
		return n.result(pubsub.ValidationReject, "malformed")
	}
	if env.Room != room {
		return n.result(pubsub.ValidationReject, "room")
	}
	if !env.Kind.Known() {
		return n.result(pubsub.ValidationIgnore, "kind")
	}
	if n.cfg.Policy != nil {
		if err := n.cfg.Policy(env); err != nil {
			return n.result(pubsub.ValidationReject, "policy")
		}
	}
	err = n.guard.Check(env, id, protocol.Live)
	switch {
	case err == nil:
	case errors.Is(err, protocol.ErrEquivocation):
		n.evidence(env, id, msg.Data)
		return n.result(pubsub.ValidationIgnore, "equivocation")
	case errors.Is(err, protocol.ErrDuplicate):
		return n.result(pubsub.ValidationIgnore, "duplicate")
	case errors.Is(err, protocol.ErrExpired):
		return n.result(pubsub.ValidationIgnore, "expired")
	default:
		return n.result(pubsub.ValidationIgnore, "replay")
	}
	msg.ValidatorData = &verified{env: env, id: id}
	return n.result(pubsub.ValidationAccept, "")
}

func (n *Node) result(r pubsub.ValidationResult, reason string) pubsub.ValidationResult {
	name := map[pubsub.ValidationResult]string{
		pubsub.ValidationAccept: "accept",
		pubsub.ValidationReject: "reject",
		pubsub.ValidationIgnore: "ignore",
	}[r]
	n.metrics.validated.WithLabelValues(name, reason).Inc()
	return r
}

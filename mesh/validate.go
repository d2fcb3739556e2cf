package mesh

import (
	"context"
	"errors"
	"strings"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/roster"
)

// Topic names carry the protocol version, so that a network can run two
// versions side by side while it upgrades.
const topicPrefix = "/parley/1/room/"

func topicName(room string) string { return topicPrefix + room }

func roomOf(topic string) (string, bool) {
	return strings.CutPrefix(topic, topicPrefix)
}

// messageID is gossipsub's message ID: the envelope ID, so that the same
// envelope is the same message on every path (content addressing),
// followed by the room of the topic it came on. Gossipsub marks an ID
// seen before the validator runs, and remembers it for minutes: with the
// envelope ID alone, a copy published by anyone on another room's topic
// (rejected there) made the node drop the true copy on the right topic as
// a duplicate, which is censorship by a third party. An honest envelope
// has one room, so it still has one ID.
func messageID(m *pb.Message) string {
	id := protocol.IDOf(m.Data)
	room, _ := roomOf(m.GetTopic())
	return string(id[:]) + room
}

// envelopeID returns the message's envelope ID. Gossipsub has computed it
// with messageID before it calls the validator and keeps it in msg.ID, so
// the hash is not taken twice on the hot path.
func envelopeID(msg *pubsub.Message) protocol.ID {
	if len(msg.ID) >= len(protocol.ID{}) {
		return protocol.ID([]byte(msg.ID[:len(protocol.ID{})]))
	}
	return protocol.IDOf(msg.Data)
}

// verified is what the validator hands on with an accepted message, so that
// nothing after it parses or verifies the envelope again.
type verified struct {
	env *protocol.Envelope
	id  protocol.ID
	// known: the node had accepted this envelope already, by another path
	// (sync, usually). It is accepted again only so that gossipsub
	// forwards it; the room neither shows nor stores it twice.
	known bool
}

// validate is the topic validator: the whole envelope check, at most once
// per envelope. Gossipsub drops a copy whose ID it has seen before calling
// it; the seen-ID set covers copies that came by sync instead. It does no
// I/O: storage is the writer's job, so a slow disk never stalls validation.
//
// Reject (the forwarding peer is penalised) is for what no honest peer
// forwards: malformed, oversized, forged, or for another room, or refused by
// policy. Ignore (no penalty, not forwarded) is for what an honest peer may
// well forward: a newer version or kind, a late or early envelope, a replay
// older than the live window, and the second of two equivocating
// envelopes, which honest peers forward before they know of the first.
// An envelope over its sender's rate (allowSender) is ignored too: the
// peer that forwards it may be honest, and a later copy may be taken.
func (n *Node) validate(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	room, ok := roomOf(msg.GetTopic())
	if !ok {
		n.penalise(from)
		return n.result(pubsub.ValidationReject, "topic")
	}
	if len(msg.Data) > protocol.MaxEnvelopeSize {
		n.penalise(from) // as every Reject: gossipsub's own count fades in minutes
		return n.result(pubsub.ValidationReject, "size")
	}
	id := envelopeID(msg)
	switch n.seen.claim(id) {
	case accepted:
		return n.forwardKnown(room, msg, id)
	case pending, refused:
		return n.result(pubsub.ValidationIgnore, "seen")
	}
	res, reason, w := n.check(room, msg, id)
	switch {
	case res == pubsub.ValidationAccept:
		n.seen.decide(id, accepted)
	case reason == "late":
		n.seen.decide(id, accepted) // the guard has it: no second check
	case bytesVerdict[reason]:
		n.seen.decide(id, refused)
	default:
		n.seen.decide(id, unseen)
	}
	if w != nil {
		w.r.hold(w.it, w.missing)
	}
	if res == pubsub.ValidationReject {
		n.penalise(from)
	}
	return n.result(res, reason)
}

// bytesVerdict are the refusals that follow from the bytes alone, the
// same for every copy whenever it comes. Not "room": that verdict is
// about the topic a copy came on, not the envelope, and remembering it by
// ID let anyone hide a message by publishing it on another room's topic.
var bytesVerdict = map[string]bool{"version": true, "signature": true, "malformed": true, "kind": true, "payload": true}

// check is validate's judgement of an envelope not seen before: the
// result, its reason, and, for one that waits for a member-list change,
// what to hold once its ID is decided.
func (n *Node) check(room string, msg *pubsub.Message, id protocol.ID) (pubsub.ValidationResult, string, *waiter) {
	var (
		env *protocol.Envelope
		err error
	)
	if v, ok := msg.ValidatorData.(*verified); ok && msg.ReceivedFrom == n.host.ID() && v.id == id {
		// Signed or checked in this process a moment ago (PublishChecked):
		// no check needed.
		env = v.env
	} else {
		// Parse, then Verify: ParseVerify would hash the bytes once more
		// for an ID we already have.
		n.metrics.verifications.Add(1)
		if env, err = protocol.Parse(msg.Data); err == nil {
			err = n.verifier.Verify(env)
		}
	}
	switch {
	case errors.Is(err, protocol.ErrUnknownVersion):
		return pubsub.ValidationIgnore, "version", nil
	case errors.Is(err, protocol.ErrBadSignature):
		return pubsub.ValidationReject, "signature", nil
	case err != nil:
		return pubsub.ValidationReject, "malformed", nil
	}
	if env.Room != room {
		return pubsub.ValidationReject, "room", nil
	}
	if !n.knows(env.Kind) {
		return pubsub.ValidationIgnore, "kind", nil
	}
	switch err := protocol.CheckPayload(env); {
	case errors.Is(err, protocol.ErrUnknownVersion):
		// A newer peer's payload (a key package of a suite this code
		// does not know): skipped, not punished.
		return pubsub.ValidationIgnore, "version", nil
	case err != nil:
		return pubsub.ValidationReject, "payload", nil
	}
	if n.cfg.Policy != nil {
		if err := n.cfg.Policy(env); err != nil {
			// This node's own rule, which the peer that passed it on
			// need not share (another relay's policy may allow it): not
			// kept, not forwarded, not punished.
			return pubsub.ValidationIgnore, "policy", nil
		}
	}
	r := n.privateRoom(room)
	if r != nil {
		switch missing, err := r.priv.judge(env, id); {
		case errors.Is(err, roster.ErrWaiting):
			return pubsub.ValidationIgnore, "waiting", &waiter{r, inbound{env: env, id: id, raw: msg.Data, via: "mesh", from: msg.ReceivedFrom}, missing}
		case errors.Is(err, roster.ErrRemoved):
			// Its sender was removed, which the peer that passed it on
			// may not have heard of yet: not forwarded, not punished.
			return pubsub.ValidationIgnore, "removed", nil
		case err != nil:
			return pubsub.ValidationReject, "member", nil
		}
	}
	if !n.allowSender(msg, env) {
		return pubsub.ValidationIgnore, "rate", nil
	}
	err = n.guard.Check(env, id, protocol.Live)
	var eq *protocol.EquivocationError
	switch {
	case err == nil:
		msg.ValidatorData = &verified{env: env, id: id}
		if r != nil {
			r.release(r.commit(env, id))
		}
		return pubsub.ValidationAccept, "", nil
	case errors.Is(err, protocol.ErrDuplicate):
		// Accepted before (the seen set forgot it): pass it on, once more,
		// but do not show it again, if it is recent (passOn).
		if !n.passOn(msg, env) {
			return pubsub.ValidationIgnore, "late", nil
		}
		msg.ValidatorData = &verified{env: env, id: id, known: true}
		return pubsub.ValidationAccept, "known", nil
	case errors.As(err, &eq):
		n.evidence(eq.First, env, id, msg.Data)
		return pubsub.ValidationIgnore, "equivocation", nil
	case errors.Is(err, protocol.ErrExpired):
		return pubsub.ValidationIgnore, "expired", nil
	default:
		return pubsub.ValidationIgnore, "replay", nil
	}
}

// allowSender takes a token from the bucket of env's sender (Config.SenderRate)
// and reports whether there was one. It is asked last before the replay
// guard, which records what it accepts: what is refused for its rate must
// leave no trace, neither there nor in the seen set ("rate" is no bytes
// verdict), so that sync can bring the envelope later. Being last, it costs
// a sender no token for what is refused anyway: forged (a forgery spends
// nobody's tokens), for another room (a copy on another topic), by policy or
// member list, or out of the live window (a stale replay). The node's own
// publishes are not counted: a relay's node publishes what its clients
// sent, which the relay has limited per identity already, and a person's
// node what its owner wrote.
func (n *Node) allowSender(msg *pubsub.Message, env *protocol.Envelope) bool {
	if msg.ReceivedFrom == n.host.ID() {
		return true
	}
	if !protocol.WithinSkew(n.cfg.now(), env.Time, n.cfg.skew()) {
		return true // the guard refuses it as expired
	}
	return n.senders.allow(env.Sender)
}

// forwardKnown handles a live copy of an envelope the node accepted before,
// typically by sync: gossipsub has not seen it, so unless it is accepted it
// would not be forwarded, and peers that depend on this node for it would
// miss it. It is forwarded while it is recent (passOn), never shown twice.
func (n *Node) forwardKnown(room string, msg *pubsub.Message, id protocol.ID) pubsub.ValidationResult {
	env, err := protocol.Parse(msg.Data) // the bytes were verified already
	if err != nil {
		return n.result(pubsub.ValidationIgnore, "seen")
	}
	if env.Room != room {
		// Valid, but sent on another room's topic: forwarding it there
		// would get this node penalised by that room's peers.
		n.penalise(msg.ReceivedFrom)
		return n.result(pubsub.ValidationReject, "room")
	}
	if !protocol.WithinSkew(n.cfg.now(), env.Time, n.cfg.skew()) {
		return n.result(pubsub.ValidationIgnore, "expired")
	}
	if !n.passOn(msg, env) {
		return n.result(pubsub.ValidationIgnore, "late")
	}
	msg.ValidatorData = &verified{env: env, id: id, known: true}
	return n.result(pubsub.ValidationAccept, "known")
}

// passOn reports whether a live copy of an envelope the node has already
// is passed on. A copy from a peer is, only while the envelope is recent,
// dated within seenTTL of now: gossipsub forwards a message on arrival and
// advertises it for seconds, so an honest copy by gossip comes soon after
// the envelope was signed. Later, gossipsub's seen set has let the ID go
// (30 to 90 s: it is swept once a minute), and passing the copy on would
// let anyone who kept it make the whole room forward it again every
// minute or so, for as long as its timestamp is inside the skew. The
// node's own publishes are passed on whatever their date (a held private
// post released, an outbox's resend): the skew check before bounds them.
// An honest sender whose clock is off by more than seenTTL loses only
// this second chance; gap repair and sync bring its envelopes.
func (n *Node) passOn(msg *pubsub.Message, env *protocol.Envelope) bool {
	if msg.ReceivedFrom == n.host.ID() {
		return true
	}
	return protocol.WithinSkew(n.cfg.now(), env.Time, min(seenTTL, n.cfg.skew()))
}

// knows reports whether the node knows envelopes of kind k.
func (n *Node) knows(k protocol.Kind) bool {
	if n.legacy {
		return k == protocol.KindText
	}
	return k.Known()
}

// privateRoom returns the joined private room room, or nil.
func (n *Node) privateRoom(room string) *Room {
	if n.legacy || !protocol.IsPrivateRoom(room) {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.rooms[room]; r != nil && r.priv != nil {
		return r
	}
	return nil
}

var resultNames = map[pubsub.ValidationResult]string{
	pubsub.ValidationAccept: "accept",
	pubsub.ValidationReject: "reject",
	pubsub.ValidationIgnore: "ignore",
}

func (n *Node) result(r pubsub.ValidationResult, reason string) pubsub.ValidationResult {
	n.metrics.validated.WithLabelValues(resultNames[r], reason).Inc()
	return r
}

package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/keyring"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// The test of end-to-end encryption on the mesh: a capture of
// every byte an eavesdropping mesh peer receives holds no plaintext of a
// private-room or direct message (random markers are searched for), and
// a peer without keys cannot read what it captured.

// tapPatience bounds every wait of these tests.
const tapPatience = 60 * time.Second

// The mesh's names, mirrored here (package mesh keeps them unexported):
// a room's gossipsub topic, and the catch-up sync protocol.
const (
	tapTopicPrefix = "/parley/1/room/"
	tapSyncProto   = libp2pproto.ID("/parley/sync/1.0.0")
)

// tapMarker returns a random string that can only be in a capture if a
// message holding it crossed the mesh in the clear.
func tapMarker(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "marker-" + hex.EncodeToString(b)
}

// tapOpen opens a p2p session on loopback, dialling peers.
func tapOpen(t *testing.T, name string, peers ...string) *Client {
	t.Helper()
	h, err := OpenHome(filepath.Join(t.TempDir(), name), HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Nick, cfg.Mode, cfg.MDNS = name, ModeP2P, false
	cfg.Listen, cfg.Peers = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, peers
	logs := new(tapLog)
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := Open(context.Background(), h, Options{Config: cfg, KeepPeers: 200 * time.Millisecond, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("%s's session logged:\n%s", name, logs.String())
		}
	})
	return c
}

// tapWait polls cond until it holds, for at most tapPatience.
func tapWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(tapPatience); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, tapPatience)
		}
	}
}

// tapAwaitText waits until c shows a message of room whose text holds
// marker, in the clear: a MessageEvent, or the OpenedEvent of one first
// shown waiting for its key. One that will never open fails the test.
func tapAwaitText(t *testing.T, c *Client, room, marker string) Message {
	t.Helper()
	timeout := time.After(tapPatience)
	waiting := map[protocol.ID]bool{} // shown waiting for their key, not opened yet
	for {
		var m Message
		select {
		case e, ok := <-c.Events():
			if !ok {
				t.Fatalf("%s: events closed before %s arrived", c.Nick(), marker)
			}
			switch e := e.(type) {
			case *MessageEvent:
				m = e.Message
			case *OpenedEvent:
				m = e.Message
			default:
				continue
			}
		case <-timeout:
			t.Fatalf("%s: no message holding %s in the clear after %s (%d shown waiting for their key and never opened)",
				c.Nick(), marker, tapPatience, len(waiting))
		}
		if m.Room == room && m.Waiting {
			waiting[m.ID] = true
		} else {
			delete(waiting, m.ID)
		}
		switch {
		case m.Room != room:
		case m.Never != "":
			t.Fatalf("%s: message %s from %s will never open: %s", c.Nick(), m.ID, m.Nick, m.Never)
		case strings.Contains(m.Text, marker):
			if !m.Sealed {
				t.Errorf("%s: message %s of private room %s was not sealed", c.Nick(), m.ID, room)
			}
			return m
		}
	}
}

// tapKnowsPackage waits until c's key ring holds who's key package, as
// announced in a room they share: a sender key is sealed only to members
// whose package is known (keyring.Ring.Prepare), and this test is about
// what crosses the mesh, not about that race.
func tapKnowsPackage(t *testing.T, c *Client, who identity.PublicKey) {
	t.Helper()
	tapWait(t, c.Nick()+" to learn the key package of "+who.ShortFingerprint(), func() bool {
		_, ok, err := c.ring.PackageOf(context.Background(), who)
		return err == nil && ok
	})
}

// tapMember waits until c's member list of room has c as a member.
func tapMember(t *testing.T, c *Client, room string) {
	t.Helper()
	tapWait(t, c.Nick()+" to be a member of "+room, func() bool {
		l, err := c.roster(context.Background(), room)
		return err == nil && l.IsMember(c.Key().Public())
	})
}

// tapEavesdropper is a mesh peer that is no member of anything: a libp2p
// host with gossipsub subscribed to some rooms' topics, which records
// the contents of every gossipsub RPC it receives, and every sync request a node
// sends it (refused, as a peer that has nothing would). Its identity key
// is real, so that it can try with a key ring of its own.
type tapEavesdropper struct {
	key    identity.PrivateKey
	h      host.Host
	ps     *pubsub.PubSub
	topics map[string]*pubsub.Topic // by room
	subs   []*pubsub.Subscription

	mu   sync.Mutex
	wire [][]byte                // every byte received: RPCs, sync requests, sync answers
	msgs map[string][][]byte     // by room: the messages' data (envelopes) the RPCs carried
	ids  map[protocol.ID]bool    // envelopes recorded
	seen map[string]map[int]bool // by room: kinds seen
}

// tapTracer hands the eavesdropper every RPC its gossipsub receives.
type tapTracer struct{ e *tapEavesdropper }

func (tr tapTracer) RecvRPC(rpc *pubsub.RPC) {
	tr.e.mu.Lock()
	defer tr.e.mu.Unlock()
	tr.e.wire = append(tr.e.wire, tapRPCBytes(&rpc.RPC)...)
	for _, m := range rpc.GetPublish() {
		room, ok := strings.CutPrefix(m.GetTopic(), tapTopicPrefix)
		if !ok {
			continue
		}
		id := protocol.IDOf(m.Data)
		if tr.e.ids[id] {
			continue
		}
		tr.e.ids[id] = true
		tr.e.msgs[room] = append(tr.e.msgs[room], bytes.Clone(m.Data))
		if env, err := protocol.Parse(m.Data); err == nil {
			if tr.e.seen[room] == nil {
				tr.e.seen[room] = make(map[int]bool)
			}
			tr.e.seen[room][int(env.Kind)] = true
		}
	}
}

func (tapTracer) OnNewOutboundStream(peer.ID, libp2pproto.ID)          {}
func (tapTracer) OnClosedOutboundStream(peer.ID)                       {}
func (tapTracer) Join(string)                                          {}
func (tapTracer) Leave(string)                                         {}
func (tapTracer) Graft(peer.ID, string)                                {}
func (tapTracer) Prune(peer.ID, string)                                {}
func (tapTracer) ValidateMessage(*pubsub.Message)                      {}
func (tapTracer) DeliverMessage(*pubsub.Message)                       {}
func (tapTracer) RejectMessage(*pubsub.Message, string)                {}
func (tapTracer) DuplicateMessage(*pubsub.Message)                     {}
func (tapTracer) ThrottlePeer(peer.ID)                                 {}
func (tapTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (tapTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (tapTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (tapTracer) UndeliverableMessage(*pubsub.Message)                 {}

var _ pubsub.RawTracer = tapTracer{}

// tapRPCBytes returns every byte string and string field of a gossipsub
// RPC: what it carried, but for its framing, numbers and flags.
func tapRPCBytes(rpc *pb.RPC) [][]byte {
	var out [][]byte
	str := func(ss ...string) {
		for _, s := range ss {
			out = append(out, []byte(s))
		}
	}
	for _, s := range rpc.GetSubscriptions() {
		str(s.GetTopicid())
	}
	for _, m := range rpc.GetPublish() {
		out = append(out, bytes.Clone(m.GetData()), bytes.Clone(m.GetFrom()), bytes.Clone(m.GetSeqno()),
			bytes.Clone(m.GetSignature()), bytes.Clone(m.GetKey()))
		str(m.GetTopic())
	}
	ctl := rpc.GetControl()
	for _, c := range ctl.GetIhave() {
		str(c.GetTopicID())
		str(c.GetMessageIDs()...)
	}
	for _, c := range ctl.GetIwant() {
		str(c.GetMessageIDs()...)
	}
	for _, c := range ctl.GetIdontwant() {
		str(c.GetMessageIDs()...)
	}
	for _, c := range ctl.GetGraft() {
		str(c.GetTopicID())
	}
	for _, c := range ctl.GetPrune() {
		str(c.GetTopicID())
		for _, p := range c.GetPeers() {
			out = append(out, bytes.Clone(p.GetPeerID()), bytes.Clone(p.GetSignedPeerRecord()))
		}
	}
	if p := rpc.GetPartial(); p != nil {
		str(p.GetTopicID())
		out = append(out, bytes.Clone(p.GetGroupID()), bytes.Clone(p.GetPartialMessage()), bytes.Clone(p.GetPartsMetadata()))
	}
	return out
}

// newTapEavesdropper starts an eavesdropper on loopback subscribed to the
// topics of rooms, with gossipsub's settings as the mesh has them.
func newTapEavesdropper(t *testing.T, rooms ...string) *tapEavesdropper {
	t.Helper()
	e := &tapEavesdropper{
		key: testkit.Key(t), topics: make(map[string]*pubsub.Topic),
		msgs: make(map[string][][]byte), ids: make(map[protocol.ID]bool), seen: make(map[string]map[int]bool),
	}
	lk, err := lcrypto.UnmarshalEd25519PrivateKey(e.key.Ed25519())
	if err != nil {
		t.Fatal(err)
	}
	if e.h, err = libp2p.New(libp2p.Identity(lk), libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"), libp2p.DisableMetrics()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		for _, s := range e.subs {
			s.Cancel()
		}
		for _, tp := range e.topics {
			tp.Close()
		}
		cancel()
		e.h.Close()
	})
	// A node asks its room's peers for what they have (catch-up sync, and
	// the confirmation of its own messages): keep what it sends, answer
	// nothing.
	e.h.SetStreamHandler(tapSyncProto, func(s network.Stream) {
		s.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(io.LimitReader(s, 1<<20))
		e.mu.Lock()
		e.wire = append(e.wire, b)
		e.mu.Unlock()
		s.Reset()
	})
	msgID := func(m *pb.Message) string {
		id := protocol.IDOf(m.Data)
		return string(id[:]) + strings.TrimPrefix(m.GetTopic(), tapTopicPrefix)
	}
	if e.ps, err = pubsub.NewGossipSub(ctx, e.h,
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(msgID), pubsub.WithFloodPublish(true),
		pubsub.WithPeerOutboundQueueSize(4096), pubsub.WithRawTracer(tapTracer{e})); err != nil {
		t.Fatal(err)
	}
	for _, room := range rooms {
		tp, err := e.ps.Join(tapTopicPrefix + room)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := tp.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		e.topics[room], e.subs = tp, append(e.subs, sub)
		// Gossipsub delivers to the subscription too: read it, so that
		// nothing backs up (the tracer has the bytes already).
		go func() {
			for {
				if _, err := sub.Next(ctx); err != nil {
					return
				}
			}
		}()
	}
	return e
}

// listen connects the eavesdropper to c's node and waits until each of
// c's rooms among rooms has it as a peer on the topic, so that c's
// messages and those c forwards come to it.
func (e *tapEavesdropper) listen(t *testing.T, c *Client, rooms ...string) {
	t.Helper()
	ai, err := peer.AddrInfoFromString(c.Node().Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), tapPatience)
	defer cancel()
	if err := e.h.Connect(ctx, *ai); err != nil {
		t.Fatal(err)
	}
	for _, room := range rooms {
		tapWait(t, "the eavesdropper and "+c.Nick()+" to see each other in "+room, func() bool {
			c.mu.Lock()
			r := c.rooms[room]
			c.mu.Unlock()
			return r != nil && r.mesh != nil && tapHasPeer(r.mesh.Peers(), e.h.ID()) && tapHasPeer(e.topics[room].ListPeers(), ai.ID)
		})
	}
}

// tapHasPeer reports whether p is among ps.
func tapHasPeer(ps []peer.ID, p peer.ID) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// tapSync asks c's node, from host h, for the whole history of room by
// the mesh's catch-up sync, and returns the answer's bytes (a frame's
// body) or the error that ended the exchange.
func tapSync(t *testing.T, h host.Host, c *Client, room string) ([]byte, error) {
	t.Helper()
	req, err := (&protocol.SyncRequest{Room: room, Since: 0, Until: time.Now().Add(time.Minute).UnixMilli(), Limit: protocol.MaxSyncPage}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), tapPatience)
	defer cancel()
	s, err := h.NewStream(ctx, c.Node().ID(), tapSyncProto)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(tapPatience))
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(req)))
	if _, err := s.Write(append(frame, req...)); err != nil {
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		return nil, err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > protocol.MaxSyncResponse {
		return nil, errors.New("sync answer over the limit")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(s, body); err != nil {
		return nil, err
	}
	return body, nil
}

// captured returns what the eavesdropper received: every byte, and the
// envelopes of room.
func (e *tapEavesdropper) captured(room string) (wire [][]byte, envs [][]byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([][]byte(nil), e.wire...), append([][]byte(nil), e.msgs[room]...)
}

func (e *tapEavesdropper) sawKind(room string, k protocol.Kind) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[room][int(k)]
}

// tapHolds reports whether any captured byte string holds marker.
func tapHolds(wire [][]byte, marker string) bool {
	for _, b := range wire {
		if bytes.Contains(b, []byte(marker)) {
			return true
		}
	}
	return false
}

// tapCheckCapture asserts what the eavesdropper captured of private room
// room: envelopes of every end-to-end kind, not one byte of any marker,
// no copy of any sender key for it (and one for each member), and,
// handed to a key ring of its own as a member's client would hand them,
// not one sealed message that opens.
func tapCheckCapture(t *testing.T, e *tapEavesdropper, room string, members []identity.PublicKey, markers ...string) {
	t.Helper()
	wire, envs := e.captured(room)
	for _, m := range markers {
		if tapHolds(wire, m) {
			t.Errorf("the capture holds the plaintext %s", m)
		}
	}
	var sealed, keys, packages int
	var parsed []*protocol.Envelope
	var raws [][]byte
	for _, raw := range envs {
		env, err := protocol.Parse(raw)
		if err != nil {
			t.Errorf("a captured message of %s is no envelope: %v", room, err)
			continue
		}
		if env.Room != room {
			continue
		}
		parsed, raws = append(parsed, env), append(raws, raw)
		switch env.Kind {
		case protocol.KindText, protocol.KindPost:
			t.Errorf("a %s envelope in private room %s, in the clear", env.Kind, room)
		case protocol.KindSealed:
			sealed++
			if _, err := protocol.ParseSealed(env.Payload); err != nil {
				t.Errorf("captured sealed message: %v", err)
			}
		case protocol.KindKeyPackage:
			packages++
		case protocol.KindKeys:
			keys++
			k, err := protocol.ParseKeys(env.Payload)
			if err != nil {
				t.Errorf("captured sender key: %v", err)
				continue
			}
			if _, ok, none := k.For(e.key.Public()); ok || !none {
				t.Errorf("a sender key of %s holds a copy for the eavesdropper, or may (copy %v, surely none %v)",
					env.Sender.ShortFingerprint(), ok, none)
			}
			for _, m := range members {
				if m == env.Sender {
					continue
				}
				if _, ok, _ := k.For(m); !ok {
					t.Errorf("the sender key of %s holds no copy for member %s", env.Sender.ShortFingerprint(), m.ShortFingerprint())
				}
			}
		}
	}
	if sealed == 0 || keys == 0 || packages == 0 {
		t.Fatalf("the capture of %s has %d sealed messages, %d sender keys and %d key packages (of %d envelopes): it saw too little to prove anything",
			room, sealed, keys, packages, len(parsed))
	}
	t.Logf("%s: captured %d wire records; %d envelopes: %d sealed, %d sender keys, %d key packages",
		room, len(wire), len(parsed), sealed, keys, packages)
	tapRingOpensNothing(t, e, parsed, raws)
}

// tapRingOpensNothing feeds the captured envelopes to the eavesdropper's
// own key ring, as the merger feeds a member's (packages and sender keys
// first, then sealed messages), and fails t if any sealed one opens.
func tapRingOpensNothing(t *testing.T, e *tapEavesdropper, parsed []*protocol.Envelope, raws [][]byte) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "eavesdropper.db"), store.Search())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ring, err := keyring.Open(ctx, st, e.key, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ring.Current(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := st.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Rollback()
	op := ring.Opener(b)
	for pass := range 2 {
		for i, env := range parsed {
			if (env.Kind == protocol.KindSealed) != (pass == 1) {
				continue
			}
			changed, err := op.Receive(ctx, env, protocol.IDOf(raws[i]), raws[i])
			if err != nil {
				t.Fatalf("the eavesdropper's ring: %s envelope: %v", env.Kind, err)
			}
			for _, s := range changed {
				if s.Status == store.SealedOpened {
					t.Errorf("the eavesdropper opened sealed message %s: %q", s.ID, s.Body)
				}
			}
		}
	}
	if err := op.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	for i, env := range parsed {
		if env.Kind != protocol.KindSealed {
			continue
		}
		s, ok, err := st.Sealed(ctx, protocol.IDOf(raws[i]))
		if err != nil || !ok || s.Status == store.SealedOpened {
			t.Errorf("the eavesdropper's record of sealed message %s: %+v, %v, %v; want one not opened", protocol.IDOf(raws[i]), s, ok, err)
		}
	}
}

// TestPrivateRoomCaptureHoldsNoPlaintext: Alice makes a private room on
// the mesh, Bob joins it with her invite, and they talk. An eavesdropper
// on the room's topic, connected to Alice, records every byte gossipsub
// hands it and every sync request sent to it; its own sync request for
// the room is refused. Alice and Bob read each other in the clear; the
// capture holds the room's traffic (key packages, sender keys, sealed
// messages) and no marker; the eavesdropper's key ring opens nothing.
// A public room's message, which is not sealed, is found in the same
// capture: the search sees plaintext when there is some.
func TestPrivateRoomCaptureHoldsNoPlaintext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*tapPatience)
	defer cancel()
	alice := tapOpen(t, "alice")
	bob := tapOpen(t, "bob", alice.Node().Addrs()[0])
	aliceKey, bobKey := alice.Key().Public(), bob.Key().Public()

	room, _, err := alice.CreateRoom(ctx, "garden")
	if err != nil {
		t.Fatal(err)
	}
	const public = "tap-lobby"
	if err := alice.Join(ctx, public); err != nil {
		t.Fatal(err)
	}
	eve := newTapEavesdropper(t, room, public)
	eve.listen(t, alice, room, public)

	code, err := alice.Invite(ctx, room, 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := bob.JoinCode(ctx, code.String()); err != nil || got != room {
		t.Fatalf("bob: JoinCode = %s, %v; want %s", got, err, room)
	}

	// Bob speaks first, sealed to Alice's package (announced when she made
	// the room), then Alice, once his package has come.
	fromBob, fromAlice, again := tapMarker(t), tapMarker(t), tapMarker(t)
	tapKnowsPackage(t, bob, aliceKey)
	if _, err := bob.Send(ctx, room, "hello alice "+fromBob); err != nil {
		t.Fatalf("bob: send: %v", err)
	}
	if m := tapAwaitText(t, alice, room, fromBob); m.Sender != bobKey || m.Text != "hello alice "+fromBob {
		t.Fatalf("alice got %+v", m)
	}
	tapKnowsPackage(t, alice, bobKey)
	if _, err := alice.Send(ctx, room, "hello bob "+fromAlice); err != nil {
		t.Fatalf("alice: send: %v", err)
	}
	if m := tapAwaitText(t, bob, room, fromAlice); m.Sender != aliceKey || m.Text != "hello bob "+fromAlice {
		t.Fatalf("bob got %+v", m)
	}
	if _, err := bob.Send(ctx, room, "and again "+again); err != nil {
		t.Fatalf("bob: send: %v", err)
	}
	tapAwaitText(t, alice, room, again)
	markers := []string{fromBob, fromAlice, again}

	// The public control: its text crosses the mesh as it is.
	inClear := tapMarker(t)
	if _, err := alice.Post(ctx, public, "for everyone "+inClear); err != nil {
		t.Fatal(err)
	}
	tapWait(t, "the eavesdropper to capture the public message", func() bool {
		wire, _ := eve.captured(public)
		return tapHolds(wire, inClear)
	})
	// Everything of the private room Alice sent or forwarded: her own
	// messages, and Bob's, which she forwards on the room's topic.
	tapCapturedSealed(t, eve, room, aliceKey)

	// The eavesdropper asks Alice's node for the room's history: refused
	// (a reset, no answer). Bob, a member, asking the same way, gets it:
	// the request is a good one, and the answer crosses the mesh too.
	tapOutsiderSyncRefused(t, eve, alice, room)
	body, err := tapSync(t, bob.Node().Host(), alice, room)
	if err != nil {
		t.Fatalf("a member's sync request for the private room: %v", err)
	}
	resp, err := protocol.ParseSyncResponse(body)
	if err != nil || len(resp.Envelopes) == 0 {
		t.Fatalf("a member's sync answer: %v, %v", resp, err)
	}
	if tapHolds([][]byte{body}, fromBob) || tapHolds([][]byte{body}, fromAlice) || tapHolds([][]byte{body}, again) {
		t.Error("the sync answer to a member holds a marker in the clear")
	}

	tapCheckCapture(t, eve, room, []identity.PublicKey{aliceKey, bobKey}, markers...)
	for _, k := range []protocol.Kind{protocol.KindMember, protocol.KindKeyPackage, protocol.KindKeys, protocol.KindSealed} {
		if !eve.sawKind(room, k) {
			t.Errorf("the capture has no %s envelope of the room", k)
		}
	}
}

// TestDirectMessageCaptureHoldsNoPlaintext: the same on a direct room.
// Bob has joined the direct room's topic (his client names it from the
// two keys); Alice starts it with Direct, and they talk. The eavesdropper
// on the topic, connected to Alice, captures no marker and opens nothing.
func TestDirectMessageCaptureHoldsNoPlaintext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*tapPatience)
	defer cancel()
	alice := tapOpen(t, "alice")
	bob := tapOpen(t, "bob", alice.Node().Addrs()[0])
	aliceKey, bobKey := alice.Key().Public(), bob.Key().Public()

	dm := protocol.DirectRoomID(aliceKey, bobKey)
	if err := bob.Join(ctx, dm); err != nil {
		t.Fatal(err)
	}
	if err := alice.Join(ctx, dm); err != nil {
		t.Fatal(err)
	}
	eve := newTapEavesdropper(t, dm)
	eve.listen(t, alice, dm)
	tapWait(t, "bob to see alice in the direct room", func() bool { return bob.MeshPeers(dm) > 0 })

	room, err := alice.Direct(ctx, bobKey)
	if err != nil || room != dm {
		t.Fatalf("alice: Direct = %s, %v; want %s", room, err, dm)
	}
	tapMember(t, bob, dm)

	fromBob, fromAlice := tapMarker(t), tapMarker(t)
	tapKnowsPackage(t, bob, aliceKey)
	if _, err := bob.Send(ctx, dm, "hi alice "+fromBob); err != nil {
		t.Fatalf("bob: send: %v", err)
	}
	if m := tapAwaitText(t, alice, dm, fromBob); m.Sender != bobKey {
		t.Fatalf("alice got %+v", m)
	}
	tapKnowsPackage(t, alice, bobKey)
	if _, err := alice.Send(ctx, dm, "hi bob "+fromAlice); err != nil {
		t.Fatalf("alice: send: %v", err)
	}
	if m := tapAwaitText(t, bob, dm, fromAlice); m.Sender != aliceKey {
		t.Fatalf("bob got %+v", m)
	}
	tapCapturedSealed(t, eve, dm, aliceKey)
	tapOutsiderSyncRefused(t, eve, alice, dm)
	tapCheckCapture(t, eve, dm, []identity.PublicKey{aliceKey, bobKey}, fromBob, fromAlice)
}

// tapOutsiderSyncRefused has the eavesdropper ask alice's node for the
// room's history, and fails t if it is answered (the answer goes into
// the capture, to be searched too).
func tapOutsiderSyncRefused(t *testing.T, eve *tapEavesdropper, alice *Client, room string) {
	t.Helper()
	body, err := tapSync(t, eve.h, alice, room)
	if err != nil {
		t.Logf("the eavesdropper's sync request was refused: %v", err)
		return
	}
	t.Errorf("an outsider's sync request for %s was answered: %d bytes", room, len(body))
	eve.mu.Lock()
	eve.wire = append(eve.wire, body)
	eve.mu.Unlock()
}

// tapCapturedSealed waits until the eavesdropper has captured a sealed
// message of from, the peer it is connected to. That peer publishes its
// own to every peer on the topic; another member's reach the
// eavesdropper only if the peer passes them on by gossip, which it does
// not for what it got by catch-up sync: not something to wait for.
func tapCapturedSealed(t *testing.T, eve *tapEavesdropper, room string, from identity.PublicKey) {
	t.Helper()
	tapWait(t, "the eavesdropper to capture a sealed message", func() bool {
		_, envs := eve.captured(room)
		for _, raw := range envs {
			if env, err := protocol.Parse(raw); err == nil && env.Kind == protocol.KindSealed && env.Sender == from {
				return true
			}
		}
		return false
	})
}

// tapLog is a log destination safe for the session's goroutines.
type tapLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *tapLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *tapLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tapOffline opens an offline session of a new home, logging its
// warnings to logs.
func tapOffline(t *testing.T, nick string, logs *tapLog) *Client {
	t.Helper()
	h, err := OpenHome(filepath.Join(t.TempDir(), nick), HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Nick = nick
	c, err := Open(context.Background(), h, Options{Config: cfg, Offline: true, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tapRing opens a key ring of key's, in a store of its own.
func tapRing(t *testing.T, key identity.PrivateKey) *keyring.Ring {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "ring.db"), store.Search())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ring, err := keyring.Open(context.Background(), st, key, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

// TestSealedBeforeItsKeyOverMesh: gossip does not keep a sender's
// order (the validator runs on several goroutines), so a sealed message
// may arrive before the sender key it is sealed with. It is shown
// waiting; when the key comes, it opens (an OpenedEvent), and the
// session goes on showing what comes after. Arrivals are handed to the
// merger as the mesh path hands them: the node stores the envelope, the
// arrival carries no raw bytes.
func TestSealedBeforeItsKeyOverMesh(t *testing.T) {
	ctx := context.Background()
	var logs tapLog
	bob := tapOffline(t, "bob", &logs)
	alice := testkit.Key(t)
	ring := tapRing(t, alice)
	pkg, _, err := bob.ring.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rawPkg, err := pkg.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ring.LearnRaw(ctx, rawPkg); err != nil {
		t.Fatal(err)
	}
	var nonce [protocol.NonceSize]byte
	rand.Read(nonce[:])
	room := protocol.PrivateRoomID(alice.Public(), nonce)
	head := protocol.ID{1} // the merger does not judge what the mesh accepted
	ep, err := ring.Prepare(ctx, room, head, []identity.PublicKey{alice.Public(), bob.Key().Public()})
	if err != nil || ep == nil || len(ep.Keys) != 1 {
		t.Fatalf("prepare: %v, %v", ep, err)
	}
	var prev protocol.ID
	envelope := func(seq uint64, kind protocol.Kind, fill func(*protocol.Envelope) error) (*protocol.Envelope, protocol.ID) {
		t.Helper()
		e := &protocol.Envelope{Kind: kind, Room: room, Sender: alice.Public(), Seq: seq, Prev: prev, Lamport: seq, Time: time.Now().UnixMilli()}
		if err := fill(e); err != nil {
			t.Fatal(err)
		}
		// The mesh node stores what it accepted; the client is handed
		// the envelope without its bytes.
		id := storeAsMesh(t, bob, alice, e)
		prev = id
		return e, id
	}
	keysEnv, keysID := envelope(1, protocol.KindKeys, func(e *protocol.Envelope) (err error) {
		e.Payload, err = ep.Keys[0].MarshalBinary()
		return err
	})
	if err := ep.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	marker := tapMarker(t)
	sealedEnv, sealedID := envelope(2, protocol.KindSealed, func(e *protocol.Envelope) error {
		return ring.Seal(ctx, e, head, &protocol.Text{Nick: "alice", Body: marker})
	})

	bob.in <- arrival{room: room, id: sealedID, env: sealedEnv, via: ViaMesh}
	if m := next(t, bob); m.ID != sealedID || !m.Waiting {
		t.Fatalf("the sealed message before its key: %+v; want it shown waiting", m)
	}
	bob.in <- arrival{room: room, id: keysID, env: keysEnv, via: ViaMesh}
	opened := false
	for timeout := time.After(tapPatience); !opened; {
		select {
		case e := <-bob.Events():
			if o, ok := e.(*OpenedEvent); ok && o.ID == sealedID {
				if o.Text != marker {
					t.Fatalf("opened %+v; want the text %q", o.Message, marker)
				}
				opened = true
			}
		case <-timeout:
			s, ok, err := bob.st.Sealed(ctx, sealedID)
			t.Fatalf("the sealed message did not open %s after its key came; the store has it as %+v, %v, %v; the session logged:\n%s",
				tapPatience, s, ok, err, logs.String())
		}
	}
	// The merger goes on: a later message is shown.
	author := &testkit.Author{Key: testkit.Key(t), Room: "after"}
	raw, id := author.Next(t, "after the key")
	e, _ := protocol.Parse(raw)
	bob.in <- arrival{room: "after", id: id, env: e, raw: raw, via: ViaRelay}
	if m := next(t, bob); m.ID != id {
		t.Fatalf("shown %+v after the key", m)
	}
}

// TestSealLearnsStoredPackages: a session that closes before its merger
// takes what the mesh node stored (the node commits it at Leave), or that
// crashed, leaves a member's key-package announcement stored and
// unshown. A later session, even a silent one (chat send) that never
// shows it, must find the package before it seals: a message sealed
// without it would not reach that member, who would be told it was not
// sealed to them.
func TestSealLearnsStoredPackages(t *testing.T) {
	ctx := context.Background()
	for _, silent := range []bool{true, false} {
		t.Run(map[bool]string{true: "silent", false: "shown"}[silent], func(t *testing.T) {
			h, err := OpenHome(filepath.Join(t.TempDir(), "bob"), HomeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cfg := DefaultConfig()
			cfg.Nick = "bob"
			var logs tapLog
			bob, err := Open(ctx, h, Options{Config: cfg, Offline: true, Silent: silent,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { bob.Close() })

			alice := testkit.Key(t)
			var device [keypackage.DeviceSize]byte
			rand.Read(device[:])
			pkg, _, err := keypackage.New(alice, device, time.Now(), time.Now().Add(keypackage.Lifetime))
			if err != nil {
				t.Fatal(err)
			}
			var nonce [protocol.NonceSize]byte
			rand.Read(nonce[:])
			room := protocol.PrivateRoomID(alice.Public(), nonce)
			payload, err := (&protocol.Announce{Head: protocol.ID{1}, Package: pkg}).MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			// As the mesh node's writer stores it: noted unshown, and never
			// handed to this session's merger.
			storeAsMesh(t, bob, alice, &protocol.Envelope{Kind: protocol.KindKeyPackage, Room: room, Sender: alice.Public(), Seq: 1,
				Lamport: 2, Time: time.Now().UnixMilli(), Payload: payload})
			if _, ok, err := bob.ring.PackageOf(ctx, alice.Public()); err != nil || ok {
				t.Fatalf("before the join: alice's package known %v, %v", ok, err)
			}
			if err := bob.Join(ctx, room); err != nil {
				t.Fatal(err)
			}
			// What signSealed asks before it seals.
			bob.askPackages(ctx, room, []identity.PublicKey{bob.Key().Public(), alice.Public()})
			got, ok, err := bob.ring.PackageOf(ctx, alice.Public())
			if err != nil || !ok || got.ID() != pkg.ID() {
				t.Fatalf("before sealing: alice's package %v, %v; want the stored one; the session logged:\n%s", ok, err, logs.String())
			}
		})
	}
}

// storeAsMesh signs e with key and stores it in c's store as c's mesh
// node does with what it accepted, and returns its ID.
func storeAsMesh(t *testing.T, c *Client, key identity.PrivateKey, e *protocol.Envelope) protocol.ID {
	t.Helper()
	id, err := e.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.st.Put(context.Background(), store.Record{ID: id, Env: e, Raw: raw, Via: ViaMesh, Received: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return id
}

package mesh

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// preload puts envelopes in a peer's store before it starts.
func preload(t testing.TB, dir string, raws ...[]byte) {
	t.Helper()
	st, err := store.Open(filepath.Join(dir, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, raw := range raws {
		env, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(context.Background(), storeRecord(env, raw)); err != nil {
			t.Fatal(err)
		}
	}
}

// bySync starts a node in room (and in the others) that gets raw, an
// envelope of room, by sync from a peer that has it stored, so that its
// gossipsub has not seen the ID. It returns the node and what it shows in
// room.
func bySync(t *testing.T, raw []byte, room string, others ...string) (*Node, *Room, *receiver) {
	t.Helper()
	holder := newSpec(t, 1)
	preload(t, holder.dir, raw)
	h := start(t, holder)
	join(t, h, room)
	v := start(t, newSpec(t, 0))
	r := join(t, v, room)
	rc := receive(t, r)
	for _, o := range others {
		receive(t, join(t, v, o))
	}
	connect(t, v, h)
	id := protocol.IDOf(raw)
	waitFor(t, "the envelope, by sync", func() bool { return rc.has(id) })
	return v, r, rc
}

// A valid envelope of room a sent on room b's topic is the sender's fault,
// even when the node knows the envelope: it is rejected, not passed on to
// room b's peers (who would then penalise this node).
func TestKnownEnvelopeOnAnotherTopicRejected(t *testing.T) {
	raw, _ := envelope(t, testKey(t, 7), "a", 1, protocol.ID{}, "for room a")
	v, _, _ := bySync(t, raw, "a", "b")

	attacker := newRawPeer(t, "b", v)
	attacker.publish(t, raw)
	waitFor(t, "the attacker to be graylisted", func() bool {
		s, ok := v.Score(attacker.h.ID())
		return ok && s < GraylistThreshold
	})
	if got := validated(v, "accept", "known"); got != 0 {
		t.Fatalf("the copy on the wrong topic was passed on (%v)", got)
	}
}

// A copy of an envelope the node has already, dated longer ago than
// seenTTL, is not passed on (passOn): by then gossipsub everywhere has
// forgotten its ID, and anyone who kept a copy could make the room forward
// it again every seenTTL while its timestamp is live. It is not shown
// again, nor checked again, and the peer that sent it is not penalised
// (an honest peer may forward a copy late). A recent copy is passed on
// (TestReplayIsIgnoredLiveAndAfterRestart), and so is the node's own
// publish of it, whatever its date (a held private post released, an
// outbox's resend).
func TestKnownEnvelopePastSeenTTLNotPassedOn(t *testing.T) {
	signed := time.Now().Add(-2 * seenTTL) // inside the skew, past seenTTL
	raw, id := envelopeAt(t, testKey(t, 7), "a", 1, protocol.ID{}, "signed a minute ago", signed)
	v, room, rc := bySync(t, raw, "a")

	checked := v.Verifications()
	replayer := newRawPeer(t, "a", v)
	replayer.publish(t, raw)
	waitFor(t, "the copy to be judged late", func() bool { return validated(v, "ignore", "late") == 1 })
	if got := validated(v, "accept", "known"); got != 0 {
		t.Fatalf("a copy dated %v ago was passed on (%v)", time.Since(signed).Round(time.Second), got)
	}
	if got := v.Verifications(); got != checked {
		t.Fatalf("the late copy was verified again: %d verifications, want %d", got, checked)
	}

	env, err := protocol.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := room.PublishChecked(context.Background(), env, id, raw); err != nil {
		t.Fatalf("the node's own publish of an envelope it has, dated %v ago: %v", time.Since(signed).Round(time.Second), err)
	}
	if got := validated(v, "accept", "known"); got != 1 {
		t.Fatalf("the node's own publish was not passed on (%v known)", got)
	}
	rc.mu.Lock()
	shown := rc.got[id]
	rc.mu.Unlock()
	if shown != 1 {
		t.Fatalf("the envelope was shown %d times, want 1", shown)
	}
	if s, ok := v.Score(replayer.h.ID()); ok && s < 0 {
		t.Fatalf("a late copy cost the peer that sent it %v", s)
	}
}

// A late copy of an envelope the node stored before it started (so its
// seen set does not know it, only the replay guard) is checked once: the
// verdict is remembered as accepted, so that a copy after gossipsub has let
// the ID go again (seenTTL) costs no second signature check.
func TestLateCopyCheckedOnce(t *testing.T) {
	raw, id := envelopeAt(t, testKey(t, 7), "a", 1, protocol.ID{}, "signed a minute ago", time.Now().Add(-2*seenTTL))
	spec := newSpec(t, 0)
	preload(t, spec.dir, raw)
	v := start(t, spec)
	join(t, v, "a")

	newRawPeer(t, "a", v).publish(t, raw)
	waitFor(t, "the copy to be judged late", func() bool { return validated(v, "ignore", "late") == 1 })
	if got := v.seen.known(id); got != accepted {
		t.Fatalf("after a late copy the seen set holds verdict %d for the envelope, want accepted (%d)", got, accepted)
	}
}

// A forger cannot buy its way out of the graylist with good behaviour in
// other rooms: one forgery puts it under the threshold however well it
// scored before.
func TestGraylistHoldsAcrossManyRooms(t *testing.T) {
	v := start(t, newSpec(t, 0))
	names := []string{"r1", "r2", "r3"}
	var recs []*receiver
	var peers []*rawPeer
	for _, r := range names {
		recs = append(recs, receive(t, join(t, v, r)))
	}
	// One raw host in all three rooms.
	first := newRawPeer(t, names[0], v)
	peers = append(peers, first)
	for _, r := range names[1:] {
		tp, err := first.ps.Join(topicName(r))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp.Subscribe(); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, &rawPeer{h: first.h, ps: first.ps, topic: tp})
	}
	k := testKey(t, 9)
	for i, r := range names {
		waitFor(t, "the victim in "+r, func() bool { return len(peers[i].topic.ListPeers()) > 0 })
		for seq := uint64(1); seq <= 50; seq++ {
			raw, _ := envelope(t, k, r, seq, protocol.ID{}, "good")
			peers[i].publish(t, raw)
		}
	}
	for i := range names {
		waitFor(t, "the good messages", func() bool { return recs[i].count() == 50 })
	}

	waitFor(t, "a positive score", func() bool { s, _ := v.Score(first.h.ID()); return s > 0 })

	raw, _ := envelope(t, testKey(t, 5), "r1", 1, protocol.ID{}, "forged")
	raw[len(raw)-70] ^= 1
	peers[0].publish(t, raw)
	waitFor(t, "the forger to be graylisted", func() bool {
		s, _ := v.Score(first.h.ID())
		return s < GraylistThreshold
	})
}

// A second envelope under a (sender, room, number) below the replay window,
// served by sync, is evidence of equivocation, never a message.
func TestBelowWindowEquivocationBySyncNotShown(t *testing.T) {
	k := testKey(t, 7)
	at := time.Now().Add(-time.Minute)
	e1, _ := envelopeAt(t, k, "general", 1, protocol.ID{}, "original", at)
	later, _ := envelopeAt(t, k, "general", 5000, protocol.ID{}, "later", at)
	fork, forkID := envelopeAt(t, k, "general", 1, protocol.ID{}, "rewritten", at)
	vSpec, rSpec := newSpec(t, 0), newSpec(t, 1)
	preload(t, vSpec.dir, e1, later)
	preload(t, rSpec.dir, fork)
	v := start(t, vSpec)
	r := start(t, rSpec)
	rc := receive(t, join(t, v, "general"))
	join(t, r, "general")
	connect(t, v, r)
	waitFor(t, "v to sync with r", func() bool {
		return testutil.ToFloat64(v.metrics.syncs.WithLabelValues("made", "ok")) >= 1
	})
	if rc.has(forkID) {
		t.Fatal("the second envelope under number 1 was shown")
	}
	if got, ok, _ := v.store.AtSeq(context.Background(), k.Public(), "general", 1); !ok || got == forkID {
		t.Fatal("the stored envelope under number 1 changed")
	}
}

// gossipsub forgets a connected peer's rooms when its own stream to the
// peer dies while the connection stays up (a peer killed and back on the
// same address; here: the peer resets our stream), and the peer has no
// reason to send them again. The node notices and reconnects, so that
// the room is whole again: we see the peer and our messages reach it.
func TestLostRoomsAreRepaired(t *testing.T) {
	a, b := start(t, newSpec(t, 0)), start(t, newSpec(t, 1))
	ra, rb := join(t, a, "den"), join(t, b, "den")
	rcB := receive(t, rb)
	connect(t, a, b)
	inRoom := func(r *Room, p peer.ID) func() bool {
		return func() bool { return slices.Contains(r.Peers(), p) }
	}
	waitFor(t, "each to see the other in the room", func() bool {
		return inRoom(ra, b.ID())() && inRoom(rb, a.ID())()
	})

	// b resets the gossipsub stream that a opened to it: a's writer
	// dies while the connection lives.
	reset := 0
	for _, c := range b.Host().Network().ConnsToPeer(a.ID()) {
		for _, s := range c.GetStreams() {
			if s.Stat().Direction == network.DirInbound && strings.HasPrefix(string(s.Protocol()), "/meshsub/") {
				s.Reset()
				reset++
			}
		}
	}
	if reset == 0 {
		t.Fatal("no gossipsub stream from a to b to reset")
	}
	// a forgets that b is in the room, then (repaired) learns it again.
	for _, joined := range []bool{false, true} {
		awaitChange(t, ra, PeerChange{Peer: b.ID(), Joined: joined})
	}
	id := publish(t, ra, "after the repair")
	waitFor(t, "b to get a's message", func() bool { return rcB.has(id) })
	if got := testutil.ToFloat64(a.metrics.repairs); got < 1 {
		t.Errorf("repairs counted %v, want at least 1", got)
	}
}

// awaitChange waits, within patience, for the room to report want.
func awaitChange(t testing.TB, r *Room, want PeerChange) {
	t.Helper()
	deadline := time.After(patience)
	for {
		select {
		case c := <-r.PeerChanges():
			if c == want {
				return
			}
		case <-deadline:
			t.Fatalf("room %s: no %+v in %v", r.Name(), want, patience)
		}
	}
}

// One sender's messages of one millisecond come by sync in the order
// they were sent, not in the order of their IDs (a sync page is in
// (time, ID) order, its cursor's): a person who was away reads them as
// written.
func TestSyncedMessagesOfOneMillisecondInSendOrder(t *testing.T) {
	k := testKey(t, 7)
	at := time.Now().Add(-time.Minute)
	var raws [][]byte
	var ids []protocol.ID
	prev := protocol.ID{}
	for seq := uint64(1); seq <= 8; seq++ {
		raw, id := envelopeAt(t, k, "den", seq, prev, fmt.Sprintf("line %d", seq), at)
		raws, ids, prev = append(raws, raw), append(ids, id), id
	}
	if slices.IsSortedFunc(ids, func(a, b protocol.ID) int { return bytes.Compare(a[:], b[:]) }) {
		t.Fatal("the IDs happen to be in send order: the test proves nothing")
	}
	holder := newSpec(t, 1)
	preload(t, holder.dir, raws...)
	h := start(t, holder)
	join(t, h, "den")
	v := start(t, newSpec(t, 0))
	rc := receive(t, join(t, v, "den"))
	connect(t, v, h)
	waitFor(t, "the eight messages, by sync", func() bool { return rc.has(ids...) })
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for i, m := range rc.msgs {
		if m.ID != ids[i] {
			t.Fatalf("message %d shown is seq %d, want seq %d", i, m.Env.Seq, i+1)
		}
	}
}

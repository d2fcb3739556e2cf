package mesh

import (
	"context"
	"testing"

	"github.com/parleychat/parley/protocol"
)

// TestOldPeerIgnoresPrivateRoom: a peer from before private rooms (it
// knows only text envelopes) in a private room's topic beside two new
// ones. The new peers talk as if it were not there; the old one ignores
// every member-list change and post (reason kind, which costs the peers
// that forwarded them nothing), so it shows, stores and forwards none of
// them, and neither side penalises the other. Its public rooms carry on.
func TestOldPeerIgnoresPrivateRoom(t *testing.T) {
	keyA := testKey(t, 0)
	room, nonce := newPrivateRoom(t, keyA)
	a := startPrivate(t, peerSpec{key: keyA, dir: t.TempDir()}, room)
	b := startPrivate(t, newSpec(t, 1), room)
	old := start(t, newSpec(t, 2))
	old.legacy = true
	oldRoom := join(t, old, room)
	oldRC := receive(t, oldRoom)
	connect(t, a.n, b.n)
	connect(t, a.n, old)
	connect(t, b.n, old)
	waitMesh(t, []*Room{a.room, b.room, oldRoom})

	a.create(t, nonce)
	a.changeMembers(t, protocol.OpAdd, b.who.key.Public())
	waitFor(t, "B to learn it was added", func() bool { return b.log().IsMember(b.who.key.Public()) })
	post := b.post(t, "the old peer cannot tell")
	waitFor(t, "A to get B's post", func() bool { return a.rc.has(post) })
	waitFor(t, "the old peer to ignore the room's envelopes", func() bool { return validated(old, "ignore", "kind") >= 3 })

	if n := oldRC.count(); n != 0 {
		t.Errorf("the old peer delivered %d envelopes of the private room", n)
	}
	recs, err := old.store.History(context.Background(), room, 10)
	if err != nil || len(recs) != 0 {
		t.Errorf("the old peer stored %d envelopes of the private room (%v)", len(recs), err)
	}
	for _, n := range []*Node{a.n, b.n} {
		if s := n.pens.score(old.ID()); s < 0 {
			t.Errorf("a new peer penalised the old one: %v", s)
		}
	}
	if s := old.pens.score(a.n.ID()) + old.pens.score(b.n.ID()); s < 0 {
		t.Errorf("the old peer penalised the new ones: %v", s)
	}

	// A public room between the old peer and a new one still works.
	pubA, pubOld := join(t, a.n, "lobby"), join(t, old, "lobby")
	rcOld := receive(t, pubOld)
	receive(t, pubA)
	waitMesh(t, []*Room{pubA, pubOld})
	id := publish(t, pubA, "hello, old friend")
	waitFor(t, "the old peer to get a public message", func() bool { return rcOld.has(id) })
}

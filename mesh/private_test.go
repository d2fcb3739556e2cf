package mesh

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/roster"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Tests of private rooms on the mesh: the member list decides who may
// post (validator), who gets history (sync), and what waits for a change
// not known yet.

// privAuthor signs one key's envelopes in one private room, as the client
// core would: member-list changes and posts share the sender's chain
// (sequence numbers, Prev) and Lamport clock in the room.
type privAuthor struct {
	key  identity.PrivateKey
	room string

	mu      sync.Mutex
	chain   testkit.Author // sequence numbers and hash chain
	lamport uint64
}

// sign signs the next envelope of kind with payload, its Lamport clock
// above both the author's and floor, stamped at.
func (a *privAuthor) sign(t testing.TB, kind protocol.Kind, payload []byte, floor uint64, at time.Time) ([]byte, protocol.ID) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lamport = max(a.lamport, floor) + 1
	a.chain.Key, a.chain.Room = a.key, a.room
	raw, id, _ := a.chain.Sign(t, kind, payload, a.lamport, at)
	return raw, id
}

// change signs a member-list change naming parents, whose highest clock
// is top.
func (a *privAuthor) change(t testing.TB, c *protocol.Change, parents []protocol.ID, top uint64) ([]byte, protocol.ID) {
	t.Helper()
	c.Parents = parents
	payload, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return a.sign(t, protocol.KindMember, payload, top, time.Now())
}

// post signs a post naming member-list head head, stamped at.
func (a *privAuthor) post(t testing.TB, head protocol.ID, text string, at time.Time) ([]byte, protocol.ID) {
	t.Helper()
	payload, err := (&protocol.Post{Head: head, Text: protocol.Text{Nick: "tester", Body: text}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return a.sign(t, protocol.KindPost, payload, 0, at)
}

// newPrivateRoom returns the ID of a new private room of creator, and the
// nonce that makes it.
func newPrivateRoom(t testing.TB, creator identity.PrivateKey) (string, [protocol.NonceSize]byte) {
	t.Helper()
	var nonce [protocol.NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		t.Fatal(err)
	}
	return protocol.PrivateRoomID(creator.Public(), nonce), nonce
}

// privPeer is a node in a private room, with its own book of member
// lists (Config.Rosters) so that the test can read its log.
type privPeer struct {
	n    *Node
	book *roster.Book
	room *Room
	rc   *receiver
	who  *privAuthor
}

func startPrivate(t testing.TB, spec peerSpec, room string, tweak ...func(*Config)) *privPeer {
	t.Helper()
	book := roster.NewBook()
	n := start(t, spec, append([]func(*Config){func(c *Config) { c.Rosters = book }}, tweak...)...)
	r := join(t, n, room)
	return &privPeer{n: n, book: book, room: r, rc: receive(t, r), who: &privAuthor{key: spec.key, room: room}}
}

// log returns the node's member list of the room: the one in the book
// the node was given.
func (p *privPeer) log() *roster.Log {
	l, _, err := p.book.Open(p.room.name, func() ([]roster.Stored, error) { return nil, nil })
	if err != nil || l != p.room.priv.log {
		panic(fmt.Sprintf("the node's member list is not the book's: %v", err))
	}
	return l
}

// publishRaw publishes bytes through the node, its validator included.
func (p *privPeer) publishRaw(t testing.TB, raw []byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	return p.room.Publish(ctx, raw)
}

// create signs and publishes the room's first change.
func (p *privPeer) create(t testing.TB, nonce [protocol.NonceSize]byte) protocol.ID {
	t.Helper()
	raw, id := p.who.change(t, &protocol.Change{Op: protocol.OpCreate, Nonce: nonce, Name: "test room"}, nil, 0)
	if err := p.publishRaw(t, raw); err != nil {
		t.Fatalf("publish the room's creation: %v", err)
	}
	return id
}

// changeMembers signs a change naming the heads of the node's log, and
// publishes it.
func (p *privPeer) changeMembers(t testing.TB, op protocol.Op, target identity.PublicKey) protocol.ID {
	t.Helper()
	parents, top := p.log().Parents()
	raw, id := p.who.change(t, &protocol.Change{Op: op, Target: target}, parents, top)
	if err := p.publishRaw(t, raw); err != nil {
		t.Fatalf("publish %s of %s: %v", op, target.ShortFingerprint(), err)
	}
	return id
}

// post signs a post naming the head of the node's log, and publishes it.
func (p *privPeer) post(t testing.TB, text string) protocol.ID {
	t.Helper()
	raw, id := p.who.post(t, p.log().Head(), text, time.Now())
	if err := p.publishRaw(t, raw); err != nil {
		t.Fatalf("publish post %q: %v", text, err)
	}
	return id
}

// bypassValidator makes the node publish whatever it is given, as a
// modified client would: its own validator would refuse an outsider's
// post. The node no longer takes anything from the room either.
func bypassValidator(t testing.TB, n *Node, room string) {
	t.Helper()
	if err := n.ps.UnregisterTopicValidator(topicName(room)); err != nil {
		t.Fatal(err)
	}
}

// publishUnchecked publishes raw on the room's topic of a node whose
// validator is bypassed.
func publishUnchecked(t testing.TB, r *Room, raw []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := r.topic.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
}

// validateOn runs the node's topic validator on raw as if peer from had
// forwarded it on room's topic.
func validateOn(n *Node, room string, raw []byte, from peer.ID) pubsub.ValidationResult {
	topic := topicName(room)
	return n.validate(context.Background(), from, &pubsub.Message{Message: &pb.Message{Data: raw, Topic: &topic}, ReceivedFrom: from})
}

func syncs(n *Node, side, result string) float64 {
	return testutil.ToFloat64(n.metrics.syncs.WithLabelValues(side, result))
}

// underRace reports whether the test binary was built with -race.
func underRace() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// TestPrivateRoomMembersOnly: admin A creates a private room and adds B;
// C only knows the room's ID. B's post reaches A. C's post (valid
// signature, a head everybody knows) is rejected as "member" by A and B,
// who penalise C, and reaches nobody. C's catch-up sync with A is
// refused (not-member); B's works.
func TestPrivateRoomMembersOnly(t *testing.T) {
	keyA := testKey(t, 0)
	room, nonce := newPrivateRoom(t, keyA)
	a := startPrivate(t, peerSpec{key: keyA, dir: t.TempDir()}, room)
	b := startPrivate(t, newSpec(t, 1), room)
	c := startPrivate(t, newSpec(t, 2), room)
	connect(t, a.n, b.n)
	connect(t, b.n, c.n)
	connect(t, c.n, a.n)
	waitMesh(t, []*Room{a.room, b.room, c.room})

	created := a.create(t, nonce)
	added := a.changeMembers(t, protocol.OpAdd, b.who.key.Public())
	waitFor(t, "B to learn it was added", func() bool { return b.log().IsMember(b.who.key.Public()) })
	if !a.log().IsAdmin(keyA.Public()) || a.log().Len() != 2 {
		t.Fatalf("A's log: %d changes, A admin %v", a.log().Len(), a.log().IsAdmin(keyA.Public()))
	}
	if a.log().Head() != added || b.log().Head() != added {
		t.Fatalf("heads: A %s, B %s; want the add %s (after the creation %s)", a.log().Head(), b.log().Head(), added, created)
	}

	fromB := b.post(t, "hello from a member")
	waitFor(t, "A to get B's post", func() bool { return a.rc.has(fromB) })

	// C, not a member, cannot post through its own node: its validator
	// refuses.
	if err := c.publishRaw(t, mustPost(t, c.who, a.log().Head(), "let me in")); err == nil {
		t.Fatal("an outsider's node published its own post")
	}
	// A modified client publishes it anyway: a valid signature, a head
	// every peer knows.
	bypassValidator(t, c.n, room)
	raw, fromC := c.who.post(t, a.log().Head(), "I am not a member", time.Now())
	publishUnchecked(t, c.room, raw)
	waitFor(t, "A and B to reject C's post as not a member's", func() bool {
		return validated(a.n, "reject", "member") >= 1 && validated(b.n, "reject", "member") >= 1
	})
	if a.rc.has(fromC) || b.rc.has(fromC) {
		t.Fatal("an outsider's post was delivered")
	}
	for _, p := range []*privPeer{a, b} {
		if s := p.n.pens.score(c.n.ID()); s >= 0 {
			t.Errorf("%s did not penalise the outsider (score %v)", p.n.ID(), s)
		}
	}

	// Catch-up sync: history is for members only.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	now := time.Now()
	since, until := now.Add(-time.Hour).UnixMilli(), now.Add(time.Minute).UnixMilli()
	if got, err := c.room.SyncFrom(ctx, a.n.ID(), since, until); err == nil || got != 0 {
		t.Errorf("outsider's SyncFrom(A) = %d, %v; want 0 and an error", got, err)
	}
	if syncs(a.n, "served", "not-member") < 1 {
		t.Error("A did not count a not-member sync refusal")
	}
	if _, err := b.room.SyncFrom(ctx, a.n.ID(), since, until); err != nil {
		t.Errorf("member's SyncFrom(A): %v", err)
	}
	waitFor(t, "B to store the room's creation", func() bool { ok, _ := b.n.store.Has(ctx, created); return ok })
	for _, p := range []*privPeer{a, b} {
		if ok, _ := p.n.store.Has(ctx, fromC); ok {
			t.Errorf("%s stored the outsider's post", p.n.ID())
		}
	}
	// Reading is not refused live: a peer in the topic gets members'
	// posts by gossip even though sync refuses it history (C's own
	// validator admits B's post: B is a member). Logged, not asserted.
	c.rc.mu.Lock()
	t.Logf("outsider C was delivered %d envelopes live before its validator was bypassed (B's post among them: %v)", len(c.rc.msgs), c.rc.got[fromB] > 0)
	c.rc.mu.Unlock()
}

func mustPost(t testing.TB, a *privAuthor, head protocol.ID, text string) []byte {
	raw, _ := a.post(t, head, text, time.Now())
	return raw
}

// TestPostWaitsForItsHead: a post naming a member-list change the node
// has not seen is held ("waiting", ignored without penalty), not dropped,
// and delivered once the change arrives: by the validator, or by sync.
func TestPostWaitsForItsHead(t *testing.T) {
	t.Run("validator", func(t *testing.T) {
		keyA, keyB := testKey(t, 0), testKey(t, 1)
		room, nonce := newPrivateRoom(t, keyA)
		d := startPrivate(t, newSpec(t, 3), room)
		admin := &privAuthor{key: keyA, room: room}
		member := &privAuthor{key: keyB, room: room}

		create, createID := admin.change(t, &protocol.Change{Op: protocol.OpCreate, Nonce: nonce, Name: "held"}, nil, 0)
		add, addID := admin.change(t, &protocol.Change{Op: protocol.OpAdd, Target: keyB.Public()}, []protocol.ID{createID}, 1)
		post, postID := member.post(t, addID, "made under the add", time.Now())

		// The post first: it names the add, unknown.
		if r := validateOn(d.n, room, post, ""); r != pubsub.ValidationIgnore || validated(d.n, "ignore", "waiting") != 1 {
			t.Fatalf("post before its head: %v, %v waiting", r, validated(d.n, "ignore", "waiting"))
		}
		// The add next: it names the creation, unknown; it waits too.
		if r := validateOn(d.n, room, add, ""); r != pubsub.ValidationIgnore || validated(d.n, "ignore", "waiting") != 2 {
			t.Fatalf("add before its parent: %v, %v waiting", r, validated(d.n, "ignore", "waiting"))
		}
		if d.log().Len() != 0 {
			t.Fatalf("log holds %d changes before the creation", d.log().Len())
		}
		// The creation: accepted, and it releases the add, which releases
		// the post.
		if r := validateOn(d.n, room, create, ""); r != pubsub.ValidationAccept {
			t.Fatalf("creation: %v", r)
		}
		waitFor(t, "the held add and post to be delivered", func() bool { return d.rc.has(addID, postID) })
		d.rc.exactlyOnce(t, "D", []protocol.ID{addID, postID})
		if !d.log().IsMember(keyB.Public()) || d.log().Head() != addID {
			t.Fatalf("log after release: B member %v, head %s", d.log().IsMember(keyB.Public()), d.log().Head())
		}
		if got := validated(d.n, "reject", "member"); got != 0 {
			t.Fatalf("%v member rejects", got)
		}
	})

	// D gets a post live from a peer that cannot serve sync, before it
	// knows anything of the room; the changes come later, by the catch-up
	// sync with the admin, and the post is delivered then.
	t.Run("sync", func(t *testing.T) {
		keyA, keyB, keyD := testKey(t, 0), testKey(t, 1), testKey(t, 3)
		room, nonce := newPrivateRoom(t, keyA)
		a := startPrivate(t, peerSpec{key: keyA, dir: t.TempDir()}, room)
		a.create(t, nonce)
		a.changeMembers(t, protocol.OpAdd, keyB.Public())
		head := a.changeMembers(t, protocol.OpAdd, keyD.Public())
		waitFor(t, "A to store its changes", func() bool { ok, _ := a.n.store.Has(context.Background(), head); return ok })

		d := startPrivate(t, peerSpec{key: keyD, dir: t.TempDir()}, room)
		member := &privAuthor{key: keyB, room: room}
		post, postID := member.post(t, head, "made under D's add", time.Now())
		rp := newRawPeer(t, room, d.n)
		rp.publish(t, post)
		waitFor(t, "D to hold the post", func() bool { return validated(d.n, "ignore", "waiting") >= 1 })
		if d.rc.has(postID) || d.log().Len() != 0 {
			t.Fatal("the post was delivered before its head was known")
		}

		connect(t, d.n, a.n)
		waitFor(t, "the post to be delivered after the sync", func() bool { return d.rc.has(postID) })
		if !d.log().IsMember(keyD.Public()) || d.log().Len() != 3 {
			t.Fatalf("D's log after sync: %d changes, D member %v", d.log().Len(), d.log().IsMember(keyD.Public()))
		}
		d.rc.mu.Lock()
		defer d.rc.mu.Unlock()
		if n := d.rc.got[postID]; n != 1 {
			t.Errorf("post delivered %d times, want once", n)
		}
	})
}

// TestRemovedMemberRefused: after A removes B, B's node refuses to
// publish B's posts, and a post B makes anyway (after the removal, by its
// signed time) is refused by A, whichever head it names, and neither
// shown nor forwarded; without a penalty, since the peer that forwards it
// may not have heard of the removal yet (roster.ErrRemoved). A no longer
// serves B history. A post B made before the removal, naming the head it
// had then, is still admitted (the rule of the package roster comment).
func TestRemovedMemberRefused(t *testing.T) {
	keyA := testKey(t, 0)
	room, nonce := newPrivateRoom(t, keyA)
	a := startPrivate(t, peerSpec{key: keyA, dir: t.TempDir()}, room)
	b := startPrivate(t, newSpec(t, 1), room)
	connect(t, a.n, b.n)
	waitMesh(t, []*Room{a.room, b.room})

	a.create(t, nonce)
	added := a.changeMembers(t, protocol.OpAdd, b.who.key.Public())
	waitFor(t, "B to learn it was added", func() bool { return b.log().IsMember(b.who.key.Public()) })
	before := b.post(t, "while a member")
	waitFor(t, "A to get B's post", func() bool { return a.rc.has(before) })

	// B signs a post under the add, dated before the removal, and keeps it.
	early, _ := b.who.post(t, added, "made before the removal", time.Now())
	time.Sleep(5 * time.Millisecond) // the removal's time is after the post's

	removed := a.changeMembers(t, protocol.OpRemove, b.who.key.Public())
	waitFor(t, "B to learn it was removed", func() bool { return b.log().Has(removed) })
	if a.log().IsMember(b.who.key.Public()) || b.log().IsMember(b.who.key.Public()) {
		t.Fatal("B is still a member after its removal")
	}
	time.Sleep(5 * time.Millisecond)

	// B's own node refuses B's post now.
	if err := b.publishRaw(t, mustPost(t, b.who, b.log().Head(), "still here?")); err == nil {
		t.Fatal("a removed member's node published its post")
	}

	// Made after the removal, naming the add (as if B had not seen the
	// removal) or the removal itself: refused by A as removed.
	afterOld, afterOldID := b.who.post(t, added, "after the removal, old head", time.Now())
	afterNew, afterNewID := b.who.post(t, removed, "after the removal, new head", time.Now())
	for name, raw := range map[string][]byte{"old head": afterOld, "new head": afterNew} {
		before := validated(a.n, "ignore", "removed")
		if r := validateOn(a.n, room, raw, ""); r != pubsub.ValidationIgnore || validated(a.n, "ignore", "removed") != before+1 {
			t.Errorf("post after the removal naming the %s: %v, want ignored as removed", name, r)
		}
	}
	// And live, from B's modified client.
	bypassValidator(t, b.n, room)
	live, liveID := b.who.post(t, removed, "after the removal, live", time.Now())
	refusals := validated(a.n, "ignore", "removed")
	publishUnchecked(t, b.room, live)
	waitFor(t, "A to refuse B's live post", func() bool { return validated(a.n, "ignore", "removed") > refusals })
	for _, id := range []protocol.ID{afterOldID, afterNewID, liveID} {
		if a.rc.has(id) {
			t.Errorf("A delivered B's post %s made after the removal", id)
		}
	}

	// Made before the removal, under the head of then: admitted.
	if r := validateOn(a.n, room, early, ""); r != pubsub.ValidationAccept {
		t.Errorf("a post made before the removal: %v, want accept", r)
	}

	// History: refused to the removed member.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	now := time.Now()
	if got, err := b.room.SyncFrom(ctx, a.n.ID(), now.Add(-time.Hour).UnixMilli(), now.Add(time.Minute).UnixMilli()); err == nil || got != 0 {
		t.Errorf("removed member's SyncFrom(A) = %d, %v; want 0 and an error", got, err)
	}
}

// outsider is a peer that publishes whatever it is given on a room's
// topic, its libp2p identity the key that signs its posts (a non-member
// running modified software): a raw gossipsub peer, with no store and no
// validator, that drains what it receives.
type outsider struct {
	*rawPeer
	who *privAuthor
}

func newOutsider(t testing.TB, key identity.PrivateKey, room string) *outsider {
	t.Helper()
	rp := newRawPeerAs(t, &key, room)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { // drain
		for {
			if _, err := rp.sub.Next(ctx); err != nil {
				return
			}
		}
	}()
	return &outsider{rawPeer: rp, who: &privAuthor{key: key, room: room}}
}

func (o *outsider) inTopicWith(n *Node) bool {
	for _, p := range o.topic.ListPeers() {
		if p == n.ID() {
			return true
		}
	}
	return false
}

// TestPrivateRoomFlood: members of a private room post while many
// outsiders in the room's topic flood it with posts that are valid but
// for their senders not being members. Every member gets every member's
// post, exactly once, and no outsider's post.
func TestPrivateRoomFlood(t *testing.T) {
	// 20 member nodes; 60 outsiders, each a peer of its own (a libp2p
	// host and gossipsub, no store), linked to 2 members; each member
	// posts 3 times, each outsider 40. The same size under -race (about
	// 15 s on two cores, once held changes are forwarded).
	const members, outsiders, posts, flood, links = 20, 60, 3, 40, 2
	begin := time.Now()
	keyA := testKey(t, 0)
	room, nonce := newPrivateRoom(t, keyA)
	peers := make([]*privPeer, members)
	nodes := make([]*Node, members)
	rooms := make([]*Room, members)
	for i := range peers {
		spec := newSpec(t, i)
		// No anti-entropy: gossip and the syncs it triggers must bring
		// the list, however slow the machine; the bound below is for a
		// list that never comes, not for speed.
		peers[i] = startPrivate(t, spec, room, func(c *Config) { c.AntiEntropy = -1 })
		nodes[i], rooms[i] = peers[i].n, peers[i].room
	}
	sparse(t, nodes)
	waitMesh(t, rooms)
	outs := make([]*outsider, outsiders)
	outsiderKeys := map[identity.PublicKey]bool{}
	for i := range outs {
		outs[i] = newOutsider(t, testKey(t, 1000+i), room)
		outsiderKeys[outs[i].who.key.Public()] = true
		for k := range links {
			outs[i].connect(t, nodes[(i*links+k)%members])
		}
	}
	waitFor(t, "every outsider to be in the topic with its members", func() bool {
		for i, o := range outs {
			for k := range links {
				if !o.inTopicWith(nodes[(i*links+k)%members]) {
					return false
				}
			}
		}
		return true
	})
	setup := time.Since(begin)

	// The admin creates the room and adds every other member.
	a := peers[0]
	a.create(t, nonce)
	for _, p := range peers[1:] {
		a.changeMembers(t, protocol.OpAdd, p.who.key.Public())
	}
	head := a.log().Head()
	// Gossip brings the list in a few seconds (under a second without
	// -race), with no periodic anti-entropy sync to complete it.
	listStart := time.Now()
	for {
		all := true
		for _, p := range peers {
			if p.log().Len() != members || !p.log().IsMember(p.who.key.Public()) {
				all = false
				break
			}
		}
		if all {
			break
		}
		if time.Since(listStart) > 2*time.Minute {
			dumpPrivate(t, peers)
			t.Fatalf("after %v, not every member knows the whole member list (%d changes)", time.Since(listStart).Round(time.Millisecond), members)
		}
		time.Sleep(20 * time.Millisecond)
	}
	listed := time.Since(listStart)

	// Outsiders flood (valid signatures, a head every member knows) while
	// members post.
	floodStart := time.Now()
	var (
		wg      sync.WaitGroup
		flooded atomic.Int64
		failed  atomic.Int64
	)
	for _, o := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			for i := range flood {
				raw, _ := o.who.post(t, head, fmt.Sprintf("spam %d", i), time.Now())
				if err := o.topic.Publish(ctx, raw); err != nil {
					failed.Add(1)
					continue
				}
				flooded.Add(1)
			}
		}()
	}
	sent := make([][]protocol.ID, members)
	for round := range posts {
		for i, p := range peers {
			sent[i] = append(sent[i], p.post(t, fmt.Sprintf("post %d of member %d", round, i)))
		}
	}
	wg.Wait()
	floodTime := time.Since(floodStart)

	for i, p := range peers {
		var want []protocol.ID
		for j := range peers {
			if j != i {
				want = append(want, sent[j]...)
			}
		}
		waitFor(t, fmt.Sprintf("member %d to get all %d member posts", i, len(want)), func() bool { return p.rc.has(want...) })
	}
	delivered := time.Since(floodStart)
	// Let what is still in flight land before looking for outsiders' posts.
	time.Sleep(time.Second)

	var rejects, waiting float64
	for i, p := range peers {
		rejects += validated(p.n, "reject", "member")
		waiting += validated(p.n, "ignore", "waiting")
		p.rc.mu.Lock()
		postsOf := map[protocol.ID]int{}
		for _, m := range p.rc.msgs {
			if outsiderKeys[m.Env.Sender] {
				t.Errorf("member %d got outsider %s's %s", i, m.Env.Sender.ShortFingerprint(), m.Env.Kind)
			}
			if m.Env.Kind == protocol.KindPost {
				postsOf[m.ID]++
			}
		}
		for j := range peers {
			if j == i {
				continue
			}
			for _, id := range sent[j] {
				if postsOf[id] != 1 {
					t.Errorf("member %d got member %d's post %s %d times", i, j, id, postsOf[id])
				}
			}
		}
		if got, want := len(postsOf), (members-1)*posts; got != want {
			t.Errorf("member %d got %d posts, want %d", i, got, want)
		}
		p.rc.mu.Unlock()
		if d := p.n.Dropped(); d != 0 {
			t.Logf("member %d dropped %d messages", i, d)
		}
	}
	if rejects < 1 {
		t.Error("no member rejected an outsider's post: the flood did not reach the members")
	}
	t.Logf("race detector %v; %d members, %d outsiders (each linked to %d members), %d member posts, %d outsider posts published (%d failed to publish)",
		underRace(), members, outsiders, links, members*posts, flooded.Load(), failed.Load())
	t.Logf("member rejects %v, waiting %v; setup %v, member list known everywhere %v after the creation, flood published in %v, every member post delivered %v after the flood began, total %v",
		rejects, waiting, setup.Round(time.Millisecond), listed.Round(time.Millisecond), floodTime.Round(time.Millisecond), delivered.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
}

// dumpPrivate logs what each peer's member list and counters say.
func dumpPrivate(t testing.TB, peers []*privPeer) {
	t.Helper()
	for i, p := range peers {
		p.room.priv.mu.Lock()
		held := p.room.priv.waiting.Len()
		p.room.priv.mu.Unlock()
		t.Logf("peer %d: %d changes, member %v, held %d; waiting %v, accepted %v, member rejects %v; syncs made ok %v error %v bad %v; served ok %v not-member %v; dropped %d",
			i, p.log().Len(), p.log().IsMember(p.who.key.Public()), held,
			validated(p.n, "ignore", "waiting"), validated(p.n, "accept", ""), validated(p.n, "reject", "member"),
			syncs(p.n, "made", "ok"), syncs(p.n, "made", "error"), syncs(p.n, "made", "bad-peer"),
			syncs(p.n, "served", "ok"), syncs(p.n, "served", "not-member"), p.n.Dropped())
	}
}

// The tests below each show a defect found while writing the ones above.

// TestPrivateReleasedEnvelopeIsForwarded: a change that reaches a node
// before its parent is held, then admitted when the parent comes; the
// node must pass it on then, or the peers behind it never get it by
// gossip. A line: R (publishes the admin's changes, child before
// parent) - B - C. C gets the parent through B; the child, held at B,
// must follow within seconds (not at the next anti-entropy sync, a
// minute later).
func TestPrivateReleasedEnvelopeIsForwarded(t *testing.T) {
	keyA, keyB, keyC := testKey(t, 0), testKey(t, 1), testKey(t, 2)
	room, nonce := newPrivateRoom(t, keyA)
	b := startPrivate(t, peerSpec{key: keyB, dir: t.TempDir()}, room)
	c := startPrivate(t, peerSpec{key: keyC, dir: t.TempDir()}, room)
	connect(t, b.n, c.n)
	waitMesh(t, []*Room{b.room, c.room})
	r := newRawPeer(t, room, b.n)
	// The syncs B and C ask of each other when they meet are refused (the
	// room has no members yet), after their retries: wait for them to end,
	// so that C gets nothing by sync but what it asks for later.
	waitFor(t, "the first syncs to be refused", func() bool {
		return syncs(b.n, "made", "error") >= 1 && syncs(c.n, "made", "error") >= 1
	})

	admin := &privAuthor{key: keyA, room: room}
	create, createID := admin.change(t, &protocol.Change{Op: protocol.OpCreate, Nonce: nonce, Name: "line"}, nil, 0)
	addB, addBID := admin.change(t, &protocol.Change{Op: protocol.OpAdd, Target: keyB.Public()}, []protocol.ID{createID}, 1)
	addC, addCID := admin.change(t, &protocol.Change{Op: protocol.OpAdd, Target: keyC.Public()}, []protocol.ID{addBID}, 2)

	r.publish(t, create)
	waitFor(t, "C to get the creation through B", func() bool { return c.log().Has(createID) })
	r.publish(t, addC) // before its parent: B holds it
	waitFor(t, "B to hold the add of C", func() bool { return validated(b.n, "ignore", "waiting") >= 1 })
	r.publish(t, addB)
	waitFor(t, "B to admit both adds", func() bool { return b.log().Has(addBID) && b.log().Has(addCID) })
	waitFor(t, "C to get the add of B", func() bool { return c.log().Has(addBID) })

	deadline := time.Now().Add(patience)
	for !c.log().Has(addCID) {
		if time.Now().After(deadline) {
			t.Fatalf("C never got the change B held and then admitted: B delivered it to itself but did not forward it (C has %d of 3 changes)", c.log().Len())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPrivateRemovalRaceNoPenalty: the removal of B has reached N, not
// yet M. B, not knowing, posts under the head it has. M admits the post
// and forwards it, as any honest peer would; N must refuse it without
// penalising M (Ignore, not Reject): the validator's own rule is that
// Reject is for what no honest peer forwards.
func TestPrivateRemovalRaceNoPenalty(t *testing.T) {
	keyA, keyB := testKey(t, 0), testKey(t, 1)
	room, nonce := newPrivateRoom(t, keyA)
	m := startPrivate(t, newSpec(t, 2), room)
	n := startPrivate(t, newSpec(t, 3), room)
	admin := &privAuthor{key: keyA, room: room}
	member := &privAuthor{key: keyB, room: room}

	create, createID := admin.change(t, &protocol.Change{Op: protocol.OpCreate, Nonce: nonce, Name: "race"}, nil, 0)
	add, addID := admin.change(t, &protocol.Change{Op: protocol.OpAdd, Target: keyB.Public()}, []protocol.ID{createID}, 1)
	time.Sleep(2 * time.Millisecond)
	remove, _ := admin.change(t, &protocol.Change{Op: protocol.OpRemove, Target: keyB.Public()}, []protocol.ID{addID}, 2)
	time.Sleep(2 * time.Millisecond)
	for _, raw := range [][]byte{create, add} {
		for _, p := range []*privPeer{m, n} {
			if r := validateOn(p.n, room, raw, ""); r != pubsub.ValidationAccept {
				t.Fatalf("change: %v", r)
			}
		}
	}
	if r := validateOn(n.n, room, remove, ""); r != pubsub.ValidationAccept {
		t.Fatalf("removal at N: %v", r)
	}

	post, _ := member.post(t, addID, "I have not heard of my removal", time.Now())
	if r := validateOn(m.n, room, post, ""); r != pubsub.ValidationAccept {
		t.Fatalf("M, which has not seen the removal: %v, want accept (M forwards it)", r)
	}
	r := validateOn(n.n, room, post, m.n.ID())
	if r == pubsub.ValidationAccept {
		t.Fatal("N admitted a post made after the removal it knows")
	}
	if r == pubsub.ValidationReject || n.n.pens.score(m.n.ID()) < 0 {
		t.Errorf("N answered %s and penalised M (score %v) for forwarding what M's member list admits: "+
			"an honest peer, graylisted for an hour", resultNames[r], n.n.pens.score(m.n.ID()))
	}
}

// TestPrivateConcurrentAddNoPenalty: admins A and A2 change the list at
// once: A adds B (X), A2 renames the room (Y, a higher clock, not naming
// X). B has both; its head (the last in the order) is Y, and B's post
// names Y. N has Y but not yet X. M has both and admits the post. N must
// not reject it, penalising M, for a verdict that depends on X, which N
// does not have yet and which Y does not name.
func TestPrivateConcurrentAddNoPenalty(t *testing.T) {
	keyA, keyA2, keyB := testKey(t, 0), testKey(t, 1), testKey(t, 2)
	room, nonce := newPrivateRoom(t, keyA)
	m := startPrivate(t, newSpec(t, 3), room)
	n := startPrivate(t, newSpec(t, 4), room)
	admin := &privAuthor{key: keyA, room: room}
	admin2 := &privAuthor{key: keyA2, room: room, lamport: 10} // A2's clock is ahead
	member := &privAuthor{key: keyB, room: room}

	create, createID := admin.change(t, &protocol.Change{Op: protocol.OpCreate, Nonce: nonce, Name: "two admins"}, nil, 0)
	addA2, addA2ID := admin.change(t, &protocol.Change{Op: protocol.OpAdd, Target: keyA2.Public()}, []protocol.ID{createID}, 1)
	promote, promoteID := admin.change(t, &protocol.Change{Op: protocol.OpAdmin, Target: keyA2.Public()}, []protocol.ID{addA2ID}, 2)
	x, xID := admin.change(t, &protocol.Change{Op: protocol.OpAdd, Target: keyB.Public()}, []protocol.ID{promoteID}, 3)
	y, yID := admin2.change(t, &protocol.Change{Op: protocol.OpRename, Name: "renamed"}, []protocol.ID{promoteID}, 3)
	for _, raw := range [][]byte{create, addA2, promote, y} {
		for _, p := range []*privPeer{m, n} {
			if r := validateOn(p.n, room, raw, ""); r != pubsub.ValidationAccept {
				t.Fatalf("change: %v", r)
			}
		}
	}
	if r := validateOn(m.n, room, x, ""); r != pubsub.ValidationAccept {
		t.Fatalf("X at M: %v", r)
	}
	_ = yID

	// The member's post names the change that let it in (X), as the
	// client does (roster.Log.MemberSince), not the last change in its
	// order: a peer with Y and without X then waits for X instead of
	// judging the post by what else it happens to have.
	since, ok := m.log().MemberSince(keyB.Public())
	if !ok || since != xID {
		t.Fatalf("M: B's membership since %s (%v), want X %s", since, ok, xID)
	}
	post, postID := member.post(t, since, "added by A, while A2 renamed", time.Now())
	if r := validateOn(m.n, room, post, ""); r != pubsub.ValidationAccept {
		t.Fatalf("M, which has X: %v, want accept", r)
	}
	r := validateOn(n.n, room, post, m.n.ID())
	if r == pubsub.ValidationReject || n.n.pens.score(m.n.ID()) < 0 {
		t.Errorf("N, which has Y but not the add of the post's sender, answered %s and penalised M (score %v)",
			resultNames[r], n.n.pens.score(m.n.ID()))
	}
	// Once X arrives, the post N held is admitted and delivered: the
	// verdict depended on what N had, not on the post. (It is released
	// to the room's own goroutine, so a copy validated now may find it
	// still being judged, and be ignored as a duplicate.) A later copy,
	// by gossip say, is never a fault of the peer that sends it.
	if r := validateOn(n.n, room, x, ""); r != pubsub.ValidationAccept {
		t.Fatalf("X at N: %v", r)
	}
	waitFor(t, "N to deliver the post it held, once it has X", func() bool { return n.rc.has(postID) })
	if r := validateOn(n.n, room, post, m.n.ID()); r == pubsub.ValidationReject || n.n.pens.score(m.n.ID()) < 0 {
		t.Errorf("a copy of the post N delivered: %s, and M's score %v", resultNames[r], n.n.pens.score(m.n.ID()))
	}
}

// TestPrivateWaitingRoomNotFilledByOutsiders: an outsider posts, for
// free (ignored, no penalty), a room's worth of posts naming heads that
// do not exist. A member's post that waits for a real change must still
// be held, and delivered when the change comes.
func TestPrivateWaitingRoomNotFilledByOutsiders(t *testing.T) {
	keyA, keyB := testKey(t, 0), testKey(t, 1)
	room, nonce := newPrivateRoom(t, keyA)
	d := startPrivate(t, newSpec(t, 3), room)
	admin := &privAuthor{key: keyA, room: room}
	member := &privAuthor{key: keyB, room: room}
	spammer := &privAuthor{key: testKey(t, 9), room: room}

	create, createID := admin.change(t, &protocol.Change{Op: protocol.OpCreate, Nonce: nonce, Name: "full"}, nil, 0)
	if r := validateOn(d.n, room, create, ""); r != pubsub.ValidationAccept {
		t.Fatalf("creation: %v", r)
	}
	for i := range maxWaiting {
		var head protocol.ID
		if _, err := rand.Read(head[:]); err != nil {
			t.Fatal(err)
		}
		raw, _ := spammer.post(t, head, fmt.Sprint("junk ", i), time.Now())
		if r := validateOn(d.n, room, raw, ""); r != pubsub.ValidationIgnore {
			t.Fatalf("junk post %d: %v", i, r)
		}
	}
	add, addID := admin.change(t, &protocol.Change{Op: protocol.OpAdd, Target: keyB.Public()}, []protocol.ID{createID}, 1)
	post, postID := member.post(t, addID, "a member's post, a moment early", time.Now())
	validateOn(d.n, room, post, "")
	if r := validateOn(d.n, room, add, ""); r != pubsub.ValidationAccept {
		t.Fatalf("add: %v", r)
	}
	deadline := time.Now().Add(patience)
	for !d.rc.has(postID) {
		if time.Now().After(deadline) {
			t.Fatalf("the member's post was lost: %d junk posts from one non-member filled the room's waiting list (drops %d)",
				maxWaiting, d.n.Dropped())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPrivateHeldPostNotLostInRace: a post and the change it names,
// validated at the same moment on two of gossipsub's validation workers.
// Whichever wins, the post must be delivered: admitted at once, or held
// and released. Held, it is released while the validator may still hold
// its ID as pending in the seen-set; resume must not skip it then.
func TestPrivateHeldPostNotLostInRace(t *testing.T) {
	keyA := testKey(t, 0)
	room, nonce := newPrivateRoom(t, keyA)
	// 3,000 changes of one admin, as fast as the test makes them: far
	// over the per-identity rate, which is not what this test is about.
	d := startPrivate(t, newSpec(t, 3), room, func(c *Config) { c.SenderRate, c.SenderBurst = 1e9, 1e9 })
	admin := &privAuthor{key: keyA, room: room}
	create, createID := admin.change(t, &protocol.Change{Op: protocol.OpCreate, Nonce: nonce, Name: "race"}, nil, 0)
	if r := validateOn(d.n, room, create, ""); r != pubsub.ValidationAccept {
		t.Fatalf("creation: %v", r)
	}
	// The window is narrow: thousands of rounds, a few losses. A
	// forwarder's ID, so that holding asks it for sync as it would live.
	const rounds = 3000
	forwarder, err := PeerID(testKey(t, 8).Public())
	if err != nil {
		t.Fatal(err)
	}
	var held []protocol.ID
	parent, top := createID, uint64(1)
	poster := &privAuthor{key: testKey(t, 1), room: room}
	for i := range rounds {
		// A adds someone new; A's fellow member (the first added) posts
		// under that add at once.
		target := testKey(t, 2000+i).Public()
		if i == 0 {
			target = poster.key.Public()
		}
		change, changeID := admin.change(t, &protocol.Change{Op: protocol.OpAdd, Target: target}, []protocol.ID{parent}, top)
		parent, top = changeID, top+1
		if i == 0 {
			if r := validateOn(d.n, room, change, ""); r != pubsub.ValidationAccept {
				t.Fatalf("first add: %v", r)
			}
			continue
		}
		post, postID := poster.post(t, changeID, fmt.Sprint("race ", i), time.Now())
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			pr    pubsub.ValidationResult
		)
		wg.Add(2)
		go func() { defer wg.Done(); <-start; pr = validateOn(d.n, room, post, forwarder) }()
		go func() { defer wg.Done(); <-start; validateOn(d.n, room, change, forwarder) }()
		close(start)
		wg.Wait()
		if !d.log().Has(changeID) {
			t.Fatalf("round %d: the change was not admitted", i)
		}
		if pr == pubsub.ValidationIgnore {
			held = append(held, postID)
		}
	}
	deadline := time.Now().Add(patience)
	for !d.rc.has(held...) {
		if time.Now().After(deadline) {
			lost := 0
			for _, id := range held {
				if !d.rc.has(id) {
					lost++
				}
			}
			d.room.priv.mu.Lock()
			still := d.room.priv.waiting.Len()
			d.room.priv.mu.Unlock()
			t.Fatalf("%d of %d held posts never delivered, though their change was admitted; %d still in the waiting list", lost, len(held), still)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d of %d posts were held first, every one delivered", len(held), rounds-1)
}

// TestPrivateNewMemberGetsOldMemberList: a room made two hours ago, its
// list unchanged since. D is in the room's topic, not a member, when A
// adds D: the add names the two-hour-old creation, which D must fetch to
// resolve the list and learn it is a member. (The syncs D asked when it
// met A were refused: D was not a member then.)
func TestPrivateNewMemberGetsOldMemberList(t *testing.T) {
	keyA, keyD := testKey(t, 0), testKey(t, 3)
	room, nonce := newPrivateRoom(t, keyA)
	admin := &privAuthor{key: keyA, room: room}
	payload, err := (&protocol.Change{Op: protocol.OpCreate, Nonce: nonce, Name: "old room"}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	then := time.Now().Add(-2 * time.Hour)
	create, createID := admin.sign(t, protocol.KindMember, payload, 0, then)
	env, err := protocol.Parse(create)
	if err != nil {
		t.Fatal(err)
	}

	// A's store has the creation from two hours ago; A's list is loaded
	// from it when A joins.
	book := roster.NewBook()
	an := start(t, peerSpec{key: keyA, dir: t.TempDir()}, func(c *Config) { c.Rosters = book })
	if _, err := an.store.Put(context.Background(), store.Record{ID: createID, Env: env, Raw: create, Via: "local", Received: then}); err != nil {
		t.Fatal(err)
	}
	ar := join(t, an, room)
	a := &privPeer{n: an, book: book, room: ar, rc: receive(t, ar), who: admin}
	if !a.log().Has(createID) {
		t.Fatal("A's list was not loaded from its store")
	}

	d := startPrivate(t, peerSpec{key: keyD, dir: t.TempDir()}, room)
	connect(t, d.n, a.n)
	waitMesh(t, []*Room{a.room, d.room})
	waitFor(t, "D's first sync to be refused", func() bool { return syncs(d.n, "made", "error") >= 1 })

	addD := a.changeMembers(t, protocol.OpAdd, keyD.Public())
	waitFor(t, "D to get its add", func() bool { return validated(d.n, "ignore", "waiting") >= 1 || d.log().Has(addD) })
	deadline := time.Now().Add(patience)
	for !d.log().IsMember(keyD.Public()) {
		if time.Now().After(deadline) {
			t.Fatalf("D never learned it was added: its add names the room's creation, %v old, which no sync D asks for reaches (D has %d changes; syncs made ok %v, error %v)",
				time.Since(then).Round(time.Minute), d.log().Len(), syncs(d.n, "made", "ok"), syncs(d.n, "made", "error"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

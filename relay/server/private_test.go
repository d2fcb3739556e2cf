package server

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/roster"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
)

// privRoom is a private room as the tests see it: its ID and the member
// list the tests keep (every change made, published or not), which
// gives new changes their parents and posts their head.
type privRoom struct {
	id   string
	list *roster.Log
}

// privAuthor signs one sender's envelopes in a private room.
type privAuthor struct {
	key     identity.PrivateKey
	room    *privRoom
	chain   testkit.Author // sequence numbers and hash chain
	lamport uint64
}

// newPrivRoom makes a private room created by admin, and returns it, the
// admin's author and the creation, unpublished.
func newPrivRoom(t testing.TB, admin identity.PrivateKey) (*privRoom, *privAuthor, []byte) {
	t.Helper()
	var nonce [protocol.NonceSize]byte
	rand.Read(nonce[:])
	id := protocol.PrivateRoomID(admin.Public(), nonce)
	room := &privRoom{id: id, list: roster.NewLog(id)}
	a := room.author(admin)
	raw, _ := a.change(t, &protocol.Change{Op: protocol.OpCreate, Nonce: nonce, Name: "x"})
	return room, a, raw
}

func (r *privRoom) author(key identity.PrivateKey) *privAuthor {
	return &privAuthor{key: key, room: r}
}

// sign signs the author's next envelope, its Lamport clock at least
// lamport.
func (a *privAuthor) sign(t testing.TB, kind protocol.Kind, payload []byte, lamport uint64) ([]byte, protocol.ID, *protocol.Envelope) {
	t.Helper()
	a.lamport = max(a.lamport+1, lamport)
	a.chain.Key, a.chain.Room = a.key, a.room.id
	return a.chain.Sign(t, kind, payload, a.lamport, time.Now())
}

// change signs a change naming the list's heads (a create or a join
// names none) and adds it to the tests' list.
func (a *privAuthor) change(t testing.TB, c *protocol.Change) ([]byte, protocol.ID) {
	t.Helper()
	parents, top := a.room.list.Parents()
	if c.Op != protocol.OpCreate && c.Op != protocol.OpJoin {
		c.Parents = parents
	}
	if c.Op == protocol.OpJoin {
		top = max(top, c.Cap.Lamport)
	}
	payload, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	raw, id, env := a.sign(t, protocol.KindMember, payload, top+1)
	if _, err := a.room.list.Add(env, id); err != nil {
		t.Fatalf("the tests' list refuses a %s change: %v", c.Op, err)
	}
	return raw, id
}

// post signs a post naming head (the zero ID: the list's head now).
func (a *privAuthor) post(t testing.TB, body string, head protocol.ID) ([]byte, protocol.ID) {
	t.Helper()
	if head.IsZero() {
		head = a.room.list.Head()
	}
	payload, err := (&protocol.Post{Head: head, Text: protocol.Text{Nick: "a", Body: body}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	_, top := a.room.list.Parents()
	raw, id, _ := a.sign(t, protocol.KindPost, payload, top+1)
	return raw, id
}

func publishOK(t testing.TB, c *relay.Client, raw []byte) {
	t.Helper()
	ack, err := c.Publish(ctxT(t), raw)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Status != wire.AckStored {
		t.Fatalf("publish acknowledged with status %d, want stored", ack.Status)
	}
}

// wantNotMember fails unless err is the relay's CodeNotMember.
func wantNotMember(t testing.TB, what string, err error) {
	t.Helper()
	var re *wire.RelayError
	if !errors.As(err, &re) || re.Code != wire.CodeNotMember {
		t.Fatalf("%s: %v, want the relay's %q", what, err, wire.CodeNotMember)
	}
	t.Logf("%s: %v", what, err)
}

// subscriptionEnds waits for sub to end and returns why; it fails if an
// envelope comes first.
func subscriptionEnds(t testing.TB, sub *relay.Subscription) error {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case d, ok := <-sub.C:
			if !ok {
				return sub.Err()
			}
			if !d.Committed {
				t.Fatalf("subscription delivered %s; want it ended", d.ID)
			}
		case <-timeout:
			t.Fatal("subscription did not end in 30 s")
		}
	}
}

// publishTogether writes publishes on one new stream in one write, as a
// pipelining client does, and returns the code of each answer (CodeOK:
// an Ack).
func publishTogether(t testing.TB, r *testRelay, key identity.PrivateKey, raws ...[]byte) []wire.ErrorCode {
	t.Helper()
	ctx := ctxT(t)
	conn, err := relay.DialQUIC(ctx, r.addr, key)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	str.SetReadDeadline(time.Now().Add(30 * time.Second))
	var frames []byte
	for _, raw := range raws {
		frames = wire.AppendFrame(frames, wire.FramePublish, raw)
	}
	if _, err := str.Write(frames); err != nil {
		t.Fatal(err)
	}
	str.Close()
	fr := wire.NewReader(str, wire.MaxFrameBody)
	var codes []wire.ErrorCode
	for i, raw := range raws {
		ft, body, err := fr.Next()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		switch ft {
		case wire.FrameAck:
			ack, err := wire.ParseAck(body)
			if err != nil || ack.ID != protocol.IDOf(raw) {
				t.Fatalf("answer %d: %+v, %v", i, ack, err)
			}
			codes = append(codes, wire.CodeOK)
		case wire.FrameNack:
			nack, err := wire.ParseNack(body)
			if err != nil || nack.ID != protocol.IDOf(raw) {
				t.Fatalf("answer %d: %+v, %v", i, nack, err)
			}
			codes = append(codes, nack.Err.Code)
		default:
			t.Fatalf("answer %d: %s frame", i, ft)
		}
	}
	return codes
}

// TestPrivateRoomMembers: members post and read; others can do neither;
// a member removed can no longer post, and their subscription ends. The
// receipts of the changes check out (publishOK).
func TestPrivateRoomMembers(t *testing.T) {
	r := startRelay(t, nil)
	ctx := ctxT(t)
	admin, bob, carol := testkit.Key(t), testkit.Key(t), testkit.Key(t)
	ca, cb, cc := dial(t, r, admin), dial(t, r, bob), dial(t, r, carol)
	room, a, create := newPrivRoom(t, admin)
	b, c := room.author(bob), room.author(carol)

	publishOK(t, ca, create)
	add, _ := a.change(t, &protocol.Change{Op: protocol.OpAdd, Target: bob.Public()})
	publishOK(t, ca, add)
	hi, hiID := b.post(t, "hi", protocol.ID{})
	publishOK(t, cb, hi)

	// Carol is no member: she cannot post, read or fetch.
	raw, id := c.post(t, "let me in", protocol.ID{})
	_, err := cc.Publish(ctx, raw)
	wantNotMember(t, "a non-member's post", err)
	if _, err := r.st.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused post is stored: %v", err)
	}
	sub, err := cc.Subscribe(ctx, room.id, protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	wantNotMember(t, "a non-member's subscription", subscriptionEnds(t, sub))
	sub, err = cc.Subscribe(ctx, room.id, hiID) // not even a cursor is told
	if err != nil {
		t.Fatal(err)
	}
	wantNotMember(t, "a non-member's subscription from a cursor", subscriptionEnds(t, sub))
	_, err = cc.FetchRange(ctx, room.id, 0, time.Now().Add(time.Hour).UnixMilli(), 100)
	wantNotMember(t, "a non-member's fetch of a range", err)
	if got, err := cc.FetchIDs(ctx, hiID); err != nil || len(got) != 0 {
		t.Fatalf("a non-member fetches a post by ID: %d envelopes, %v", len(got), err)
	}
	// A made-up private room has no members.
	var nonce [protocol.NonceSize]byte
	_, err = cc.FetchRange(ctx, protocol.PrivateRoomID(carol.Public(), nonce), 0, 1, 1)
	wantNotMember(t, "a fetch of a room nobody made", err)

	// Bob is: he reads the room, history and live.
	if got, err := cb.FetchIDs(ctx, hiID); err != nil || len(got) != 1 {
		t.Fatalf("a member fetches a post by ID: %d envelopes, %v", len(got), err)
	}
	if got, err := cb.FetchRange(ctx, room.id, 0, time.Now().Add(time.Hour).UnixMilli(), 100); err != nil || len(got) != 3 {
		t.Fatalf("a member fetches the room: %d envelopes, %v", len(got), err)
	}
	bsub, err := cb.Subscribe(ctx, room.id, protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer bsub.Close()
	if got := receive(t, bsub, 3); got[2].ID != hiID {
		t.Fatalf("history ends with %s, want the post %s", got[2].ID, hiID)
	}
	select {
	case <-bsub.Live:
	case <-time.After(30 * time.Second):
		t.Fatal("no live mark")
	}
	live, liveID := a.post(t, "welcome", protocol.ID{})
	publishOK(t, ca, live)
	if got := receive(t, bsub, 1); got[0].ID != liveID {
		t.Fatalf("live delivery %s, want %s", got[0].ID, liveID)
	}

	// The admin removes Bob: his subscription ends, and he can post no
	// more, whichever head he names.
	before := room.list.Head()
	remove, _ := a.change(t, &protocol.Change{Op: protocol.OpRemove, Target: bob.Public()})
	publishOK(t, ca, remove)
	wantNotMember(t, "a removed member's live subscription", subscriptionEnds(t, bsub))
	raw, _ = b.post(t, "still here?", protocol.ID{})
	_, err = cb.Publish(ctx, raw)
	wantNotMember(t, "a removed member's post", err)
	raw, _ = b.post(t, "still here, before?", before)
	_, err = cb.Publish(ctx, raw)
	wantNotMember(t, "a removed member's post naming the head before the removal", err)
	sub, err = cb.Subscribe(ctx, room.id, protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	wantNotMember(t, "a removed member's new subscription", subscriptionEnds(t, sub))

}

// TestPrivatePostWaitsForHead: a post naming a member-list head the relay
// gets a second later, on another connection, waits for it and is
// accepted.
func TestPrivatePostWaitsForHead(t *testing.T) {
	waits := make(chan protocol.ID, 8)
	r := startRelayAt(t, t.TempDir()+"/relay.db", testkit.Key(t), nil, func(s *Server) {
		s.onMemberWait = func(_ string, missing protocol.ID) { waits <- missing }
	})
	ctx := ctxT(t)
	admin, bob := testkit.Key(t), testkit.Key(t)
	ca, cb := dial(t, r, admin), dial(t, r, bob)
	room, a, create := newPrivRoom(t, admin)
	b := room.author(bob)
	publishOK(t, ca, create)
	add, _ := a.change(t, &protocol.Change{Op: protocol.OpAdd, Target: bob.Public()})
	publishOK(t, ca, add)

	// Bob has seen a rename the relay has not.
	rename, renameID := a.change(t, &protocol.Change{Op: protocol.OpRename, Name: "y"})
	post, postID := b.post(t, "under the new name", protocol.ID{})
	type result struct {
		ack *wire.Ack
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		ack, err := cb.Publish(ctx, post)
		done <- result{ack, err}
	}()
	select {
	case missing := <-waits:
		if missing != renameID {
			t.Fatalf("the post waits for %s, want the rename %s", missing, renameID)
		}
	case res := <-done:
		t.Fatalf("the post was answered without waiting: %+v, %v", res.ack, res.err)
	case <-time.After(30 * time.Second):
		t.Fatal("the post did not wait for its head")
	}
	<-time.After(time.Second) // the rename reaches the relay a second later
	publishOK(t, ca, rename)
	select {
	case res := <-done:
		if res.err != nil || res.ack.ID != postID || res.ack.Status != wire.AckStored {
			t.Fatalf("the post that waited: %+v, %v", res.ack, res.err)
		}
		t.Logf("post accepted %s after it was sent", time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("no answer to the post after its head came")
	}
}

// TestPrivatePostHeadNeverComes: a post naming a head the relay never
// gets is refused once the bound has passed, and the stream goes on.
func TestPrivatePostHeadNeverComes(t *testing.T) {
	const bound = 1500 * time.Millisecond
	r := startRelayAt(t, t.TempDir()+"/relay.db", testkit.Key(t), nil, func(s *Server) { s.memberWait = bound })
	ctx := ctxT(t)
	admin := testkit.Key(t)
	ca := dial(t, r, admin)
	_, a, create := newPrivRoom(t, admin)
	publishOK(t, ca, create)

	var never protocol.ID
	rand.Read(never[:])
	raw, id := a.post(t, "naming a head from nowhere", never)
	start := time.Now()
	_, err := ca.Publish(ctx, raw)
	waited := time.Since(start)
	wantNotMember(t, "a post naming a head that never comes", err)
	if !strings.Contains(err.Error(), "unknown to the relay") {
		t.Errorf("the refusal does not say the head is unknown: %v", err)
	}
	if waited < bound {
		t.Errorf("refused after %s, before the bound of %s", waited, bound)
	}
	if _, err := r.st.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused post is stored: %v", err)
	}
	raw, _ = a.post(t, "naming the real head", protocol.ID{})
	publishOK(t, ca, raw)
}

// TestPrivateJoinWithInvite: a join with a valid invite works while the
// admin is away (the relay has the member list), and its post, sent in
// the same breath, is judged with it; a second join with an invite for
// one use is refused.
func TestPrivateJoinWithInvite(t *testing.T) {
	r := startRelay(t, nil)
	ctx := ctxT(t)
	admin, dave, erin := testkit.Key(t), testkit.Key(t), testkit.Key(t)
	room, a, create := newPrivRoom(t, admin)
	ca := dial(t, r, admin)
	publishOK(t, ca, create)
	code, err := roster.NewCode(rand.Reader, admin, room.id, a.lamport, time.Now().Add(time.Hour), 1)
	if err != nil {
		t.Fatal(err)
	}
	code, err = roster.ParseCode(code.String()) // as the joiner gets it
	if err != nil {
		t.Fatal(err)
	}
	ca.Close() // the admin is away

	join := func(key identity.PrivateKey) (*privAuthor, []byte, protocol.ID) {
		c, err := code.Join(key.Public())
		if err != nil {
			t.Fatal(err)
		}
		au := room.author(key)
		raw, id := au.change(t, c)
		return au, raw, id
	}
	d, djoin, _ := join(dave)
	dpost, dpostID := d.post(t, "hello, I'm new", protocol.ID{})
	if codes := publishTogether(t, r, dave, djoin, dpost); codes[0] != wire.CodeOK || codes[1] != wire.CodeOK {
		t.Fatalf("a join and a post in one go: %v", codes)
	}
	cd := dial(t, r, dave)
	dsub, err := cd.Subscribe(ctx, room.id, protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer dsub.Close()
	if got := receive(t, dsub, 3); got[2].ID != dpostID {
		t.Fatalf("the new member reads %s last, want the post %s", got[2].ID, dpostID)
	}

	// The invite is used up: Erin's join is refused, not stored, and she
	// is no member.
	before := room.list.Head()
	e, ejoin, ejoinID := join(erin)
	ce := dial(t, r, erin)
	_, err = ce.Publish(ctx, ejoin)
	wantNotMember(t, "a join with a used-up invite", err)
	if !strings.Contains(err.Error(), "used up") {
		t.Errorf("the refusal does not say the invite is used up: %v", err)
	}
	if _, err := r.st.Get(ctx, ejoinID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a join with a used-up invite is stored: %v", err)
	}
	raw, _ := e.post(t, "me too", before)
	_, err = ce.Publish(ctx, raw)
	wantNotMember(t, "a post after a join with a used-up invite", err)
	sub, err := ce.Subscribe(ctx, room.id, protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	wantNotMember(t, "a subscription after a join with a used-up invite", subscriptionEnds(t, sub))
}

// TestPrivateIngest: what comes from the mesh is judged as publishes
// are: a non-member's post, and one naming a head the relay does not
// have, are not stored; a member's is.
func TestPrivateIngest(t *testing.T) {
	r := startRelay(t, nil)
	ctx := ctxT(t)
	admin, carol := testkit.Key(t), testkit.Key(t)
	ca := dial(t, r, admin)
	room, a, create := newPrivRoom(t, admin)
	publishOK(t, ca, create)
	sub, err := ca.Subscribe(ctx, room.id, protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	receive(t, sub, 1)

	ingest := func(raw []byte) protocol.ID {
		env, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		id := protocol.IDOf(raw)
		if err := r.srv.Ingest(ctx, env, id, raw); err != nil {
			t.Fatal(err)
		}
		return id
	}
	raw, _ := room.author(carol).post(t, "from the mesh", protocol.ID{})
	outsider := ingest(raw)
	var never protocol.ID
	rand.Read(never[:])
	raw, _ = a.post(t, "naming a head from nowhere", never)
	start := time.Now()
	unknown := ingest(raw)
	if waited := time.Since(start); waited >= memberWait {
		t.Errorf("ingest waited %s for a head", waited)
	}
	// A change from the mesh is on the relay's list at once: the post
	// after it, naming it, passes. Ingest queues in order: once the
	// post is delivered, the envelopes before it would have been stored.
	raw, _ = a.change(t, &protocol.Change{Op: protocol.OpAdd, Target: carol.Public()})
	add := ingest(raw)
	raw, _ = room.author(carol).post(t, "from the mesh, as a member", protocol.ID{})
	good := ingest(raw)
	if got := receive(t, sub, 2); got[0].ID != add || got[1].ID != good {
		t.Fatalf("delivered %s, %s, want the add %s and the post %s", got[0].ID, got[1].ID, add, good)
	}
	for _, id := range []protocol.ID{outsider, unknown} {
		if _, err := r.st.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("an ingested envelope the member list refuses is stored: %v", err)
		}
	}
	// Its audit record says what it did: committed with the post, or
	// before it.
	for committed := false; !committed; {
		select {
		case d, ok := <-sub.C:
			if !ok {
				t.Fatalf("subscription ended: %v", sub.Err())
			}
			committed = d.Committed && d.ID == good
		case <-time.After(30 * time.Second):
			t.Fatal("the post was not committed in 30 s")
		}
	}
	entries, err := allEntries(ctx, r.st)
	if err != nil {
		t.Fatal(err)
	}
	want := "member: add SHA256:" + carol.Public().ShortFingerprint() + "..."
	found := false
	for _, e := range entries {
		rec, err := audit.ParseRecord(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Kind == audit.KindPublish && rec.Message == add {
			if rec.Detail != want || rec.Path != audit.PathMesh {
				t.Fatalf("the add's audit record: detail %q, path %s; want %q, mesh", rec.Detail, rec.Path, want)
			}
			found = true
		}
	}
	if !found {
		t.Fatal("no audit record of the add from the mesh")
	}
}

// TestMemberDetail: the audit text of each kind of change.
func TestMemberDetail(t *testing.T) {
	admin, bob := testkit.Key(t), testkit.Key(t)
	room, a, _ := newPrivRoom(t, admin)
	short := func(k identity.PublicKey) string { return "SHA256:" + k.ShortFingerprint() + "..." }
	code, err := roster.NewCode(rand.Reader, admin, room.id, a.lamport, time.Unix(2000000000, 0), 3)
	if err != nil {
		t.Fatal(err)
	}
	join, err := code.Join(bob.Public())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		au   *privAuthor
		c    *protocol.Change
		want string
	}{
		{a, &protocol.Change{Op: protocol.OpAdd, Target: bob.Public()}, "member: add " + short(bob.Public())},
		{a, &protocol.Change{Op: protocol.OpAdmin, Target: bob.Public()}, "member: admin " + short(bob.Public())},
		{a, &protocol.Change{Op: protocol.OpRename, Name: "tea room"}, `member: rename "tea room"`},
		{a, code.Record(nil), "member: invite " + short(code.Cap.Key) + ", 3 uses, expires 2033-05-18T03:33:20Z"},
		{room.author(bob), join, "member: join " + short(bob.Public()) + ", invite " + short(code.Cap.Key) + " of " + short(admin.Public())},
		{a, &protocol.Change{Op: protocol.OpRemove, Target: bob.Public()}, "member: remove " + short(bob.Public())},
		{a, &protocol.Change{Op: protocol.OpRevoke, Target: code.Cap.Key}, "member: revoke invite " + short(code.Cap.Key)},
	} {
		raw, _ := tc.au.change(t, tc.c)
		env, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := audit.MemberDetail(env); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.c.Op, got, tc.want)
		}
	}
}

// TestPrivateRoomReloaded: a relay started again on its store has the
// member list from the store, and a server given a Book judges with it.
func TestPrivateRoomReloaded(t *testing.T) {
	path, key := t.TempDir()+"/relay.db", testkit.Key(t)
	r := startRelayAt(t, path, key, nil)
	admin, bob := testkit.Key(t), testkit.Key(t)
	room, a, create := newPrivRoom(t, admin)
	b := room.author(bob)
	ca := dial(t, r, admin)
	publishOK(t, ca, create)
	add, _ := a.change(t, &protocol.Change{Op: protocol.OpAdd, Target: bob.Public()})
	publishOK(t, ca, add)
	ca.Close()
	r.stop()

	book := roster.NewBook()
	r = startRelayAt(t, path, key, nil, func(s *Server) {
		s.private = newPrivateRooms(book)
	})
	if r.srv.Rosters() != book {
		t.Fatal("the server does not expose the book it judges with")
	}
	cb := dial(t, r, bob)
	raw, _ := b.post(t, "after a restart", protocol.ID{})
	publishOK(t, cb, raw)
	l, existed := book.Log(room.id)
	if !existed || !l.IsMember(bob.Public()) || l.Len() != 2 {
		t.Fatalf("the book's list after a restart: existed %v, %d changes", existed, l.Len())
	}
}

// TestServerRosters: a server judges with the Book it is given, and
// makes its own without one.
func TestServerRosters(t *testing.T) {
	st, err := store.Open(t.TempDir()+"/relay.db", store.Durable())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	book, key := roster.NewBook(), testkit.Key(t)
	srv, err := NewServer(context.Background(), Options{Config: testConfig(), Key: key, Store: st, Rosters: book, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Rosters() != book {
		t.Fatal("the server does not judge with the Book it was given")
	}
	srv, err = NewServer(context.Background(), Options{Config: testConfig(), Key: key, Store: st, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Rosters() == nil || srv.Rosters() == book {
		t.Fatal("a server given no Book has none of its own")
	}
}

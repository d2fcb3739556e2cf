package server

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/roster"
	"github.com/quic-go/quic-go"
)

// newDirectRoom makes the direct room of starter and other, started by
// starter, and returns it, the starter's author and the start,
// unpublished.
func newDirectRoom(t testing.TB, starter identity.PrivateKey, other identity.PublicKey) (*privRoom, *privAuthor, []byte) {
	t.Helper()
	id := protocol.DirectRoomID(starter.Public(), other)
	room := &privRoom{id: id, list: roster.NewLog(id)}
	a := room.author(starter)
	raw, _ := a.change(t, &protocol.Change{Op: protocol.OpDirect, Target: other})
	return room, a, raw
}

// wantRooms checks the private rooms c's relay lists for c's identity.
func wantRooms(t testing.TB, what string, c *relay.Client, want ...string) {
	t.Helper()
	got, err := c.PrivateRooms(ctxT(t))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s: %q, want %q", what, got, want)
	}
}

// TestPrivateRooms: a member of two private rooms, one made with
// OpCreate and one a direct room the other person started, gets both; a
// non-member gets neither; a removed member no longer gets the room.
// After a restart the relay answers the same from its store.
func TestPrivateRooms(t *testing.T) {
	path, relayKey := filepath.Join(t.TempDir(), "relay.db"), testkit.Key(t)
	r := startRelayAt(t, path, relayKey, nil)
	alice, bob, carol, dave := testkit.Key(t), testkit.Key(t), testkit.Key(t), testkit.Key(t)
	ca, cb, cc, cd := dial(t, r, alice), dial(t, r, bob), dial(t, r, carol), dial(t, r, dave)

	wantRooms(t, "before any room", cb)

	// Alice makes a room and adds Bob.
	group, a, create := newPrivRoom(t, alice)
	publishOK(t, ca, create)
	add, _ := a.change(t, &protocol.Change{Op: protocol.OpAdd, Target: bob.Public()})
	publishOK(t, ca, add)
	// Carol starts a direct room with Bob, who never heard of it.
	direct, _, start := newDirectRoom(t, carol, bob.Public())
	publishOK(t, cc, start)

	wantRooms(t, "bob, a member of both", cb, group.id, direct.id)
	wantRooms(t, "alice, the group's creator", ca, group.id)
	wantRooms(t, "carol, who started the direct room", cc, direct.id)
	wantRooms(t, "dave, a member of neither", cd)

	// The answer pages after a room: a raw request after the first.
	conn, err := relay.DialQUIC(ctxT(t), r.addr, bob)
	if err != nil {
		t.Fatal(err)
	}
	first, second := min(group.id, direct.id), max(group.id, direct.id)
	body, err := (&wire.RoomsRequest{After: first}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if got := rawRooms(t, conn, wire.AppendFrame(nil, wire.FrameRoomsRequest, body)); !slices.Equal(got, []string{second}) {
		t.Fatalf("bob's rooms after %s: %q, want %q", first, got, second)
	}
	conn.CloseWithError(0, "")

	// Alice removes Bob: the group is no longer his.
	remove, _ := a.change(t, &protocol.Change{Op: protocol.OpRemove, Target: bob.Public()})
	publishOK(t, ca, remove)
	wantRooms(t, "bob, removed from the group", cb, direct.id)
	wantRooms(t, "alice, after removing bob", ca, group.id)

	// Started again on its store, the relay knows the same: from its
	// store, with no list opened yet.
	for _, c := range []*relay.Client{ca, cb, cc, cd} {
		c.Close()
	}
	r.stop()
	r = startRelayAt(t, path, relayKey, nil)
	ca, cb, cd = dial(t, r, alice), dial(t, r, bob), dial(t, r, dave)
	// Asking opens only the lists of the rooms that name the asker.
	wantRooms(t, "dave, after a restart", cd)
	if n := opened(r.srv); n != 0 {
		t.Fatalf("dave's request opened %d member lists, want none", n)
	}
	wantRooms(t, "bob, after a restart", cb, direct.id)
	if n := opened(r.srv); n != 2 {
		t.Fatalf("bob's request opened %d member lists, want his 2", n)
	}
	wantRooms(t, "alice, after a restart", ca, group.id)

	// Added again, after the restart: the group is Bob's again.
	again, _ := a.change(t, &protocol.Change{Op: protocol.OpAdd, Target: bob.Public()})
	publishOK(t, ca, again)
	wantRooms(t, "bob, added again", cb, group.id, direct.id)
}

// opened is how many member lists the relay has opened.
func opened(s *Server) int {
	s.private.mu.Lock()
	defer s.private.mu.Unlock()
	return len(s.private.rooms)
}

// TestPrivateRoomsIndexFromHeads: a relay whose sequencer could not keep
// every (sender, room) of its store reads the private rooms from the
// store again to build its index.
func TestPrivateRoomsIndexFromHeads(t *testing.T) {
	path, relayKey := filepath.Join(t.TempDir(), "relay.db"), testkit.Key(t)
	r := startRelayAt(t, path, relayKey, nil)
	bob, carol := testkit.Key(t), testkit.Key(t)
	cc := dial(t, r, carol)
	direct, _, start := newDirectRoom(t, carol, bob.Public())
	publishOK(t, cc, start)
	cc.Close()
	r.stop()
	r = startRelayAt(t, path, relayKey, nil, func(s *Server) { s.seq.complete = false })
	wantRooms(t, "bob, the sequencer incomplete", dial(t, r, bob), direct.id)
}

// TestPrivateRoomsFromMesh: a direct room whose start comes from the
// mesh is listed too.
func TestPrivateRoomsFromMesh(t *testing.T) {
	r := startRelay(t, nil)
	ctx := ctxT(t)
	bob, erin := testkit.Key(t), testkit.Key(t)
	direct, _, start := newDirectRoom(t, erin, bob.Public())
	env, err := protocol.Parse(start)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.srv.Ingest(ctx, env, protocol.IDOf(start), start); err != nil {
		t.Fatal(err)
	}
	wantRooms(t, "bob, after the mesh brought erin's start", dial(t, r, bob), direct.id)
}

// rawRooms sends frames on a new stream of conn and returns the rooms
// of the answer's Rooms frames, up to its End.
func rawRooms(t testing.TB, conn *quic.Conn, frames []byte) []string {
	t.Helper()
	str, err := conn.OpenStreamSync(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	str.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := str.Write(frames); err != nil {
		t.Fatal(err)
	}
	str.Close()
	fr := wire.NewReader(str, wire.MaxFrameBody)
	rooms := []string{}
	for {
		ft, body, err := fr.Next()
		if err != nil {
			t.Fatalf("rooms answer: %v", err)
		}
		switch ft {
		case wire.FrameRooms:
			m, err := wire.ParseRooms(body)
			if err != nil {
				t.Fatal(err)
			}
			rooms = append(rooms, m.Rooms...)
		case wire.FrameEnd:
			if end, err := wire.ParseEnd(body); err != nil || end.More {
				t.Fatalf("rooms answer's End: %+v, %v", end, err)
			}
			return rooms
		default:
			t.Fatalf("rooms answer: a %s frame", ft)
		}
	}
}

// TestRoomsRequestMalformed: a body that does not parse ends its stream
// with Error 1; the connection goes on.
func TestRoomsRequestMalformed(t *testing.T) {
	r := startRelay(t, nil)
	ctx := ctxT(t)
	alice := testkit.Key(t)
	conn, err := relay.DialQUIC(ctx, r.addr, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	room := protocol.DirectRoomID(alice.Public(), testkit.Key(t).Public())
	good := append([]byte{byte(len(room))}, room...)
	for _, tc := range []struct {
		what  string
		frame []byte
	}{
		{"garbage", wire.AppendFrame(nil, wire.FrameRoomsRequest, []byte{0xff, 1, 2})},
		{"a room cut short", wire.AppendFrame(nil, wire.FrameRoomsRequest, good[:10])},
		{"trailing bytes", wire.AppendFrame(nil, wire.FrameRoomsRequest, append(bytes.Clone(good), 0))},
		{"after a public room", wire.AppendFrame(nil, wire.FrameRoomsRequest, append([]byte{5}, "lobby"...))},
		{"an empty room", wire.AppendFrame(nil, wire.FrameRoomsRequest, []byte{0})},
		{"an answer frame as a request", wire.AppendFrame(nil, wire.FrameRooms, []byte{0, 0})},
	} {
		ft, body, err := rawRequest(t, conn, tc.frame)
		wantErrorFrame(t, tc.what, ft, body, err, wire.CodeBadFrame)
	}
	// The same connection still asks, and gets an answer: none, and a
	// good cursor is fine.
	if got := rawRooms(t, conn, wire.AppendFrame(nil, wire.FrameRoomsRequest, nil)); len(got) != 0 {
		t.Fatalf("alice's rooms: %q, want none", got)
	}
	if got := rawRooms(t, conn, wire.AppendFrame(nil, wire.FrameRoomsRequest, good)); len(got) != 0 {
		t.Fatalf("alice's rooms after %s: %q, want none", room, got)
	}
}

// TestPrivateRoomsPolicy: an invite-mode newcomer may not ask until
// admitted, nor may a banned identity; requests share the identity's
// publish rate.
func TestPrivateRoomsPolicy(t *testing.T) {
	r := startRelay(t, func(c *Config) {
		c.Policy.Mode = "invite"
		c.Limits.PublishRate, c.Limits.PublishBurst = 0.01, 2
	})
	ctx := ctxT(t)
	dave := testkit.Key(t)
	cd := dial(t, r, dave)
	_, err := cd.PrivateRooms(ctx)
	wantCode(t, "a newcomer's request", err, wire.CodeNotAllowed)

	if _, err := r.srv.Policy().Allow(ctx, dave.Public(), "test"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := cd.PrivateRooms(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, err = cd.PrivateRooms(ctx)
	wantCode(t, "over the rate", err, wire.CodeRateLimited)

	if err := r.srv.Policy().Ban(ctx, dave.Public(), "test"); err != nil {
		t.Fatal(err)
	}
	_, err = cd.PrivateRooms(ctx)
	wantCode(t, "a banned identity's request", err, wire.CodeBanned)
}

// TestMemberIndexWaits: a request before the index is built waits for
// it, and one after a failed build is an internal error.
func TestMemberIndexWaits(t *testing.T) {
	x := newMemberIndex()
	key := testkit.Key(t).Public()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := x.candidates(ctx, key, ""); err != context.DeadlineExceeded {
		t.Fatalf("before the build: %v, want the context's deadline", err)
	}
	x.mu.Lock()
	x.err = context.Canceled // any failure
	x.mu.Unlock()
	_, err := x.candidates(context.Background(), key, "")
	wantCode(t, "after a failed build", err, wire.CodeInternal)
	close(x.ready)
	if got, err := x.candidates(context.Background(), key, ""); err != nil || len(got) != 0 {
		t.Fatalf("once built: %q, %v", got, err)
	}
}

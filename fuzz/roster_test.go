package fuzz

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/roster"
)

// Private rooms: the member-list change and post parsers are strict like
// the rest; an invite code that parses prints as a code that parses to
// the same invite; and a member list resolves to the same members
// whatever order its changes arrive in.

var rosterNonce = [protocol.NonceSize]byte{'f', 'u', 'z', 'z'}

func rosterRoom(t testing.TB) string {
	return protocol.PrivateRoomID(testKey(t, 1).Public(), rosterNonce)
}

// exactlyOneOf fails t unless err wraps exactly one of the sentinels.
func exactlyOneOf(t *testing.T, err error, sentinels ...error) {
	t.Helper()
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("error %v wraps %d of the documented sentinels, want 1", err, n)
	}
}

// testCode returns an invite to the fuzz room by key 1 with a fixed
// secret.
func testCode(t testing.TB, secret byte, lamport uint64, uses int) *roster.Code {
	code, err := roster.NewCode(bytes.NewReader(bytes.Repeat([]byte{secret}, 16)), testKey(t, 1), rosterRoom(t), lamport,
		time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), uses)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func changeSeeds(t testing.TB) [][]byte {
	ids := []protocol.ID{{1}, {2}, {3}}
	target := testKey(t, 7).Public()
	join, err := testCode(t, 5, 9, 2).Join(testKey(t, 5).Public())
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, c := range []*protocol.Change{
		{Op: protocol.OpCreate, Nonce: rosterNonce, Name: "plans ☃"},
		{Op: protocol.OpAdd, Parents: ids, Target: target},
		{Op: protocol.OpRemove, Parents: ids[:1], Target: target},
		{Op: protocol.OpAdmin, Parents: ids[1:], Target: target},
		{Op: protocol.OpUnadmin, Parents: ids, Target: target},
		{Op: protocol.OpRename, Parents: ids, Name: "x"},
		{Op: protocol.OpInvite, Parents: ids, Target: target, Expires: 1 << 31, Uses: 3},
		{Op: protocol.OpRevoke, Parents: ids, Target: target},
		join,
	} {
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzChange: a member-list change that parses encodes back to exactly
// the input; one that does not is malformed or too large, not both.
func FuzzChange(f *testing.F) {
	for _, b := range changeSeeds(f) {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{byte(protocol.OpAdd), 9})
	f.Add([]byte{byte(protocol.OpJoin) + 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := protocol.ParseChange(b)
		if err != nil {
			exactlyOneOf(t, err, protocol.ErrMalformed, protocol.ErrTooLarge)
			return
		}
		sameBytes(t, b)(c.MarshalBinary())
		// The bytes decide the form; CheckChange never panics on it.
		env := &protocol.Envelope{Kind: protocol.KindMember, Room: rosterRoom(t), Sender: testKey(t, 1).Public(), Seq: 1, Lamport: 10}
		if err := protocol.CheckChange(env, c); err != nil {
			exactlyOneOf(t, err, protocol.ErrMalformed, protocol.ErrBadSignature)
		}
	})
}

// FuzzPost: a post that parses encodes back to exactly the input.
func FuzzPost(f *testing.F) {
	for _, p := range []protocol.Post{
		{Head: protocol.ID{1, 2, 3}, Text: protocol.Text{Nick: "alice", Body: "hello ☃"}},
		{Head: protocol.IDOf([]byte("x")), Text: protocol.Text{Nick: "zoe"}},
	} {
		b, err := p.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(make([]byte, 35))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := protocol.ParsePost(b)
		if err != nil {
			exactlyOneOf(t, err, protocol.ErrMalformed, protocol.ErrTooLarge)
			return
		}
		if p.Head.IsZero() {
			t.Fatal("a post naming no head parsed")
		}
		sameBytes(t, b)(p.MarshalBinary())
	})
}

// FuzzInviteCode: a code that parses prints as a code that parses to the
// same invite, whose capability verifies; one that does not parse is
// refused with ErrBadCode.
func FuzzInviteCode(f *testing.F) {
	good := testCode(f, 5, 9, 2).String()
	f.Add(good)
	f.Add(strings.ToUpper(good))
	f.Add("  " + good + "\n")
	f.Add(testCode(f, 6, 1<<40, 65535).String())
	f.Add(good[:len(good)-1])
	f.Add("invite-")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := roster.ParseCode(s)
		if err != nil {
			if !errors.Is(err, roster.ErrBadCode) {
				t.Fatalf("error %v does not wrap ErrBadCode", err)
			}
			return
		}
		again, err := roster.ParseCode(c.String())
		if err != nil {
			t.Fatalf("%q parses, its String() %q does not: %v", s, c.String(), err)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("%q: %+v, after String(): %+v", s, c, again)
		}
		if !protocol.IsPrivateRoom(c.Room) || c.Cap.Verify(c.Room) != nil {
			t.Fatalf("%q: a code to %q whose capability does not verify", s, c.Room)
		}
		if !strings.EqualFold(strings.TrimSpace(s)[:20], c.String()[:20]) {
			t.Fatalf("%q: String() %q", s, c.String())
		}
	})
}

// rosterItem is a signed member-list change.
type rosterItem struct {
	env *protocol.Envelope
	id  protocol.ID
}

// rosterPerson makes changes from their own view of the room.
type rosterPerson struct {
	key     identity.PrivateKey
	log     *roster.Log
	seq     uint64
	lamport uint64
}

// rosterHistory returns the changes of a small room with two admins
// changing its list concurrently: adds, removals, an admin role given and
// dropped, renames, an invite used by two (one use too many), a leave.
// The invite is the creator's: see roster.TestPermutations for one by
// another admin.
func rosterHistory(t testing.TB) (string, []rosterItem) {
	room := rosterRoom(t)
	var (
		all   []rosterItem
		clock = time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC).UnixMilli()
	)
	person := func(seed byte) *rosterPerson {
		return &rosterPerson{key: testKey(t, seed), log: roster.NewLog(room)}
	}
	alice, bob, carol, dave, erin, frank := person(1), person(2), person(3), person(4), person(5), person(6)
	do := func(p *rosterPerson, c *protocol.Change) {
		lamport := p.lamport
		switch c.Op {
		case protocol.OpCreate:
		case protocol.OpJoin:
			lamport = max(lamport, c.Cap.Lamport)
		default:
			parents, top := p.log.Parents()
			c.Parents, lamport = parents, max(lamport, top)
		}
		payload, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		clock += 1000
		p.seq++
		p.lamport = lamport + 1
		env := &protocol.Envelope{Kind: protocol.KindMember, Room: room, Seq: p.seq, Lamport: p.lamport, Time: clock, Payload: payload}
		id, err := env.Sign(p.key)
		if err != nil {
			t.Fatal(err)
		}
		if err := protocol.CheckPayload(env); err != nil {
			t.Fatal(err)
		}
		if _, err := p.log.Add(env, id); err != nil {
			t.Fatalf("own %s: %v", c.Op, err)
		}
		all = append(all, rosterItem{env, id})
	}
	sync := func(to *rosterPerson, from ...*rosterPerson) {
		for _, it := range all {
			for _, f := range from {
				if f.log.Has(it.id) {
					to.log.Add(it.env, it.id) // in order: parents first
					to.lamport = max(to.lamport, it.env.Lamport)
					break
				}
			}
		}
	}
	target := func(p *rosterPerson) identity.PublicKey { return p.key.Public() }
	change := func(op protocol.Op, p *rosterPerson) *protocol.Change {
		return &protocol.Change{Op: op, Target: target(p)}
	}
	do(alice, &protocol.Change{Op: protocol.OpCreate, Nonce: rosterNonce, Name: "plans"})
	do(alice, change(protocol.OpAdd, bob))
	do(alice, change(protocol.OpAdmin, bob))
	sync(bob, alice)
	do(alice, change(protocol.OpAdd, carol))
	do(bob, change(protocol.OpAdd, dave))
	do(bob, &protocol.Change{Op: protocol.OpRename, Name: "bob's"})
	do(alice, &protocol.Change{Op: protocol.OpRename, Name: "alice's"})
	code := testCode(t, 7, alice.lamport+1, 1)
	alice.lamport++
	do(alice, code.Record(nil))
	for _, p := range []*rosterPerson{erin, frank} {
		c, err := code.Join(target(p))
		if err != nil {
			t.Fatal(err)
		}
		do(p, c)
	}
	sync(alice, bob, erin, frank)
	sync(bob, alice)
	do(alice, change(protocol.OpRemove, dave))
	do(bob, change(protocol.OpAdmin, carol))
	do(bob, change(protocol.OpAdd, dave)) // concurrent with alice's removal
	sync(carol, alice, bob)
	do(carol, change(protocol.OpRemove, carol))
	do(bob, change(protocol.OpUnadmin, bob))
	return room, all
}

// feedLog adds items to l, holding those that wait and offering them
// again after each add that succeeds.
func feedLog(l *roster.Log, items []rosterItem) {
	var held []rosterItem
	for _, it := range items {
		if _, err := l.Add(it.env, it.id); errors.Is(err, roster.ErrWaiting) {
			held = append(held, it)
			continue
		} else if err != nil {
			continue
		}
		for progress := true; progress; {
			progress = false
			for i := 0; i < len(held); i++ {
				if _, err := l.Add(held[i].env, held[i].id); !errors.Is(err, roster.ErrWaiting) {
					held = slices.Delete(held, i, i+1)
					i--
					progress = true
				}
			}
		}
	}
}

// FuzzRoster: any sequence of a room's changes (some missing, some
// repeated), fed in that order, resolves as the same changes fed sorted
// by ID: the same members, admins, name, head and invites.
func FuzzRoster(f *testing.F) {
	room, items := rosterHistory(f)
	all := make([]byte, len(items))
	for i := range all {
		all[i] = byte(i)
	}
	f.Add(all)
	rev := slices.Clone(all)
	slices.Reverse(rev)
	f.Add(rev)
	f.Add([]byte{byte(len(items) - 1), 0, 3, 3, 1, 2, 7, 9, 8})
	f.Fuzz(func(t *testing.T, order []byte) {
		if len(order) > 4*len(items) {
			order = order[:4*len(items)]
		}
		var (
			seq  []rosterItem
			uniq []rosterItem
			seen = make(map[int]bool)
		)
		for _, b := range order {
			i := int(b) % len(items)
			seq = append(seq, items[i])
			if !seen[i] {
				seen[i] = true
				uniq = append(uniq, items[i])
			}
		}
		slices.SortFunc(uniq, func(a, b rosterItem) int { return bytes.Compare(a.id[:], b.id[:]) })
		a, b := roster.NewLog(room), roster.NewLog(room)
		feedLog(a, seq)
		feedLog(b, uniq)
		if !reflect.DeepEqual(a.Members(), b.Members()) {
			t.Fatalf("order %v: members\n%+v\nsorted by ID:\n%+v", order, a.Members(), b.Members())
		}
		if a.Name() != b.Name() || a.Head() != b.Head() || a.Len() != b.Len() || !reflect.DeepEqual(a.Invites(), b.Invites()) {
			t.Fatalf("order %v: name %q/%q, head %s/%s, len %d/%d, invites %+v/%+v", order,
				a.Name(), b.Name(), a.Head(), b.Head(), a.Len(), b.Len(), a.Invites(), b.Invites())
		}
	})
}

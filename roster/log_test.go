package roster

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// The tests build histories of signed changes as people make them: each
// person has a Log of their own (their view), names its heads as parents,
// and sees others' changes only when synced with them. Keys come from
// fixed seeds and the clock is a counter, so every history, and every ID,
// is the same on every run.

var t0 = time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)

// testNonce is the creation nonce of every test room.
var testNonce = [protocol.NonceSize]byte{'p', 'a', 'r', 'l', 'e', 'y', ' ', 't', 'e', 's', 't'}

func testKey(t testing.TB, n byte) identity.PrivateKey {
	t.Helper()
	k, err := identity.PrivateKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// item is a signed change and its ID.
type item struct {
	env *protocol.Envelope
	id  protocol.ID
}

// signEnvelope signs a KindMember envelope carrying payload, unchecked.
func signEnvelope(t testing.TB, k identity.PrivateKey, room string, seq uint64, prev protocol.ID, lamport uint64, ms int64, payload []byte) item {
	t.Helper()
	env := &protocol.Envelope{Kind: protocol.KindMember, Room: room, Seq: seq, Prev: prev, Lamport: lamport, Time: ms, Payload: payload}
	id, err := env.Sign(k)
	if err != nil {
		t.Fatal(err)
	}
	return item{env, id}
}

// signChange signs a KindMember envelope carrying c and checks it as a
// receiver would (signature and payload) before any Log sees it.
func signChange(t testing.TB, k identity.PrivateKey, room string, seq uint64, prev protocol.ID, lamport uint64, ms int64, c *protocol.Change) item {
	t.Helper()
	payload, err := c.MarshalBinary()
	if err != nil {
		t.Fatalf("%s change: %v", c.Op, err)
	}
	it := signEnvelope(t, k, room, seq, prev, lamport, ms, payload)
	if err := it.env.Verify(); err != nil {
		t.Fatal(err)
	}
	if err := protocol.CheckPayload(it.env); err != nil {
		t.Fatalf("%s change: %v", c.Op, err)
	}
	return it
}

// world is one private room and the people who change its member list.
type world struct {
	t     testing.TB
	room  string
	clock int64 // Unix ms of the last change made
	all   []item
	names map[identity.PublicKey]string
	ops   map[protocol.ID]string
	rng   *rand.ChaCha8 // invite secrets
}

// actor is one person: a key and their view of the room.
type actor struct {
	w       *world
	name    string
	key     identity.PrivateKey
	pub     identity.PublicKey
	log     *Log
	seq     uint64
	prev    protocol.ID
	lamport uint64
}

// newWorld returns a room created by a person with key seed 1, who is
// returned as the first actor after making the room's first change.
func newWorld(t testing.TB) (*world, *actor) {
	t.Helper()
	creator := testKey(t, 1)
	w := &world{t: t, room: protocol.PrivateRoomID(creator.Public(), testNonce), clock: t0.UnixMilli(),
		names: make(map[identity.PublicKey]string), ops: make(map[protocol.ID]string), rng: rand.NewChaCha8([32]byte{9})}
	alice := w.actor("alice", 1)
	alice.do(&protocol.Change{Op: protocol.OpCreate, Nonce: testNonce, Name: "plans"})
	return w, alice
}

func (w *world) actor(name string, seed byte) *actor {
	k := testKey(w.t, seed)
	w.names[k.Public()] = name
	return &actor{w: w, name: name, key: k, pub: k.Public(), log: NewLog(w.room)}
}

// sign signs c as a's next envelope with clock lamport, at the next tick
// of the world's clock. It adds it nowhere.
func (a *actor) sign(c *protocol.Change, lamport uint64) item {
	a.w.t.Helper()
	a.w.clock += 1000
	it := signChange(a.w.t, a.key, a.w.room, a.seq+1, a.prev, lamport, a.w.clock, c)
	a.seq, a.prev, a.lamport = a.seq+1, it.id, max(a.lamport, lamport)
	what := c.Op.String()
	if name, ok := a.w.names[c.Target]; ok {
		what += " " + name
	}
	a.w.ops[it.id] = fmt.Sprintf("%s %s@%d", a.name, what, lamport)
	return it
}

// next fills in c's parents from a's view (unless set) and returns the
// clock a's next change has: above its parents', a's own and, for a
// join, its invite's.
func (a *actor) next(c *protocol.Change) uint64 {
	lamport := a.lamport
	switch c.Op {
	case protocol.OpCreate:
	case protocol.OpJoin:
		lamport = max(lamport, c.Cap.Lamport)
	default:
		parents, top := a.log.ParentsFor(a.pub)
		if c.Parents == nil {
			c.Parents = parents
		}
		lamport = max(lamport, top)
	}
	return lamport + 1
}

// do makes change c as a would: parents from a's view, the next clock;
// it adds it to a's own log and to the world's history.
func (a *actor) do(c *protocol.Change) item {
	a.w.t.Helper()
	return a.doAt(c, a.next(c))
}

// doAt is do with the clock given.
func (a *actor) doAt(c *protocol.Change, lamport uint64) item {
	a.w.t.Helper()
	a.next(c) // parents
	it := a.sign(c, lamport)
	if _, err := a.log.Add(it.env, it.id); err != nil {
		a.w.t.Fatalf("%s: own change: %v", a.w.ops[it.id], err)
	}
	a.w.all = append(a.w.all, it)
	return it
}

// syncFrom gives a every change of the history that from has.
func (a *actor) syncFrom(from ...*actor) {
	a.w.t.Helper()
	var todo []item
	for _, it := range a.w.all {
		for _, f := range from {
			if f.log.Has(it.id) && !a.log.Has(it.id) {
				todo = append(todo, it)
				break
			}
		}
	}
	a.receive(todo...)
}

// receive adds items to a's view; they must all be accepted in the end.
// a's clock moves past theirs, as a Lamport clock does.
func (a *actor) receive(items ...item) {
	a.w.t.Helper()
	if res := feed(a.log, items); len(res.refused) > 0 || len(res.held) > 0 {
		a.w.t.Fatalf("%s receiving: %s", a.name, res.describe(a.w))
	}
	for _, it := range items {
		a.lamport = max(a.lamport, it.env.Lamport)
	}
}

// invite issues an invite of a and records it on the member list. The
// capability takes the next tick of a's clock, as the client's Invite
// does.
func (a *actor) invite(uses int, expires time.Time) *Code {
	a.w.t.Helper()
	_, top := a.log.Parents()
	a.lamport = max(a.lamport, top) + 1
	code, err := NewCode(a.w.rng, a.key, a.w.room, a.lamport, expires, uses)
	if err != nil {
		a.w.t.Fatal(err)
	}
	a.w.names[code.Cap.Key] = "invite(" + a.name + ")"
	a.do(code.Record(nil))
	return code
}

// joinChange returns a's join change with code.
func (a *actor) joinChange(code *Code) *protocol.Change {
	a.w.t.Helper()
	c, err := code.Join(a.pub)
	if err != nil {
		a.w.t.Fatal(err)
	}
	return c
}

func add(k *actor) *protocol.Change    { return &protocol.Change{Op: protocol.OpAdd, Target: k.pub} }
func remove(k *actor) *protocol.Change { return &protocol.Change{Op: protocol.OpRemove, Target: k.pub} }
func admin(k *actor) *protocol.Change  { return &protocol.Change{Op: protocol.OpAdmin, Target: k.pub} }
func unadmin(k *actor) *protocol.Change {
	return &protocol.Change{Op: protocol.OpUnadmin, Target: k.pub}
}
func rename(name string) *protocol.Change {
	return &protocol.Change{Op: protocol.OpRename, Name: name}
}
func revoke(code *Code) *protocol.Change {
	return &protocol.Change{Op: protocol.OpRevoke, Target: code.Cap.Key}
}

// fed is what feed did.
type fed struct {
	refused []refusal
	held    []item // still waiting at the end
}

type refusal struct {
	it  item
	err error
}

func (f fed) describe(w *world) string {
	var s []string
	for _, r := range f.refused {
		s = append(s, fmt.Sprintf("refused %s: %v", w.ops[r.it.id], r.err))
	}
	for _, it := range f.held {
		s = append(s, fmt.Sprintf("still waiting: %s", w.ops[it.id]))
	}
	return strings.Join(s, "; ")
}

// feed adds items to l in the order given, as a node does: an item that
// waits (ErrWaiting) is held and offered again after every add that
// succeeds; one that is refused is dropped.
func feed(l *Log, items []item) fed {
	var (
		res  fed
		held []item
	)
	try := func(it item) bool { // reports whether it was settled
		missing, err := l.Add(it.env, it.id)
		switch {
		case err == nil:
			return true
		case errors.Is(err, ErrWaiting):
			if len(missing) == 0 {
				panic(fmt.Sprintf("ErrWaiting naming no missing change: %v", err))
			}
			return false
		default:
			res.refused = append(res.refused, refusal{it, err})
			return true
		}
	}
	for _, it := range items {
		if !try(it) {
			held = append(held, it)
			continue
		}
		for progress := true; progress; {
			progress = false
			for i := 0; i < len(held); i++ {
				if try(held[i]) {
					held = slices.Delete(held, i, i+1)
					i--
					progress = true
				}
			}
		}
	}
	res.held = held
	return res
}

// shown is everything a Log shows, for comparing logs.
type shown struct {
	Members []Member
	Name    string
	Head    protocol.ID
	Invites []Invite
	Len     int
	Parents []protocol.ID
	Top     uint64
}

func stateOf(l *Log) shown {
	parents, top := l.Parents()
	return shown{Members: l.Members(), Name: l.Name(), Head: l.Head(), Invites: l.Invites(), Len: l.Len(), Parents: parents, Top: top}
}

func (w *world) describe(s shown) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name %q, %d changes, head %s; members:", s.Name, s.Len, w.ops[s.Head])
	for _, m := range s.Members {
		fmt.Fprintf(&b, " %s", w.names[m.Key])
		if m.Admin {
			b.WriteString("(admin)")
		}
	}
	for _, inv := range s.Invites {
		fmt.Fprintf(&b, "; %s used %d/%d revoked %v", w.names[inv.Key], inv.Used, inv.Uses, inv.Revoked)
	}
	return b.String()
}

// names returns the names of l's members, admins marked, in Members order.
func (w *world) members(l *Log) []string {
	var out []string
	for _, m := range l.Members() {
		n := w.names[m.Key]
		if m.Admin {
			n += "*"
		}
		out = append(out, n)
	}
	return out
}

// fresh returns a new log of w's room holding items, fed in that order;
// every item must be accepted.
func (w *world) fresh(items ...item) *Log {
	w.t.Helper()
	l := NewLog(w.room)
	if res := feed(l, items); len(res.refused) > 0 || len(res.held) > 0 {
		w.t.Fatalf("fresh log: %s", res.describe(w))
	}
	return l
}

func wantMembers(t *testing.T, w *world, l *Log, want ...string) {
	t.Helper()
	got := w.members(l)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("members %v, want %v", got, want)
	}
}

// history is a realistic member list: two admins changing it
// concurrently (adds, removals, admin roles, renames, invites, revokes,
// joins, a leave), synced now and then. issuer is who of the two issues
// the invites: "alice" (the creator) or "bob" (made an admin by alice).
func history(t testing.TB, issuer string) (*world, map[string]*actor) {
	w, alice := newWorld(t)
	people := map[string]*actor{"alice": alice}
	for i, name := range []string{"bob", "carol", "dave", "erin", "frank", "gina", "hank", "ivy"} {
		people[name] = w.actor(name, byte(i+2))
	}
	bob, carol, dave, erin, frank, gina, hank, ivy := people["bob"], people["carol"], people["dave"],
		people["erin"], people["frank"], people["gina"], people["hank"], people["ivy"]
	inviter := people[issuer]
	day := t0.Add(24 * time.Hour)

	alice.do(add(bob))
	alice.do(admin(bob))
	bob.syncFrom(alice)

	// Two branches.
	alice.do(add(carol))
	bob.do(add(dave))
	alice.do(rename("plans a"))
	bob.do(rename("plans b"))
	bob.do(add(hank))
	alice.do(remove(hank)) // alice never saw hank added: a no-op for her

	// An invite for two, used by three who know nothing of the room.
	code := inviter.invite(2, day)
	var joins []item
	for _, j := range []*actor{erin, frank, gina} {
		joins = append(joins, j.do(j.joinChange(code)))
	}
	alice.syncFrom(bob)
	bob.syncFrom(alice)
	alice.receive(joins...)

	// Concurrent again: a removal and an admin role; an invite revoked
	// before anyone used it.
	alice.do(remove(dave))
	bob.do(admin(carol))
	code2 := inviter.invite(1, day)
	inviter.do(revoke(code2))
	carol.syncFrom(alice, bob)
	carol.do(add(ivy))
	alice.do(remove(carol)) // concurrent with carol's add of ivy
	bob.syncFrom(alice, carol)
	bob.receive(joins...)
	for _, j := range []*actor{erin, frank, gina} {
		j.syncFrom(alice, bob)
	}
	// One of the joiners leaves; bob steps down; alice re-adds hank, having
	// seen his removal.
	erin.do(remove(erin))
	bob.do(unadmin(bob))
	alice.syncFrom(bob, erin)
	alice.do(add(hank))
	bob.do(rename("plans c"))
	// A join with the revoked invite, made after everything above.
	ivy.syncFrom(alice, bob, carol)
	ivy.do(ivy.joinChange(code2))
	return w, people
}

// TestHistoryResolves checks the history's own resolution, so that the
// permutation tests below compare something meaningful.
func TestHistoryResolves(t *testing.T) {
	w, _ := history(t, "alice")
	l := w.fresh(w.all...)
	t.Logf("%d changes: %s", len(w.all), w.describe(stateOf(l)))
	if l.Len() != len(w.all) {
		t.Errorf("Len = %d, want %d", l.Len(), len(w.all))
	}
	m := w.members(l)
	has := func(n string) bool { return slices.Contains(m, n) || slices.Contains(m, n+"*") }
	if !slices.Contains(m, "alice*") {
		t.Errorf("the creator is not an admin: %v", m)
	}
	if has("dave") || has("erin") || has("carol") {
		t.Errorf("removed or left, still a member: %v", m)
	}
	if !has("hank") {
		t.Errorf("hank re-added after his removal, not a member: %v", m)
	}
	if !has("bob") || slices.Contains(m, "bob*") {
		t.Errorf("bob stepped down: want a member, not an admin: %v", m)
	}
	// Three joined with an invite for two; erin left.
	if inv := l.Invites(); len(inv) != 2 || inv[0].Used+inv[1].Used != 2 {
		t.Errorf("invites %+v: want one used twice, one revoked", inv)
	}
	if l.Name() == "plans" {
		t.Errorf("no rename counted")
	}
	if c, ok := l.Creator(); !ok || c != w.all[0].env.Sender {
		t.Errorf("Creator() = %v, %v", c, ok)
	}
}

// TestPermutations: every order of arrival, with duplicates, resolves to
// the same member list, name, head, invites and parents. The invites are
// issued by the creator, and by a second admin.
func TestPermutations(t *testing.T) {
	for _, issuer := range []string{"alice", "bob"} {
		t.Run("invites by "+issuer, func(t *testing.T) {
			w, people := history(t, issuer)
			ref := w.fresh(w.all...)
			want := stateOf(ref)
			queries := admitQueries(w, people)
			wantAdmit := admitAll(ref, queries)
			rng := rand.New(rand.NewPCG(1, uint64(len(issuer))))
			for n := range 200 {
				items := shuffled(rng, w.all)
				l := NewLog(w.room)
				res := feed(l, items)
				got := stateOf(l)
				if len(res.refused) > 0 || len(res.held) > 0 || !reflect.DeepEqual(got, want) {
					t.Fatalf("permutation %d (%d items):\n%s\n got %s\nwant %s\norder: %s", n, len(items),
						res.describe(w), w.describe(got), w.describe(want), w.order(items))
				}
				if gotAdmit := admitAll(l, queries); !slices.Equal(gotAdmit, wantAdmit) {
					t.Fatalf("permutation %d: Admit differs:\n%s", n, diffAdmit(w, queries, gotAdmit, wantAdmit))
				}
			}
			// A store's load, in any order, gives the same.
			for n := range 20 {
				stored := make([]Stored, len(w.all))
				for i, j := range rng.Perm(len(w.all)) {
					stored[i] = Stored{w.all[j].env, w.all[j].id}
				}
				l := NewLog(w.room)
				if failed := l.Load(stored); failed != 0 {
					t.Fatalf("load %d: %d changes failed", n, failed)
				}
				if got := stateOf(l); !reflect.DeepEqual(got, want) {
					t.Fatalf("load %d:\n got %s\nwant %s", n, w.describe(got), w.describe(want))
				}
			}
		})
	}
}

// shuffled returns items in a random order, about a quarter of them twice.
func shuffled(rng *rand.Rand, items []item) []item {
	out := slices.Clone(items)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	for _, it := range items {
		if rng.IntN(4) == 0 {
			i := rng.IntN(len(out) + 1)
			out = slices.Insert(out, i, it)
		}
	}
	return out
}

func (w *world) order(items []item) string {
	var s []string
	for _, it := range items {
		s = append(s, w.ops[it.id])
	}
	return strings.Join(s, ", ")
}

type admitQuery struct {
	who  identity.PublicKey
	head protocol.ID
	ms   int64
}

// admitQueries asks about every person, at every head, at the head's time
// and a minute later.
func admitQueries(w *world, people map[string]*actor) []admitQuery {
	var q []admitQuery
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range people {
			if !yield(n) {
				return
			}
		}
	}) {
		for _, it := range w.all {
			q = append(q, admitQuery{people[name].pub, it.id, it.env.Time}, admitQuery{people[name].pub, it.id, it.env.Time + 60_000})
		}
	}
	return q
}

// admitAll returns 'y' (nil), 'w' (waiting) or 'n' (refused) per query.
func admitAll(l *Log, qs []admitQuery) []byte {
	out := make([]byte, len(qs))
	for i, q := range qs {
		switch err := l.Admit(q.who, q.head, q.ms); {
		case err == nil:
			out[i] = 'y'
		case errors.Is(err, ErrWaiting):
			out[i] = 'w'
		default:
			out[i] = 'n'
		}
	}
	return out
}

func diffAdmit(w *world, qs []admitQuery, got, want []byte) string {
	var s []string
	for i := range qs {
		if got[i] != want[i] {
			s = append(s, fmt.Sprintf("%s at %s: %c, want %c", w.names[qs[i].who], w.ops[qs[i].head], got[i], want[i]))
		}
	}
	return strings.Join(s, "\n")
}

// TestForgedChange: a change whose bytes were altered after signing, a
// join whose proof or capability was not signed by the key it names: the
// receiver's checks refuse them before any Log sees them.
func TestForgedChange(t *testing.T) {
	w, alice := newWorld(t)
	bob, erin := w.actor("bob", 2), w.actor("erin", 5)
	it := alice.do(add(bob))

	forged := *it.env
	forged.Payload = slices.Clone(it.env.Payload)
	forged.Payload[len(forged.Payload)-1] ^= 1 // another target
	if err := forged.Verify(); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("altered payload: Verify = %v, want ErrBadSignature", err)
	}
	forged = *it.env
	forged.Lamport++
	if err := forged.Verify(); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("altered clock: Verify = %v, want ErrBadSignature", err)
	}
	forged = *it.env
	forged.Sender = bob.pub // claims to be bob's
	if err := forged.Verify(); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("other sender: Verify = %v, want ErrBadSignature", err)
	}

	code := alice.invite(1, t0.Add(time.Hour))
	join := func(c *protocol.Change, lamport uint64) error {
		payload, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		it := signEnvelope(t, erin.key, w.room, 1, protocol.ID{}, lamport, t0.UnixMilli(), payload)
		if err := it.env.Verify(); err != nil {
			t.Fatalf("the envelope itself is signed: %v", err)
		}
		return protocol.CheckPayload(it.env)
	}
	if err := join(erin.joinChange(code), code.Cap.Lamport+1); err != nil {
		t.Fatalf("a good join: %v", err)
	}
	// erin's envelope carrying a proof made for bob.
	c, _ := code.Join(bob.pub)
	if err := join(c, code.Cap.Lamport+1); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("proof for another joiner: %v, want ErrBadSignature", err)
	}
	// A capability whose uses were raised after signing.
	c = erin.joinChange(code)
	c.Cap.Uses = 100
	if err := join(c, code.Cap.Lamport+1); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("altered capability: %v, want ErrBadSignature", err)
	}
	// A capability claiming alice as issuer, signed by erin.
	c = erin.joinChange(code)
	c.Cap.Sign(w.room, erin.key)
	c.Cap.Issuer = alice.pub
	if err := join(c, code.Cap.Lamport+1); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("capability signed by another: %v, want ErrBadSignature", err)
	}
	// The envelope's own clock does not matter: the graph sets a
	// change's place (a join's from its invite's clock).
	if err := join(erin.joinChange(code), 1); err != nil {
		t.Errorf("join with a low envelope clock: %v", err)
	}
}

// TestCreateWrongNonce: a room's first change must hash to the room's ID.
func TestCreateWrongNonce(t *testing.T) {
	w, _ := newWorld(t)
	alice, mallory := testKey(t, 1), testKey(t, 66)
	for _, tc := range []struct {
		name  string
		k     identity.PrivateKey
		nonce [protocol.NonceSize]byte
	}{
		{"another nonce", alice, [protocol.NonceSize]byte{1}},
		{"another creator", mallory, testNonce},
	} {
		payload, err := (&protocol.Change{Op: protocol.OpCreate, Nonce: tc.nonce, Name: "mine"}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		it := signEnvelope(t, tc.k, w.room, 1, protocol.ID{}, 1, t0.UnixMilli(), payload)
		if err := protocol.CheckPayload(it.env); !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("%s: CheckPayload = %v, want ErrMalformed", tc.name, err)
		}
	}
}

// TestReplayedChange: the same change added again changes nothing.
func TestReplayedChange(t *testing.T) {
	w, people := history(t, "alice")
	l := w.fresh(w.all...)
	before := stateOf(l)
	for _, it := range w.all {
		if missing, err := l.Add(it.env, it.id); err != nil || missing != nil {
			t.Fatalf("again %s: %v, %v", w.ops[it.id], missing, err)
		}
		cp := *it.env // another copy of the same bytes
		if _, err := l.Add(&cp, it.id); err != nil {
			t.Fatalf("copy of %s: %v", w.ops[it.id], err)
		}
		if _, err := l.Check(it.env, it.id); err != nil {
			t.Fatalf("Check of a change held: %v", err)
		}
	}
	if after := stateOf(l); !reflect.DeepEqual(after, before) {
		t.Errorf("state changed:\n got %s\nwant %s", w.describe(after), w.describe(before))
	}
	if got, want := admitAll(l, admitQueries(w, people)), admitAll(w.fresh(w.all...), admitQueries(w, people)); !slices.Equal(got, want) {
		t.Errorf("Admit changed")
	}
}

// TestNeverAdminRefused: a member who was never made an admin cannot
// change the list, but can leave and step down.
func TestNeverAdminRefused(t *testing.T) {
	w, alice := newWorld(t)
	carol, dave := w.actor("carol", 3), w.actor("dave", 4)
	alice.do(add(carol))
	carol.syncFrom(alice)
	for _, c := range []*protocol.Change{add(dave), remove(alice), admin(carol), admin(dave), unadmin(alice), rename("mine"),
		{Op: protocol.OpRevoke, Target: dave.pub}, {Op: protocol.OpInvite, Target: dave.pub, Expires: 1 << 31, Uses: 1}} {
		it := carol.sign(c, carol.next(c))
		if _, err := carol.log.Check(it.env, it.id); !errors.Is(err, ErrRefused) || errors.Is(err, ErrWaiting) {
			t.Errorf("Check(%s by a member): %v, want ErrRefused", c.Op, err)
		}
		if _, err := carol.log.Add(it.env, it.id); !errors.Is(err, ErrRefused) || errors.Is(err, ErrWaiting) {
			t.Errorf("Add(%s by a member): %v, want ErrRefused", c.Op, err)
		}
		// Nor by someone who is not even a member.
		it = dave.sign(c, 100)
		if _, err := alice.log.Add(it.env, it.id); !errors.Is(err, ErrRefused) {
			t.Errorf("Add(%s by a stranger): %v, want ErrRefused", c.Op, err)
		}
	}
	carol.do(unadmin(carol))
	carol.do(remove(carol))
	l := w.fresh(w.all...)
	wantMembers(t, w, l, "alice*")
	if l.Len() != len(w.all) {
		t.Errorf("Len = %d, want %d", l.Len(), len(w.all))
	}
}

// TestWrongParent: a parent not known is waited for; a parent whose clock
// is not below the change's is refused; so is a change of another room or
// kind.
func TestWrongParent(t *testing.T) {
	w, alice := newWorld(t)
	bob := w.actor("bob", 2)
	alice.do(add(bob))
	head, top := alice.log.Parents()

	unknown := protocol.ID{0xde, 0xad}
	it := alice.sign(&protocol.Change{Op: protocol.OpAdd, Parents: []protocol.ID{unknown}, Target: bob.pub}, top+1)
	missing, err := alice.log.Add(it.env, it.id)
	if !errors.Is(err, ErrWaiting) || !slices.Equal(missing, []protocol.ID{unknown}) {
		t.Errorf("unknown parent: %v, %v; want ErrWaiting for it", missing, err)
	}
	// Known and unknown: waits for the unknown one only.
	parents := append(slices.Clone(head), unknown)
	slices.SortFunc(parents, func(a, b protocol.ID) int { return bytes.Compare(a[:], b[:]) })
	it = alice.sign(&protocol.Change{Op: protocol.OpRename, Parents: parents, Name: "x"}, top+1)
	if missing, err := alice.log.Add(it.env, it.id); !errors.Is(err, ErrWaiting) || !slices.Equal(missing, []protocol.ID{unknown}) {
		t.Errorf("known and unknown parent: %v, %v", missing, err)
	}
	if alice.log.Len() != 2 {
		t.Errorf("a waiting change was added")
	}
	// A change naming a refused change (bob's, never an admin) is refused
	// too, whatever its envelope's clock: the graph sets the order.
	bad := bob.sign(&protocol.Change{Op: protocol.OpRename, Parents: head, Name: "bob's"}, top+1)
	if _, err := alice.log.Add(bad.env, bad.id); !errors.Is(err, ErrRefused) {
		t.Errorf("a never-admin's rename: %v, want ErrRefused", err)
	}
	for _, lamport := range []uint64{top + 1, 1} {
		it := alice.sign(&protocol.Change{Op: protocol.OpRename, Parents: []protocol.ID{bad.id}, Name: "x"}, lamport)
		if _, err := alice.log.Add(it.env, it.id); !errors.Is(err, ErrRefused) {
			t.Errorf("parent refused, clock %d: %v, want ErrRefused", lamport, err)
		}
	}
	// A change of another room, or not a change.
	other := alice.sign(&protocol.Change{Op: protocol.OpRename, Parents: head, Name: "x"}, top+1)
	other.env.Room = protocol.PrivateRoomID(bob.pub, testNonce)
	if _, err := alice.log.Add(other.env, other.id); !errors.Is(err, ErrRefused) {
		t.Errorf("change of another room: %v", err)
	}
	post := alice.sign(&protocol.Change{Op: protocol.OpRename, Parents: head, Name: "x"}, top+1)
	post.env.Kind = protocol.KindPost
	if _, err := alice.log.Add(post.env, post.id); !errors.Is(err, ErrRefused) {
		t.Errorf("a post as a change: %v", err)
	}
	garbage := alice.sign(&protocol.Change{Op: protocol.OpRename, Parents: head, Name: "x"}, top+1)
	garbage.env.Payload = []byte{byte(protocol.OpAdd), 0}
	if _, err := alice.log.Add(garbage.env, garbage.id); !errors.Is(err, ErrRefused) {
		t.Errorf("a malformed change: %v", err)
	}
	if alice.log.Len() != 2 || alice.log.Name() != "plans" {
		t.Errorf("a refused change counted")
	}
}

// TestRemoveBeatsAdd: alice adds carol and removes her; bob, not having
// seen either, adds her. Whatever the order (bob's add before, between or
// after alice's two changes) and the arrival, carol is out.
func TestRemoveBeatsAdd(t *testing.T) {
	for _, bobAt := range []uint64{5, 15, 25} {
		w, alice := newWorld(t)
		bob, carol := w.actor("bob", 2), w.actor("carol", 3)
		alice.do(add(bob))
		alice.do(admin(bob))
		bob.syncFrom(alice)
		a0 := alice.doAt(add(carol), 10)
		r := alice.doAt(remove(carol), 20)
		a := bob.doAt(add(carol), bobAt)
		base := w.all[:3]
		for _, order := range [][]item{{a0, r, a}, {a, a0, r}, {a0, a, r}} {
			l := w.fresh(append(slices.Clone(base), order...)...)
			if l.IsMember(carol.pub) {
				t.Errorf("bob's add at %d, arrival %s: carol is a member", bobAt, w.order(order))
			}
		}
	}
}

// TestReAddAfterRemovalSeen: an add whose author saw the removal counts.
func TestReAddAfterRemovalSeen(t *testing.T) {
	w, alice := newWorld(t)
	bob, carol := w.actor("bob", 2), w.actor("carol", 3)
	alice.do(add(bob))
	alice.do(admin(bob))
	alice.do(add(carol))
	alice.do(remove(carol))
	bob.syncFrom(alice)
	bob.do(add(carol))
	wantMembers(t, w, w.fresh(w.all...), "alice*", "bob*", "carol")
}

// TestConcurrentRemovalsBeatReAdd: carol is a member. Bob removes her,
// then re-adds her; alice, concurrently, removes her too. Bob's re-add
// did not see alice's removal, which sorts before it: remove beats add,
// and carol is out whichever of the two removals sorts first.
func TestConcurrentRemovalsBeatReAdd(t *testing.T) {
	for _, tc := range []struct {
		name          string
		bobR, aliceR  uint64
		bobReAddClock uint64
	}{
		{"alice's removal first", 20, 10, 30},
		{"bob's removal first", 10, 20, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, alice := newWorld(t)
			bob, carol := w.actor("bob", 2), w.actor("carol", 3)
			alice.do(add(bob))
			alice.do(admin(bob))
			alice.do(add(carol))
			bob.syncFrom(alice)
			bob.doAt(remove(carol), tc.bobR)
			bob.doAt(add(carol), tc.bobReAddClock)
			alice.doAt(remove(carol), tc.aliceR)
			l := w.fresh(w.all...)
			if l.IsMember(carol.pub) {
				t.Errorf("order %s: carol is a member; alice's removal was not seen by bob's re-add", w.order(w.all[4:]))
			}
		})
	}
}

// TestRemovedAdmin: a removed admin's changes that the removal did not
// see are void, wherever they sort, when the remover is the senior admin
// (here the creator); those the removal saw count.
func gina(w *world) *actor { return w.actor("gina", 7) }

func TestRemovedAdmin(t *testing.T) {
	w, alice := newWorld(t)
	bob, carol, dave, frank := w.actor("bob", 2), w.actor("carol", 3), w.actor("dave", 4), w.actor("frank", 6)
	alice.do(add(bob))
	alice.do(admin(bob))
	alice.do(add(carol))
	bob.syncFrom(alice)
	bob.do(add(frank)) // seen by the removal: counts
	alice.syncFrom(bob)
	bob.doAt(add(gina(w)), 8) // concurrent with the removal, made before it: void
	alice.doAt(remove(bob), 10)
	bob.doAt(add(dave), 11)   // concurrent, after: void
	bob.doAt(rename("x"), 12) // void
	bob.doAt(remove(carol), 13)
	bob.doAt(admin(carol), 14)
	l := w.fresh(w.all...)
	wantMembers(t, w, l, "alice*", "carol", "frank")
	if l.Name() != "plans" {
		t.Errorf("name %q: a removed admin's rename counted", l.Name())
	}
	// And once bob has seen his removal, nothing he does counts.
	bob.syncFrom(alice)
	bob.do(add(dave))
	wantMembers(t, w, w.fresh(w.all...), "alice*", "carol", "frank")
	// A demoted admin likewise.
	alice.syncFrom(bob)
	alice.do(add(dave))
	alice.do(admin(dave))
	alice.do(unadmin(dave))
	dave.syncFrom(alice)
	dave.do(remove(frank))
	wantMembers(t, w, w.fresh(w.all...), "alice*", "carol", "frank", "dave")
}

// TestInviteUsedUp: an invite for one, used by two: the join first in
// the order counts, whatever the arrival. Both joiners knew only the
// invite's clock: the one who joined first in time comes first.
func TestInviteUsedUp(t *testing.T) {
	w, alice := newWorld(t)
	erin, frank := w.actor("erin", 5), w.actor("frank", 6)
	code := alice.invite(1, t0.Add(time.Hour))
	// Frank's join is made second, but has the lower ID: time decides.
	var je, jf item
	for seed := byte(5); ; seed++ {
		w.clock = t0.UnixMilli() + 10_000
		erin, frank = w.actor("erin", seed), w.actor("frank", 100+seed)
		je = erin.sign(erin.joinChange(code), code.Cap.Lamport+1)
		jf = frank.sign(frank.joinChange(code), code.Cap.Lamport+1)
		if bytes.Compare(jf.id[:], je.id[:]) < 0 {
			break
		}
	}
	const first = "erin"
	base := w.all[:2]
	for _, order := range [][]item{{je, jf}, {jf, je}} {
		l := w.fresh(append(slices.Clone(base), order...)...)
		wantMembers(t, w, l, "alice*", first)
		if inv := l.Invites(); len(inv) != 1 || inv[0].Used != 1 || inv[0].Uses != 1 {
			t.Errorf("invites %+v", inv)
		}
	}
	// The envelope's clock is the signer's say and does not count: a
	// join dated with a lower one does not jump the queue.
	w, alice = newWorld(t)
	erin, frank = w.actor("erin", 5), w.actor("frank", 6)
	code = alice.invite(1, t0.Add(time.Hour))
	je = erin.doAt(erin.joinChange(code), code.Cap.Lamport+5)
	jf = frank.doAt(frank.joinChange(code), 1)
	wantMembers(t, w, w.fresh(w.all[0], w.all[1], jf, je), "alice*", "erin")
}

// TestInviteRevoked: a join with a revoked invite is void. Erin gets the
// code, alice revokes it, and erin joins afterwards: first having synced
// the room (her clock above the revocation's), then as a newcomer does,
// knowing nothing but the code (her clock just above the invite's, as
// Code.Join asks).
func TestInviteRevoked(t *testing.T) {
	for _, synced := range []bool{true, false} {
		t.Run(fmt.Sprintf("joiner synced %v", synced), func(t *testing.T) {
			w, alice := newWorld(t)
			erin := w.actor("erin", 5)
			code := alice.invite(3, t0.Add(time.Hour))
			rv := alice.do(revoke(code))
			if synced {
				erin.syncFrom(alice)
			}
			j := erin.do(erin.joinChange(code))
			if j.env.Time <= rv.env.Time {
				t.Fatal("the join should be made after the revocation")
			}
			l := w.fresh(w.all...)
			if l.IsMember(erin.pub) {
				t.Errorf("joined with an invite revoked before (join clock %d, revocation's %d)", j.env.Lamport, rv.env.Lamport)
			}
			if inv := l.Invites(); len(inv) != 1 || !inv[0].Revoked {
				t.Errorf("invites %+v", inv)
			}
		})
	}
}

// TestInviteExpired: a join made at or after the invite's expiry is void.
func TestInviteExpired(t *testing.T) {
	for _, tc := range []struct {
		ms     int64
		member bool
	}{{-1, true}, {0, false}, {60_000, false}} {
		w, alice := newWorld(t)
		erin := w.actor("erin", 5)
		expires := t0.Add(time.Hour)
		code := alice.invite(1, expires)
		c := erin.joinChange(code)
		payload, _ := c.MarshalBinary()
		it := signEnvelope(t, erin.key, w.room, 1, protocol.ID{}, code.Cap.Lamport+1, expires.UnixMilli()+tc.ms, payload)
		// Expired by its own signed time: refused with the bytes, the
		// same everywhere.
		if err := protocol.CheckPayload(it.env); (err == nil) != tc.member {
			t.Errorf("join %d ms after expiry: CheckPayload %v", tc.ms, err)
		}
		if !tc.member {
			continue
		}
		l := w.fresh(append(w.all, it)...)
		if l.IsMember(erin.pub) != tc.member {
			t.Errorf("join %d ms after expiry: member %v, want %v", tc.ms, !tc.member, tc.member)
		}
	}
}

// TestJoinWithInviteFromBeforeRemoval: a removed member cannot come back
// with an invite signed before the removal; one signed after works.
func TestJoinWithInviteFromBeforeRemoval(t *testing.T) {
	w, alice := newWorld(t)
	carol := w.actor("carol", 3)
	alice.do(add(carol))
	old := alice.invite(5, t0.Add(time.Hour))
	alice.do(remove(carol))
	carol.syncFrom(alice)
	carol.do(carol.joinChange(old))
	l := w.fresh(w.all...)
	if l.IsMember(carol.pub) {
		t.Errorf("back with an invite signed before her removal")
	}
	fresh := alice.invite(1, t0.Add(time.Hour))
	carol.do(carol.joinChange(fresh))
	if l = w.fresh(w.all...); !l.IsMember(carol.pub) {
		t.Errorf("not back with an invite signed after her removal")
	}
}

// TestRemovedAdminsInvite: an admin removed from the room can no longer
// let people in: not with a new invite dated (by its clock) before the
// removal, nor, once the removal is known, with one issued before it.
func TestRemovedAdminsInvite(t *testing.T) {
	w, alice := newWorld(t)
	bob, dave := w.actor("bob", 2), w.actor("dave", 4)
	alice.do(add(bob))
	alice.do(admin(bob))
	bob.syncFrom(alice)
	removal := alice.doAt(remove(bob), 10)
	bob.syncFrom(alice)
	// Bob signs an invite after his removal (he knows of it), giving it
	// the clock he had before it.
	code, err := NewCode(w.rng, bob.key, w.room, 4, t0.Add(30*24*time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	w.names[code.Cap.Key] = "bob's late invite"
	j := dave.do(dave.joinChange(code))
	if j.env.Time <= removal.env.Time || j.env.Lamport >= removal.env.Lamport {
		t.Fatalf("setup: the join should come later in time, earlier by clock")
	}
	l := w.fresh(w.all...)
	if l.IsMember(dave.pub) {
		t.Errorf("an admin removed at clock %d let dave in (join clock %d, %d s after the removal): members %v",
			removal.env.Lamport, j.env.Lamport, (j.env.Time-removal.env.Time)/1000, w.members(l))
	}
}

// TestJoinBeforeIssuersAdminRole: bob, made an admin by alice, invites
// erin. A node that has the room's first change and erin's join, but not
// yet alice's change that made bob an admin, must not refuse the join:
// once that change arrives, erin is a member on every node.
func TestJoinBeforeIssuersAdminRole(t *testing.T) {
	w, alice := newWorld(t)
	bob, erin := w.actor("bob", 2), w.actor("erin", 5)
	create := w.all[0]
	alice.do(add(bob))
	alice.do(admin(bob))
	bob.syncFrom(alice)
	code := bob.invite(1, t0.Add(time.Hour))
	join := erin.do(erin.joinChange(code))
	want := w.fresh(w.all...)
	if !want.IsMember(erin.pub) {
		t.Fatalf("in order, erin is not a member")
	}

	l := NewLog(w.room)
	if _, err := l.Add(create.env, create.id); err != nil {
		t.Fatal(err)
	}
	_, err := l.Add(join.env, join.id)
	if errors.Is(err, ErrRefused) {
		t.Errorf("join before its issuer's admin role is known: %v; a node that received the changes in the other order has erin as a member", err)
	}
	// The rest reaches the node; a join that waits is held and offered
	// again (first in line), one refused is dropped.
	var rest []item
	if errors.Is(err, ErrWaiting) {
		rest = append(rest, join)
	}
	for _, it := range w.all[1:] {
		if it.id != join.id {
			rest = append(rest, it)
		}
	}
	res := feed(l, rest)
	if !reflect.DeepEqual(stateOf(l), stateOf(want)) {
		t.Errorf("state differs (%s):\n got %s\nwant %s", res.describe(w), w.describe(stateOf(l)), w.describe(stateOf(want)))
	}
}

// TestChangeBeforeAuthorsAdminRole: alice makes carol an admin; carol,
// before she has seen that, adds dave (her client should not, but the
// bytes are hers to sign), with a clock above alice's change. Whether a
// node refuses carol's change must not depend on which of the two reached
// it first: else nodes disagree on whether dave is a member.
func TestChangeBeforeAuthorsAdminRole(t *testing.T) {
	w, alice := newWorld(t)
	carol, dave := w.actor("carol", 3), w.actor("dave", 4)
	alice.do(add(carol))
	carol.syncFrom(alice)
	grant := alice.do(admin(carol))
	c := add(dave)
	x := carol.sign(c, carol.next(c)+5) // parents: alice's add; not the grant
	if x.env.Lamport <= grant.env.Lamport {
		t.Fatal("setup: carol's change should sort after the grant")
	}
	base := w.all[:2]
	grantFirst := NewLog(w.room)
	res1 := feed(grantFirst, append(slices.Clone(base), grant, x))
	addFirst := NewLog(w.room)
	res2 := feed(addFirst, append(slices.Clone(base), x, grant))
	if a, b := stateOf(grantFirst), stateOf(addFirst); !reflect.DeepEqual(a, b) {
		t.Errorf("the grant first (%s): %s\ncarol's add first (%s): %s", res1.describe(w), w.describe(a), res2.describe(w), w.describe(b))
	}
}

// TestHugeClockFreezesList: a change whose clock is the largest an
// envelope may carry is a head of the graph, and every later change must
// name it with a clock above it, which no envelope can carry: after it,
// the admins could never change the list again. Nobody who cannot change
// the list may so freeze it: not a stranger "leaving", not a joiner with a
// used-up invite, not a removed admin.
func TestHugeClockFreezesList(t *testing.T) {
	for _, who := range []string{"stranger leaving", "joiner with a used-up invite", "removed admin"} {
		t.Run(who, func(t *testing.T) {
			w, alice := newWorld(t)
			bob, erin, mallory := w.actor("bob", 2), w.actor("erin", 5), w.actor("mallory", 66)
			alice.do(add(bob))
			alice.do(admin(bob))
			code := alice.invite(1, t0.Add(time.Hour))
			erin.do(erin.joinChange(code))
			alice.receive(w.all[len(w.all)-1])
			alice.do(remove(bob))
			mallory.syncFrom(alice)
			bob.syncFrom(alice)
			var x item
			switch who {
			case "stranger leaving":
				x = mallory.sign(&protocol.Change{Op: protocol.OpRemove, Target: mallory.pub, Parents: parentsOf(mallory)}, protocol.MaxCounter)
			case "joiner with a used-up invite":
				x = mallory.sign(mallory.joinChange(code), protocol.MaxCounter)
			case "removed admin":
				x = bob.sign(&protocol.Change{Op: protocol.OpAdd, Target: mallory.pub, Parents: parentsOf(bob)}, protocol.MaxCounter)
			}
			if _, err := alice.log.Add(x.env, x.id); err != nil {
				return // refused: fine
			}
			if alice.log.IsMember(mallory.pub) {
				t.Errorf("mallory is a member")
			}
			// Alice's next change.
			c := add(w.actor("frank", 6))
			parents, top := alice.log.Parents()
			c.Parents = parents
			if top >= protocol.MaxCounter {
				t.Fatalf("accepted a %s's change at clock %d; alice's next change must be above it: the list is frozen", who, top)
			}
			alice.do(c)
		})
	}
}

// parentsOf returns what a's next change names.
func parentsOf(a *actor) []protocol.ID {
	p, _ := a.log.Parents()
	return p
}

// TestJoinEffect: what a relay tells a joiner, without changing the log.
func TestJoinEffect(t *testing.T) {
	w, alice := newWorld(t)
	bob, erin, frank := w.actor("bob", 2), w.actor("erin", 5), w.actor("frank", 6)
	alice.do(add(bob))
	code := alice.invite(1, t0.Add(time.Hour))
	revoked := alice.invite(1, t0.Add(time.Hour))
	alice.do(revoke(revoked))
	alice.do(remove(bob))
	l := w.fresh(w.all...)
	before := stateOf(l)
	erin.syncFrom(alice)
	frank.syncFrom(alice)
	je := erin.sign(erin.joinChange(code), erin.next(erin.joinChange(code)))
	if err := l.JoinEffect(je.env, je.id); err != nil {
		t.Errorf("a good join: %v", err)
	}
	jr := frank.sign(frank.joinChange(revoked), frank.next(frank.joinChange(revoked)))
	if err := l.JoinEffect(jr.env, jr.id); !errors.Is(err, ErrRefused) {
		t.Errorf("a join with a revoked invite: %v, want ErrRefused", err)
	}
	if !reflect.DeepEqual(stateOf(l), before) {
		t.Errorf("JoinEffect changed the log")
	}
	feed(l, []item{je})
	jf := frank.sign(frank.joinChange(code), frank.next(frank.joinChange(code)))
	if err := l.JoinEffect(jf.env, jf.id); !errors.Is(err, ErrRefused) {
		t.Errorf("a join with a used-up invite: %v, want ErrRefused", err)
	}
	if err := l.JoinEffect(je.env, je.id); err != nil {
		t.Errorf("a join in the log already: %v", err)
	}
	// bob, removed, with an invite from before his removal.
	bob.syncFrom(alice)
	jb := bob.sign(bob.joinChange(code), bob.next(bob.joinChange(code)))
	if err := l.JoinEffect(jb.env, jb.id); !errors.Is(err, ErrRefused) {
		t.Errorf("a join by a removed member: %v, want ErrRefused", err)
	}
	if err := NewLog(w.room).JoinEffect(je.env, je.id); !errors.Is(err, ErrRefused) {
		t.Errorf("room not known: %v, want ErrRefused", err)
	}
	if err := l.JoinEffect(w.all[1].env, w.all[1].id); !errors.Is(err, ErrRefused) {
		t.Errorf("not a join: %v, want ErrRefused", err)
	}
}

// TestAdmit: who may post, judged at the head the post names.
func TestAdmit(t *testing.T) {
	w, alice := newWorld(t)
	bob, carol, dave := w.actor("bob", 2), w.actor("carol", 3), w.actor("dave", 4)
	addBob := alice.do(add(bob))
	addCarol := alice.do(add(carol))
	before := alice.do(rename("before"))
	removal := alice.do(remove(carol))
	after := alice.do(rename("after"))
	l := w.fresh(w.all...)
	create := w.all[0]
	now := after.env.Time + 1000

	check := func(what string, err, want error) {
		t.Helper()
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("%s: Admit = %v, want %v", what, err, want)
		}
	}
	check("member at the head", l.Admit(bob.pub, l.Head(), now), nil)
	check("member at an earlier head", l.Admit(bob.pub, addBob.id, addBob.env.Time), nil)
	check("member at the head before being added", l.Admit(bob.pub, create.id, now), ErrRefused)
	check("creator at the first change", l.Admit(alice.pub, create.id, create.env.Time), nil)
	check("never a member", l.Admit(dave.pub, l.Head(), now), ErrRefused)
	check("unknown head", l.Admit(bob.pub, protocol.ID{1}, now), ErrWaiting)
	check("unknown head, non-member", l.Admit(dave.pub, protocol.ID{1}, now), ErrWaiting)
	// Carol, removed: a post made before the removal, arriving late,
	// counts; one made after it does not, and says she was removed (a
	// peer that had not heard of it forwarded it in good faith).
	check("removed, earlier head, made before", l.Admit(carol.pub, before.id, removal.env.Time-1), nil)
	check("removed, head of her add, made before", l.Admit(carol.pub, addCarol.id, addCarol.env.Time), nil)
	check("removed, earlier head, made at the removal", l.Admit(carol.pub, before.id, removal.env.Time), ErrRemoved)
	check("removed, earlier head, made after", l.Admit(carol.pub, before.id, now), ErrRemoved)
	check("removed, the removal as head", l.Admit(carol.pub, removal.id, removal.env.Time-1), ErrRemoved)
	check("removed, later head", l.Admit(carol.pub, after.id, removal.env.Time-1), ErrRemoved)
	check("removed, later head, made after", l.Admit(carol.pub, after.id, now), ErrRemoved)
}

// TestAdmitReAdded: carol, removed and added again, posted while she was
// a member the first time. Her old posts are still hers to show: she was
// a member at the head they name, and made them before her removal.
func TestAdmitReAdded(t *testing.T) {
	w, alice := newWorld(t)
	carol := w.actor("carol", 3)
	alice.do(add(carol))
	then := alice.do(rename("then"))
	alice.do(remove(carol))
	l := w.fresh(w.all...)
	postTime := then.env.Time + 1
	if err := l.Admit(carol.pub, then.id, postTime); err != nil {
		t.Fatalf("removed: old post refused: %v", err)
	}
	alice.do(add(carol))
	l = w.fresh(w.all...)
	if err := l.Admit(carol.pub, then.id, postTime); err != nil {
		t.Errorf("added again: the post she made at her first membership is refused: %v", err)
	}
	if err := l.Admit(carol.pub, l.Head(), w.clock+1); err != nil {
		t.Errorf("added again: a new post refused: %v", err)
	}
}

// TestConcurrentUse: a Log is safe for concurrent use (run with -race).
func TestConcurrentUse(t *testing.T) {
	w, people := history(t, "alice")
	want := stateOf(w.fresh(w.all...))
	l := NewLog(w.room)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			items := slices.Clone(w.all)
			if g%2 == 1 {
				slices.Reverse(items)
			}
			for range 3 {
				feed(l, items)
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				l.Members()
				l.Parents()
				l.Invites()
				l.Admit(people["bob"].pub, l.Head(), w.clock)
				l.IsMember(people["bob"].pub)
				l.IsAdmin(people["alice"].pub)
				l.Name()
				l.Len()
			}
		}()
	}
	wg.Wait()
	// Whatever was refused for want of a change then is taken now.
	feed(l, w.all)
	if got := stateOf(l); !reflect.DeepEqual(got, want) {
		t.Errorf("concurrent adds:\n got %s\nwant %s", w.describe(got), w.describe(want))
	}
}

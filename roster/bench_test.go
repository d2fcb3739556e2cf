package roster

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// The benchmarks' rooms are built once per process and shared: signing
// 10,000 changes takes a fraction of a second, which no benchmark times.
//
//	go test -run '^$' -bench . -benchmem -count 3 ./roster

// benchTarget returns the i-th public key of people who are added but
// never sign: any canonical point of large order is a key.
func benchTarget(i int) identity.PublicKey {
	for j := uint32(0); ; j++ {
		var b [8]byte
		binary.BigEndian.PutUint32(b[:], uint32(i))
		binary.BigEndian.PutUint32(b[4:], j)
		h := sha256.Sum256(b[:])
		if k, err := identity.PublicKeyFromBytes(h[:]); err == nil {
			return k
		}
	}
}

func mustKey(n byte) identity.PrivateKey {
	k, err := identity.PrivateKeyFromSeed(bytes.Repeat([]byte{n}, 32))
	if err != nil {
		panic(err)
	}
	return k
}

// benchSigner signs one person's changes for the benchmarks, from their
// own view (a Log).
type benchSigner struct {
	key     identity.PrivateKey
	log     *Log
	seq     uint64
	lamport uint64
}

func (s *benchSigner) make(room string, ms int64, c *protocol.Change) item {
	if c.Op != protocol.OpCreate {
		parents, top := s.log.Parents()
		c.Parents = parents
		s.lamport = max(s.lamport, top)
	}
	s.lamport++
	s.seq++
	payload, err := c.MarshalBinary()
	if err != nil {
		panic(err)
	}
	env := &protocol.Envelope{Kind: protocol.KindMember, Room: room, Seq: s.seq, Lamport: s.lamport, Time: ms, Payload: payload}
	id, err := env.Sign(s.key)
	if err != nil {
		panic(err)
	}
	if _, err := s.log.Add(env, id); err != nil {
		panic(fmt.Sprintf("own %s: %v", c.Op, err))
	}
	return item{env, id}
}

// benchRoom is a room of size members made by its creator alone (a chain
// of adds), and the creator's view of it.
type benchRoom struct {
	room    string
	items   []item
	creator *benchSigner
	members []identity.PublicKey
}

var (
	benchRooms   = make(map[int]*benchRoom)
	benchRoomsMu sync.Mutex
)

func chainRoom(size int) *benchRoom {
	benchRoomsMu.Lock()
	defer benchRoomsMu.Unlock()
	if r, ok := benchRooms[size]; ok {
		return r
	}
	alice := &benchSigner{key: mustKey(1)}
	r := &benchRoom{room: protocol.PrivateRoomID(alice.key.Public(), testNonce), creator: alice}
	alice.log = NewLog(r.room)
	ms := t0.UnixMilli()
	r.items = append(r.items, alice.make(r.room, ms, &protocol.Change{Op: protocol.OpCreate, Nonce: testNonce, Name: "bench"}))
	r.members = append(r.members, alice.key.Public())
	for i := 1; i < size; i++ {
		ms += 1000
		k := benchTarget(i)
		r.items = append(r.items, alice.make(r.room, ms, &protocol.Change{Op: protocol.OpAdd, Target: k}))
		r.members = append(r.members, k)
	}
	benchRooms[size] = r
	return r
}

// BenchmarkAdmit judges a post of a member of a room of 1,000, beside the
// check of one envelope's signature that every post needs anyway.
func BenchmarkAdmit(b *testing.B) {
	r := chainRoom(1000)
	l := r.creator.log
	head := l.Head()
	member := r.members[500]
	now := t0.Add(time.Hour).UnixMilli()
	if err := l.Admit(member, head, now); err != nil {
		b.Fatal(err)
	}
	b.Run("Admit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := l.Admit(member, head, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ParsePostAndAdmit", func(b *testing.B) {
		payload, _ := (&protocol.Post{Head: head, Text: protocol.Text{Nick: "alice", Body: strings.Repeat("x", 200)}}).MarshalBinary()
		b.ReportAllocs()
		for b.Loop() {
			p, err := protocol.ParsePost(payload)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Admit(member, p.Head, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Verify", benchVerify)
}

// BenchmarkVerify checks the signature of one post envelope (256-byte
// payload), the cost Admit is to be compared with.
func BenchmarkVerify(b *testing.B) { benchVerify(b) }

func benchVerify(b *testing.B) {
	r := chainRoom(1000)
	payload, _ := (&protocol.Post{Head: r.creator.log.Head(), Text: protocol.Text{Nick: "alice", Body: strings.Repeat("x", 217)}}).MarshalBinary()
	e := &protocol.Envelope{Kind: protocol.KindPost, Room: r.room, Seq: 1, Lamport: 5000, Time: t0.UnixMilli(), Payload: payload}
	if _, err := e.Sign(mustKey(1)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Verify(); err != nil {
			b.Fatal(err)
		}
	}
}

// resolveRoom is a room of 10,000 changes by three admins who work
// concurrently and sync every 16 changes: mostly adds, and removals,
// admin roles given and dropped, renames. The admins' views are kept as
// sets of heads, not Logs, so that making the room costs the signatures
// and no more.
var resolveRoom = sync.OnceValue(func() *benchRoom {
	const n = 10000
	rng := rand.New(rand.NewPCG(10000, 1))
	alice := &benchSigner{key: mustKey(1)}
	r := &benchRoom{room: protocol.PrivateRoomID(alice.key.Public(), testNonce), creator: alice}
	alice.log = NewLog(r.room)
	ms := t0.UnixMilli()
	r.items = append(r.items, alice.make(r.room, ms, &protocol.Change{Op: protocol.OpCreate, Nonce: testNonce, Name: "bench"}))
	keys := []identity.PrivateKey{alice.key}
	for _, seed := range []byte{2, 3} {
		k := mustKey(seed)
		for _, op := range []protocol.Op{protocol.OpAdd, protocol.OpAdmin} {
			ms += 1000
			r.items = append(r.items, alice.make(r.room, ms, &protocol.Change{Op: op, Target: k.Public()}))
		}
		keys = append(keys, k)
	}
	admins := make([]*headView, len(keys))
	for i, k := range keys {
		admins[i] = &headView{key: k, seq: uint64(10 * i), heads: make(map[protocol.ID]item), known: make(map[protocol.ID]bool)}
	}
	syncAll := func() {
		for _, v := range admins {
			for _, it := range r.items {
				v.learn(it)
			}
		}
	}
	syncAll()
	var (
		members []identity.PublicKey // added, never signing
		next    int
	)
	for len(r.items) < n {
		if len(r.items)%16 == 0 {
			syncAll()
		}
		v := admins[rng.IntN(len(admins))]
		ms += 1000
		var c *protocol.Change
		switch p := rng.IntN(100); {
		case p < 70 || len(members) < 10:
			next++
			k := benchTarget(next)
			members = append(members, k)
			c = &protocol.Change{Op: protocol.OpAdd, Target: k}
		case p < 85:
			i := rng.IntN(len(members))
			c = &protocol.Change{Op: protocol.OpRemove, Target: members[i]}
			members = slices.Delete(members, i, i+1)
		case p < 90:
			c = &protocol.Change{Op: protocol.OpAdmin, Target: members[rng.IntN(len(members))]}
		case p < 95:
			c = &protocol.Change{Op: protocol.OpUnadmin, Target: members[rng.IntN(len(members))]}
		default:
			c = &protocol.Change{Op: protocol.OpRename, Name: fmt.Sprintf("bench %d", len(r.items))}
		}
		r.items = append(r.items, v.make(r.room, ms, c))
	}
	// The creator's log, for the members the room resolves to.
	alice.log = NewLog(r.room)
	for _, it := range byOrder(r.items) {
		if _, err := alice.log.Add(it.env, it.id); err != nil {
			panic(err)
		}
	}
	return r
})

// headView is what an admin has seen of a room, as the heads of the
// graph: what Log.Parents returns, kept without resolving.
type headView struct {
	key     identity.PrivateKey
	seq     uint64
	lamport uint64
	heads   map[protocol.ID]item
	known   map[protocol.ID]bool
}

// learn takes in a change whose parents v knows.
func (v *headView) learn(it item) {
	if v.known[it.id] {
		return
	}
	v.known[it.id] = true
	c, err := protocol.ParseChange(it.env.Payload)
	if err != nil {
		panic(err)
	}
	for _, p := range c.Parents {
		delete(v.heads, p)
	}
	v.heads[it.id] = it
	v.lamport = max(v.lamport, it.env.Lamport)
}

func (v *headView) make(room string, ms int64, c *protocol.Change) item {
	heads := make([]item, 0, len(v.heads))
	for _, h := range v.heads {
		heads = append(heads, h)
	}
	heads = byOrder(heads)
	if len(heads) > protocol.MaxParents {
		heads = heads[len(heads)-protocol.MaxParents:]
	}
	for _, h := range heads {
		c.Parents = append(c.Parents, h.id)
	}
	slices.SortFunc(c.Parents, func(a, b protocol.ID) int { return bytes.Compare(a[:], b[:]) })
	v.lamport++
	v.seq++
	payload, err := c.MarshalBinary()
	if err != nil {
		panic(err)
	}
	env := &protocol.Envelope{Kind: protocol.KindMember, Room: room, Seq: v.seq, Lamport: v.lamport, Time: ms, Payload: payload}
	id, err := env.Sign(v.key)
	if err != nil {
		panic(err)
	}
	it := item{env, id}
	v.learn(it)
	return it
}

func byOrder(items []item) []item {
	out := slices.Clone(items)
	// A store's order: Lamport clock, then ID.
	slices.SortFunc(out, func(a, b item) int {
		return cmp.Or(cmp.Compare(a.env.Lamport, b.env.Lamport), bytes.Compare(a.id[:], b.id[:]))
	})
	return out
}

// BenchmarkResolve10000 builds a Log from the room's 10,000 changes: in
// resolution order (as a store loads them), and in the order they were
// made (each admin's changes interleaved as they synced). One op is the
// whole log.
func BenchmarkResolve10000(b *testing.B) {
	r := resolveRoom()
	want := r.creator.log.Members()
	for _, tc := range []struct {
		name  string
		items []item
	}{{"sorted", byOrder(r.items)}, {"as-made", r.items}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var l *Log
			for b.Loop() {
				l = NewLog(r.room)
				for _, it := range tc.items {
					if _, err := l.Add(it.env, it.id); err != nil {
						b.Fatal(err)
					}
				}
				l.Members() // the member set, resolved (the log resolves lazily)
			}
			if l.Len() != len(r.items) || len(l.Members()) != len(want) {
				b.Fatalf("resolved %d changes, %d members; want %d, %d", l.Len(), len(l.Members()), len(r.items), len(want))
			}
			b.ReportMetric(float64(len(want)), "members")
		})
	}
}

// BenchmarkResolve10000Shuffled builds a Log from the room's 10,000
// changes in a random order: a change whose parents have not arrived
// waits (in a Waiting) and is added when they have.
func BenchmarkResolve10000Shuffled(b *testing.B) {
	r := resolveRoom()
	items := slices.Clone(r.items)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
	want := r.creator.log.Members()
	b.ReportAllocs()
	var l *Log
	for b.Loop() {
		l = NewLog(r.room)
		w := NewWaiting[item](len(items), len(items), time.Hour)
		queue := make([]item, 0, len(items))
		for _, it := range items {
			queue = append(queue[:0], it)
			for len(queue) > 0 {
				it := queue[0]
				queue = queue[1:]
				missing, err := l.Add(it.env, it.id)
				switch {
				case err == nil:
					queue = append(queue, w.Release(it.id, t0)...)
				case len(missing) > 0:
					w.Hold(missing[0], it, "", t0)
				default:
					b.Fatal(err)
				}
			}
		}
		if w.Len() != 0 {
			b.Fatalf("%d changes still waiting", w.Len())
		}
		l.Members() // the member set, resolved (the log resolves lazily)
	}
	if l.Len() != len(r.items) || !slicesEqualMembers(l.Members(), want) {
		b.Fatalf("resolved %d changes, %d members; want %d, %d", l.Len(), len(l.Members()), len(r.items), len(want))
	}
}

func slicesEqualMembers(a, b []Member) bool {
	return slices.EqualFunc(a, b, func(x, y Member) bool { return x.Key == y.Key && x.Admin == y.Admin && x.Since == y.Since })
}

// BenchmarkAddThousandthMember adds the change that adds the 1,000th
// member to a room of 999, made by its creator on top of the log (the
// usual case: it sorts last). After each add the log is put back as it
// was by undoAdd, inside the timer (a few map deletes and a slice
// truncation, small beside Add): stopping the timer for every iteration
// costs far more than the add, and a fresh log of 999 per iteration far
// more again.
func BenchmarkAddThousandthMember(b *testing.B) {
	r := chainRoom(999)
	l := r.creator.log
	// The 1,000th member's add, signed on a copy of the creator's state.
	signer := *r.creator
	signer.log = NewLog(r.room)
	for _, it := range r.items {
		if _, err := signer.log.Add(it.env, it.id); err != nil {
			b.Fatal(err)
		}
	}
	target := benchTarget(999)
	x := signer.make(r.room, t0.Add(time.Hour).UnixMilli(), &protocol.Change{Op: protocol.OpAdd, Target: target})
	before := stateOf(l)
	if len(before.Members) != 999 {
		b.Fatalf("%d members", len(before.Members))
	}
	add := func(b *testing.B) {
		if _, err := l.Add(x.env, x.id); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("Add", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			add(b)
			undoAdd(l, x, before.Parents, target)
		}
		if !l.IsMember(benchTarget(998)) || l.IsMember(target) || l.Len() != 999 {
			b.Fatal("undo failed")
		}
	})
	add(b)
	if !l.IsMember(target) || len(l.Members()) != 1000 || l.Head() != x.id {
		b.Fatal("the 1,000th member was not added")
	}
	undoAdd(l, x, before.Parents, target)
	if after := stateOf(l); len(after.Members) != 999 || after.Head != before.Head {
		b.Fatal("undo failed")
	}
}

// undoAdd takes back the add of it, an add of target that sorted last and
// whose parents were heads: what Add did in that case, undone.
func undoAdd(l *Log, it item, parents []protocol.ID, target identity.PublicKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.changes, it.id)
	delete(l.heads, it.id)
	for _, p := range parents {
		l.heads[p] = true
	}
	l.order[len(l.order)-1] = nil
	l.order = l.order[:len(l.order)-1]
	delete(l.st.members, target)
}

package keyring

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/crypto/ratchet"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

const room = "p:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

var head = protocol.ID{1}

// person is one member's device: a key, a store and a ring.
type person struct {
	t    testing.TB
	key  identity.PrivateKey
	st   *store.Store
	ring *Ring
	seq  uint64
	prev protocol.ID
}

func newPerson(t testing.TB, now func() time.Time) *person {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Search())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := &person{t: t, key: testkit.Key(t), st: st}
	if p.ring, err = Open(context.Background(), st, p.key, now); err != nil {
		t.Fatal(err)
	}
	return p
}

// announce hands p's current package to each of others, as its
// announcement in a room would.
func (p *person) announce(others ...*person) {
	p.t.Helper()
	pkg, _, err := p.ring.Current(context.Background())
	if err != nil {
		p.t.Fatal(err)
	}
	b, _ := pkg.MarshalBinary()
	for _, o := range others {
		if _, err := o.ring.LearnRaw(context.Background(), b); err != nil {
			p.t.Fatal(err)
		}
	}
}

// envelope signs p's next envelope in room with a payload set by fill.
func (p *person) envelope(kind protocol.Kind, fill func(*protocol.Envelope)) (*protocol.Envelope, protocol.ID, []byte) {
	p.t.Helper()
	p.seq++
	e := &protocol.Envelope{Kind: kind, Room: room, Seq: p.seq, Prev: p.prev, Lamport: p.seq, Time: time.Now().UnixMilli()}
	e.Sender = p.key.Public()
	fill(e)
	id, err := e.Sign(p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	raw, _ := e.MarshalBinary()
	p.prev = id
	return e, id, raw
}

// sendKeys prepares p's sender key for members and returns its Keys
// envelopes (none if the current one holds).
func (p *person) sendKeys(members ...*person) []*protocol.Envelope {
	p.t.Helper()
	var keys []identity.PublicKey
	for _, m := range members {
		keys = append(keys, m.key.Public())
	}
	ep, err := p.ring.Prepare(context.Background(), room, head, keys)
	if err != nil {
		p.t.Fatal(err)
	}
	if ep == nil {
		return nil
	}
	var out []*protocol.Envelope
	for _, k := range ep.Keys {
		e, _, _ := p.envelope(protocol.KindKeys, func(e *protocol.Envelope) { e.Payload, _ = k.MarshalBinary() })
		out = append(out, e)
	}
	if err := ep.Commit(context.Background()); err != nil {
		p.t.Fatal(err)
	}
	return out
}

// post seals text as p's next message.
func (p *person) post(text string) (*protocol.Envelope, protocol.ID, []byte) {
	p.t.Helper()
	return p.envelope(protocol.KindSealed, func(e *protocol.Envelope) {
		if err := p.ring.Seal(context.Background(), e, head, &protocol.Text{Nick: "n", Body: text}); err != nil {
			p.t.Fatal(err)
		}
	})
}

// receive hands envelopes to p's ring in one batch and returns what
// changed.
func (p *person) receive(envs ...*protocol.Envelope) []store.Sealed {
	p.t.Helper()
	ctx := context.Background()
	b, err := p.st.Begin(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	defer b.Rollback()
	var out []store.Sealed
	o := p.ring.Opener(b)
	for _, e := range envs {
		raw, _ := e.MarshalBinary()
		got, err := o.Receive(ctx, e, e.ID(), raw)
		if err != nil {
			p.t.Fatal(err)
		}
		out = append(out, got...)
	}
	if err := o.Flush(ctx); err != nil {
		p.t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		p.t.Fatal(err)
	}
	return out
}

func want(t *testing.T, got []store.Sealed, status store.SealedStatus, bodies ...string) {
	t.Helper()
	if len(got) != len(bodies) {
		t.Fatalf("%d messages changed, want %d: %+v", len(got), len(bodies), got)
	}
	// In any order: what waited for a key opens in the store's order.
	got = slices.Clone(got)
	slices.SortFunc(got, func(a, b store.Sealed) int { return strings.Compare(a.Body, b.Body) })
	bodies = slices.Clone(bodies)
	slices.Sort(bodies)
	for i, m := range got {
		if m.Status != status || (status == store.SealedOpened && m.Body != bodies[i]) {
			t.Errorf("message %d: status %d %q, want %d %q", i, m.Status, m.Body, status, bodies[i])
		}
	}
}

func TestSealOpenAndWaitForKey(t *testing.T) {
	alice, bob := newPerson(t, time.Now), newPerson(t, time.Now)
	bob.announce(alice)
	keys := alice.sendKeys(alice, bob)
	if len(keys) != 1 {
		t.Fatalf("%d Keys envelopes, want 1", len(keys))
	}
	m1, _, _ := alice.post("one")
	m2, _, _ := alice.post("two")
	m3, _, _ := alice.post("three")
	// The messages come before their key: they wait, then open.
	want(t, bob.receive(m3, m1), store.SealedWaiting, "", "")
	want(t, bob.receive(keys...), store.SealedOpened, "three", "one")
	want(t, bob.receive(m2), store.SealedOpened, "two")
	// Again: handled before, nothing changes; the keys were erased.
	want(t, bob.receive(m2), store.SealedOpened)
	if again := alice.sendKeys(alice, bob); again != nil {
		t.Error("a new epoch though nothing changed")
	}
	for _, e := range []*protocol.Envelope{m1, m2, m3} {
		if strings.Contains(string(e.Payload), "one") || strings.Contains(string(e.Payload), "three") {
			t.Error("plaintext in a sealed payload")
		}
	}
}

func TestTamperedAndMovedMessagesDoNotOpen(t *testing.T) {
	alice, bob := newPerson(t, time.Now), newPerson(t, time.Now)
	bob.announce(alice)
	keys := alice.sendKeys(alice, bob)
	bob.receive(keys...)
	m, _, _ := alice.post("secret")
	changed := *m
	changed.Payload = append([]byte(nil), m.Payload...)
	changed.Payload[len(changed.Payload)-1] ^= 1
	want(t, bob.receive(&changed), store.SealedNever, "")
	// The same box at another position of the sender's chain (its key
	// unused so far: the changed copy used none).
	moved := *m
	moved.Seq, moved.Lamport = m.Seq+5, m.Lamport+5
	want(t, bob.receive(&moved), store.SealedNever, "")
	want(t, bob.receive(m), store.SealedOpened, "secret")
}

func TestRemovedMemberReadsNothingAfter(t *testing.T) {
	alice, bob, carol := newPerson(t, time.Now), newPerson(t, time.Now), newPerson(t, time.Now)
	bob.announce(alice)
	carol.announce(alice)
	carol.receive(alice.sendKeys(alice, bob, carol)...)
	m1, _, _ := alice.post("before")
	want(t, carol.receive(m1), store.SealedOpened, "before")
	// Carol is removed: the next message starts an epoch without her.
	keys := alice.sendKeys(alice, bob)
	if len(keys) != 1 || len(keys[0].Payload) == 0 {
		t.Fatal("no new epoch after a removal")
	}
	m2, _, _ := alice.post("after")
	carol.receive(keys...)
	got := carol.receive(m2)
	if len(got) != 1 || got[0].Status == store.SealedOpened {
		t.Fatalf("the removed member: %+v", got)
	}
	bob.receive(keys...)
	want(t, bob.receive(m2), store.SealedOpened, "after")
}

func TestLaterMemberReadsNothingBefore(t *testing.T) {
	alice, bob, dave := newPerson(t, time.Now), newPerson(t, time.Now), newPerson(t, time.Now)
	bob.announce(alice)
	old := alice.sendKeys(alice, bob)
	m1, _, _ := alice.post("before dave")
	dave.announce(alice)
	keys := alice.sendKeys(alice, bob, dave)
	m2, _, _ := alice.post("with dave")
	// Before its key: waiting. Its key, sealed to the others only: never.
	want(t, dave.receive(m1), store.SealedWaiting, "")
	got := dave.receive(append(old, keys...)...)
	want(t, got, store.SealedNever, "")
	if !strings.Contains(got[0].Body, "not sealed to you") {
		t.Errorf("why: %q", got[0].Body)
	}
	want(t, dave.receive(m2), store.SealedOpened, "with dave")
	// A message of the epoch before him that comes later: never, at once.
	carolOld := *m1
	carolOld.Seq, carolOld.Lamport = m1.Seq+100, m1.Lamport+100
	want(t, dave.receive(&carolOld), store.SealedNever, "")
}

func TestEpochRollsOverByCount(t *testing.T) {
	alice, bob := newPerson(t, time.Now), newPerson(t, time.Now)
	bob.announce(alice)
	alice.sendKeys(alice, bob)
	for range EpochMessages {
		alice.post("x")
	}
	if alice.sendKeys(alice, bob) == nil {
		t.Errorf("no new epoch after %d messages", EpochMessages)
	}
}

func TestEpochRollsOverByAge(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	alice, bob := newPerson(t, clock), newPerson(t, clock)
	bob.announce(alice)
	alice.sendKeys(alice, bob)
	now = now.Add(EpochAge)
	if alice.sendKeys(alice, bob) == nil {
		t.Errorf("no new epoch after %v", EpochAge)
	}
}

func TestLargeRoomKeysTakeSeveralEnvelopes(t *testing.T) {
	alice := newPerson(t, time.Now)
	members := []*person{alice}
	for range protocol.MaxRecipients + 2 {
		p := newPerson(t, time.Now)
		p.announce(alice)
		members = append(members, p)
	}
	keys := alice.sendKeys(members...)
	if len(keys) != 2 {
		t.Fatalf("%d Keys envelopes for %d members, want 2", len(keys), len(members))
	}
	m, _, _ := alice.post("all")
	last := members[len(members)-1]
	want(t, last.receive(append(keys, m)...), store.SealedOpened, "all")
}

// TestIndexOutOfRangeNeverOpens: a member's message at the last possible
// index (or beyond the window) is marked, and the batch goes on: it must
// not stop the receiver's merger.
func TestIndexOutOfRangeNeverOpens(t *testing.T) {
	alice, bob := newPerson(t, time.Now), newPerson(t, time.Now)
	bob.announce(alice)
	keys := alice.sendKeys(alice, bob)
	m, _, _ := alice.post("fine")
	for _, index := range []uint32{1<<32 - 1, 1<<32 - 2, ratchet.MaxSkip + 5} {
		bad, _, _ := alice.envelope(protocol.KindSealed, func(e *protocol.Envelope) {
			p, err := protocol.ParseSealed(m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			p.Index = index
			e.Payload, _ = p.MarshalBinary()
		})
		got := bob.receive(append(keys, bad)...)
		want(t, got, store.SealedNever, "")
	}
	want(t, bob.receive(m), store.SealedOpened, "fine")
}

// TestReplayedSenderKeyDoesNotOpen: a member who copies another's sealed
// sender key into an envelope of their own (to pass it off as theirs, or
// into another room) gets nothing opened with it: the HPKE info binds
// the room and the sender.
func TestReplayedSenderKeyDoesNotOpen(t *testing.T) {
	alice, bob, mallory := newPerson(t, time.Now), newPerson(t, time.Now), newPerson(t, time.Now)
	bob.announce(alice)
	keys := alice.sendKeys(alice, bob)
	m, _, _ := alice.post("for bob")
	// Mallory signs Alice's payload as her own: same epoch, her name.
	stolen, _, _ := mallory.envelope(protocol.KindKeys, func(e *protocol.Envelope) { e.Payload = keys[0].Payload })
	// And Alice's own envelope, replayed into another room.
	moved := *keys[0]
	moved.Room = "p:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	if _, err := moved.Sign(alice.key); err != nil {
		t.Fatal(err)
	}
	want(t, bob.receive(stolen, &moved), store.SealedOpened)
	// Neither gave Bob a chain: Alice's message waits for her key.
	want(t, bob.receive(m), store.SealedWaiting, "")
	want(t, bob.receive(keys...), store.SealedOpened, "for bob")
}

// TestOldKeysAreErased: a receiving chain 30 days old and the private key
// of a package expired for a week are gone once a session opens the
// ring: what they would open is past.
func TestOldKeysAreErased(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	alice, bob := newPerson(t, clock), newPerson(t, clock)
	bob.announce(alice)
	bob.receive(alice.sendKeys(alice, bob)...)
	late, _, _ := alice.post("late")
	now = now.Add(keypackage.Lifetime + keepExpired + time.Hour)
	ring, err := Open(context.Background(), bob.st, bob.key, clock)
	if err != nil {
		t.Fatal(err)
	}
	bob.ring = ring
	if own, err := bob.st.OwnPackages(context.Background()); err != nil || len(own) != 0 {
		t.Errorf("our expired packages kept: %d, %v", len(own), err)
	}
	// The chain is gone: a message of its epoch waits for a key that
	// was taken, and never comes again.
	want(t, bob.receive(late), store.SealedWaiting, "")
}

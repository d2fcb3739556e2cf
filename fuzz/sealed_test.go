package fuzz

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// End-to-end encryption's payloads (protocol/sealed.go): the parsers of
// the three sealed kinds are strict like the rest, and an error from one
// wraps exactly one of protocol's sentinels. CheckPayload, which the
// relay and every peer run, agrees with the parser of the kind.

// protocolSentinels are all the sentinels of protocol/errors.go.
var protocolSentinels = []error{protocol.ErrMalformed, protocol.ErrTooLarge, protocol.ErrUnknownVersion,
	protocol.ErrBadSignature, protocol.ErrReplay, protocol.ErrExpired, protocol.ErrEquivocation}

// protocolSentinel fails t unless err wraps exactly one of protocol's
// sentinels, and that one of allowed. It returns that sentinel.
func protocolSentinel(t *testing.T, err error, allowed ...error) error {
	t.Helper()
	var got []error
	for _, s := range protocolSentinels {
		if errors.Is(err, s) {
			got = append(got, s)
		}
	}
	if len(got) != 1 || !slices.Contains(allowed, got[0]) {
		t.Fatalf("error %v wraps %v of protocol's sentinels, want exactly one of %v", err, got, allowed)
	}
	return got[0]
}

// sealedRoom is the private room of the sealed targets: the direct room
// of keys 1 and 2.
func sealedRoom(t testing.TB) string {
	return protocol.DirectRoomID(testKey(t, 1).Public(), testKey(t, 2).Public())
}

// checkKind returns what CheckPayload says of payload b as an envelope
// of kind in room from sender (unsigned: CheckPayload does not verify),
// and the envelope.
func checkKind(room string, kind protocol.Kind, sender identity.PublicKey, b []byte) (*protocol.Envelope, error) {
	e := &protocol.Envelope{Kind: kind, Room: room, Sender: sender, Seq: 3, Prev: protocol.ID{7}, Lamport: 9,
		Time: 1764137501000, Payload: b}
	return e, protocol.CheckPayload(e)
}

// agree fails t unless CheckPayload's error errCheck is nil exactly when
// the parser's errParse is, and wraps the same sentinel.
func agree(t *testing.T, errParse, errCheck error) {
	t.Helper()
	if (errParse == nil) != (errCheck == nil) {
		t.Fatalf("the parser says %v, CheckPayload %v", errParse, errCheck)
	}
	if errParse != nil {
		if s := protocolSentinel(t, errCheck, protocolSentinels...); !errors.Is(errParse, s) {
			t.Fatalf("the parser says %v, CheckPayload %v", errParse, errCheck)
		}
	}
}

// mustMarshal returns the encoding of m.
func mustMarshal(t testing.TB, m interface{ MarshalBinary() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sealedRecipientKeys returns the public keys of seeds 1 to n in
// ascending order of their bytes.
func sealedRecipientKeys(t testing.TB, n int) []identity.PublicKey {
	ks := make([]identity.PublicKey, n)
	for i := range ks {
		ks[i] = testKey(t, byte(i+1)).Public()
	}
	slices.SortFunc(ks, func(a, b identity.PublicKey) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	return ks
}

// keysSeeds returns encoded Keys payloads: valid ones, then a few that
// are not.
func keysSeeds(t testing.TB) [][]byte {
	// Small seeds: the fuzzer minimizes every new input it finds, and a
	// large one takes it most of a short run. The unit tests in package
	// protocol have the limits.
	r := sealedRecipientKeys(t, 7)
	sealed := func(rs []identity.PublicKey, keyLen int) []protocol.SealedKey {
		var out []protocol.SealedKey
		for i, rc := range rs {
			out = append(out, protocol.SealedKey{Recipient: rc, Package: [32]byte{byte(i), 0x55}, Key: bytes.Repeat([]byte{byte(i + 1)}, keyLen)})
		}
		return out
	}
	var out [][]byte
	for _, k := range []*protocol.Keys{
		{Head: protocol.ID{1}, Epoch: protocol.Epoch{2}, Sealed: sealed(r[:1], 1)},
		{Head: protocol.ID{1, 2}, Epoch: protocol.Epoch{3}, Sealed: sealed(r[:4], 5)},
		{Head: protocol.ID{9}, Epoch: protocol.Epoch{15: 1}, From: r[0].Array(), Sealed: sealed(r[:7], 2)},
	} {
		out = append(out, mustMarshal(t, k))
	}
	short := slices.Clone(out[1])
	short[32+protocol.EpochSize+64] = 0 // no recipients, trailing bytes
	swapped := slices.Clone(out[1])
	entry := 32 + 32 + 2 + 5
	first := 32 + protocol.EpochSize + 64 + 1
	tmp := slices.Clone(swapped[first : first+entry])
	copy(swapped[first:], swapped[first+entry:first+2*entry])
	copy(swapped[first+entry:], tmp) // recipients out of order
	return append(out, short, swapped, out[0][:40], []byte{})
}

// FuzzKeys: a sender key payload that parses encodes back to exactly the
// input, and For finds each recipient in it; one that does not is
// refused, by CheckPayload too, with exactly one of protocol's
// sentinels.
func FuzzKeys(f *testing.F) {
	for _, b := range keysSeeds(f) {
		f.Add(b)
	}
	probes := sealedRecipientKeys(f, 4)
	sender := testKey(f, 1).Public()
	room := sealedRoom(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := protocol.ParseKeys(b)
		if err != nil {
			protocolSentinel(t, err, protocol.ErrMalformed, protocol.ErrTooLarge)
			if k != nil {
				t.Fatalf("ParseKeys returned %+v with %v", k, err)
			}
		}
		e, errCheck := checkKind(room, protocol.KindKeys, sender, b)
		agree(t, err, errCheck)
		if err != nil {
			return
		}
		sameBytes(t, b)(k.MarshalBinary())
		if h, err := protocol.HeadOf(e); err != nil || h != k.Head {
			t.Fatalf("HeadOf = %s, %v; the payload names %s", h, err, k.Head)
		}
		for i, s := range k.Sealed {
			got, ok, none := k.For(s.Recipient)
			if !ok || none || !got.Recipient.Equal(s.Recipient) || got.Package != s.Package || !bytes.Equal(got.Key, s.Key) {
				t.Fatalf("For(recipient %d) = %+v, %v, %v", i, got, ok, none)
			}
		}
		// A key not in the part: surely not sealed to when it falls in
		// the part's stretch of keys (From up to To, zero: the end);
		// another part's to say otherwise.
		for _, p := range probes {
			if slices.ContainsFunc(k.Sealed, func(s protocol.SealedKey) bool { return s.Recipient.Equal(p) }) {
				continue
			}
			want := bytes.Compare(k.From[:], p.Bytes()) <= 0 && (k.To == [32]byte{} || bytes.Compare(p.Bytes(), k.To[:]) < 0)
			if got, ok, none := k.For(p); ok || none != want || got.Key != nil {
				t.Fatalf("For(%s) = %+v, %v, %v; want surely none %v", p.ShortFingerprint(), got, ok, none, want)
			}
		}
	})
}

// sealedSeeds returns encoded Sealed payloads, valid and not.
func sealedSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, p := range []*protocol.Sealed{
		{Head: protocol.ID{1}, Epoch: protocol.Epoch{2}, Index: 0, Box: make([]byte, protocol.MinBox)},
		{Head: protocol.ID{0xff, 1}, Epoch: protocol.Epoch{15: 3}, Index: 1<<32 - 1, Box: bytes.Repeat([]byte{0xb1}, 300)},
	} {
		out = append(out, mustMarshal(t, p))
	}
	zero := slices.Clone(out[0])
	clear(zero[:32])
	return append(out, out[0][:len(out[0])-1], zero, []byte{})
}

// FuzzSealedPayload: a sealed message's payload that parses encodes back
// to exactly the input, and its associated data ends with what the
// payload leaves in the clear; one that does not parse is refused, by
// CheckPayload too, with exactly one of protocol's sentinels.
func FuzzSealedPayload(f *testing.F) {
	for _, b := range sealedSeeds(f) {
		f.Add(b)
	}
	sender := testKey(f, 1).Public()
	room := sealedRoom(f)
	const context = "parley sealed message v1\x00"
	const clearLen = 32 + protocol.EpochSize + 4
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := protocol.ParseSealed(b)
		if err != nil {
			protocolSentinel(t, err, protocol.ErrMalformed, protocol.ErrTooLarge)
		}
		e, errCheck := checkKind(room, protocol.KindSealed, sender, b)
		agree(t, err, errCheck)
		if err != nil {
			return
		}
		sameBytes(t, b)(p.MarshalBinary())
		if h, err := protocol.HeadOf(e); err != nil || h != p.Head {
			t.Fatalf("HeadOf = %s, %v; the payload names %s", h, err, p.Head)
		}
		if len(p.Box) < protocol.MinBox || len(b) != clearLen+len(p.Box) {
			t.Fatalf("a box of %d bytes from a payload of %d", len(p.Box), len(b))
		}
		aad := protocol.SealedAAD(e, &p)
		n := len(b)
		wantLen := len(context) + 3 + len(e.Room) + 32 + 8 + 32 + 8 + 8 + 3 + clearLen
		if len(aad) != wantLen || !bytes.HasPrefix(aad, []byte(context)) ||
			!bytes.HasSuffix(aad, append([]byte{byte(n >> 16), byte(n >> 8), byte(n)}, b[:clearLen]...)) {
			t.Fatalf("SealedAAD = %x: want %d bytes ending with the payload's length and clear part", aad, wantLen)
		}
	})
}

// announceTestPackage derives the key package of key 1 that the
// announcement seeds carry.
func announceTestPackage(t testing.TB) *keypackage.Package {
	created := time.Unix(1767225600, 0)
	p, _, err := keypackage.Derive(testKey(t, 1), [keypackage.DeviceSize]byte{1, 2, 3}, created, created.Add(keypackage.Lifetime), bytes.Repeat([]byte{0x42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FuzzAnnounce: a key package announcement that parses encodes back to
// exactly the input, and CheckPayload passes it from the package's
// identity only; one that does not parse is refused, by CheckPayload
// too, with exactly one of protocol's sentinels.
//
// The input is head, then, if withPackage, a valid key package with byte
// pos changed by x, then tail. A package is 1,353 bytes: given them as
// one input, the fuzzer spends a short run minimizing the first new
// input it finds, byte by byte; given them as an edit of a package it
// holds, it explores. With withPackage false, head and tail are any
// bytes.
func FuzzAnnounce(f *testing.F) {
	pkg := mustMarshal(f, announceTestPackage(f))
	head := []byte{1, 2, 29: 0, 30: 0, 31: 0}
	f.Add(head, true, uint16(0), byte(0), []byte{})                    // valid
	f.Add(head, true, uint16(len(pkg)-1), byte(1), []byte{})           // bad signature
	f.Add(head, true, uint16(0), byte(3), []byte{})                    // unknown version
	f.Add(head, true, uint16(2), byte(1), []byte{})                    // unknown suite
	f.Add(head, true, uint16(7+32), byte(0x80), []byte{})              // another device
	f.Add(head, true, uint16(7+32+16+2*8), byte(1), []byte{})          // public key's length
	f.Add(head[:31], true, uint16(0), byte(0), []byte{})               // short head
	f.Add(make([]byte, 32), true, uint16(0), byte(0), []byte{})        // zero head
	f.Add(head, true, uint16(0), byte(0), []byte{0})                   // trailing byte
	f.Add(head, false, uint16(0), byte(0), pkg[:len(pkg)-1])           // cut
	f.Add(append(head, 1), false, uint16(0), byte(0), []byte{0, 0x64}) // truncated suite
	owner, other := testKey(f, 1).Public(), testKey(f, 2).Public()
	room := sealedRoom(f)
	f.Fuzz(func(t *testing.T, head []byte, withPackage bool, pos uint16, x byte, tail []byte) {
		b := slices.Clone(head)
		if withPackage {
			b = append(b, pkg...)
			b[len(head)+int(pos)%len(pkg)] ^= x
		}
		b = append(b, tail...)
		a, err := protocol.ParseAnnounce(b)
		if err != nil {
			protocolSentinel(t, err, protocol.ErrMalformed, protocol.ErrTooLarge, protocol.ErrUnknownVersion, protocol.ErrBadSignature)
			if a.Package != nil || !a.Head.IsZero() {
				t.Fatalf("ParseAnnounce returned %+v with %v", a, err)
			}
			_, errCheck := checkKind(room, protocol.KindKeyPackage, owner, b)
			agree(t, err, errCheck)
			return
		}
		sameBytes(t, b)(a.MarshalBinary())
		if a.Package.ID() != sha256.Sum256(b[32:]) {
			t.Fatal("the package's ID is not the hash of its bytes")
		}
		e, errCheck := checkKind(room, protocol.KindKeyPackage, a.Package.Identity, b)
		if errCheck != nil {
			t.Fatalf("CheckPayload of a package announced by its identity: %v", errCheck)
		}
		if h, err := protocol.HeadOf(e); err != nil || h != a.Head {
			t.Fatalf("HeadOf = %s, %v; the payload names %s", h, err, a.Head)
		}
		someoneElse := owner
		if a.Package.Identity.Equal(owner) {
			someoneElse = other
		}
		_, errCheck = checkKind(room, protocol.KindKeyPackage, someoneElse, b)
		protocolSentinel(t, errCheck, protocol.ErrMalformed)
	})
}

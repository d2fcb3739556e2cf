package fuzz

import (
	"bytes"
	"crypto/hpke"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/crypto/ratchet"
	"github.com/parleychat/parley/crypto/seal"
	"github.com/parleychat/parley/crypto/senderkey"
)

// testPackage derives the key package of the crypto packages' known-answer
// tests (identity from seed 01..01, ikm 42..42) and its private key.
func testPackage(t testing.TB) (*keypackage.Package, hpke.PrivateKey) {
	device := [keypackage.DeviceSize]byte{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f}
	created := time.Unix(1767225600, 0)
	p, priv, err := keypackage.Derive(testKey(t, 1), device, created, created.Add(keypackage.Lifetime), bytes.Repeat([]byte{0x42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return p, priv
}

// splice returns a copy of base with base[at:at+cut] (clipped to base)
// replaced by edit.
func splice(base, edit []byte, at, cut uint16) []byte {
	i := min(int(at), len(base))
	j := min(i+int(cut), len(base))
	return append(append(append([]byte{}, base[:i]...), edit...), base[j:]...)
}

func marshalOrFail(t testing.TB, m interface{ MarshalBinary() ([]byte, error) }) []byte {
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzKeyPackage: a key package that parses encodes back to exactly the
// input and has the hash of its bytes as ID; with any byte changed it no
// longer parses; what does not parse fails with one sentinel.
//
// The input is an edit of a valid package rather than a whole one: the
// bytes good[at:at+cut] replaced by edit. A package is 1353 bytes, and the
// fuzzer minimizes every new input it finds, at a cost that grows with the
// square of its size: on whole packages it spent its time minimizing. An
// edit keeps inputs small, and every byte string is still an input (at 0,
// cut everything).
func FuzzKeyPackage(f *testing.F) {
	p, _ := testPackage(f)
	good := marshalOrFail(f, p)
	f.Add([]byte{}, uint16(0), uint16(0), uint16(0), byte(1))
	f.Add([]byte{}, uint16(0), uint16(0), uint16(keypackage.MaxSize-1), byte(0x80))
	f.Add([]byte{2}, uint16(0), uint16(1), uint16(0), byte(0))
	f.Add([]byte{0xff}, uint16(70), uint16(1), uint16(0), byte(0))
	f.Fuzz(func(t *testing.T, edit []byte, at, cut, flip uint16, x byte) {
		b := splice(good, edit, at, cut)
		p, err := keypackage.Parse(b)
		if err != nil {
			exactlyOneOf(t, err, keypackage.ErrMalformed, keypackage.ErrUnknownVersion, keypackage.ErrBadSignature)
			return
		}
		sameBytes(t, b)(p.MarshalBinary())
		if p.ID() != sha256.Sum256(b) {
			t.Fatal("ID() differs from the hash of the input")
		}
		if x == 0 {
			return
		}
		b[int(flip)%len(b)] ^= x
		if _, err := keypackage.Parse(b); err == nil {
			t.Fatalf("byte %d ^ %#x: a changed package parses", int(flip)%len(b), x)
		}
	})
}

// FuzzSealed: any plaintext and associated data seal and open back; Open
// of any bytes fails with one sentinel, or gives a plaintext that seals
// back to exactly those bytes (sealing is deterministic under one key), so
// that a changed ciphertext never opens.
//
// The bytes opened are an edit of the ciphertext just sealed (see
// FuzzKeyPackage for why): any byte string, and the near misses that
// matter most.
func FuzzSealed(f *testing.F) {
	mk := ratchet.MessageKey{1}
	f.Add([]byte("hello"), uint16(0), []byte("aad"), []byte{}, uint16(0), uint16(0))
	f.Add([]byte("hello"), uint16(0), []byte("aad"), []byte{0x80}, uint16(70), uint16(1))
	f.Add([]byte{}, uint16(seal.MaxPlaintext), []byte{}, []byte{}, uint16(0), uint16(0))
	f.Add([]byte{}, uint16(seal.MaxPlaintext+1), []byte{}, make([]byte, 80), uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, pt []byte, grow uint16, aad, edit []byte, at, cut uint16) {
		pt = append(pt, make([]byte, grow)...)
		ct, err := seal.Seal(mk, aad, pt)
		if err != nil {
			exactlyOneOf(t, err, seal.ErrTooLarge)
			if len(pt) <= seal.MaxPlaintext {
				t.Fatalf("a %d-byte plaintext does not seal: %v", len(pt), err)
			}
		} else if got, err := seal.Open(mk, aad, ct); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("open(seal(x)) = %q, %v; want %q", got, err, pt)
		}
		c := splice(ct, edit, at, cut)
		got, err := seal.Open(mk, aad, c)
		if err != nil {
			exactlyOneOf(t, err, seal.ErrOpen, seal.ErrMalformed, seal.ErrTooLarge)
			return
		}
		if again, err := seal.Seal(mk, aad, got); err != nil || !bytes.Equal(again, c) {
			t.Fatalf("what opened seals to %x, %v; want the input", again, err)
		}
	})
}

// FuzzReceiverState: a receiver state that unmarshals marshals back to
// exactly the input, and still does after it hands out a key.
func FuzzReceiverState(f *testing.F) {
	r := ratchet.NewReceiver(ratchet.ChainKey{1})
	r.Key(3)
	r.Key(9)
	f.Add(marshalOrFail(f, r), uint32(1))
	f.Add(marshalOrFail(f, ratchet.NewReceiver(ratchet.ChainKey{2})), uint32(1000))
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, index uint32) {
		var r ratchet.Receiver
		if err := r.UnmarshalBinary(b); err != nil {
			exactlyOneOf(t, err, ratchet.ErrTooFar, ratchet.ErrGone, ratchet.ErrExhausted, ratchet.ErrMalformed)
			return
		}
		sameBytes(t, b)(r.MarshalBinary())
		if _, err := r.Key(index); err != nil {
			exactlyOneOf(t, err, ratchet.ErrTooFar, ratchet.ErrGone, ratchet.ErrExhausted, ratchet.ErrMalformed)
		}
		after := marshalOrFail(t, &r)
		var q ratchet.Receiver
		if err := q.UnmarshalBinary(after); err != nil {
			t.Fatalf("state after Key(%d) does not unmarshal: %v", index, err)
		}
		sameBytes(t, after)(q.MarshalBinary())
	})
}

// FuzzSenderKey: Open under a fixed key and Info of any bytes (an edit of
// a key really sealed to it, see FuzzKeyPackage) fails with one sentinel,
// unless the bytes are that sealed key.
func FuzzSenderKey(f *testing.F) {
	p, priv := testPackage(f)
	info := senderkey.Info{Room: "~secret", Sender: testKey(f, 2).Public(), Recipient: p.Identity, Epoch: [16]byte{9}, Package: p.ID()}
	ck := ratchet.ChainKey{1, 2, 3}
	sealed, err := senderkey.Seal(p, info, ck)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{}, uint16(0), uint16(0))
	f.Add([]byte{1}, uint16(senderkey.EncSize), uint16(1))
	f.Add(make([]byte, 32), uint16(senderkey.EncSize-32), uint16(32))
	f.Add([]byte{}, uint16(senderkey.EncSize), uint16(senderkey.SealedSize))
	f.Fuzz(func(t *testing.T, edit []byte, at, cut uint16) {
		b := splice(sealed, edit, at, cut)
		got, err := senderkey.Open(priv, info, b)
		if err != nil {
			exactlyOneOf(t, err, senderkey.ErrOpen, senderkey.ErrMalformed)
			return
		}
		if got != ck || !bytes.Equal(b, sealed) {
			t.Fatalf("%x opened to %x: only the key sealed opens", b, got)
		}
	})
}

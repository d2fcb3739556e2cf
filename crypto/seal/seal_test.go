package seal_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/parleychat/parley/crypto/ratchet"
	"github.com/parleychat/parley/crypto/seal"
)

var sentinels = []error{seal.ErrOpen, seal.ErrMalformed, seal.ErrTooLarge}

// isOnly fails t unless err wraps want and no other sentinel.
func isOnly(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Fatalf("error %v wraps %v as well as %v", err, s, want)
		}
	}
}

func testKey(n byte) ratchet.MessageKey {
	var mk ratchet.MessageKey
	for i := range mk {
		mk[i] = n + byte(i)
	}
	return mk
}

// TestKnownAnswer pins the key derivation (HMAC-SHA256(mk, "parley
// message v1" || SHA-256(aad) || 0x01), zero nonce), the framing and the
// AEAD: the message key 20 21 .. 3f, the associated data "parley aad" and
// the plaintext "hello, parley" seal to exactly this. It was computed once
// and checked against an independent implementation (Python's hmac and
// cryptography); a change makes every stored message unreadable.
func TestKnownAnswer(t *testing.T) {
	const want = "743f09bf3d58701012400fca322b62ddc6545b6d260dcc30f313128b72359dd5" +
		"8d194405c29e4f8f534dcb55026230e9e6474ac7ad43b751c17c190cd53ae5f5" +
		"6128dacc921b4fd4ba5db6ee69816fce"
	ct, err := seal.Seal(testKey(0x20), []byte("parley aad"), []byte("hello, parley"))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(ct) != want {
		t.Fatalf("ciphertext %x, want %s", ct, want)
	}
	pt, err := seal.Open(testKey(0x20), []byte("parley aad"), ct)
	if err != nil || string(pt) != "hello, parley" {
		t.Fatalf("open: %q %v", pt, err)
	}
}

func TestBucket(t *testing.T) {
	for n, want := range map[int]int{
		0: 64, 1: 64, 64: 64, 65: 128, 128: 128, 129: 256, 1000: 1024,
		16385: 32768, 32768: 32768, 32769: -1,
	} {
		if got := seal.Bucket(n); got != want {
			t.Errorf("Bucket(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	mk := testKey(1)
	for _, n := range []int{0, 1, 60, 61, 124, 125, 1000, seal.MaxPlaintext} {
		pt := bytes.Repeat([]byte{0xa5}, n)
		ct, err := seal.Seal(mk, []byte("aad"), pt)
		if err != nil {
			t.Fatal(err)
		}
		if want := seal.Bucket(4+n) + seal.Overhead; len(ct) != want {
			t.Errorf("%d-byte plaintext: %d-byte ciphertext, want %d", n, len(ct), want)
		}
		got, err := seal.Open(mk, []byte("aad"), ct)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("%d-byte plaintext: %v", n, err)
		}
	}
	_, err := seal.Seal(mk, nil, make([]byte, seal.MaxPlaintext+1))
	isOnly(t, err, seal.ErrTooLarge)
}

// TestTamper: a ciphertext with any bit changed, under another key or with
// other associated data does not open.
func TestTamper(t *testing.T) {
	mk, aad := testKey(1), []byte("room 1, sender 2, index 3")
	ct, err := seal.Seal(mk, aad, []byte("attack at dawn"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		for bit := range 8 {
			c := bytes.Clone(ct)
			c[i] ^= 1 << bit
			_, err := seal.Open(mk, aad, c)
			isOnly(t, err, seal.ErrOpen)
		}
	}
	_, err = seal.Open(testKey(2), aad, ct)
	isOnly(t, err, seal.ErrOpen)
	for _, other := range [][]byte{nil, []byte("room 1, sender 2, index 4"), append(bytes.Clone(aad), 0)} {
		_, err = seal.Open(mk, other, ct)
		isOnly(t, err, seal.ErrOpen)
	}
}

func TestOpenRefusesSizes(t *testing.T) {
	mk := testKey(1)
	ct, err := seal.Seal(mk, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 16, 63, 64 + 15, 64 + 17, 96 + 16, 32768 + 17, 65536 + 16} {
		c := make([]byte, n)
		copy(c, ct)
		_, err := seal.Open(mk, nil, c)
		isOnly(t, err, seal.ErrMalformed)
	}
}

// TestSameKeyOtherPlaceOtherKeystream: a message key used a second time
// (a sender whose store was rolled back seals another text at the same
// index) with other associated data (the envelope's number and time
// differ) gives another keystream: the two boxes do not XOR to the two
// texts.
func TestSameKeyOtherPlaceOtherKeystream(t *testing.T) {
	mk := testKey(1)
	p1, p2 := bytes.Repeat([]byte("a"), 40), bytes.Repeat([]byte("b"), 40)
	c1, err := seal.Seal(mk, []byte("envelope 7 at 12:00"), p1)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := seal.Seal(mk, []byte("envelope 8 at 12:01"), p2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 4; i < 4+len(p1); i++ {
		if c1[i]^c2[i] != p1[i-4]^p2[i-4] {
			return // another keystream
		}
	}
	t.Fatal("two texts sealed with one key at two places share a keystream")
}

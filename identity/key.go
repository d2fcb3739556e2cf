package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/edwards25519"
)

// PublicKeyPrefix starts the text form of a public key.
const PublicKeyPrefix = "ed25519:"

// ErrMalformedKey reports a public or private key that cannot be parsed.
var ErrMalformedKey = errors.New("identity: malformed key")

var keyEncoding = base64.RawURLEncoding.Strict()

// PublicKey is an Ed25519 public key: the identity of one person. The zero
// value is not a valid key; IsZero tells.
type PublicKey struct {
	k [ed25519.PublicKeySize]byte
}

// PublicKeyFromBytes returns the public key whose 32-byte encoding is b.
func PublicKeyFromBytes(b []byte) (PublicKey, error) {
	var pk PublicKey
	if len(b) != ed25519.PublicKeySize {
		return pk, fmt.Errorf("%w: public key is %d bytes, want %d", ErrMalformedKey, len(b), ed25519.PublicKeySize)
	}
	copy(pk.k[:], b)
	if err := pk.check(); err != nil {
		return PublicKey{}, err
	}
	return pk, nil
}

// check rejects encodings that must never stand for a person: points of
// small order, and encodings that are not canonical. Under a small-order
// "key", a signature can verify for any message (R = identity, S = 0), so
// such a key must never be accepted as a sender. The check compares bytes
// with a list, as libsodium does, so parsing a key stays cheap: no point
// decompression. A key that is not on the curve at all passes here and fails
// every signature check.
func (pk PublicKey) check() error {
	if !canonicalY(pk.k) {
		return fmt.Errorf("%w: non-canonical encoding", ErrMalformedKey)
	}
	y := pk.k
	y[31] &= 0x7f // the sign of x does not change the order
	if smallOrder[y] {
		return fmt.Errorf("%w: point of small order", ErrMalformedKey)
	}
	return nil
}

// canonicalY reports whether the y coordinate in k (little-endian, top bit
// being the sign of x) is below p = 2^255 - 19.
func canonicalY(k [32]byte) bool {
	if k[31]&0x7f != 0x7f {
		return true
	}
	for i := 30; i >= 1; i-- {
		if k[i] != 0xff {
			return true
		}
	}
	return k[0] < 0xed
}

// smallOrder holds the encodings, sign bit cleared, of the eight points of
// small order: the multiples of a point T of order 8. They have five
// distinct y coordinates. Computed once, from the curve itself.
var smallOrder = func() map[[32]byte]bool {
	var eight [32]byte
	eight[0] = 8
	s8, err := new(edwards25519.Scalar).SetCanonicalBytes(eight[:])
	if err != nil {
		panic(err)
	}
	inv8 := new(edwards25519.Scalar).Invert(s8)
	id := edwards25519.NewIdentityPoint()
	var t *edwards25519.Point
	for y := byte(2); t == nil; y++ {
		var enc [32]byte
		enc[0] = y
		p, err := new(edwards25519.Point).SetBytes(enc[:])
		if err != nil {
			continue // not on the curve
		}
		// p = q + t with q of prime order: q = [1/8]([8]p), t = p - q.
		q := new(edwards25519.Point).ScalarMult(inv8, new(edwards25519.Point).MultByCofactor(p))
		tor := new(edwards25519.Point).Subtract(p, q)
		four := new(edwards25519.Point).Add(tor, tor)
		four.Add(four, four)
		if four.Equal(id) == 0 {
			t = tor
		}
	}
	set := make(map[[32]byte]bool)
	m := edwards25519.NewIdentityPoint()
	for range 8 {
		var enc [32]byte
		copy(enc[:], m.Bytes())
		enc[31] &= 0x7f
		set[enc] = true
		m.Add(m, t)
	}
	return set
}()

// ParsePublicKey parses the text form that String returns. Only that exact
// form is accepted, so a key has one text form.
func ParsePublicKey(s string) (PublicKey, error) {
	var pk PublicKey
	rest, ok := strings.CutPrefix(s, PublicKeyPrefix)
	if !ok {
		return pk, fmt.Errorf("%w: %q does not start with %q", ErrMalformedKey, truncate(s), PublicKeyPrefix)
	}
	if keyEncoding.DecodedLen(len(rest)) != ed25519.PublicKeySize {
		return pk, fmt.Errorf("%w: %q is not a 32-byte key", ErrMalformedKey, truncate(s))
	}
	if _, err := keyEncoding.Decode(pk.k[:], []byte(rest)); err != nil {
		return PublicKey{}, fmt.Errorf("%w: %q: %v", ErrMalformedKey, truncate(s), err)
	}
	if err := pk.check(); err != nil {
		return PublicKey{}, err
	}
	// The decoder skips '\r' and '\n'; only the one canonical spelling of
	// a key is accepted.
	if pk.String() != s {
		return PublicKey{}, fmt.Errorf("%w: %q is not in canonical form", ErrMalformedKey, truncate(s))
	}
	return pk, nil
}

func truncate(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// String returns the key as "ed25519:" followed by the unpadded URL-safe
// base64 of its 32 bytes.
func (pk PublicKey) String() string {
	return PublicKeyPrefix + keyEncoding.EncodeToString(pk.k[:])
}

// MarshalText implements encoding.TextMarshaler with the form of String.
func (pk PublicKey) MarshalText() ([]byte, error) { return []byte(pk.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParsePublicKey.
func (pk *PublicKey) UnmarshalText(b []byte) error {
	k, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*pk = k
	return nil
}

// Bytes returns the 32-byte encoding of the key.
func (pk PublicKey) Bytes() []byte { return pk.k[:] }

// Array returns the 32-byte encoding of the key as an array.
func (pk PublicKey) Array() [ed25519.PublicKeySize]byte { return pk.k }

// IsZero reports whether pk is the zero value.
func (pk PublicKey) IsZero() bool { return pk.k == [ed25519.PublicKeySize]byte{} }

// Equal reports whether pk and other are the same key, in constant time.
func (pk PublicKey) Equal(other PublicKey) bool {
	return subtle.ConstantTimeCompare(pk.k[:], other.k[:]) == 1
}

// Verify reports whether sig is pk's valid signature of msg.
func (pk PublicKey) Verify(msg, sig []byte) bool {
	return ed25519.Verify(pk.k[:], msg, sig)
}

// PrivateKey is an Ed25519 private key. It never prints: every fmt verb
// shows a redacted form, so a key cannot leak into a log by accident.
type PrivateKey struct {
	k *keyBox
}

// keyBox holds the key bytes two pointers away from PrivateKey. fmt cannot
// call Format on a PrivateKey in another struct's unexported field; there it
// prints the field's value, but it follows only the first pointer, so what
// shows is an address, never the key.
type keyBox struct {
	b *[ed25519.PrivateKeySize]byte
}

func newPrivateKey(k ed25519.PrivateKey) PrivateKey {
	var a [ed25519.PrivateKeySize]byte
	copy(a[:], k)
	return PrivateKey{k: &keyBox{b: &a}}
}

// Generate makes a new private key with randomness from rand (crypto/rand's
// Reader when rand is nil).
func Generate(rand io.Reader) (PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(rand)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("identity: generate key: %w", err)
	}
	return newPrivateKey(k), nil
}

// PrivateKeyFromSeed returns the private key derived from a 32-byte seed.
func PrivateKeyFromSeed(seed []byte) (PrivateKey, error) {
	if len(seed) != ed25519.SeedSize {
		return PrivateKey{}, fmt.Errorf("%w: seed is %d bytes, want %d", ErrMalformedKey, len(seed), ed25519.SeedSize)
	}
	return newPrivateKey(ed25519.NewKeyFromSeed(seed)), nil
}

// IsZero reports whether k is the zero value, which holds no key.
func (k PrivateKey) IsZero() bool { return k.k == nil }

// Public returns the public half of k.
func (k PrivateKey) Public() PublicKey {
	var pk PublicKey
	copy(pk.k[:], k.k.b[ed25519.SeedSize:])
	return pk
}

// Sign returns k's Ed25519 signature of msg.
func (k PrivateKey) Sign(msg []byte) []byte { return ed25519.Sign(k.k.b[:], msg) }

// Ed25519 returns a copy of the key in the standard library's form, for
// the few places (TLS certificates, libp2p) that need it.
func (k PrivateKey) Ed25519() ed25519.PrivateKey { return ed25519.PrivateKey(bytes.Clone(k.k.b[:])) }

// Equal reports whether k and other are the same key, in constant time.
func (k PrivateKey) Equal(other PrivateKey) bool {
	if k.k == nil || other.k == nil {
		return k.k == other.k
	}
	return subtle.ConstantTimeCompare(k.k.b[:], other.k.b[:]) == 1
}

const redacted = "PrivateKey(redacted)"

// String returns a redacted form; the key itself never prints.
func (k PrivateKey) String() string { return redacted }

// GoString returns a redacted form, for %#v.
func (k PrivateKey) GoString() string { return redacted }

// Format implements fmt.Formatter so that every verb, %x and %q included,
// prints the redacted form.
func (k PrivateKey) Format(f fmt.State, _ rune) { io.WriteString(f, redacted) }

// Package seal encrypts one message of a private room under its message
// key (package ratchet), padded to a few sizes.
//
// The ChaCha20-Poly1305 key is derived from the message key and the
// associated data: HKDF-Expand (RFC 5869) of mk with the info "parley
// message v1" || SHA-256(aad), its first block, HMAC-SHA256(mk, info ||
// 0x01). The label keeps it apart from any other use of the same secret.
// The nonce is zero, which is safe because each key seals one message:
// the ratchet hands each message key out once, and a sender never reuses
// an index. Never is a strong word for a device whose store can be rolled
// back (a power cut before the sender's chain reached the disk, a
// restored backup): the associated data holds the envelope's sequence
// number, time and previous ID, so a message key used again for another
// envelope gives another key, and two texts never share a keystream.
// One hash and one HMAC, without allocating, keep sealing and opening a
// short message under 2 µs (docs/performance.md).
//
// The plaintext is framed with its length and padded with zeros to the
// next bucket (64, 128, ..., 32768 bytes), so that the size of a
// ciphertext tells little more than the order of magnitude of the message.
// The associated data, which the caller chooses, binds the ciphertext to
// its context (room, sender, epoch, index): a ciphertext moved elsewhere
// does not open.
package seal

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/parleychat/parley/crypto/ratchet"
	"golang.org/x/crypto/chacha20poly1305"
)

// Errors that callers branch on with errors.Is. An error from this package
// wraps exactly one of them and adds the detail.
var (
	// ErrOpen: authentication failed: a wrong key, or a changed
	// ciphertext or associated data.
	ErrOpen = errors.New("seal: message authentication failed")
	// ErrMalformed: the ciphertext is of no size that Seal makes, or the
	// authentic plaintext is not framed as Seal frames it.
	ErrMalformed = errors.New("seal: malformed message")
	// ErrTooLarge: the plaintext is longer than MaxPlaintext.
	ErrTooLarge = errors.New("seal: message too large")
)

const (
	minBucket = 64
	maxBucket = 32768
	// lengthSize is the size of the frame's length prefix.
	lengthSize = 4
	// Overhead is what sealing adds to a padded frame: the tag.
	Overhead = chacha20poly1305.Overhead
	// MaxPlaintext is the longest plaintext.
	MaxPlaintext = maxBucket - lengthSize
)

// label starts the HKDF-Expand info of the key.
const label = "parley message v1"

// Bucket returns the padded size of an n-byte framed plaintext: the
// smallest of 64, 128, 256, ..., 32768 that is at least n, or -1 if n is
// larger than 32768.
func Bucket(n int) int {
	if n > maxBucket {
		return -1
	}
	b := minBucket
	for b < n {
		b *= 2
	}
	return b
}

// Seal encrypts plaintext under mk, binding aad. The result is
// Bucket(4+len(plaintext)) + Overhead bytes long. An error wraps
// ErrTooLarge.
func Seal(mk ratchet.MessageKey, aad, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(plaintext), MaxPlaintext)
	}
	size := Bucket(lengthSize + len(plaintext))
	frame := make([]byte, size, size+Overhead)
	binary.BigEndian.PutUint32(frame, uint32(len(plaintext)))
	copy(frame[lengthSize:], plaintext)
	aead := derive(mk, aad)
	return aead.Seal(frame[:0], nonce[:], frame, aad), nil
}

// Open decrypts a ciphertext that Seal made under mk with aad, and checks
// its framing: a length that fits and padding of zeros to the smallest
// bucket, so that one plaintext has one ciphertext size.
func Open(mk ratchet.MessageKey, aad, ciphertext []byte) ([]byte, error) {
	size := len(ciphertext) - Overhead
	if size < minBucket || Bucket(size) != size {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes", ErrMalformed, len(ciphertext))
	}
	aead := derive(mk, aad)
	frame, err := aead.Open(nil, nonce[:], ciphertext, aad)
	if err != nil {
		return nil, ErrOpen
	}
	return unframe(frame)
}

// unframe returns the plaintext of an authentic frame.
func unframe(frame []byte) ([]byte, error) {
	n := binary.BigEndian.Uint32(frame)
	if n > MaxPlaintext || Bucket(lengthSize+int(n)) != len(frame) {
		return nil, fmt.Errorf("%w: length %d in a frame of %d bytes", ErrMalformed, n, len(frame))
	}
	if pad := frame[lengthSize+n:]; !bytes.Equal(pad, zeros[:len(pad)]) {
		return nil, fmt.Errorf("%w: padding is not zero", ErrMalformed)
	}
	return frame[lengthSize : lengthSize+n : lengthSize+n], nil
}

// zeros is what padding is compared with, a word at a time (a byte at a
// time was a tenth of opening a short message). Never written.
var zeros [maxBucket]byte

// nonce is the nonce of every message: each key seals one. Never written.
var nonce [chacha20poly1305.NonceSize]byte

// derive derives the AEAD of mk for a message with associated data aad.
func derive(mk ratchet.MessageKey, aad []byte) cipher.AEAD {
	var info [len(label) + sha256.Size + 1]byte
	copy(info[:], label)
	h := sha256.Sum256(aad)
	copy(info[len(label):], h[:])
	info[len(info)-1] = 0x01 // HKDF-Expand's block counter
	key := ratchet.HMAC(mk, info[:])
	aead, err := chacha20poly1305.New(key[:])
	clear(key[:])
	if err != nil {
		panic("seal: " + err.Error()) // only for a key of the wrong size
	}
	return aead
}

// Package ratchet implements sender chains: the one-way hash ratchet from
// which each member of a private room derives one key per message it
// sends.
//
// A chain key yields a message key and the next chain key, each an
// HMAC-SHA256 of the chain key with its own one-byte label (domain
// separation: neither output tells anything about the other). Once the old
// chain key is erased, nobody can go back: a device stolen today does not
// give up the messages it already sent or read. That is forward secrecy
// within an epoch; a new epoch, with a fresh chain key sealed to each
// member's key package, also heals after a compromise.
//
// Forward secrecy holds only if the caller erases: the state is persisted
// after every Key (the old chain key and each used message key gone from
// memory and from the store), and a message key is thrown away once its
// message is opened.
//
// The types here are not safe for concurrent use.
package ratchet

import (
	"crypto/sha256"
	"errors"
)

// Errors that callers branch on with errors.Is. An error from this package
// wraps exactly one of them and adds the detail.
var (
	// ErrTooFar: the message is more than MaxSkip ahead of the chain.
	// The state is unchanged; the message is most likely forged or from a
	// sender gone wild.
	ErrTooFar = errors.New("ratchet: message too far ahead")
	// ErrGone: the key of the message was handed out already (a replay)
	// or dropped (skipped too long ago).
	ErrGone = errors.New("ratchet: message key gone")
	// ErrExhausted: the chain has reached MaxIndex; a new epoch must
	// start.
	ErrExhausted = errors.New("ratchet: chain exhausted")
	// ErrMalformed: a state encoding is not valid.
	ErrMalformed = errors.New("ratchet: malformed state")
)

const (
	// MaxSkip is the most keys a Receiver derives past in one step.
	MaxSkip = 1000
	// MaxSkipped is the most skipped keys a Receiver keeps; beyond it
	// the keys of the lowest indexes are dropped.
	MaxSkipped = 2000
	// MaxIndex is the highest message index of a chain.
	MaxIndex = 1<<32 - 2
)

// ChainKey is a key of a sender chain.
type ChainKey [32]byte

// MessageKey is the key of one message.
type MessageKey [32]byte

// Labels of the two HMACs of Step.
const (
	labelMessage = 0x01
	labelChain   = 0x02
)

// Step returns the message key of ck and the chain key that follows it:
// mk = HMAC-SHA256(ck, 0x01), next = HMAC-SHA256(ck, 0x02). The caller
// must erase ck once it has stored next: as long as ck exists, every later
// key can be derived from it.
func Step(ck ChainKey) (next ChainKey, mk MessageKey) {
	return ChainKey(HMAC(ck, []byte{labelChain})), MessageKey(HMAC(ck, []byte{labelMessage}))
}

// HMAC returns HMAC-SHA256 (RFC 2104) of msg under a 32-byte key, without
// allocating: a message costs two of these, and the standard library's
// hmac.New allocates a hash state per call.
func HMAC(key [32]byte, msg []byte) [32]byte {
	if len(msg) > maxHMACMsg {
		return hmacLong(key, msg)
	}
	// One buffer for both hashes: the padded key, then the message
	// (inner) or the inner hash (outer), hashed in one call each.
	var buf [sha256.BlockSize + maxHMACMsg]byte
	padKey(buf[:sha256.BlockSize], key, &ipad)
	n := copy(buf[sha256.BlockSize:], msg)
	sum := sha256.Sum256(buf[:sha256.BlockSize+n])
	padKey(buf[:sha256.BlockSize], key, &opad)
	copy(buf[sha256.BlockSize:], sum[:])
	sum = sha256.Sum256(buf[:sha256.BlockSize+len(sum)])
	clear(buf[:])
	return sum
}

// padKey writes key XOR pad, then the rest of pad, into dst.
func padKey(dst []byte, key [32]byte, pad *[sha256.BlockSize]byte) {
	for i, k := range key {
		dst[i] = k ^ pad[i]
	}
	copy(dst[len(key):], pad[len(key):])
}

// maxHMACMsg is the longest message HMAC hashes without allocating: the
// ratchet's labels and the seal's key info are shorter.
const maxHMACMsg = 64

// ipad and opad are RFC 2104's pads. Never written.
var ipad, opad = pad(0x36), pad(0x5c)

func pad(b byte) (p [sha256.BlockSize]byte) {
	for i := range p {
		p[i] = b
	}
	return p
}

// hmacLong is HMAC of a message too long for HMAC's buffer.
func hmacLong(key [32]byte, msg []byte) [32]byte {
	buf := make([]byte, sha256.BlockSize+len(msg))
	padKey(buf, key, &ipad)
	copy(buf[sha256.BlockSize:], msg)
	sum := sha256.Sum256(buf)
	padKey(buf, key, &opad)
	n := copy(buf[sha256.BlockSize:], sum[:])
	sum = sha256.Sum256(buf[:sha256.BlockSize+n])
	clear(buf)
	return sum
}

// Package senderkey seals a sender's chain key (package ratchet) to one
// recipient's key package (package keypackage) with HPKE, in the suite of
// the package: MLKEM768-X25519, HKDF-SHA256, ChaCha20-Poly1305.
//
// At the start of each epoch of a private room every member draws a fresh
// chain key and seals it to the current package of each other member. Only
// the holder of the package's private key opens it; once that key is
// erased at the package's expiry, the sealed chain key stays sealed for
// good (forward secrecy), and the hybrid KEM keeps it sealed against a
// future quantum computer unless X25519 falls too.
//
// The HPKE info binds the sealed key to its context: the room, the sender,
// the recipient, the epoch and the recipient's package ID, after the label
// "parley sender key v1\x00" that keeps it apart from any other use of
// HPKE. A sealed key moved to another room, sender, recipient, epoch or
// package does not open, so nobody (a relay, another member) can replay
// it where it was not meant to be.
package senderkey

import (
	"crypto/hpke"
	"errors"
	"fmt"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/crypto/ratchet"
	"github.com/parleychat/parley/identity"
	"golang.org/x/crypto/cryptobyte"
)

// Errors that callers branch on with errors.Is. An error from this package
// wraps exactly one of them and adds the detail.
var (
	// ErrOpen: the sealed key does not open: the wrong private key, a
	// changed ciphertext, or an Info other than the one it was sealed
	// with.
	ErrOpen = errors.New("senderkey: sealed key does not open")
	// ErrMalformed: the sealed key has the wrong size, or an argument is
	// not valid (an Info that does not match the package, a room name too
	// long, a key of another suite).
	ErrMalformed = errors.New("senderkey: malformed")
)

const (
	// EncSize is the size of the KEM encapsulation (MLKEM768-X25519).
	EncSize = 1088 + 32
	// tagSize is the size of the ChaCha20-Poly1305 tag.
	tagSize = 16
	// SealedSize is the size of a sealed chain key.
	SealedSize = EncSize + len(ratchet.ChainKey{}) + tagSize
	// MaxRoomLen is the longest room name in an Info.
	MaxRoomLen = 255
)

// label starts the HPKE info.
const label = "parley sender key v1\x00"

// Info is the context a chain key is sealed in. Every field is bound.
type Info struct {
	Room      string
	Sender    identity.PublicKey
	Recipient identity.PublicKey
	Epoch     [16]byte
	Package   [32]byte // the ID of the recipient's key package
}

// bytes returns the HPKE info: label || u8 len(room) || room || sender 32
// || recipient 32 || epoch 16 || package 32.
func (in *Info) bytes() ([]byte, error) {
	if len(in.Room) > MaxRoomLen {
		return nil, fmt.Errorf("%w: room name of %d bytes, limit %d", ErrMalformed, len(in.Room), MaxRoomLen)
	}
	if in.Sender.IsZero() || in.Recipient.IsZero() {
		return nil, fmt.Errorf("%w: no sender or recipient", ErrMalformed)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, len(label)+1+len(in.Room)+32+32+16+32))
	b.AddBytes([]byte(label))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(in.Room)) })
	b.AddBytes(in.Sender.Bytes())
	b.AddBytes(in.Recipient.Bytes())
	b.AddBytes(in.Epoch[:])
	b.AddBytes(in.Package[:])
	return b.BytesOrPanic(), nil
}

// Seal seals ck to pkg in the context info, which must name pkg's
// identity as Recipient and pkg's ID as Package. The result is SealedSize
// bytes: the encapsulation, then the sealed key. An error wraps
// ErrMalformed. Seal does not check that pkg is valid now: the caller
// picks the package (keypackage.Package.Valid).
func Seal(pkg *keypackage.Package, info Info, ck ratchet.ChainKey) ([]byte, error) {
	if !info.Recipient.Equal(pkg.Identity) {
		return nil, fmt.Errorf("%w: recipient %s, package of %s", ErrMalformed, info.Recipient, pkg.Identity)
	}
	if info.Package != pkg.ID() {
		return nil, fmt.Errorf("%w: Info names another package", ErrMalformed)
	}
	ib, err := info.bytes()
	if err != nil {
		return nil, err
	}
	pub, err := pkg.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	_, kdf, aead := keypackage.Suite()
	enc, s, err := hpke.NewSender(pub, kdf, aead, ib)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	ct, err := s.Seal(nil, ck[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err) // only after 2^64 messages
	}
	return append(enc, ct...), nil
}

// Open opens a sealed chain key with the private key of the recipient's
// package, in the context info it was sealed in.
func Open(priv hpke.PrivateKey, info Info, sealed []byte) (ratchet.ChainKey, error) {
	kem, kdf, aead := keypackage.Suite()
	if priv == nil || priv.KEM().ID() != kem.ID() {
		return ratchet.ChainKey{}, fmt.Errorf("%w: not a private key of the suite", ErrMalformed)
	}
	if len(sealed) != SealedSize {
		return ratchet.ChainKey{}, fmt.Errorf("%w: sealed key of %d bytes, want %d", ErrMalformed, len(sealed), SealedSize)
	}
	ib, err := info.bytes()
	if err != nil {
		return ratchet.ChainKey{}, err
	}
	r, err := hpke.NewRecipient(sealed[:EncSize], priv, kdf, aead, ib)
	if err != nil {
		// An encapsulation that decapsulates to nothing (an X25519
		// share of small order): the sender is at fault, as for a
		// wrong tag.
		return ratchet.ChainKey{}, fmt.Errorf("%w: %v", ErrOpen, err)
	}
	pt, err := r.Open(nil, sealed[EncSize:])
	if err != nil {
		return ratchet.ChainKey{}, ErrOpen
	}
	var ck ratchet.ChainKey
	copy(ck[:], pt)
	clear(pt)
	return ck, nil
}

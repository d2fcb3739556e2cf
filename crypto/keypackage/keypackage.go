// Package keypackage implements key packages: the signed, short-lived
// encryption keys through which a person's device receives the sender keys
// of a private room.
//
// A package binds an HPKE public key (suite MLKEM768-X25519, HKDF-SHA256,
// ChaCha20-Poly1305: hybrid, so that a recording of today's traffic stays
// sealed even against a later quantum computer unless both X25519 and
// ML-KEM fall) to a person's identity key, to one device of that person, and
// to a lifetime. The identity key signs all of it, so a relay or a member
// cannot swap in a key of their own, move a package to another device, or
// stretch its life.
//
// Packages are short-lived for forward secrecy: a client makes a new one
// every Rotate and erases the private key of a package once it has expired
// (Lifetime after it was made), after which the sender keys sealed to it
// cannot be opened again, even by someone who later steals the device.
//
// The signature is over a context string ("parley key package v1\x00")
// followed by the encoding, so that no other signature made by an identity
// key (an envelope, a member change) can be taken for a key package, nor
// the other way round.
package keypackage

import (
	"crypto/hpke"
	"errors"
	"fmt"
	"time"

	"github.com/parleychat/parley/identity"
)

// Errors that callers branch on with errors.Is. An error from this package
// wraps exactly one of them and adds the detail.
var (
	// ErrMalformed: the input is not a valid encoding (truncated, trailing
	// bytes, a field out of range, a public key that does not parse), or a
	// package or key given to this package is not a valid one.
	ErrMalformed = errors.New("keypackage: malformed")
	// ErrUnknownVersion: the package is of a version or suite this code
	// does not know, most likely from a newer client.
	ErrUnknownVersion = errors.New("keypackage: unknown version")
	// ErrBadSignature: the signature does not verify under the identity.
	ErrBadSignature = errors.New("keypackage: bad signature")
	// ErrExpired: the package is expired or not valid yet.
	ErrExpired = errors.New("keypackage: expired")
)

// Version is the version of the encoding and of the suite.
const Version = 1

// DeviceSize is the size of a device ID.
const DeviceSize = 16

// Durations of a package.
const (
	// Rotate is how often a client makes a new package, by default.
	Rotate = 7 * 24 * time.Hour
	// Lifetime is how long a package lives, by default: more than Rotate,
	// so that a peer who has not seen the new package yet still has a
	// valid one to seal to.
	Lifetime = 30 * 24 * time.Hour
	// MaxLifetime is the longest life Parse accepts: a key that lives
	// longer would undo forward secrecy.
	MaxLifetime = 90 * 24 * time.Hour
	// MaxSkew is how far in the future Created may be for Valid: the
	// clocks of peers differ.
	MaxSkew = 10 * time.Minute
)

// maxTime bounds Created and Expires, so that a time in seconds fits a
// time.Time and a Duration sum never overflows.
const maxTime = 1 << 62

// Sizes of the encoding for the suite of version 1.
const (
	// PublicKeySize is the size of an MLKEM768-X25519 public key.
	PublicKeySize = 1184 + 32
	// SignatureSize is the size of the Ed25519 signature.
	SignatureSize = 64
	// MaxSize is the size of an encoded package: every package of version
	// 1 has exactly this size.
	MaxSize = 1 + 3*2 + 32 + DeviceSize + 2*8 + 2 + PublicKeySize + SignatureSize
)

// signingContext starts the message that the identity signs.
const signingContext = "parley key package v1\x00"

// Suite returns the HPKE suite of version 1: MLKEM768-X25519, HKDF-SHA256,
// ChaCha20-Poly1305.
func Suite() (hpke.KEM, hpke.KDF, hpke.AEAD) {
	return hpke.MLKEM768X25519(), hpke.HKDFSHA256(), hpke.ChaCha20Poly1305()
}

// Package is a device's encryption key, signed by its owner's identity.
//
// Encoding, big-endian, MaxSize bytes:
//
//	version   u8   = 1
//	kem       u16  = 0x647a (MLKEM768-X25519)
//	kdf       u16  = 0x0001 (HKDF-SHA256)
//	aead      u16  = 0x0003 (ChaCha20-Poly1305)
//	identity  [32]
//	device    [16]
//	created   u64  Unix seconds, at most 1<<62
//	expires   u64  Unix seconds, at most 1<<62
//	public    u16 length, then the key (PublicKeySize bytes)
//	sig       [64] Ed25519 by identity over
//	               "parley key package v1\x00" || every byte before sig
type Package struct {
	// Identity is the person; its key signs the package.
	Identity identity.PublicKey
	// Device is the device the key belongs to, random per device. The
	// identity certifies the device's key, so that each of a person's
	// devices can have its own.
	Device [DeviceSize]byte
	// Created and Expires are Unix seconds. The package is valid from
	// Created (less MaxSkew) to just before Expires.
	Created, Expires int64
	// Public is the HPKE public key (MLKEM768-X25519, PublicKeySize bytes).
	Public []byte
	// Sig is the Identity's Ed25519 signature.
	Sig [SignatureSize]byte
}

// New makes a package with a fresh key for device, signed by id, valid
// from created to expires. It returns the package and its private key,
// which the caller keeps (PrivateKeyBytes) until the package expires and
// then erases. Times are truncated to seconds; an error wraps ErrMalformed
// when they are out of range (see Parse).
func New(id identity.PrivateKey, device [DeviceSize]byte, created, expires time.Time) (*Package, hpke.PrivateKey, error) {
	kem, _, _ := Suite()
	priv, err := kem.GenerateKey()
	if err != nil {
		// The KEM draws its seed from the same generator as crypto/rand,
		// which never fails (it crashes the program instead).
		panic("keypackage: key generation failed: " + err.Error())
	}
	return build(id, device, created, expires, priv)
}

// Derive is New with a key derived from ikm (at least 32 bytes of secret
// input) by the KEM's DeriveKeyPair, so that the same input makes the same
// package: for known-answer tests. An error wraps ErrMalformed.
func Derive(id identity.PrivateKey, device [DeviceSize]byte, created, expires time.Time, ikm []byte) (*Package, hpke.PrivateKey, error) {
	if len(ikm) < 32 {
		return nil, nil, fmt.Errorf("%w: ikm of %d bytes, want at least 32", ErrMalformed, len(ikm))
	}
	kem, _, _ := Suite()
	priv, err := kem.DeriveKeyPair(ikm)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: derive key: %v", ErrMalformed, err)
	}
	return build(id, device, created, expires, priv)
}

func build(id identity.PrivateKey, device [DeviceSize]byte, created, expires time.Time, priv hpke.PrivateKey) (*Package, hpke.PrivateKey, error) {
	if id.IsZero() {
		return nil, nil, fmt.Errorf("%w: no identity key", ErrMalformed)
	}
	p := &Package{
		Identity: id.Public(),
		Device:   device,
		Created:  created.Unix(),
		Expires:  expires.Unix(),
		Public:   priv.PublicKey().Bytes(),
	}
	b, err := p.appendSigned(nil)
	if err != nil {
		return nil, nil, err
	}
	copy(p.Sig[:], id.Sign(append([]byte(signingContext), b...)))
	return p, priv, nil
}

package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/identity"
	"golang.org/x/crypto/cryptobyte"
)

// End-to-end encryption. A private room's messages travel sealed
// (KindSealed): only the head that lets the relay and every peer judge
// the sender, the sender key's epoch and the message's index in it are
// in the clear; the text is sealed with a message key of the sender's
// chain, with the envelope's header as associated data. A sender's chain
// key reaches the other members in KindKeys envelopes, sealed to each
// member's key package, which members announce in the rooms they share
// (KindKeyPackage). This file has the encodings; package crypto/... the
// cryptography, package client when to do what.

// EpochSize is the size of an epoch ID: random, chosen by the sender for
// each new sender key.
const EpochSize = 16

// Epoch names one sender key of one sender in one room.
type Epoch [EpochSize]byte

// Limits of the sealed kinds.
const (
	// MaxRecipients is the most members one KindKeys envelope seals a key
	// to: with the hybrid KEM's 1,168 bytes each, 48 fit an envelope. A
	// larger room's epoch takes several envelopes.
	MaxRecipients = 48
	// MaxSealedKey is the largest sealed chain key.
	MaxSealedKey = 4096
	// MinBox is the smallest sealed text: the smallest padding bucket
	// and the tag.
	MinBox = 64 + 16
)

// headLen is the size of the head every kind of a private room's
// messages starts with.
const headLen = len(ID{})

// HasHead reports whether envelopes of kind k name a member-list head:
// every kind of a private room but its member-list changes. The member
// list judges them all as it judges posts.
func (k Kind) HasHead() bool {
	switch k {
	case KindPost, KindKeyPackage, KindKeys, KindSealed:
		return true
	}
	return false
}

// HeadOf returns the member-list head an envelope of a kind that has one
// names.
func HeadOf(e *Envelope) (ID, error) {
	var h ID
	if !e.Kind.HasHead() {
		return h, fmt.Errorf("%w: %s envelope names no head", ErrMalformed, e.Kind)
	}
	if len(e.Payload) < headLen {
		return h, fmt.Errorf("%w: truncated %s payload", ErrMalformed, e.Kind)
	}
	copy(h[:], e.Payload)
	if h.IsZero() {
		return h, fmt.Errorf("%w: %s names no member-list head", ErrMalformed, e.Kind)
	}
	return h, nil
}

// Announce is the payload of a KindKeyPackage envelope: the sender's
// current key package, announced in a room it shares with the others.
//
// Encoding: head (32 bytes), then the package's encoding.
type Announce struct {
	Head    ID
	Package *keypackage.Package
}

// AppendBinary appends the encoding of a to b.
func (a *Announce) AppendBinary(b []byte) ([]byte, error) {
	if a.Head.IsZero() || a.Package == nil {
		return b, fmt.Errorf("%w: announcement without head or package", ErrMalformed)
	}
	return a.Package.AppendBinary(append(b, a.Head[:]...))
}

// MarshalBinary returns the encoding of a.
func (a *Announce) MarshalBinary() ([]byte, error) { return a.AppendBinary(nil) }

// ParseAnnounce parses a KindKeyPackage payload, strictly, and checks
// the package's signature.
func ParseAnnounce(b []byte) (Announce, error) {
	var a Announce
	if len(b) < headLen {
		return a, fmt.Errorf("%w: truncated key package announcement", ErrMalformed)
	}
	copy(a.Head[:], b)
	if a.Head.IsZero() {
		return Announce{}, fmt.Errorf("%w: announcement names no member-list head", ErrMalformed)
	}
	p, err := keypackage.Parse(b[headLen:])
	if err != nil {
		return Announce{}, packageErr(err)
	}
	a.Package = p
	return a, nil
}

// packageErr turns a key package's error into this package's: each
// error here wraps exactly one of protocol's sentinels.
func packageErr(err error) error {
	switch {
	case errors.Is(err, keypackage.ErrBadSignature):
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	case errors.Is(err, keypackage.ErrUnknownVersion):
		return fmt.Errorf("%w: %v", ErrUnknownVersion, err)
	}
	return fmt.Errorf("%w: %v", ErrMalformed, err)
}

// SealedKey is one member's copy of a sender key: the chain key sealed to
// the key package Package of Recipient.
type SealedKey struct {
	Recipient identity.PublicKey
	Package   [32]byte
	Key       []byte
}

// Keys is the payload of a KindKeys envelope: the sender's new sender
// key (Epoch), sealed to each member it reaches.
//
// A sender key that reaches more than MaxRecipients members takes
// several envelopes, each for one stretch of the key space, From (the
// lowest key it covers) up to To (the lowest key of the next stretch;
// zero: to the end), which together cover every key: a member whose key
// falls in an envelope's stretch and is not in it knows that the key
// was not sealed to them, whichever parts have arrived.
//
// Encoding: head (32), epoch (16), from (32), to (32), count (1 byte, 1
// to MaxRecipients), then for each, in ascending order of recipient:
// recipient (32), package ID (32), sealed key (2-byte length, then
// bytes).
type Keys struct {
	Head     ID
	Epoch    Epoch
	From, To [32]byte
	Sealed   []SealedKey
}

// covers reports whether key falls in k's stretch of the key space.
func (k *Keys) covers(key []byte) bool {
	return cmpBytes(k.From[:], key) <= 0 && (k.To == [32]byte{} || cmpBytes(key, k.To[:]) < 0)
}

func (k *Keys) check() error {
	if k.Head.IsZero() {
		return fmt.Errorf("%w: sender key names no member-list head", ErrMalformed)
	}
	if k.To != [32]byte{} && cmpBytes(k.From[:], k.To[:]) >= 0 {
		return fmt.Errorf("%w: sender key's stretch of keys is empty", ErrMalformed)
	}
	if len(k.Sealed) == 0 || len(k.Sealed) > MaxRecipients {
		return fmt.Errorf("%w: sender key sealed to %d members, want 1 to %d", ErrMalformed, len(k.Sealed), MaxRecipients)
	}
	for i, s := range k.Sealed {
		if len(s.Key) == 0 || len(s.Key) > MaxSealedKey {
			return fmt.Errorf("%w: sealed key of %d bytes", ErrMalformed, len(s.Key))
		}
		if i > 0 && string(k.Sealed[i-1].Recipient.Bytes()) >= string(s.Recipient.Bytes()) {
			return fmt.Errorf("%w: recipients not in ascending order, or repeated", ErrMalformed)
		}
		if !k.covers(s.Recipient.Bytes()) {
			return fmt.Errorf("%w: recipient outside the sender key's stretch of keys", ErrMalformed)
		}
	}
	return nil
}

// AppendBinary appends the encoding of k to b.
func (k *Keys) AppendBinary(b []byte) ([]byte, error) {
	if err := k.check(); err != nil {
		return b, err
	}
	b = append(append(b, k.Head[:]...), k.Epoch[:]...)
	b = append(append(b, k.From[:]...), k.To[:]...)
	b = append(b, byte(len(k.Sealed)))
	for _, s := range k.Sealed {
		b = append(append(b, s.Recipient.Bytes()...), s.Package[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.Key)))
		b = append(b, s.Key...)
	}
	return b, nil
}

// MarshalBinary returns the encoding of k.
func (k *Keys) MarshalBinary() ([]byte, error) { return k.AppendBinary(nil) }

// ParseKeys parses a KindKeys payload, strictly.
func ParseKeys(b []byte) (*Keys, error) {
	if len(b) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: sender key of %d bytes", ErrTooLarge, len(b))
	}
	k := new(Keys)
	s := cryptobyte.String(b)
	var n uint8
	if !s.CopyBytes(k.Head[:]) || !s.CopyBytes(k.Epoch[:]) || !s.CopyBytes(k.From[:]) || !s.CopyBytes(k.To[:]) || !s.ReadUint8(&n) {
		return nil, fmt.Errorf("%w: truncated sender key", ErrMalformed)
	}
	k.Sealed = make([]SealedKey, 0, min(int(n), MaxRecipients))
	for range n {
		var (
			rcpt [32]byte
			sk   SealedKey
			key  cryptobyte.String
		)
		if !s.CopyBytes(rcpt[:]) || !s.CopyBytes(sk.Package[:]) || !s.ReadUint16LengthPrefixed(&key) {
			return nil, fmt.Errorf("%w: truncated sender key", ErrMalformed)
		}
		pk, err := identity.PublicKeyFromBytes(rcpt[:])
		if err != nil {
			return nil, fmt.Errorf("%w: recipient: %v", ErrMalformed, err)
		}
		sk.Recipient, sk.Key = pk, slices.Clone([]byte(key))
		k.Sealed = append(k.Sealed, sk)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: %d bytes after the sender key", ErrMalformed, len(s))
	}
	if err := k.check(); err != nil {
		return nil, err
	}
	return k, nil
}

// For returns the copy of the key sealed to recipient, if there is one
// here; none says whether there is surely none in any part.
func (k *Keys) For(recipient identity.PublicKey) (sk SealedKey, ok, none bool) {
	i, ok := slices.BinarySearchFunc(k.Sealed, recipient, func(s SealedKey, r identity.PublicKey) int {
		return cmpBytes(s.Recipient.Bytes(), r.Bytes())
	})
	if ok {
		return k.Sealed[i], true, false
	}
	return SealedKey{}, false, k.covers(recipient.Bytes())
}

func cmpBytes(a, b []byte) int {
	switch sa, sb := string(a), string(b); {
	case sa < sb:
		return -1
	case sa > sb:
		return 1
	}
	return 0
}

// Sealed is the payload of a KindSealed envelope: a message of a private
// room, sealed with the key of message Index of the sender's key Epoch.
//
// Encoding: head (32), epoch (16), index (4), then the sealed text (the
// rest: a padded Text encoding and a 16-byte tag, at least MinBox
// bytes).
type Sealed struct {
	Head  ID
	Epoch Epoch
	Index uint32
	Box   []byte
}

// sealedPrefix is the size of what a Sealed leaves in the clear.
const sealedPrefix = headLen + EpochSize + 4

// AppendBinary appends the encoding of p to b.
func (p *Sealed) AppendBinary(b []byte) ([]byte, error) {
	if p.Head.IsZero() || len(p.Box) < MinBox {
		return b, fmt.Errorf("%w: sealed message without head, or of %d bytes", ErrMalformed, len(p.Box))
	}
	b = append(append(b, p.Head[:]...), p.Epoch[:]...)
	return append(binary.BigEndian.AppendUint32(b, p.Index), p.Box...), nil
}

// MarshalBinary returns the encoding of p.
func (p *Sealed) MarshalBinary() ([]byte, error) { return p.AppendBinary(nil) }

// ParseSealed parses a KindSealed payload. It does not open it.
func ParseSealed(b []byte) (Sealed, error) {
	var p Sealed
	if len(b) < sealedPrefix+MinBox {
		return p, fmt.Errorf("%w: sealed message of %d bytes", ErrMalformed, len(b))
	}
	copy(p.Head[:], b)
	copy(p.Epoch[:], b[headLen:])
	p.Index = binary.BigEndian.Uint32(b[headLen+EpochSize:])
	p.Box = b[sealedPrefix:]
	if p.Head.IsZero() {
		return Sealed{}, fmt.Errorf("%w: sealed message names no member-list head", ErrMalformed)
	}
	return p, nil
}

// sealedContext starts the associated data of a sealed message.
const sealedContext = "parley sealed message v1\x00"

// SealedAAD returns the associated data a sealed message's text is sealed
// with: the envelope's header (room, sender, sequence number, previous
// ID, clocks, the payload's length) and what the payload leaves in the
// clear (head, epoch, index). A sealed text moved to another room,
// sender, position or envelope does not open. e.Payload must be the
// encoding of p, or, while sealing, of a Sealed with p's fields and a
// box of the final size.
func SealedAAD(e *Envelope, p *Sealed) []byte {
	b := make([]byte, 0, len(sealedContext)+headerSize+len(e.Room)+sealedPrefix)
	b = append(b, sealedContext...)
	b = append(b, Version, byte(e.Kind), byte(len(e.Room)))
	b = append(b, e.Room...)
	b = append(b, e.Sender.Bytes()...)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = append(b, e.Prev[:]...)
	b = binary.BigEndian.AppendUint64(b, e.Lamport)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time))
	n := sealedPrefix + len(p.Box)
	b = append(b, byte(n>>16), byte(n>>8), byte(n))
	b = append(append(b, p.Head[:]...), p.Epoch[:]...)
	return binary.BigEndian.AppendUint32(b, p.Index)
}

// checkSealedKinds checks the payload of the kinds of this file.
func checkSealedKinds(e *Envelope) error {
	switch e.Kind {
	case KindKeyPackage:
		a, err := ParseAnnounce(e.Payload)
		if err != nil {
			return fmt.Errorf("key package: %w", err)
		}
		if a.Package.Identity != e.Sender {
			return fmt.Errorf("%w: key package of %s announced by %s", ErrMalformed,
				a.Package.Identity.ShortFingerprint(), e.Sender.ShortFingerprint())
		}
	case KindKeys:
		if _, err := ParseKeys(e.Payload); err != nil {
			return fmt.Errorf("sender key: %w", err)
		}
	case KindSealed:
		if _, err := ParseSealed(e.Payload); err != nil {
			return fmt.Errorf("sealed message: %w", err)
		}
	}
	return nil
}

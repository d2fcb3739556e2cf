package protocol

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/parleychat/parley/identity"
	"golang.org/x/crypto/cryptobyte"
)

// Version is the envelope version this code writes and reads.
const Version = 1

// Limits of the envelope.
const (
	// MaxEnvelopeSize is the largest encoded envelope. Parse refuses larger
	// input before looking at it.
	MaxEnvelopeSize = 64 << 10
	// MaxRoomLen is the longest room ID in bytes.
	MaxRoomLen = 64
	// headerSize is the size of an envelope with a one-byte room ID and
	// an empty payload, less the room ID: version, kind, room length,
	// sender, seq, prev, lamport, time, payload length, signature.
	headerSize = 1 + 1 + 1 + 32 + 8 + 32 + 8 + 8 + 3 + ed25519.SignatureSize
	// MaxCounter is the largest sequence number and Lamport clock value:
	// both fit a signed 64-bit integer, as SQL databases store them.
	MaxCounter = 1<<63 - 1
	// MaxPayloadSize is the largest payload that fits in MaxEnvelopeSize
	// with the longest room ID.
	MaxPayloadSize = MaxEnvelopeSize - headerSize - MaxRoomLen
)

// signingContext starts the bytes a sender signs, so that a signature made
// for an envelope means nothing in any other protocol that uses the same
// key (the key may also be the person's SSH key and libp2p host key).
const signingContext = "parley envelope signature v1\x00"

// Kind says what an envelope's payload is. Kinds this code does not know
// parse without error (Known reports false): a newer peer's message is
// skipped, not treated as an attack.
type Kind uint8

// Envelope kinds. Zero is not a kind.
const (
	// KindText: the payload is a chat message in a public room (see
	// Text).
	KindText Kind = 1
	// KindMember: the payload is a change of a private room's member
	// list (see Change).
	KindMember Kind = 2
	// KindPost: the payload is a chat message in a private room, naming
	// the member-list head it was made under (see Post).
	KindPost Kind = 3
	// KindKeyPackage: the payload is the sender's key package, announced
	// in a private room (see Announce).
	KindKeyPackage Kind = 4
	// KindKeys: the payload is the sender's new sender key, sealed to
	// members of a private room (see Keys).
	KindKeys Kind = 5
	// KindSealed: the payload is a private room's message, sealed end to
	// end (see Sealed).
	KindSealed Kind = 6
)

// Known reports whether this code knows kind k.
func (k Kind) Known() bool { return KindText <= k && k <= KindSealed }

func (k Kind) String() string {
	switch k {
	case KindText:
		return "text"
	case KindMember:
		return "member"
	case KindPost:
		return "post"
	case KindKeyPackage:
		return "key-package"
	case KindKeys:
		return "keys"
	case KindSealed:
		return "sealed"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ID identifies an envelope: the SHA-256 of its signed encoding. The same
// envelope has the same ID on every path.
type ID [sha256.Size]byte

// IDOf returns the ID of an encoded envelope. It does not parse it.
func IDOf(encoded []byte) ID { return sha256.Sum256(encoded) }

// String returns the ID in lowercase hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID, which names no envelope.
func (id ID) IsZero() bool { return id == ID{} }

// MarshalText implements encoding.TextMarshaler with the form of String.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseID.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseID parses the lowercase hex form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("%w: message ID is %d characters, want %d", ErrMalformed, len(s), 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil || s != id.String() {
		return ID{}, fmt.Errorf("%w: message ID %q is not lowercase hex", ErrMalformed, s)
	}
	return id, nil
}

// Envelope is one signed message. Every field but Sig is covered by the
// signature.
type Envelope struct {
	Kind Kind
	// Room is the room ID: 1 to MaxRoomLen bytes of [a-z0-9._:-].
	Room string
	// Sender is the key that signed the envelope.
	Sender identity.PublicKey
	// Seq is the sender's sequence number in this room, from 1 to
	// MaxCounter. A sender
	// never uses one twice; numbers may be skipped.
	Seq uint64
	// Prev is the ID of the sender's previous envelope in this room, zero
	// for the first: a hash chain that makes gaps and forks visible.
	Prev ID
	// Lamport is the sender's Lamport clock, for ordering across senders;
	// at most MaxCounter.
	Lamport uint64
	// Time is when the sender made the envelope, in Unix milliseconds.
	Time int64
	// Payload is the content, up to MaxPayloadSize bytes; its meaning
	// depends on Kind.
	Payload []byte
	// Sig is Sender's Ed25519 signature of the signing input.
	Sig [ed25519.SignatureSize]byte
}

// Timestamp returns Time as a time.Time.
func (e *Envelope) Timestamp() time.Time { return time.UnixMilli(e.Time) }

// ValidRoom reports whether room is a valid room ID.
func ValidRoom(room string) error {
	if room == "" || len(room) > MaxRoomLen {
		return fmt.Errorf("%w: room ID must be 1 to %d bytes, is %d", ErrMalformed, MaxRoomLen, len(room))
	}
	for i := 0; i < len(room); i++ {
		c := room[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return fmt.Errorf("%w: room ID %q holds %q; use a-z, 0-9, '.', '_', ':' or '-'", ErrMalformed, room, c)
		}
	}
	return nil
}

// check reports whether e's fields can be encoded.
func (e *Envelope) check() error {
	if e.Kind == 0 {
		return fmt.Errorf("%w: kind 0", ErrMalformed)
	}
	if err := ValidRoom(e.Room); err != nil {
		return err
	}
	if e.Seq == 0 || e.Seq > MaxCounter {
		return fmt.Errorf("%w: sequence number %d outside 1..%d", ErrMalformed, e.Seq, uint64(MaxCounter))
	}
	if e.Lamport > MaxCounter {
		return fmt.Errorf("%w: Lamport clock %d above %d", ErrMalformed, e.Lamport, uint64(MaxCounter))
	}
	if len(e.Payload) > MaxPayloadSize {
		return fmt.Errorf("%w: payload of %d bytes, limit %d", ErrTooLarge, len(e.Payload), MaxPayloadSize)
	}
	return nil
}

// appendBody appends the encoding of every field but the signature. The
// parser reads the same layout with cryptobyte; the encoder appends by hand
// because it runs for every signature check and should not allocate.
func (e *Envelope) appendBody(b []byte) []byte {
	b = append(b, Version, byte(e.Kind), byte(len(e.Room)))
	b = append(b, e.Room...)
	b = append(b, e.Sender.Bytes()...)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = append(b, e.Prev[:]...)
	b = binary.BigEndian.AppendUint64(b, e.Lamport)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time))
	n := len(e.Payload) // check bounded it below 1<<24
	b = append(b, byte(n>>16), byte(n>>8), byte(n))
	return append(b, e.Payload...)
}

// AppendBinary appends the envelope's canonical encoding to b. It implements
// encoding.BinaryAppender.
func (e *Envelope) AppendBinary(b []byte) ([]byte, error) {
	if err := e.check(); err != nil {
		return b, err
	}
	b = e.appendBody(b)
	return append(b, e.Sig[:]...), nil
}

// MarshalBinary returns the envelope's canonical encoding.
func (e *Envelope) MarshalBinary() ([]byte, error) {
	return e.AppendBinary(make([]byte, 0, e.encodedLen()))
}

func (e *Envelope) encodedLen() int { return headerSize + len(e.Room) + len(e.Payload) }

// signingInput appends what the sender signs: the signing context, then the
// encoding of every field but the signature.
func (e *Envelope) signingInput(b []byte) []byte {
	return e.appendBody(append(b, signingContext...))
}

// Sign sets e.Sender to k's public key and e.Sig to k's signature of the
// envelope, and returns the envelope's ID.
func (e *Envelope) Sign(k identity.PrivateKey) (ID, error) {
	e.Sender = k.Public()
	if err := e.check(); err != nil {
		return ID{}, err
	}
	copy(e.Sig[:], k.Sign(e.signingInput(make([]byte, 0, len(signingContext)+e.encodedLen()))))
	return e.ID(), nil
}

// Verify checks the signature. It returns nil or an error wrapping
// ErrBadSignature (or ErrMalformed for an envelope that cannot be encoded).
func (e *Envelope) Verify() error {
	return e.verify(nil)
}

// verify checks the signature, through the keys v holds when v is not
// nil.
func (e *Envelope) verify(v *Verifier) error {
	if err := e.check(); err != nil {
		return err
	}
	var buf [512]byte // keeps the signing input of a short message off the heap
	msg := e.signingInput(buf[:0])
	if !v.verifySig(e.Sender, msg, e.Sig[:]) {
		return fmt.Errorf("%w: envelope %d from %s in %s", ErrBadSignature, e.Seq, e.Sender.ShortFingerprint(), e.Room)
	}
	return nil
}

// ID returns the envelope's ID, the SHA-256 of its encoding.
func (e *Envelope) ID() ID {
	var buf [512]byte
	b, err := e.AppendBinary(buf[:0])
	if err != nil {
		return ID{}
	}
	return IDOf(b)
}

// Addressing reads the room and sender of an encoded envelope without
// parsing the rest: a client that published it rebuilds the relay's audit
// record from them. It checks the version, the room's rules and the key,
// not the envelope: for bytes that Parse accepts it returns what Parse
// does.
func Addressing(b []byte) (room string, sender identity.PublicKey, err error) {
	if len(b) < 3 || b[0] != Version {
		return "", identity.PublicKey{}, fmt.Errorf("%w: not a version %d envelope", ErrMalformed, Version)
	}
	n := int(b[2])
	if len(b) < 3+n+32 {
		return "", identity.PublicKey{}, fmt.Errorf("%w: truncated envelope", ErrMalformed)
	}
	room = string(b[3 : 3+n])
	if err := ValidRoom(room); err != nil {
		return "", identity.PublicKey{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if sender, err = identity.PublicKeyFromBytes(b[3+n : 3+n+32]); err != nil {
		return "", identity.PublicKey{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return room, sender, nil
}

// Parse parses an encoded envelope. It checks the size limit before
// anything else, then the version, and accepts only the canonical encoding:
// no trailing bytes, no truncated or over-long fields, no out-of-range
// values. It does not check the signature (see Verify). The returned
// envelope does not alias b.
func Parse(b []byte) (*Envelope, error) {
	if len(b) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: envelope of %d bytes, limit %d", ErrTooLarge, len(b), MaxEnvelopeSize)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty envelope", ErrMalformed)
	}
	if b[0] != Version {
		return nil, fmt.Errorf("%w: envelope version %d, this code knows %d", ErrUnknownVersion, b[0], Version)
	}
	var (
		e                Envelope
		s                = cryptobyte.String(b[1:])
		kind             uint8
		room, sender     cryptobyte.String
		prev, payload    cryptobyte.String
		sig              []byte
		seq, lamport, ts uint64
	)
	if !s.ReadUint8(&kind) ||
		!s.ReadUint8LengthPrefixed(&room) ||
		!s.ReadBytes((*[]byte)(&sender), 32) ||
		!s.ReadUint64(&seq) ||
		!s.ReadBytes((*[]byte)(&prev), len(e.Prev)) ||
		!s.ReadUint64(&lamport) ||
		!s.ReadUint64(&ts) ||
		!s.ReadUint24LengthPrefixed(&payload) ||
		!s.ReadBytes(&sig, len(e.Sig)) {
		return nil, fmt.Errorf("%w: truncated envelope or over-long field", ErrMalformed)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(s))
	}
	pk, err := identity.PublicKeyFromBytes(sender)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	e.Kind = Kind(kind)
	e.Room = string(room)
	e.Sender = pk
	e.Seq = seq
	copy(e.Prev[:], prev)
	e.Lamport = lamport
	e.Time = int64(ts)
	e.Payload = append([]byte(nil), payload...)
	copy(e.Sig[:], sig)
	if err := e.check(); err != nil {
		return nil, err
	}
	return &e, nil
}

// ParseVerify parses an encoded envelope, checks its signature, and returns
// it with its ID: the whole check a receiver makes before the replay guard.
func ParseVerify(b []byte) (*Envelope, ID, error) {
	e, err := Parse(b)
	if err != nil {
		return nil, ID{}, err
	}
	if err := e.Verify(); err != nil {
		return nil, ID{}, err
	}
	return e, IDOf(b), nil
}

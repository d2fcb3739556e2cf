package protocol

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/parleychat/parley/identity"
	"golang.org/x/crypto/cryptobyte"
)

// Private rooms. A private room's ID is "p:" and 32 base32 characters:
// the first 20 bytes of a hash of its creator's key and a random nonce.
// Nobody can guess it, and nobody can make a second room with the same
// ID, because the room's first change (OpCreate) must carry the key and
// nonce that hash to it. Its member list is a log of KindMember
// envelopes (Change); its messages are KindPost envelopes (Post), each
// naming the member-list head it was made under. package roster resolves
// the log; this file has only the encodings and the checks the bytes
// alone decide.
const (
	privatePrefix  = "p:"
	privateHashLen = 20
	// NonceSize is the size of a private room's creation nonce.
	NonceSize = 16
	// MaxRoomNameLen is the longest display name of a private room.
	MaxRoomNameLen = 64
	// MaxParents is the most member-list heads a change names: enough
	// for the joins of a busy invite (each is a head until a change
	// names it) beside the author's own latest change.
	MaxParents = 64
)

// Signing contexts of the two invite signatures: neither means anything
// as an envelope signature or in any other protocol.
const (
	inviteContext   = "parley invite capability v1\x00"
	proofContext    = "parley invite proof v1\x00"
	roomIDContext   = "parley private room v1\x00"
	directIDContext = "parley direct room v1\x00"
)

var roomEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// PrivateRoomID returns the ID of the private room that creator makes
// with nonce.
func PrivateRoomID(creator identity.PublicKey, nonce [NonceSize]byte) string {
	h := sha256.New()
	h.Write([]byte(roomIDContext))
	h.Write(creator.Bytes())
	h.Write(nonce[:])
	return privatePrefix + roomEncoding.EncodeToString(h.Sum(nil)[:privateHashLen])
}

// DirectRoomID returns the ID of the direct room of a and b: the same
// whichever of the two asks. It is a private room's ID, in a hash domain
// of its own, so that no creation of an ordinary room can claim it.
func DirectRoomID(a, b identity.PublicKey) string {
	lo, hi := a.Bytes(), b.Bytes()
	if string(lo) > string(hi) {
		lo, hi = hi, lo
	}
	h := sha256.New()
	h.Write([]byte(directIDContext))
	h.Write(lo)
	h.Write(hi)
	return privatePrefix + roomEncoding.EncodeToString(h.Sum(nil)[:privateHashLen])
}

// IsPrivateRoom reports whether room is the ID of a private room. Any
// other valid room ID is a public room.
func IsPrivateRoom(room string) bool {
	rest, ok := strings.CutPrefix(room, privatePrefix)
	if !ok || len(rest) != roomEncoding.EncodedLen(privateHashLen) {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}

// PrivateRoomHash returns the 20 bytes a private room's ID encodes, and
// PrivateRoomFromHash the ID back: an invite code carries the bytes.
func PrivateRoomHash(room string) ([privateHashLen]byte, bool) {
	var h [privateHashLen]byte
	if !IsPrivateRoom(room) {
		return h, false
	}
	b, err := roomEncoding.DecodeString(room[len(privatePrefix):])
	if err != nil || len(b) != privateHashLen {
		return h, false
	}
	copy(h[:], b)
	return h, true
}

// PrivateRoomFromHash is the inverse of PrivateRoomHash.
func PrivateRoomFromHash(h [privateHashLen]byte) string {
	return privatePrefix + roomEncoding.EncodeToString(h[:])
}

// Op is what a member-list change does.
type Op uint8

// Member-list operations. Zero is not an operation.
const (
	// OpCreate starts the log: its author is the first member and admin.
	OpCreate Op = 1 + iota
	// OpAdd: an admin adds Target.
	OpAdd
	// OpRemove: an admin removes Target, or a member leaves (Target is
	// the author).
	OpRemove
	// OpAdmin: an admin makes member Target an admin.
	OpAdmin
	// OpUnadmin: an admin drops Target's admin role, or an admin drops
	// their own.
	OpUnadmin
	// OpRename: an admin renames the room.
	OpRename
	// OpInvite: an admin records an invite it issued, so that every
	// admin can list and revoke it. Joining does not need this record.
	OpInvite
	// OpRevoke: an admin revokes an invite; later joins with it are void.
	OpRevoke
	// OpJoin: the author joins with an invite: the admin-signed
	// capability and the author's proof of the invite's secret.
	OpJoin
	// OpDirect starts a direct room: a private room of two people whose
	// ID both derive from their keys (DirectRoomID), so that either can
	// start it on first use without asking. Its author and Target are
	// its members; its list takes no other change. Both may make one:
	// the first in the order counts, the other changes nothing.
	OpDirect
)

var opNames = [...]string{OpCreate: "create", OpAdd: "add", OpRemove: "remove", OpAdmin: "admin",
	OpUnadmin: "unadmin", OpRename: "rename", OpInvite: "invite", OpRevoke: "revoke", OpJoin: "join", OpDirect: "direct"}

func (o Op) String() string {
	if o >= OpCreate && int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Capability is an invite as an admin signs it: who may join (anyone
// holding the private key of Key), until when, how many times. Lamport
// is the issuer's member-list clock when it signed (roster.Log.Clock), so
// that a join sorts after every change the issuer had seen.
type Capability struct {
	Issuer  identity.PublicKey
	Key     identity.PublicKey // the invite's own key; its secret is in the code
	Lamport uint64
	Expires uint32 // Unix seconds
	Uses    uint16 // joins it allows, at least 1
	Sig     [ed25519.SignatureSize]byte
}

func (c *Capability) signingInput(room string) []byte {
	b := append([]byte(inviteContext), room...)
	b = append(b, 0)
	b = append(b, c.Issuer.Bytes()...)
	b = append(b, c.Key.Bytes()...)
	b = binary.BigEndian.AppendUint64(b, c.Lamport)
	b = binary.BigEndian.AppendUint32(b, c.Expires)
	return binary.BigEndian.AppendUint16(b, c.Uses)
}

// Sign sets c.Issuer and c.Sig: issuer's signature of c for room.
func (c *Capability) Sign(room string, issuer identity.PrivateKey) {
	c.Issuer = issuer.Public()
	copy(c.Sig[:], issuer.Sign(c.signingInput(room)))
}

// Verify checks the issuer's signature of c for room.
func (c *Capability) Verify(room string) error {
	if c.Uses == 0 {
		return fmt.Errorf("%w: invite allows no joins", ErrMalformed)
	}
	if !verifySig(c.Issuer.Bytes(), c.signingInput(room), c.Sig[:]) {
		return fmt.Errorf("%w: invite capability not signed by %s", ErrBadSignature, c.Issuer.ShortFingerprint())
	}
	return nil
}

// JoinProofInput is what the holder of an invite's secret signs to join
// room as joiner: the proof binds the secret to one person and one room.
func JoinProofInput(room string, joiner identity.PublicKey) []byte {
	b := append([]byte(proofContext), room...)
	b = append(b, 0)
	return append(b, joiner.Bytes()...)
}

// Change is the payload of a KindMember envelope: one signed change of a
// private room's member list. Which fields are set depends on Op.
//
// Encoding: op (1 byte), parents (1-byte count, then 32 bytes each), then
// by op: create: nonce (16), name; add, remove, admin, unadmin, direct: target
// key (32); rename: name; invite: invite key (32), expires (4), uses (2);
// revoke: invite key (32); join: the capability (issuer 32, key 32,
// lamport 8, expires 4, uses 2, signature 64), then the proof (64). A
// name is a 1-byte length, then UTF-8 without control characters.
type Change struct {
	Op Op
	// Parents are the member-list heads the author had seen: IDs of
	// earlier changes of the room. Only OpCreate, OpJoin and OpDirect may
	// have none; OpCreate and OpDirect have none.
	Parents []ID
	Nonce   [NonceSize]byte    // OpCreate
	Name    string             // OpCreate, OpRename
	Target  identity.PublicKey // OpAdd, OpRemove, OpAdmin, OpUnadmin, OpDirect; the invite key of OpInvite, OpRevoke
	Expires uint32             // OpInvite
	Uses    uint16             // OpInvite
	Cap     Capability         // OpJoin
	Proof   [ed25519.SignatureSize]byte
}

func (c *Change) check() error {
	if c.Op < OpCreate || c.Op > OpDirect {
		return fmt.Errorf("%w: member-list operation %d", ErrMalformed, uint8(c.Op))
	}
	if len(c.Parents) > MaxParents {
		return fmt.Errorf("%w: change names %d parents, limit %d", ErrMalformed, len(c.Parents), MaxParents)
	}
	switch c.Op {
	case OpCreate, OpDirect:
		if len(c.Parents) != 0 {
			return fmt.Errorf("%w: a room's first change has no parents", ErrMalformed)
		}
	case OpJoin:
	default:
		if len(c.Parents) == 0 {
			return fmt.Errorf("%w: %s names no parent", ErrMalformed, c.Op)
		}
	}
	for i := 1; i < len(c.Parents); i++ {
		if string(c.Parents[i-1][:]) >= string(c.Parents[i][:]) {
			return fmt.Errorf("%w: parents not in ascending order, or repeated", ErrMalformed)
		}
	}
	if c.Op == OpCreate || c.Op == OpRename {
		if err := ValidRoomName(c.Name); err != nil {
			return err
		}
	}
	if c.Op == OpInvite && c.Uses == 0 {
		return fmt.Errorf("%w: invite allows no joins", ErrMalformed)
	}
	return nil
}

// ValidRoomName reports whether name can be a private room's display
// name: 1 to MaxRoomNameLen bytes of UTF-8 without control characters.
func ValidRoomName(name string) error {
	if name == "" || len(name) > MaxRoomNameLen {
		return fmt.Errorf("%w: room name must be 1 to %d bytes", ErrMalformed, MaxRoomNameLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: room name is not UTF-8", ErrMalformed)
	}
	for _, r := range name {
		if r < 0x20 || (0x7f <= r && r <= 0x9f) {
			return fmt.Errorf("%w: room name holds control character %U", ErrMalformed, r)
		}
	}
	return nil
}

// AppendBinary appends the encoding of c to b.
func (c *Change) AppendBinary(b []byte) ([]byte, error) {
	if err := c.check(); err != nil {
		return b, err
	}
	b = append(b, byte(c.Op), byte(len(c.Parents)))
	for _, p := range c.Parents {
		b = append(b, p[:]...)
	}
	switch c.Op {
	case OpCreate:
		b = append(b, c.Nonce[:]...)
		b = appendName(b, c.Name)
	case OpAdd, OpRemove, OpAdmin, OpUnadmin, OpRevoke, OpDirect:
		b = append(b, c.Target.Bytes()...)
	case OpRename:
		b = appendName(b, c.Name)
	case OpInvite:
		b = append(b, c.Target.Bytes()...)
		b = binary.BigEndian.AppendUint32(b, c.Expires)
		b = binary.BigEndian.AppendUint16(b, c.Uses)
	case OpJoin:
		b = append(b, c.Cap.Issuer.Bytes()...)
		b = append(b, c.Cap.Key.Bytes()...)
		b = binary.BigEndian.AppendUint64(b, c.Cap.Lamport)
		b = binary.BigEndian.AppendUint32(b, c.Cap.Expires)
		b = binary.BigEndian.AppendUint16(b, c.Cap.Uses)
		b = append(b, c.Cap.Sig[:]...)
		b = append(b, c.Proof[:]...)
	}
	return b, nil
}

func appendName(b []byte, name string) []byte {
	return append(append(b, byte(len(name))), name...)
}

// MarshalBinary returns the encoding of c.
func (c *Change) MarshalBinary() ([]byte, error) { return c.AppendBinary(nil) }

// ParseChange parses a KindMember payload, strictly: one encoding per
// change, no trailing bytes. It checks the form, not the signatures (see
// CheckChange).
func ParseChange(b []byte) (*Change, error) {
	if len(b) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: change of %d bytes", ErrTooLarge, len(b))
	}
	var (
		c         Change
		s         = cryptobyte.String(b)
		op, count uint8
		ok        bool
		name      cryptobyte.String
	)
	if !s.ReadUint8(&op) || !s.ReadUint8(&count) {
		return nil, fmt.Errorf("%w: truncated change", ErrMalformed)
	}
	c.Op = Op(op)
	if int(count) > MaxParents {
		return nil, fmt.Errorf("%w: change names %d parents, limit %d", ErrMalformed, count, MaxParents)
	}
	for range count {
		var p ID
		if !s.CopyBytes(p[:]) {
			return nil, fmt.Errorf("%w: truncated parents", ErrMalformed)
		}
		c.Parents = append(c.Parents, p)
	}
	readKey := func(k *identity.PublicKey) bool {
		var raw []byte
		if !s.ReadBytes(&raw, 32) {
			return false
		}
		pk, err := identity.PublicKeyFromBytes(raw)
		*k = pk
		return err == nil
	}
	switch c.Op {
	case OpCreate:
		ok = s.CopyBytes(c.Nonce[:]) && s.ReadUint8LengthPrefixed(&name)
	case OpAdd, OpRemove, OpAdmin, OpUnadmin, OpRevoke, OpDirect:
		ok = readKey(&c.Target)
	case OpRename:
		ok = s.ReadUint8LengthPrefixed(&name)
	case OpInvite:
		ok = readKey(&c.Target) && s.ReadUint32(&c.Expires) && s.ReadUint16(&c.Uses)
	case OpJoin:
		ok = readKey(&c.Cap.Issuer) && readKey(&c.Cap.Key) && s.ReadUint64(&c.Cap.Lamport) &&
			s.ReadUint32(&c.Cap.Expires) && s.ReadUint16(&c.Cap.Uses) &&
			s.CopyBytes(c.Cap.Sig[:]) && s.CopyBytes(c.Proof[:])
	default:
		return nil, fmt.Errorf("%w: member-list operation %d", ErrMalformed, op)
	}
	if !ok {
		return nil, fmt.Errorf("%w: truncated %s change or bad key", ErrMalformed, c.Op)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: %d trailing bytes after change", ErrMalformed, len(s))
	}
	c.Name = string(name)
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// CheckChange checks what the bytes of a member-list change decide, the
// same for every copy whenever it arrives: the room's first change hashes
// to the room's ID; a join carries a capability signed by its issuer and
// the joiner's proof of the invite's secret. Whether its parents are
// changes of the room is the member list's to say (package roster), since
// parents are other envelopes.
func CheckChange(e *Envelope, c *Change) error {
	switch c.Op {
	case OpCreate:
		if PrivateRoomID(e.Sender, c.Nonce) != e.Room {
			return fmt.Errorf("%w: creation of %s by %s does not hash to the room's ID", ErrMalformed, e.Room, e.Sender.ShortFingerprint())
		}
	case OpDirect:
		if c.Target == e.Sender || DirectRoomID(e.Sender, c.Target) != e.Room {
			return fmt.Errorf("%w: direct room of %s and %s is not %s", ErrMalformed, e.Sender.ShortFingerprint(), c.Target.ShortFingerprint(), e.Room)
		}
	case OpJoin:
		if err := c.Cap.Verify(e.Room); err != nil {
			return err
		}
		if !verifySig(c.Cap.Key.Bytes(), JoinProofInput(e.Room, e.Sender), c.Proof[:]) {
			return fmt.Errorf("%w: join by %s does not prove the invite's secret", ErrBadSignature, e.Sender.ShortFingerprint())
		}
		if c.Cap.Lamport > MaxCounter {
			return fmt.Errorf("%w: invite's clock %d above %d", ErrMalformed, c.Cap.Lamport, uint64(MaxCounter))
		}
		if e.Time/1000 >= int64(c.Cap.Expires) {
			// By its own signed time: the same verdict for every copy.
			return fmt.Errorf("%w: join made after its invite expired", ErrMalformed)
		}
	}
	return nil
}

// Post is the payload of a KindPost envelope: a message in a private
// room, naming the member-list head (the ID of a KindMember envelope of
// the room) its sender had seen, so that a post made just before a
// removal and arriving after it is judged by the list it was made under.
//
// Encoding: head (32 bytes), then the body: a Text's encoding.
type Post struct {
	Head ID
	Text Text
}

// AppendBinary appends the encoding of p to b.
func (p *Post) AppendBinary(b []byte) ([]byte, error) {
	if p.Head.IsZero() {
		return b, fmt.Errorf("%w: post names no member-list head", ErrMalformed)
	}
	return p.Text.AppendBinary(append(b, p.Head[:]...))
}

// MarshalBinary returns the encoding of p.
func (p *Post) MarshalBinary() ([]byte, error) { return p.AppendBinary(nil) }

// ParsePost parses a KindPost payload, strictly.
func ParsePost(b []byte) (Post, error) {
	var p Post
	if len(b) < len(p.Head) {
		return Post{}, fmt.Errorf("%w: truncated post", ErrMalformed)
	}
	copy(p.Head[:], b)
	if p.Head.IsZero() {
		return Post{}, fmt.Errorf("%w: post names no member-list head", ErrMalformed)
	}
	t, err := ParseText(b[len(p.Head):])
	if err != nil {
		return Post{}, err
	}
	p.Text = t
	return p, nil
}

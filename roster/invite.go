package roster

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// ErrBadCode: the text is not a valid invite code (wrong form, version or
// checksum, or a capability its issuer did not sign).
var ErrBadCode = errors.New("roster: not a valid invite code")

// Invite codes. A code is "invite-" and the base32 (lowercase, no
// padding) of: version (1 byte), the room's 20-byte hash, the capability
// (issuer 32, Lamport 8, expires 4, uses 2, signature 64), the invite's
// secret (16), and a checksum: the first 4 bytes of the SHA-256 of all
// before it. The capability's key is derived from the secret, so the code
// need not carry it. About 250 characters: one line to paste.
const (
	codePrefix  = "invite-"
	codeVersion = 1
	secretSize  = 16
	checksumLen = 4
	codeSize    = 1 + 20 + 32 + 8 + 4 + 2 + 64 + secretSize + checksumLen
	keyContext  = "parley invite key v1\x00"
)

var codeEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Code is an invite: the admin-signed capability and the secret that
// redeems it. Whoever holds the code can join (as often as the
// capability allows): send it as you would a password.
type Code struct {
	Room   string
	Cap    protocol.Capability
	Secret [secretSize]byte
}

// NewCode makes an invite to room signed by issuer, valid until expires
// for uses joins. lamport is the room's member-list clock plus one
// (Log.Clock()+1): its joins sort after every change the issuer has seen,
// and a removal or demotion the issuer has seen is older than it.
func NewCode(rand io.Reader, issuer identity.PrivateKey, room string, lamport uint64, expires time.Time, uses int) (*Code, error) {
	if !protocol.IsPrivateRoom(room) {
		return nil, fmt.Errorf("roster: invite to %s: not a private room", room)
	}
	if uses < 1 || uses > 65535 {
		return nil, fmt.Errorf("roster: invite for %d uses: allow 1 to 65535", uses)
	}
	if expires.Unix() <= 0 || expires.Unix() > 1<<32-1 {
		return nil, fmt.Errorf("roster: invite expiring %s: out of range", expires)
	}
	c := &Code{Room: room}
	if _, err := io.ReadFull(rand, c.Secret[:]); err != nil {
		return nil, fmt.Errorf("roster: invite secret: %w", err)
	}
	key, err := c.key()
	if err != nil {
		return nil, err
	}
	c.Cap = protocol.Capability{Key: key.Public(), Lamport: lamport, Expires: uint32(expires.Unix()), Uses: uint16(uses)}
	c.Cap.Sign(room, issuer)
	return c, nil
}

// key returns the invite's own key pair, derived from the secret.
func (c *Code) key() (identity.PrivateKey, error) {
	seed := sha256.Sum256(append([]byte(keyContext), c.Secret[:]...))
	return identity.PrivateKeyFromSeed(seed[:])
}

// Expires returns when the invite expires.
func (c *Code) Expires() time.Time { return time.Unix(int64(c.Cap.Expires), 0) }

// String returns the code's text.
func (c *Code) String() string {
	h, _ := protocol.PrivateRoomHash(c.Room)
	b := make([]byte, 0, codeSize)
	b = append(b, codeVersion)
	b = append(b, h[:]...)
	b = append(b, c.Cap.Issuer.Bytes()...)
	b = binary.BigEndian.AppendUint64(b, c.Cap.Lamport)
	b = binary.BigEndian.AppendUint32(b, c.Cap.Expires)
	b = binary.BigEndian.AppendUint16(b, c.Cap.Uses)
	b = append(b, c.Cap.Sig[:]...)
	b = append(b, c.Secret[:]...)
	sum := sha256.Sum256(b)
	b = append(b, sum[:checksumLen]...)
	return codePrefix + codeEncoding.EncodeToString(b)
}

// ParseCode parses an invite code, with or without surrounding space and
// in any case, and checks its checksum and its issuer's signature.
func ParseCode(s string) (*Code, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	rest, ok := strings.CutPrefix(s, codePrefix)
	if !ok {
		return nil, fmt.Errorf("%w: it should start with %q", ErrBadCode, codePrefix)
	}
	if len(rest) > 2*codeEncoding.EncodedLen(codeSize) {
		return nil, fmt.Errorf("%w: %d characters, too long", ErrBadCode, len(s))
	}
	b, err := codeEncoding.DecodeString(rest)
	if err == nil && codeEncoding.EncodeToString(b) != rest {
		// The last character has bits the bytes do not use: one code,
		// one spelling.
		err = errors.New("not canonical")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: not base32 (a character was changed or cut?)", ErrBadCode)
	}
	if len(b) > 0 && b[0] != codeVersion {
		return nil, fmt.Errorf("%w: version %d; this chat knows version %d (upgrade?)", ErrBadCode, b[0], codeVersion)
	}
	if len(b) != codeSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d (was it cut short?)", ErrBadCode, len(b), codeSize)
	}
	body, sum := b[:codeSize-checksumLen], b[codeSize-checksumLen:]
	if want := sha256.Sum256(body); string(want[:checksumLen]) != string(sum) {
		return nil, fmt.Errorf("%w: checksum does not match (a character was changed?)", ErrBadCode)
	}
	var (
		c Code
		h [20]byte
	)
	p := body[1:]
	take := func(n int) []byte { v := p[:n]; p = p[n:]; return v }
	copy(h[:], take(20))
	c.Room = protocol.PrivateRoomFromHash(h)
	if c.Cap.Issuer, err = identity.PublicKeyFromBytes(take(32)); err != nil {
		return nil, fmt.Errorf("%w: issuer: %v", ErrBadCode, err)
	}
	c.Cap.Lamport = binary.BigEndian.Uint64(take(8))
	c.Cap.Expires = binary.BigEndian.Uint32(take(4))
	c.Cap.Uses = binary.BigEndian.Uint16(take(2))
	copy(c.Cap.Sig[:], take(64))
	copy(c.Secret[:], take(secretSize))
	key, err := c.key()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCode, err)
	}
	c.Cap.Key = key.Public()
	if err := c.Cap.Verify(c.Room); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCode, err)
	}
	return &c, nil
}

// Join returns joiner's join change for the invite: the capability and
// the proof, signed with the invite's key, that joiner holds its secret.
// Its envelope's Lamport clock must be above c.Cap.Lamport.
func (c *Code) Join(joiner identity.PublicKey) (*protocol.Change, error) {
	key, err := c.key()
	if err != nil {
		return nil, err
	}
	ch := &protocol.Change{Op: protocol.OpJoin, Cap: c.Cap}
	copy(ch.Proof[:], key.Sign(protocol.JoinProofInput(c.Room, joiner)))
	return ch, nil
}

// Record returns the OpInvite change that records the invite on the
// member list, naming parents.
func (c *Code) Record(parents []protocol.ID) *protocol.Change {
	return &protocol.Change{Op: protocol.OpInvite, Parents: parents, Target: c.Cap.Key, Expires: c.Cap.Expires, Uses: c.Cap.Uses}
}

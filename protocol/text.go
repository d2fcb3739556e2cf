package protocol

import (
	"fmt"
	"unicode/utf8"

	"github.com/parleychat/parley/identity"
	"golang.org/x/crypto/cryptobyte"
)

// MaxTextLen is the longest text body in bytes.
const MaxTextLen = 16 << 10

// Text is the payload of a KindText envelope: a chat message and the nickname
// its sender goes by. The nickname is self-asserted; the sender key is the
// identity.
//
// Encoding: nick (1-byte length, then bytes), body (2-byte big-endian length,
// then bytes). The nick obeys identity.ValidNick; the body is UTF-8 without
// control characters other than tab and newline.
type Text struct {
	Nick string
	Body string
}

func (t *Text) check() error {
	if err := identity.ValidNick(t.Nick); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(t.Body) > MaxTextLen {
		return fmt.Errorf("%w: text of %d bytes, limit %d", ErrTooLarge, len(t.Body), MaxTextLen)
	}
	if !utf8.ValidString(t.Body) {
		return fmt.Errorf("%w: text is not UTF-8", ErrMalformed)
	}
	// Control characters would reach the reader's terminal: escape
	// sequences can move the cursor, rewrite what is shown, or set the
	// window title. Only tab and newline are text.
	for i, r := range t.Body {
		if (r < 0x20 && r != '\t' && r != '\n') || (0x7f <= r && r <= 0x9f) {
			return fmt.Errorf("%w: text holds control character %U at byte %d", ErrMalformed, r, i)
		}
	}
	return nil
}

// AppendBinary appends the encoding of t to b.
func (t *Text) AppendBinary(b []byte) ([]byte, error) {
	if err := t.check(); err != nil {
		return b, err
	}
	bb := cryptobyte.NewBuilder(b)
	bb.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Nick)) })
	bb.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Body)) })
	return bb.BytesOrPanic(), nil
}

// MarshalBinary returns the encoding of t.
func (t *Text) MarshalBinary() ([]byte, error) { return t.AppendBinary(nil) }

// CheckPayload checks the payload of an envelope of a known kind as
// strictly as the envelope itself: a text envelope whose payload is not a
// valid Text is malformed, refused by the mesh and the relay alike, not
// only hidden by the client, so that nobody stores or forwards what
// nobody can show. A payload whose length is over the limit is too large.
//
// The kinds of a room follow from its ID: text in a public room, member
// changes and posts in a private one (IsPrivateRoom). A member change is
// also checked for what its bytes alone decide (CheckChange); whether
// its author may make it is the member list's to say (package roster).
func CheckPayload(e *Envelope) error {
	if !e.Kind.Known() {
		return nil
	}
	if private := IsPrivateRoom(e.Room); private != (e.Kind != KindText) {
		if private {
			return fmt.Errorf("%w: %s envelope in private room %s", ErrMalformed, e.Kind, e.Room)
		}
		return fmt.Errorf("%w: %s envelope in public room %s", ErrMalformed, e.Kind, e.Room)
	}
	switch e.Kind {
	case KindMember:
		c, err := ParseChange(e.Payload)
		if err != nil {
			return fmt.Errorf("member change: %w", err)
		}
		if err := CheckChange(e, c); err != nil {
			return fmt.Errorf("member change: %w", err)
		}
	case KindPost:
		if _, err := ParsePost(e.Payload); err != nil {
			return fmt.Errorf("post payload: %w", err)
		}
	case KindKeyPackage, KindKeys, KindSealed:
		return checkSealedKinds(e)
	default:
		if _, err := ParseText(e.Payload); err != nil {
			return fmt.Errorf("text payload: %w", err)
		}
	}
	return nil
}

// ParseText parses a KindText payload, strictly: no trailing bytes, valid
// UTF-8, a valid nickname.
func ParseText(b []byte) (Text, error) {
	if len(b) > MaxPayloadSize {
		return Text{}, fmt.Errorf("%w: text payload of %d bytes", ErrTooLarge, len(b))
	}
	var nick, body cryptobyte.String
	s := cryptobyte.String(b)
	if !s.ReadUint8LengthPrefixed(&nick) || !s.ReadUint16LengthPrefixed(&body) {
		return Text{}, fmt.Errorf("%w: truncated text payload", ErrMalformed)
	}
	if !s.Empty() {
		return Text{}, fmt.Errorf("%w: %d trailing bytes after text", ErrMalformed, len(s))
	}
	t := Text{Nick: string(nick), Body: string(body)}
	if err := t.check(); err != nil {
		return Text{}, err
	}
	return t, nil
}

package identity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/parleychat/parley/internal/atomicfile"
)

// Trust is what the contact book knows of a key seen under a nickname.
type Trust int

const (
	// TrustNew: the nickname was not known; its key is now remembered.
	TrustNew Trust = iota + 1
	// TrustKnown: the key is the one first seen under this nickname.
	TrustKnown
	// TrustVerified: the key is known and was verified out of band.
	TrustVerified
	// TrustKeyChanged: the nickname is known with a different key.
	TrustKeyChanged
)

func (t Trust) String() string {
	switch t {
	case TrustNew:
		return "new"
	case TrustKnown:
		return "known"
	case TrustVerified:
		return "verified"
	case TrustKeyChanged:
		return "key-changed"
	}
	return fmt.Sprintf("Trust(%d)", int(t))
}

// Errors of the contact book.
var (
	// ErrKeyChanged: a known nickname came with a different key.
	ErrKeyChanged = errors.New("identity: key changed")
	// ErrBadNick: a nickname breaks the rules of ValidNick.
	ErrBadNick = errors.New("identity: invalid nickname")
	// ErrMalformedContacts: the contacts file cannot be parsed.
	ErrMalformedContacts = errors.New("identity: malformed contacts file")
	// ErrUnknownContact: no contact has the given fingerprint.
	ErrUnknownContact = errors.New("identity: no such contact")
)

// KeyChangedError tells which nickname changed key, from what to what.
// errors.Is(err, ErrKeyChanged) holds for it.
type KeyChangedError struct {
	Nick     string
	Known    PublicKey
	Seen     PublicKey
	Verified bool // whether the known key had been verified
}

func (e *KeyChangedError) Error() string {
	return fmt.Sprintf("identity: key changed for %q: known %s, now %s", e.Nick, e.Known.Fingerprint(), e.Seen.Fingerprint())
}

func (e *KeyChangedError) Unwrap() error { return ErrKeyChanged }

// MaxNickLen is the longest nickname in bytes.
const MaxNickLen = 32

// ValidNick reports whether nick is an acceptable nickname: 1 to 32 bytes
// of lowercase ASCII letters, digits, '-', '_' and '.'.
//
// The contact book pins keys by nickname, so two nicknames that look alike
// would let a newcomer pass for a known contact without a key-change
// warning. Upper case and the rest of Unicode ("Alice", Cyrillic "аlice",
// full-width "ａlice") are refused for that reason, not out of parochialism.
func ValidNick(nick string) error {
	if nick == "" || len(nick) > MaxNickLen {
		return fmt.Errorf("%w: %q must be 1 to %d bytes", ErrBadNick, truncate(nick), MaxNickLen)
	}
	for i := 0; i < len(nick); i++ {
		c := nick[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: %q holds %q; use a-z, 0-9, '-', '_' or '.'", ErrBadNick, truncate(nick), rune(c))
		}
	}
	return nil
}

// Contact is one entry of the contact book.
type Contact struct {
	Nick      string
	Key       PublicKey
	Verified  bool
	FirstSeen time.Time // in UTC, whole seconds
}

// Trust returns TrustVerified or TrustKnown.
func (c Contact) Trust() Trust {
	if c.Verified {
		return TrustVerified
	}
	return TrustKnown
}

// Contacts is the contact book: one pinned key per nickname. The zero value
// is an empty book ready to use. It is not safe for concurrent use.
type Contacts struct {
	byNick map[string]Contact
}

// Observe records that key was seen under nick at time now. The first key
// seen under a nickname is remembered (TrustNew); the same key again gives
// TrustKnown or TrustVerified; a different key gives TrustKeyChanged and a
// *KeyChangedError, and the book keeps the old key until Replace is called.
func (c *Contacts) Observe(nick string, key PublicKey, now time.Time) (Trust, error) {
	if err := ValidNick(nick); err != nil {
		return 0, err
	}
	if key.IsZero() {
		return 0, fmt.Errorf("%w: zero key", ErrMalformedKey)
	}
	if known, ok := c.byNick[nick]; ok {
		if !known.Key.Equal(key) {
			return TrustKeyChanged, &KeyChangedError{Nick: nick, Known: known.Key, Seen: key, Verified: known.Verified}
		}
		return known.Trust(), nil
	}
	c.put(Contact{Nick: nick, Key: key, FirstSeen: now.UTC().Truncate(time.Second)})
	return TrustNew, nil
}

// Replace pins key under nick in place of the key known before, after the
// person has accepted a key change. The new key starts unverified.
func (c *Contacts) Replace(nick string, key PublicKey, now time.Time) error {
	if err := ValidNick(nick); err != nil {
		return err
	}
	if key.IsZero() {
		return fmt.Errorf("%w: zero key", ErrMalformedKey)
	}
	if known, ok := c.byNick[nick]; ok && known.Key.Equal(key) {
		return nil // the same key: keep what is known of it
	}
	c.put(Contact{Nick: nick, Key: key, FirstSeen: now.UTC().Truncate(time.Second)})
	return nil
}

func (c *Contacts) put(ct Contact) {
	if c.byNick == nil {
		c.byNick = make(map[string]Contact)
	}
	c.byNick[ct.Nick] = ct
}

// Verify marks every contact whose key has the fingerprint fp as verified,
// and returns them. It fails with ErrUnknownContact if there is none.
func (c *Contacts) Verify(fp string) ([]Contact, error) {
	var done []Contact
	for nick, ct := range c.byNick {
		if ct.Key.Fingerprint() == fp {
			ct.Verified = true
			c.byNick[nick] = ct
			done = append(done, ct)
		}
	}
	if len(done) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownContact, truncate(fp))
	}
	slices.SortFunc(done, func(a, b Contact) int { return strings.Compare(a.Nick, b.Nick) })
	return done, nil
}

// Lookup returns the contact known under nick.
func (c *Contacts) Lookup(nick string) (Contact, bool) {
	ct, ok := c.byNick[nick]
	return ct, ok
}

// List returns every contact, sorted by nickname.
func (c *Contacts) List() []Contact {
	out := make([]Contact, 0, len(c.byNick))
	for _, ct := range c.byNick {
		out = append(out, ct)
	}
	slices.SortFunc(out, func(a, b Contact) int { return strings.Compare(a.Nick, b.Nick) })
	return out
}

// The contacts file is text: a header line, then one line per contact,
// sorted by nickname:
//
//	# parley contacts v1
//	alice ed25519:<key> verified 2026-11-26T06:11:41Z
//	bob ed25519:<key> known 2026-11-26T07:00:00Z
//
// Fields are separated by one space and every line ends in "\n". The format
// is strict so that a file has one form: ParseContacts(b).MarshalText() == b.
const contactsHeader = "# parley contacts v1\n"

// MarshalText returns the contacts file.
func (c *Contacts) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(contactsHeader)
	for _, ct := range c.List() {
		trust := "known"
		if ct.Verified {
			trust = "verified"
		}
		fmt.Fprintf(&b, "%s %s %s %s\n", ct.Nick, ct.Key, trust, ct.FirstSeen.UTC().Format(time.RFC3339))
	}
	return b.Bytes(), nil
}

// MaxContactsFile is the largest contacts file ParseContacts reads.
const MaxContactsFile = 16 << 20

// ParseContacts parses a contacts file as MarshalText writes it. Any other
// form, including unsorted or repeated nicknames, is an error that names the
// line.
func ParseContacts(data []byte) (*Contacts, error) {
	if len(data) > MaxContactsFile {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformedContacts, MaxContactsFile)
	}
	rest, ok := bytes.CutPrefix(data, []byte(contactsHeader))
	if !ok {
		return nil, fmt.Errorf("%w: line 1: want %q", ErrMalformedContacts, strings.TrimSuffix(contactsHeader, "\n"))
	}
	c := &Contacts{byNick: make(map[string]Contact)}
	prev := ""
	for lineNo := 2; len(rest) > 0; lineNo++ {
		line, after, found := bytes.Cut(rest, []byte{'\n'})
		if !found {
			return nil, fmt.Errorf("%w: line %d: no newline at end", ErrMalformedContacts, lineNo)
		}
		rest = after
		ct, err := parseContact(string(line))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrMalformedContacts, lineNo, err)
		}
		if ct.Nick <= prev {
			return nil, fmt.Errorf("%w: line %d: %q is out of order or repeated", ErrMalformedContacts, lineNo, ct.Nick)
		}
		prev = ct.Nick
		c.byNick[ct.Nick] = ct
	}
	return c, nil
}

func parseContact(line string) (Contact, error) {
	f := strings.Split(line, " ")
	if len(f) != 4 {
		return Contact{}, fmt.Errorf("want 4 fields separated by single spaces, have %d", len(f))
	}
	var ct Contact
	if err := ValidNick(f[0]); err != nil {
		return ct, err
	}
	ct.Nick = f[0]
	key, err := ParsePublicKey(f[1])
	if err != nil {
		return ct, err
	}
	ct.Key = key
	switch f[2] {
	case "known":
	case "verified":
		ct.Verified = true
	default:
		return ct, fmt.Errorf("trust %q is not known or verified", truncate(f[2]))
	}
	t, err := time.Parse(time.RFC3339, f[3])
	if err != nil || t.UTC().Format(time.RFC3339) != f[3] {
		return ct, fmt.Errorf("time %q is not an RFC 3339 UTC time in whole seconds", truncate(f[3]))
	}
	ct.FirstSeen = t.UTC()
	return ct, nil
}

// LoadContacts reads the contacts file at path. A missing file is an empty
// book: the first run has no contacts yet.
func LoadContacts(path string) (*Contacts, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Contacts{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: load contacts: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxContactsFile+1))
	if err != nil {
		return nil, fmt.Errorf("identity: load contacts: %w", err)
	}
	c, err := ParseContacts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Save writes the contacts file to path atomically, with mode 0600.
func (c *Contacts) Save(path string) error {
	data, _ := c.MarshalText()
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("identity: save contacts: %w", err)
	}
	return nil
}

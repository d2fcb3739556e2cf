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

// Trust is what the contact book says of a key seen with a nickname.
//
// A person is their key; a nickname is a label the sender chose, and any
// number of keys may choose the same one. Trust is therefore decided by the
// key, and the nickname matters only when it is the nickname of a contact
// you verified.
type Trust int

const (
	// TrustNew: the key was not in the book; it is now remembered.
	TrustNew Trust = iota + 1
	// TrustKnown: the key was seen before, and not verified.
	TrustKnown
	// TrustVerified: the key was verified out of band (Verify or Accept),
	// whatever nickname it comes with.
	TrustVerified
	// TrustKeyChanged: a key that is not verified claims the nickname of a
	// contact you verified with another key. It is either an impersonation
	// or that person's new key; only comparing fingerprints out of band
	// tells, and Accept then moves the verification to the new key.
	// Claimed names the verified contact.
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

// Errors of the contact book. An error of the contact book wraps exactly
// one of them (or ErrMalformedKey for a zero key) and adds the detail.
var (
	// ErrBadNick: a nickname breaks the rules of ValidNick.
	ErrBadNick = errors.New("identity: invalid nickname")
	// ErrMalformedContacts: the contacts file cannot be parsed.
	ErrMalformedContacts = errors.New("identity: malformed contacts file")
	// ErrUnknownContact: no contact has a fingerprint with the given prefix.
	ErrUnknownContact = errors.New("identity: no such contact")
	// ErrAmbiguousContact: more than one contact has a fingerprint with the
	// given prefix; the error lists them.
	ErrAmbiguousContact = errors.New("identity: more than one contact has this fingerprint prefix")
	// ErrBadFingerprint: the text is not a fingerprint or a prefix of one
	// long enough to name a contact (MinFingerprintPrefix).
	ErrBadFingerprint = errors.New("identity: not a fingerprint prefix")
)

// MaxNickLen is the longest nickname in bytes.
const MaxNickLen = 32

// ValidNick reports whether nick is an acceptable nickname: 1 to 32 bytes
// of lowercase ASCII letters, digits, '-', '_' and '.'.
//
// A key that claims the nickname of a verified contact is shown as a key
// change, so two nicknames that look alike would let a newcomer pass for a
// verified contact without that warning. Upper case and the rest of Unicode
// ("Alice", Cyrillic "аlice", full-width "ａlice") are refused for that
// reason, not out of parochialism.
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

// Contact is one entry of the contact book: a key, and what is known of it.
type Contact struct {
	Key       PublicKey
	Nick      string    // the nickname last seen with Key: the sender's choice
	FirstSeen time.Time // when Key was first seen, in UTC, whole seconds
	Verified  bool      // fingerprint compared out of band (Verify, Accept)
	// Replaced: the key was verified until Accept gave its nickname to
	// another key. It is no longer verified.
	Replaced bool
}

// Trust returns TrustVerified or TrustKnown: the trust of the key alone.
// Contacts.TrustOf also weighs the nickname it comes with.
func (c Contact) Trust() Trust {
	if c.Verified {
		return TrustVerified
	}
	return TrustKnown
}

// Contacts is the contact book, keyed by public key. The zero value is an
// empty book ready to use. It is not safe for concurrent use.
type Contacts struct {
	byKey map[PublicKey]Contact
	// verified holds the keys of the verified contacts by nickname.
	verified map[string][]PublicKey
	unsaved  bool
}

// Observe records that key was seen with nick at time now, and returns its
// trust as TrustOf does. A key seen for the first time is added (and its
// trust is TrustNew, unless it claims a verified contact's nickname); a
// known key's nickname becomes nick. A key change is not an error: the trust
// says it, and Claimed names the contact claimed. The error is only for a
// bad nickname (ErrBadNick) or a zero key (ErrMalformedKey).
func (c *Contacts) Observe(nick string, key PublicKey, now time.Time) (Trust, error) {
	if err := ValidNick(nick); err != nil {
		return 0, err
	}
	if key.IsZero() {
		return 0, fmt.Errorf("%w: zero key", ErrMalformedKey)
	}
	trust := c.TrustOf(nick, key)
	ct, ok := c.byKey[key]
	if ok && ct.Nick == nick {
		return trust, nil
	}
	if !ok {
		ct = Contact{Key: key, FirstSeen: now.UTC().Truncate(time.Second)}
	}
	ct.Nick = nick
	c.put(ct)
	c.unsaved = true
	return trust, nil
}

// TrustOf returns the trust of key seen with nick, without changing the
// book: TrustVerified if the key is verified; else TrustKeyChanged if nick
// is the nickname of a verified contact (another key); else TrustKnown if
// the key is in the book, TrustNew if not.
func (c *Contacts) TrustOf(nick string, key PublicKey) Trust {
	ct, ok := c.byKey[key]
	switch {
	case ok && ct.Verified:
		return TrustVerified
	case len(c.verified[nick]) > 0:
		return TrustKeyChanged
	case ok:
		return TrustKnown
	}
	return TrustNew
}

// Claimed returns the verified contact whose nickname key claims by coming
// with nick: the contact a TrustKeyChanged is about. It reports false when
// key is itself verified or no verified contact has that nickname. If more
// than one verified contact has it, the one whose key sorts first is
// returned.
func (c *Contacts) Claimed(nick string, key PublicKey) (Contact, bool) {
	if ct, ok := c.byKey[key]; ok && ct.Verified {
		return Contact{}, false
	}
	keys := c.verified[nick]
	if len(keys) == 0 {
		return Contact{}, false
	}
	return c.byKey[keys[0]], true
}

// ByKey returns the contact with key.
func (c *Contacts) ByKey(key PublicKey) (Contact, bool) {
	ct, ok := c.byKey[key]
	return ct, ok
}

// Lookup returns the verified contact whose nickname is nick (the one
// whose key sorts first if there are several).
//
// Deprecated: a nickname names no one. Use TrustOf for the trust of a key
// seen with a nickname, and Claimed for the contact it claims.
func (c *Contacts) Lookup(nick string) (Contact, bool) {
	keys := c.verified[nick]
	if len(keys) == 0 {
		return Contact{}, false
	}
	return c.byKey[keys[0]], true
}

// MinFingerprintPrefix is the fewest characters of a fingerprint's hash
// (after "SHA256:") that Find, Verify and Accept take, so that a slip of the
// keyboard does not name a contact by accident.
const MinFingerprintPrefix = 6

// fingerprintLabel is the start of every fingerprint.
const fingerprintLabel = "SHA256:"

// Find returns the one contact whose fingerprint starts with prefix: a whole
// fingerprint or any unique prefix of it, with or without "SHA256:", of at
// least MinFingerprintPrefix characters after it. It fails with
// ErrBadFingerprint for text that cannot be such a prefix,
// ErrUnknownContact if no contact matches and ErrAmbiguousContact (listing
// the matches) if more than one does.
func (c *Contacts) Find(prefix string) (Contact, error) {
	hash := prefix
	if len(hash) >= len(fingerprintLabel) && strings.EqualFold(hash[:len(fingerprintLabel)], fingerprintLabel) {
		hash = hash[len(fingerprintLabel):]
	}
	if err := checkFingerprintPrefix(hash); err != nil {
		return Contact{}, err
	}
	want := fingerprintLabel + hash
	var found []Contact
	for _, ct := range c.byKey {
		if strings.HasPrefix(ct.Key.Fingerprint(), want) {
			found = append(found, ct)
		}
	}
	switch len(found) {
	case 0:
		return Contact{}, fmt.Errorf("%w: %s", ErrUnknownContact, want)
	case 1:
		return found[0], nil
	}
	sortByNick(found)
	const show = 10
	names := make([]string, 0, show+1)
	for i, ct := range found {
		if i == show {
			names = append(names, fmt.Sprintf("and %d more", len(found)-show))
			break
		}
		names = append(names, ct.Nick+" "+ct.Key.Fingerprint())
	}
	return Contact{}, fmt.Errorf("%w: %s matches %s; give more of the fingerprint", ErrAmbiguousContact, want, strings.Join(names, ", "))
}

// checkFingerprintPrefix checks the hash part of a fingerprint prefix: the
// unpadded standard base64 of a SHA-256, or the start of it.
func checkFingerprintPrefix(hash string) error {
	const hashLen = 43 // unpadded base64 of 32 bytes
	if len(hash) < MinFingerprintPrefix || len(hash) > hashLen {
		return fmt.Errorf("%w: %q: give %d to %d characters after %q", ErrBadFingerprint, truncate(hash), MinFingerprintPrefix, hashLen, fingerprintLabel)
	}
	for i := 0; i < len(hash); i++ {
		b := hash[i]
		if !('A' <= b && b <= 'Z' || 'a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '+' || b == '/') {
			return fmt.Errorf("%w: %q holds %q, which no fingerprint has", ErrBadFingerprint, truncate(hash), rune(b))
		}
	}
	return nil
}

// Verify marks the contact whose fingerprint starts with prefix (see Find)
// as verified, and returns it. Other contacts with the same nickname are
// left as they are: to move a verification from an old key to a new one,
// use Accept.
func (c *Contacts) Verify(prefix string) (Contact, error) {
	ct, err := c.Find(prefix)
	if err != nil {
		return Contact{}, err
	}
	if !ct.Verified || ct.Replaced {
		ct.Verified, ct.Replaced = true, false
		c.put(ct)
		c.unsaved = true
	}
	return ct, nil
}

// Accept accepts a changed key: it marks the contact whose fingerprint
// starts with prefix (see Find) as verified, and takes its nickname over
// from the verified contacts that had it with other keys. Those stay in the
// book, no longer verified and marked Replaced; they are returned sorted by
// key. With no verified contact to replace, Accept is Verify.
func (c *Contacts) Accept(prefix string) (accepted Contact, replaced []Contact, err error) {
	ct, err := c.Find(prefix)
	if err != nil {
		return Contact{}, nil, err
	}
	for _, k := range slices.Clone(c.verified[ct.Nick]) {
		if k == ct.Key {
			continue
		}
		old := c.byKey[k]
		old.Verified, old.Replaced = false, true
		c.put(old)
		replaced = append(replaced, old)
	}
	ct.Verified, ct.Replaced = true, false
	c.put(ct)
	c.unsaved = true
	return ct, replaced, nil
}

// put stores ct in place of what the book held for its key.
func (c *Contacts) put(ct Contact) {
	if c.byKey == nil {
		c.byKey = make(map[PublicKey]Contact)
		c.verified = make(map[string][]PublicKey)
	}
	if old, ok := c.byKey[ct.Key]; ok && old.Verified {
		keys := slices.DeleteFunc(c.verified[old.Nick], func(k PublicKey) bool { return k == ct.Key })
		if len(keys) == 0 {
			delete(c.verified, old.Nick)
		} else {
			c.verified[old.Nick] = keys
		}
	}
	c.byKey[ct.Key] = ct
	if ct.Verified {
		keys := append(c.verified[ct.Nick], ct.Key)
		slices.SortFunc(keys, compareKeys)
		c.verified[ct.Nick] = keys
	}
}

func compareKeys(a, b PublicKey) int { return bytes.Compare(a.k[:], b.k[:]) }

func sortByNick(list []Contact) {
	slices.SortFunc(list, func(a, b Contact) int {
		if n := strings.Compare(a.Nick, b.Nick); n != 0 {
			return n
		}
		return compareKeys(a.Key, b.Key)
	})
}

// List returns every contact, sorted by nickname, then key.
func (c *Contacts) List() []Contact {
	out := make([]Contact, 0, len(c.byKey))
	for _, ct := range c.byKey {
		out = append(out, ct)
	}
	sortByNick(out)
	return out
}

// Unsaved reports whether the book has changes that Save has not written:
// an Observe that added a key or changed its nickname, a Verify or Accept
// that changed something, or a file of an earlier version that was read
// and is to be written in the current one.
func (c *Contacts) Unsaved() bool { return c.unsaved }

// The contacts file is text: a header line, then one line per key, sorted
// by the key's text:
//
//	# parley contacts v2
//	ed25519:<key> alice verified 2026-11-26T06:11:41Z
//	ed25519:<key> root known 2026-11-26T07:00:00Z
//	ed25519:<key> alice replaced 2026-11-20T09:30:00Z
//
// The fields are the key, the nickname last seen with it, its state (known,
// verified, or replaced: verified until Accept gave its nickname to another
// key) and when it was first seen. Fields are separated by one space and
// every line ends in "\n". The format is strict so that a file has one
// form: ParseContacts(b).MarshalText() == b.
//
// Version 1 was keyed by nickname ("alice ed25519:<key> verified <time>",
// sorted by nickname). ParseContacts still reads it, and MarshalText writes
// what it read as version 2.
const (
	contactsHeader   = "# parley contacts v2\n"
	contactsHeaderV1 = "# parley contacts v1\n"
)

// MarshalText returns the contacts file.
func (c *Contacts) MarshalText() ([]byte, error) {
	list := make([]Contact, 0, len(c.byKey))
	for _, ct := range c.byKey {
		list = append(list, ct)
	}
	// Sorted by the key's text, which is not the order of its bytes.
	slices.SortFunc(list, func(a, b Contact) int { return strings.Compare(a.Key.String(), b.Key.String()) })
	var b bytes.Buffer
	b.WriteString(contactsHeader)
	for _, ct := range list {
		state := "known"
		switch {
		case ct.Verified:
			state = "verified"
		case ct.Replaced:
			state = "replaced"
		}
		fmt.Fprintf(&b, "%s %s %s %s\n", ct.Key, ct.Nick, state, ct.FirstSeen.UTC().Format(time.RFC3339))
	}
	return b.Bytes(), nil
}

// MaxContactsFile is the largest contacts file ParseContacts reads.
const MaxContactsFile = 16 << 20

// ParseContacts parses a contacts file as MarshalText writes it, or one of
// version 1. Any other form, including keys out of order or repeated, is an
// error that wraps ErrMalformedContacts and names the line.
func ParseContacts(data []byte) (*Contacts, error) {
	if len(data) > MaxContactsFile {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformedContacts, MaxContactsFile)
	}
	if rest, ok := bytes.CutPrefix(data, []byte(contactsHeader)); ok {
		return parseContacts(rest, parseContact, func(prev, ct Contact) bool {
			return prev.Key.String() < ct.Key.String()
		})
	}
	if rest, ok := bytes.CutPrefix(data, []byte(contactsHeaderV1)); ok {
		c, err := parseContacts(rest, parseContactV1, func(prev, ct Contact) bool { return prev.Nick < ct.Nick })
		if err != nil {
			return nil, err
		}
		c.unsaved = true // to be written as version 2
		return c, nil
	}
	return nil, fmt.Errorf("%w: line 1: want %q", ErrMalformedContacts, strings.TrimSuffix(contactsHeader, "\n"))
}

// parseContacts parses the lines after the header with parse; inOrder
// says whether a line may follow the one before it.
func parseContacts(rest []byte, parse func(string) (Contact, error), inOrder func(prev, ct Contact) bool) (*Contacts, error) {
	c := &Contacts{}
	var prev Contact
	for lineNo := 2; len(rest) > 0; lineNo++ {
		line, after, found := bytes.Cut(rest, []byte{'\n'})
		if !found {
			return nil, fmt.Errorf("%w: line %d: no newline at end", ErrMalformedContacts, lineNo)
		}
		rest = after
		ct, err := parse(string(line))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrMalformedContacts, lineNo, err)
		}
		if lineNo > 2 && !inOrder(prev, ct) {
			return nil, fmt.Errorf("%w: line %d: out of order or repeated", ErrMalformedContacts, lineNo)
		}
		prev = ct
		c.add(ct)
	}
	return c, nil
}

// add adds a contact read from a file. A version 1 file may hold one key
// under several nicknames: the key is then verified if it was under any,
// first seen at the earliest time, and keeps the nickname it was verified
// under, else the one it was first seen with.
func (c *Contacts) add(ct Contact) {
	old, ok := c.byKey[ct.Key]
	if !ok {
		c.put(ct)
		return
	}
	merged := old
	if ct.Verified && !old.Verified || ct.Verified == old.Verified && ct.FirstSeen.Before(old.FirstSeen) {
		merged.Nick = ct.Nick
	}
	merged.Verified = old.Verified || ct.Verified
	if ct.FirstSeen.Before(old.FirstSeen) {
		merged.FirstSeen = ct.FirstSeen
	}
	c.put(merged)
}

// parseContact parses a line of version 2: key, nickname, state, time.
func parseContact(line string) (Contact, error) {
	f := strings.Split(line, " ")
	if len(f) != 4 {
		return Contact{}, fmt.Errorf("want 4 fields separated by single spaces, have %d", len(f))
	}
	var ct Contact
	key, err := ParsePublicKey(f[0])
	if err != nil {
		return ct, err
	}
	ct.Key = key
	if err := ValidNick(f[1]); err != nil {
		return ct, err
	}
	ct.Nick = f[1]
	switch f[2] {
	case "known":
	case "verified":
		ct.Verified = true
	case "replaced":
		ct.Replaced = true
	default:
		return ct, fmt.Errorf("state %q is not known, verified or replaced", truncate(f[2]))
	}
	ct.FirstSeen, err = parseTime(f[3])
	return ct, err
}

// parseContactV1 parses a line of version 1: nickname, key, trust, time.
func parseContactV1(line string) (Contact, error) {
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
	ct.FirstSeen, err = parseTime(f[3])
	return ct, err
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil || t.UTC().Format(time.RFC3339) != s {
		return time.Time{}, fmt.Errorf("time %q is not an RFC 3339 UTC time in whole seconds", truncate(s))
	}
	return t.UTC(), nil
}

// LoadContacts reads the contacts file at path. A missing file is an empty
// book: the first run has no contacts yet. A file of version 1 is read, and
// Unsaved reports true until Save writes it in the current version.
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
	c.unsaved = false
	return nil
}

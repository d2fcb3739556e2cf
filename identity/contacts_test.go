package identity

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 6, 11, 41, 0, time.UTC)

// contactSentinels are the errors of the contact book; each error wraps
// exactly one of them.
var contactSentinels = []error{ErrBadNick, ErrMalformedContacts, ErrUnknownContact, ErrAmbiguousContact, ErrBadFingerprint, ErrMalformedKey}

func wrapsOnly(t *testing.T, err, want error) {
	t.Helper()
	for _, s := range contactSentinels {
		if errors.Is(err, s) != (s == want) {
			t.Fatalf("error %v: errors.Is(%v) = %v", err, s, !(s == want))
		}
	}
}

func observe(t *testing.T, c *Contacts, nick string, key PublicKey, want Trust) {
	t.Helper()
	if tr, err := c.Observe(nick, key, t0); err != nil || tr != want {
		t.Fatalf("Observe(%s, %s) = %v, %v; want %v", nick, key.ShortFingerprint(), tr, err, want)
	}
}

func TestContactsTrustOnFirstUse(t *testing.T) {
	var c Contacts
	alice := testKey(t, 1).Public()
	observe(t, &c, "alice", alice, TrustNew)
	if tr, err := c.Observe("alice", alice, t0.Add(time.Hour)); err != nil || tr != TrustKnown {
		t.Fatalf("second sight = %v, %v; want known", tr, err)
	}
	ct, ok := c.ByKey(alice)
	if !ok || ct.Nick != "alice" || !ct.FirstSeen.Equal(t0) || ct.Verified {
		t.Fatalf("ByKey = %+v, %v", ct, ok)
	}
	if _, err := c.Verify(alice.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	observe(t, &c, "alice", alice, TrustVerified)
}

// Nicknames are labels people choose: two keys with the same one are two
// people, and neither is a key change.
func TestContactsSameNickTwoKeys(t *testing.T) {
	var c Contacts
	root1, root2 := testKey(t, 1).Public(), testKey(t, 2).Public()
	observe(t, &c, "root", root1, TrustNew)
	observe(t, &c, "root", root2, TrustNew)
	observe(t, &c, "root", root1, TrustKnown)
	observe(t, &c, "root", root2, TrustKnown)
	if n := len(c.List()); n != 2 {
		t.Fatalf("%d contacts, want 2", n)
	}
	if tr := c.TrustOf("root", testKey(t, 3).Public()); tr != TrustNew {
		t.Fatalf("TrustOf(a third root) = %v, want new", tr)
	}
	if _, ok := c.Claimed("root", root2); ok {
		t.Fatal("Claimed reports an unverified contact")
	}
}

// A key keeps one entry whatever nickname it uses; the entry has the last.
func TestContactsNickChange(t *testing.T) {
	var c Contacts
	k := testKey(t, 1).Public()
	observe(t, &c, "alice", k, TrustNew)
	observe(t, &c, "al", k, TrustKnown)
	list := c.List()
	if len(list) != 1 || list[0].Nick != "al" || !list[0].FirstSeen.Equal(t0) {
		t.Fatalf("List = %+v", list)
	}
}

func TestContactsVerifiedNickClaimed(t *testing.T) {
	var c Contacts
	alice, mallory, bob := testKey(t, 1).Public(), testKey(t, 2).Public(), testKey(t, 3).Public()
	observe(t, &c, "alice", alice, TrustNew)
	observe(t, &c, "bob", bob, TrustNew)
	if _, err := c.Verify(alice.Fingerprint()); err != nil {
		t.Fatal(err)
	}

	// Before the observation, TrustOf says it and changes nothing.
	if tr := c.TrustOf("alice", mallory); tr != TrustKeyChanged {
		t.Fatalf("TrustOf(mallory as alice) = %v, want key-changed", tr)
	}
	if _, ok := c.ByKey(mallory); ok {
		t.Fatal("TrustOf changed the book")
	}
	observe(t, &c, "alice", mallory, TrustKeyChanged)
	observe(t, &c, "alice", mallory, TrustKeyChanged) // every time, not just the first
	claimed, ok := c.Claimed("alice", mallory)
	if !ok || claimed.Key != alice || !claimed.Verified {
		t.Fatalf("Claimed = %+v, %v; want alice's verified contact", claimed, ok)
	}
	if got, ok := c.Lookup("alice"); !ok || got.Key != alice {
		t.Fatalf("Lookup(alice) = %+v, %v", got, ok)
	}

	// The verified key is verified under any nickname; the impostor is
	// known once it stops claiming a verified nickname.
	observe(t, &c, "alice", alice, TrustVerified)
	observe(t, &c, "mallory", mallory, TrustKnown)
	// The nickname of an unverified contact is anybody's.
	observe(t, &c, "bob", mallory, TrustKnown)
	observe(t, &c, "bob", testKey(t, 4).Public(), TrustNew)

	// A verified contact that takes another nickname leaves the old one.
	observe(t, &c, "alice2", alice, TrustVerified)
	observe(t, &c, "alice", mallory, TrustKnown)
	observe(t, &c, "alice2", mallory, TrustKeyChanged)
}

func TestContactsAccept(t *testing.T) {
	var c Contacts
	oldKey, newKey := testKey(t, 1).Public(), testKey(t, 2).Public()
	observe(t, &c, "alice", oldKey, TrustNew)
	if _, err := c.Verify(oldKey.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	observe(t, &c, "alice", newKey, TrustKeyChanged)

	accepted, replaced, err := c.Accept(strings.TrimPrefix(newKey.Fingerprint(), "SHA256:")[:10])
	if err != nil {
		t.Fatal(err)
	}
	if accepted.Key != newKey || !accepted.Verified || len(replaced) != 1 || replaced[0].Key != oldKey || !replaced[0].Replaced || replaced[0].Verified {
		t.Fatalf("Accept = %+v, %+v", accepted, replaced)
	}
	observe(t, &c, "alice", newKey, TrustVerified)
	// The old key stays in the book; claiming alice now, it is the stranger.
	if ct, ok := c.ByKey(oldKey); !ok || ct.Verified || !ct.Replaced {
		t.Fatalf("old key = %+v, %v; want replaced, not verified", ct, ok)
	}
	observe(t, &c, "alice", oldKey, TrustKeyChanged)
	if claimed, ok := c.Claimed("alice", oldKey); !ok || claimed.Key != newKey {
		t.Fatalf("Claimed = %+v, %v; want the new key", claimed, ok)
	}

	// Accepting again replaces nothing more.
	if _, replaced, err := c.Accept(newKey.Fingerprint()); err != nil || len(replaced) != 0 {
		t.Fatalf("Accept again = %v, %v", replaced, err)
	}
	// Verifying the old key again makes both alice's; it is no longer
	// marked replaced.
	if ct, err := c.Verify(oldKey.Fingerprint()); err != nil || !ct.Verified || ct.Replaced {
		t.Fatalf("Verify(old) = %+v, %v", ct, err)
	}
	observe(t, &c, "alice", oldKey, TrustVerified)
	observe(t, &c, "alice", newKey, TrustVerified)
}

// collidingKey returns one of two keys whose fingerprints share their
// first 7 characters (found by a search of 4 million seeds):
// SHA256:M7kjK0iPMp... (n = 4000319) and SHA256:M7kjK0i2gW... (n = 255392).
func collidingKey(t *testing.T, n uint64) PublicKey {
	t.Helper()
	seed := make([]byte, 32)
	seed[0] = 0xc0
	binary.BigEndian.PutUint64(seed[24:], n)
	k, err := PrivateKeyFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func TestContactsFindByPrefix(t *testing.T) {
	var c Contacts
	k1, k2 := collidingKey(t, 4000319), collidingKey(t, 255392)
	if !strings.HasPrefix(k1.Fingerprint(), "SHA256:M7kjK0iP") || !strings.HasPrefix(k2.Fingerprint(), "SHA256:M7kjK0i2") {
		t.Fatalf("colliding keys: %s %s", k1.Fingerprint(), k2.Fingerprint())
	}
	observe(t, &c, "root", k1, TrustNew)
	observe(t, &c, "toor", k2, TrustNew)
	other := testKey(t, 1).Public()
	observe(t, &c, "bob", other, TrustNew)

	for _, prefix := range []string{k1.Fingerprint(), "SHA256:M7kjK0iP", "M7kjK0iP", "sha256:M7kjK0iPMp", "M7kjK0iPMpw5rRSFyw4sluxbfUQ4GFp/o2aDxDGTKLA"} {
		if ct, err := c.Find(prefix); err != nil || ct.Key != k1 {
			t.Errorf("Find(%q) = %s, %v; want root", prefix, ct.Nick, err)
		}
	}
	_, err := c.Find("SHA256:M7kjK0i")
	wrapsOnly(t, err, ErrAmbiguousContact)
	if msg := err.Error(); !strings.Contains(msg, "root "+k1.Fingerprint()) || !strings.Contains(msg, "toor "+k2.Fingerprint()) {
		t.Fatalf("ambiguous error does not list the matches: %v", err)
	}
	_, err = c.Verify("M7kjK0")
	wrapsOnly(t, err, ErrAmbiguousContact)
	_, _, err = c.Accept("M7kjK0")
	wrapsOnly(t, err, ErrAmbiguousContact)

	_, err = c.Verify("SHA256:nobody")
	wrapsOnly(t, err, ErrUnknownContact)
	if err.Error() != "identity: no such contact: SHA256:nobody" {
		t.Fatalf("error = %q", err)
	}
	for _, bad := range []string{"", "SHA256:", "M7kjK", "SHA256:M7kj", "M7kjK0i-", "ed25519:" + strings.Repeat("A", 43), k1.Fingerprint() + "A"} {
		_, err := c.Verify(bad)
		wrapsOnly(t, err, ErrBadFingerprint)
	}
	for _, ct := range c.List() {
		if ct.Verified {
			t.Fatalf("a failed Verify verified %s", ct.Nick)
		}
	}
	if ct, err := c.Verify("M7kjK0i2"); err != nil || ct.Key != k2 || !ct.Verified {
		t.Fatalf("Verify(unique prefix) = %+v, %v", ct, err)
	}
}

func TestContactsRejectBadNick(t *testing.T) {
	var c Contacts
	k := testKey(t, 1).Public()
	for _, nick := range []string{"", "has space", "new\nline", strings.Repeat("a", MaxNickLen+1), "\xff", "tab\t",
		"Alice", "аlice", "ａlice", "zoë"} {
		_, err := c.Observe(nick, k, t0)
		wrapsOnly(t, err, ErrBadNick)
	}
	if len(c.List()) != 0 {
		t.Fatal("a bad nickname was stored")
	}
	_, err := c.Observe("zero", PublicKey{}, t0)
	wrapsOnly(t, err, ErrMalformedKey)
	for _, nick := range []string{"a", "zoe", "bob_2.0-x", "0", strings.Repeat("z", MaxNickLen)} {
		if _, err := c.Observe(nick, k, t0); err != nil {
			t.Errorf("Observe(%q) error = %v", nick, err)
		}
	}
}

func TestContactsFileRoundTrip(t *testing.T) {
	var c Contacts
	for i, nick := range []string{"zed", "alice", "bob", "alice"} {
		if _, err := c.Observe(nick, testKey(t, byte(i+1)).Public(), t0.Add(time.Duration(i)*time.Minute+time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Verify(testKey(t, 3).Public().Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(testKey(t, 2).Public().Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Accept(testKey(t, 4).Public().Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if !c.Unsaved() {
		t.Fatal("Unsaved() = false after changes")
	}
	path := filepath.Join(t.TempDir(), "contacts")
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	if c.Unsaved() {
		t.Fatal("Unsaved() = true after Save")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) != 6 || lines[0] != "# parley contacts v2" || lines[5] != "" {
		t.Fatalf("contacts file:\n%s", data)
	}
	for _, want := range []string{
		testKey(t, 1).Public().String() + " zed known 2026-11-26T06:11:41Z",
		testKey(t, 2).Public().String() + " alice replaced 2026-11-26T06:12:41Z",
		testKey(t, 3).Public().String() + " bob verified 2026-11-26T06:13:41Z",
		testKey(t, 4).Public().String() + " alice verified 2026-11-26T06:14:41Z",
	} {
		if !strings.Contains(string(data), "\n"+want+"\n") {
			t.Fatalf("contacts file has no line %q:\n%s", want, data)
		}
	}
	for i := 2; i < 5; i++ {
		if lines[i-1] >= lines[i] {
			t.Fatalf("contacts file not sorted by key:\n%s", data)
		}
	}
	back, err := LoadContacts(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Unsaved() {
		t.Fatal("Unsaved() = true after loading a current file")
	}
	again, _ := back.MarshalText()
	if string(again) != string(data) {
		t.Fatalf("reload changed the file:\n%s\nvs\n%s", again, data)
	}
	if tr := back.TrustOf("alice", testKey(t, 2).Public()); tr != TrustKeyChanged {
		t.Fatalf("replaced key after reload = %v, want key-changed", tr)
	}

	empty, err := LoadContacts(filepath.Join(t.TempDir(), "none"))
	if err != nil || len(empty.List()) != 0 {
		t.Fatalf("LoadContacts(missing) = %v, %v; want an empty book", empty, err)
	}
}

// A file of version 1 (keyed by nickname) is read, and written as version 2.
func TestContactsFileV1(t *testing.T) {
	a, b := testKey(t, 1).Public(), testKey(t, 2).Public()
	v1 := "# parley contacts v1\n" +
		"al " + a.String() + " known 2026-11-20T00:00:00Z\n" +
		"alice " + a.String() + " verified 2026-11-26T06:11:41Z\n" +
		"bob " + b.String() + " known 2026-11-26T07:00:00Z\n" +
		"robert " + b.String() + " known 2026-11-25T07:00:00Z\n"
	c, err := ParseContacts([]byte(v1))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Unsaved() {
		t.Fatal("a version 1 file is not marked to be written again")
	}
	got, _ := c.MarshalText()
	lineA := a.String() + " alice verified 2026-11-20T00:00:00Z\n"
	lineB := b.String() + " robert known 2026-11-25T07:00:00Z\n"
	want := "# parley contacts v2\n" + lineA + lineB
	if a.String() > b.String() {
		want = "# parley contacts v2\n" + lineB + lineA
	}
	if string(got) != want {
		t.Fatalf("migrated:\n%s\nwant:\n%s", got, want)
	}
	if tr := c.TrustOf("alice", b); tr != TrustKeyChanged {
		t.Fatalf("TrustOf(b as alice) = %v, want key-changed", tr)
	}
}

func TestParseContactsRejects(t *testing.T) {
	key := testKey(t, 1).Public().String()
	key2 := testKey(t, 2).Public().String()
	if key > key2 {
		key, key2 = key2, key
	}
	h := "# parley contacts v2\n"
	h1 := "# parley contacts v1\n"
	tests := map[string]string{
		"no header":      key + " alice known 2026-11-26T06:11:41Z\n",
		"other version":  "# parley contacts v3\n",
		"no newline":     h + key + " alice known 2026-11-26T06:11:41Z",
		"two spaces":     h + key + "  alice known 2026-11-26T06:11:41Z\n",
		"trailing space": h + key + " alice known 2026-11-26T06:11:41Z \n",
		"bad state":      h + key + " alice trusted 2026-11-26T06:11:41Z\n",
		"bad key":        h + "ed25519:AAAA alice known 2026-11-26T06:11:41Z\n",
		"bad nick":       h + key + " al/ice known 2026-11-26T06:11:41Z\n",
		"no nick":        h + key + "  known 2026-11-26T06:11:41Z\n",
		"v1 fields":      h + "alice " + key + " known 2026-11-26T06:11:41Z\n",
		"offset time":    h + key + " alice known 2026-11-26T07:11:41+01:00\n",
		"fraction":       h + key + " alice known 2026-11-26T06:11:41.5Z\n",
		"unsorted":       h + key2 + " bob known 2026-11-26T06:11:41Z\n" + key + " alice known 2026-11-26T06:11:41Z\n",
		"repeated":       h + key + " bob known 2026-11-26T06:11:41Z\n" + key + " alice known 2026-11-26T06:11:41Z\n",
		"blank line":     h + "\n",
		"crlf":           h + key + " alice known 2026-11-26T06:11:41Z\r\n",
		"v1 replaced":    h1 + "alice " + key + " replaced 2026-11-26T06:11:41Z\n",
		"v1 unsorted":    h1 + "bob " + key + " known 2026-11-26T06:11:41Z\nalice " + key2 + " known 2026-11-26T06:11:41Z\n",
		"v1 repeated":    h1 + "bob " + key + " known 2026-11-26T06:11:41Z\nbob " + key2 + " known 2026-11-26T06:11:41Z\n",
		"v1 v2 fields":   h1 + key + " alice known 2026-11-26T06:11:41Z\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ParseContacts([]byte(in))
			wrapsOnly(t, err, ErrMalformedContacts)
			if !strings.Contains(err.Error(), ": line ") {
				t.Fatalf("error names no line: %v", err)
			}
		})
	}
}

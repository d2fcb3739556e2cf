package identity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 6, 11, 41, 0, time.UTC)

func TestContactsTrustOnFirstUse(t *testing.T) {
	var c Contacts
	alice, mallory := testKey(t, 1).Public(), testKey(t, 2).Public()

	if tr, err := c.Observe("alice", alice, t0); err != nil || tr != TrustNew {
		t.Fatalf("first sight = %v, %v; want new", tr, err)
	}
	if tr, err := c.Observe("alice", alice, t0.Add(time.Hour)); err != nil || tr != TrustKnown {
		t.Fatalf("second sight = %v, %v; want known", tr, err)
	}

	tr, err := c.Observe("alice", mallory, t0)
	var kc *KeyChangedError
	if tr != TrustKeyChanged || !errors.Is(err, ErrKeyChanged) || !errors.As(err, &kc) {
		t.Fatalf("other key = %v, %v; want key-changed with *KeyChangedError", tr, err)
	}
	if kc.Known != alice || kc.Seen != mallory || kc.Nick != "alice" {
		t.Fatalf("KeyChangedError = %+v", kc)
	}
	if ct, _ := c.Lookup("alice"); ct.Key != alice {
		t.Fatal("a key change replaced the pinned key")
	}

	done, err := c.Verify(alice.Fingerprint())
	if err != nil || len(done) != 1 || done[0].Nick != "alice" {
		t.Fatalf("Verify = %v, %v", done, err)
	}
	if tr, err := c.Observe("alice", alice, t0); err != nil || tr != TrustVerified {
		t.Fatalf("after verify = %v, %v; want verified", tr, err)
	}
	_, err = c.Observe("alice", mallory, t0)
	if !errors.As(err, &kc) || !kc.Verified {
		t.Fatalf("key change of a verified contact = %v; want Verified set", err)
	}
	if _, err := c.Verify(mallory.Fingerprint()); !errors.Is(err, ErrUnknownContact) {
		t.Fatalf("Verify(unknown) error = %v, want ErrUnknownContact", err)
	}

	// Replacing a key with itself keeps it verified.
	if err := c.Replace("alice", alice, t0); err != nil {
		t.Fatal(err)
	}
	if ct, _ := c.Lookup("alice"); !ct.Verified {
		t.Fatal("Replace with the same key dropped its verification")
	}
	if err := c.Replace("alice", mallory, t0); err != nil {
		t.Fatal(err)
	}
	if tr, err := c.Observe("alice", mallory, t0); err != nil || tr != TrustKnown {
		t.Fatalf("after Replace = %v, %v; want known (not verified)", tr, err)
	}
}

func TestContactsRejectBadNick(t *testing.T) {
	var c Contacts
	k := testKey(t, 1).Public()
	for _, nick := range []string{"", "has space", "new\nline", strings.Repeat("a", MaxNickLen+1), "\xff", "tab\t",
		"Alice", "аlice", "ａlice", "zoë"} {
		if _, err := c.Observe(nick, k, t0); !errors.Is(err, ErrBadNick) {
			t.Errorf("Observe(%q) error = %v, want ErrBadNick", nick, err)
		}
	}
	if len(c.List()) != 0 {
		t.Fatal("a bad nickname was stored")
	}
	for _, nick := range []string{"a", "zoe", "bob_2.0-x", "0", strings.Repeat("z", MaxNickLen)} {
		if _, err := c.Observe(nick, k, t0); err != nil {
			t.Errorf("Observe(%q) error = %v", nick, err)
		}
	}
}

func TestContactsFileRoundTrip(t *testing.T) {
	var c Contacts
	for i, nick := range []string{"zed", "alice", "bob"} {
		if _, err := c.Observe(nick, testKey(t, byte(i+1)).Public(), t0.Add(time.Duration(i)*time.Minute+time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Verify(testKey(t, 3).Public().Fingerprint()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "contacts")
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) != 5 || lines[0] != "# parley contacts v1" || !strings.HasPrefix(lines[1], "alice ") || !strings.Contains(lines[2], " verified 2026-11-26T06:13:41Z") {
		t.Fatalf("contacts file:\n%s", data)
	}
	back, err := LoadContacts(path)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := back.MarshalText()
	if string(again) != string(data) {
		t.Fatalf("reload changed the file:\n%s\nvs\n%s", again, data)
	}
	if ct, ok := back.Lookup("bob"); !ok || !ct.Verified || ct.FirstSeen != t0.Add(2*time.Minute) {
		t.Fatalf("bob = %+v, %v", ct, ok)
	}

	empty, err := LoadContacts(filepath.Join(t.TempDir(), "none"))
	if err != nil || len(empty.List()) != 0 {
		t.Fatalf("LoadContacts(missing) = %v, %v; want an empty book", empty, err)
	}
}

func TestParseContactsRejects(t *testing.T) {
	key := testKey(t, 1).Public().String()
	key2 := testKey(t, 2).Public().String()
	h := "# parley contacts v1\n"
	tests := map[string]string{
		"no header":      "alice " + key + " known 2026-11-26T06:11:41Z\n",
		"other version":  "# parley contacts v2\n",
		"no newline":     h + "alice " + key + " known 2026-11-26T06:11:41Z",
		"two spaces":     h + "alice  " + key + " known 2026-11-26T06:11:41Z\n",
		"trailing space": h + "alice " + key + " known 2026-11-26T06:11:41Z \n",
		"bad trust":      h + "alice " + key + " trusted 2026-11-26T06:11:41Z\n",
		"bad key":        h + "alice ed25519:AAAA known 2026-11-26T06:11:41Z\n",
		"bad nick":       h + "al/ice " + key + " known 2026-11-26T06:11:41Z\n",
		"offset time":    h + "alice " + key + " known 2026-11-26T07:11:41+01:00\n",
		"fraction":       h + "alice " + key + " known 2026-11-26T06:11:41.5Z\n",
		"unsorted":       h + "bob " + key + " known 2026-11-26T06:11:41Z\nalice " + key2 + " known 2026-11-26T06:11:41Z\n",
		"repeated":       h + "bob " + key + " known 2026-11-26T06:11:41Z\nbob " + key2 + " known 2026-11-26T06:11:41Z\n",
		"blank line":     h + "\n",
		"crlf":           h + "alice " + key + " known 2026-11-26T06:11:41Z\r\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseContacts([]byte(in)); !errors.Is(err, ErrMalformedContacts) {
				t.Fatalf("ParseContacts error = %v, want ErrMalformedContacts", err)
			}
		})
	}
}

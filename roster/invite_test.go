package roster

import (
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/protocol"
)

// testCode returns an invite of the creator of a test room, and the room.
func testCode(t *testing.T) (*Code, string) {
	t.Helper()
	k := testKey(t, 1)
	room := protocol.PrivateRoomID(k.Public(), testNonce)
	code, err := NewCode(rand.NewChaCha8([32]byte{1}), k, room, 42, t0.Add(7*24*time.Hour), 3)
	if err != nil {
		t.Fatal(err)
	}
	return code, room
}

// codeBytes returns what a code's text encodes.
func codeBytes(t *testing.T, s string) []byte {
	t.Helper()
	b, err := codeEncoding.DecodeString(strings.TrimPrefix(s, codePrefix))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// codeText encodes b as a code, with a checksum made anew.
func codeText(b []byte) string {
	body := b[:len(b)-checksumLen]
	sum := sha256.Sum256(body)
	return codePrefix + codeEncoding.EncodeToString(append(body[:len(body):len(body)], sum[:checksumLen]...))
}

func wantBadCode(t *testing.T, what, s string) {
	t.Helper()
	c, err := ParseCode(s)
	if !errors.Is(err, ErrBadCode) || c != nil {
		t.Errorf("%s: ParseCode = %v, %v; want ErrBadCode", what, c, err)
	}
}

func TestCodeRoundTrip(t *testing.T) {
	code, room := testCode(t)
	s := code.String()
	t.Logf("an invite code is %d characters: %s", len(s), s)
	if len(s) >= 260 {
		t.Errorf("code of %d characters", len(s))
	}
	if !strings.HasPrefix(s, "invite-") || strings.ToLower(s) != s {
		t.Errorf("code %q: want lowercase, starting invite-", s)
	}
	for _, text := range []string{s, strings.ToUpper(s), "  " + s + "\n", "\t" + strings.ToUpper(s[:100]) + s[100:] + " \r\n"} {
		got, err := ParseCode(text)
		if err != nil {
			t.Fatalf("ParseCode(%q): %v", text, err)
		}
		if !reflect.DeepEqual(got, code) {
			t.Errorf("ParseCode(%q) = %+v, want %+v", text, got, code)
		}
	}
	if code.Room != room || code.Cap.Lamport != 42 || code.Cap.Uses != 3 || !code.Expires().Equal(t0.Add(7*24*time.Hour)) {
		t.Errorf("code %+v", code)
	}
	if err := code.Cap.Verify(room); err != nil {
		t.Errorf("capability: %v", err)
	}
	// Another secret, another code and key.
	other, err := NewCode(rand.NewChaCha8([32]byte{2}), testKey(t, 1), room, 42, t0.Add(time.Hour), 3)
	if err != nil {
		t.Fatal(err)
	}
	if other.Cap.Key == code.Cap.Key || other.String() == s {
		t.Errorf("two secrets, one key")
	}
}

// TestCodeJoin: a join made with a parsed code passes the receiver's
// checks; Record records the invite.
func TestCodeJoin(t *testing.T) {
	code, room := testCode(t)
	parsed, err := ParseCode(code.String())
	if err != nil {
		t.Fatal(err)
	}
	joiner := testKey(t, 5)
	c, err := parsed.Join(joiner.Public())
	if err != nil {
		t.Fatal(err)
	}
	it := signChange(t, joiner, room, 1, protocol.ID{}, code.Cap.Lamport+1, t0.UnixMilli(), c)
	if err := protocol.CheckPayload(it.env); err != nil {
		t.Errorf("join: %v", err)
	}
	r := code.Record([]protocol.ID{{1}})
	if r.Op != protocol.OpInvite || r.Target != code.Cap.Key || r.Uses != 3 || r.Expires != code.Cap.Expires || len(r.Parents) != 1 {
		t.Errorf("Record = %+v", r)
	}
}

func TestCodeOneCharacterChanged(t *testing.T) {
	code, _ := testCode(t)
	s := code.String()
	want := codeBytes(t, s)
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	tried := 0
	for i := len(codePrefix); i < len(s); i++ {
		for _, r := range alphabet {
			if byte(r) == s[i] {
				continue
			}
			changed := s[:i] + string(r) + s[i+1:]
			if b, err := codeEncoding.DecodeString(changed[len(codePrefix):]); err == nil && string(b) == string(want) {
				continue // the same bytes: TestCodeOneSpelling
			}
			tried++
			if _, err := ParseCode(changed); !errors.Is(err, ErrBadCode) {
				t.Fatalf("character %d changed to %c: %v, want ErrBadCode", i, r, err)
			}
		}
	}
	t.Logf("%d codes with one character changed, all refused", tried)
}

// TestCodeOneSpelling: a code has one text (up to case and surrounding
// space), as a public key has: a text that decodes to the same bytes
// with other unused bits in its last character is not a code.
func TestCodeOneSpelling(t *testing.T) {
	code, _ := testCode(t)
	s := code.String()
	want := codeBytes(t, s)
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	for _, r := range alphabet {
		other := s[:len(s)-1] + string(r)
		if other == s {
			continue
		}
		if b, err := codeEncoding.DecodeString(other[len(codePrefix):]); err != nil || string(b) != string(want) {
			continue
		}
		if _, err := ParseCode(other); !errors.Is(err, ErrBadCode) {
			t.Errorf("%q (last character %c for %c) parses as the same code: %v", other[len(other)-8:], r, s[len(s)-1], err)
		}
	}
}

func TestCodeBadForm(t *testing.T) {
	code, _ := testCode(t)
	s := code.String()
	rest := s[len(codePrefix):]
	for _, tc := range []struct{ what, text string }{
		{"empty", ""},
		{"spaces", "   "},
		{"prefix only", codePrefix},
		{"no prefix", rest},
		{"another prefix", "invitE:" + rest},
		{"prefix misspelt", "invte-" + rest},
		{"cut by one", s[:len(s)-1]},
		{"cut by eight", s[:len(s)-8]},
		{"half", s[:len(s)/2]},
		{"one more", s + "a"},
		{"eight more", s + "aaaaaaaa"},
		{"twice", s + rest},
		{"not base32", s[:20] + "1" + s[21:]},
		{"padding", s + "======"},
		{"inner space", s[:30] + " " + s[30:]},
		{"very long", codePrefix + strings.Repeat("a", 10000)},
	} {
		wantBadCode(t, tc.what, tc.text)
	}
}

func TestCodeBadContent(t *testing.T) {
	code, _ := testCode(t)
	good := codeBytes(t, code.String())
	if _, err := ParseCode(codeText(good)); err != nil {
		t.Fatalf("checksum made anew: %v", err)
	}
	edit := func(f func(b []byte)) string {
		b := append([]byte(nil), good...)
		f(b)
		return codeText(b)
	}
	const (
		offIssuer  = 1 + 20
		offLamport = offIssuer + 32
		offExpires = offLamport + 8
		offUses    = offExpires + 4
		offSig     = offUses + 2
		offSecret  = offSig + 64
	)
	for _, tc := range []struct {
		what string
		f    func(b []byte)
	}{
		{"checksum", func(b []byte) {}}, // see below: the old checksum
		{"version 0", func(b []byte) { b[0] = 0 }},
		{"version 2", func(b []byte) { b[0] = 2 }},
		{"version 255", func(b []byte) { b[0] = 255 }},
		{"another room", func(b []byte) { b[1] ^= 1 }},
		{"another issuer", func(b []byte) { copy(b[offIssuer:], testKey(t, 2).Public().Bytes()) }},
		{"issuer not a key", func(b []byte) {
			for i := range 32 {
				b[offIssuer+i] = 0
			}
			b[offIssuer] = 1 // the identity point: small order
		}},
		{"lamport", func(b []byte) { b[offLamport+7]++ }},
		{"expiry", func(b []byte) { b[offExpires+3]++ }},
		{"uses", func(b []byte) { b[offUses+1]++ }},
		{"no uses", func(b []byte) { b[offUses], b[offUses+1] = 0, 0 }},
		{"signature", func(b []byte) { b[offSig] ^= 0x40 }},
		{"signature's S", func(b []byte) { b[offSig+63] ^= 0x10 }},
		{"secret", func(b []byte) { b[offSecret] ^= 1 }},
	} {
		text := edit(tc.f)
		if tc.what == "checksum" {
			b := append([]byte(nil), good...)
			b[offSecret] ^= 1 // changed, the checksum not made anew
			text = codePrefix + codeEncoding.EncodeToString(b)
		}
		wantBadCode(t, tc.what, text)
	}
	// A capability signed by another key than the one it names.
	k1, k2 := testKey(t, 1), testKey(t, 2)
	room := protocol.PrivateRoomID(k1.Public(), testNonce)
	forged, err := NewCode(rand.NewChaCha8([32]byte{1}), k2, room, 42, t0.Add(time.Hour), 1)
	if err != nil {
		t.Fatal(err)
	}
	forged.Cap.Issuer = k1.Public()
	wantBadCode(t, "signed by another", forged.String())
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestNewCodeRefuses(t *testing.T) {
	k := testKey(t, 1)
	room := protocol.PrivateRoomID(k.Public(), testNonce)
	rng := rand.NewChaCha8([32]byte{})
	later := t0.Add(time.Hour)
	for _, tc := range []struct {
		what    string
		r       io.Reader
		room    string
		expires time.Time
		uses    int
	}{
		{"public room", rng, "general", later, 1},
		{"no uses", rng, room, later, 0},
		{"negative uses", rng, room, later, -1},
		{"too many uses", rng, room, later, 65536},
		{"expiry at the epoch", rng, room, time.Unix(0, 0), 1},
		{"expiry past 2106", rng, room, time.Unix(1<<32, 0), 1},
		{"no randomness", failingReader{}, room, later, 1},
	} {
		if c, err := NewCode(tc.r, k, tc.room, 1, tc.expires, tc.uses); err == nil {
			t.Errorf("%s: NewCode = %v", tc.what, c)
		}
	}
	if _, err := NewCode(rng, k, room, 1, time.Unix(1<<32-1, 0), 65535); err != nil {
		t.Errorf("the limits: %v", err)
	}
}

package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// testKey returns a deterministic private key whose seed is n repeated.
func testKey(t testing.TB, n byte) PrivateKey {
	t.Helper()
	k, err := PrivateKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPublicKeyTextRoundTrip(t *testing.T) {
	pk := testKey(t, 1).Public()
	s := pk.String()
	if !strings.HasPrefix(s, PublicKeyPrefix) {
		t.Fatalf("String() = %q, want prefix %q", s, PublicKeyPrefix)
	}
	back, err := ParsePublicKey(s)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(pk) || back != pk {
		t.Fatalf("ParsePublicKey(String()) = %v, want %v", back, pk)
	}
	j, err := json.Marshal(struct{ K PublicKey }{pk})
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ K PublicKey }
	if err := json.Unmarshal(j, &v); err != nil {
		t.Fatal(err)
	}
	if v.K != pk {
		t.Fatalf("JSON round trip gave %v, want %v", v.K, pk)
	}
}

func TestParsePublicKeyRejects(t *testing.T) {
	good := testKey(t, 1).Public().String()
	body := strings.TrimPrefix(good, PublicKeyPrefix)
	// The last character carries 4 unused bits; flipping one of them gives a
	// second spelling of the same key, which must be refused.
	last := body[len(body)-1]
	alt := strings.IndexByte(base64URL, last) ^ 1
	tests := map[string]string{
		"empty":         "",
		"no prefix":     body,
		"other prefix":  "ssh-ed25519:" + body,
		"short":         good[:len(good)-1],
		"long":          good + "A",
		"padded":        good + "=",
		"std alphabet":  PublicKeyPrefix + strings.NewReplacer("-", "+", "_", "/").Replace(body),
		"bad character": good[:len(good)-1] + "*",
		"spaces":        " " + good,
		"newline":       good[:20] + "\n" + good[20:],
		"carriage ret":  good[:20] + "\r" + good[20:],
		"non-canonical": good[:len(good)-1] + string(base64URL[alt]),
	}
	for name, in := range tests {
		if in == good {
			continue // the std-alphabet case when the key has no '-' or '_'
		}
		t.Run(name, func(t *testing.T) {
			if _, err := ParsePublicKey(in); !errors.Is(err, ErrMalformedKey) {
				t.Fatalf("ParsePublicKey(%q) error = %v, want ErrMalformedKey", in, err)
			}
		})
	}
}

const base64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func TestPrivateKeyNeverPrints(t *testing.T) {
	k := testKey(t, 7)
	secret := fmt.Sprintf("%x", k.Ed25519().Seed())
	wrapped := struct{ Key PrivateKey }{k}
	hidden := struct {
		name string
		key  PrivateKey
	}{"n", k}
	seedBytes := fmt.Sprint(k.Ed25519().Seed()[:8]) // "[7 7 7 ...", as %v would print the slice
	for _, format := range []string{"%v", "%s", "%#v", "%+v", "%x", "%X", "%q", "%d"} {
		for _, arg := range []any{k, &k, wrapped, hidden, &hidden} {
			out := fmt.Sprintf(format, arg)
			// In an unexported field fmt cannot call Format; the key must
			// still not show, so there it prints as a pointer.
			_, isHidden := arg.(struct {
				name string
				key  PrivateKey
			})
			if isHidden || arg == any(&hidden) {
				if strings.Contains(out, secret) || strings.Contains(strings.ToLower(out), secret[:16]) ||
					strings.Contains(out, strings.Trim(seedBytes, "[]")) {
					t.Errorf("Sprintf(%q, unexported field) = %q: the key shows", format, out)
				}
				continue
			}
			if !strings.Contains(out, "redacted") || strings.Contains(out, secret) || strings.Contains(strings.ToLower(out), secret[:16]) {
				t.Errorf("Sprintf(%q, %T) = %q, want only the redacted form", format, arg, out)
			}
		}
	}
}

// Small-order points and other unusable encodings are not keys: under a
// small-order "key", a signature can verify for any message.
func TestPublicKeyRejectsWeakKeys(t *testing.T) {
	weak := map[string][]byte{
		"identity point":        append([]byte{1}, make([]byte, 31)...),
		"order 2":               append(bytes.Repeat([]byte{0xff}, 31)[:0], append([]byte{0xec}, append(bytes.Repeat([]byte{0xff}, 30), 0x7f)...)...),
		"order 4 (zero)":        make([]byte, 32),
		"order 4 (x sign set)":  append(make([]byte, 31), 0x80),
		"non-canonical y = p":   append([]byte{0xed}, append(bytes.Repeat([]byte{0xff}, 30), 0x7f)...),
		"non-canonical y = p+1": append([]byte{0xee}, append(bytes.Repeat([]byte{0xff}, 30), 0x7f)...),
		"order 8":               mustHex(t, "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
		"order 8, other":        mustHex(t, "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
		"order 8, x negative":   mustHex(t, "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
	}
	for name, b := range weak {
		if _, err := PublicKeyFromBytes(b); !errors.Is(err, ErrMalformedKey) {
			t.Errorf("%s: PublicKeyFromBytes = %v, want ErrMalformedKey", name, err)
		}
		text := PublicKeyPrefix + base64.RawURLEncoding.EncodeToString(b)
		if _, err := ParsePublicKey(text); !errors.Is(err, ErrMalformedKey) {
			t.Errorf("%s: ParsePublicKey = %v, want ErrMalformedKey", name, err)
		}
	}
	// The forgery the check prevents: under the identity point, the
	// signature R = identity, S = 0 verifies for every message.
	msg := []byte("anything at all")
	sig := append(append([]byte{1}, make([]byte, 31)...), make([]byte, 32)...)
	if !ed25519.Verify(weak["identity point"], msg, sig) {
		t.Skip("this ed25519 rejects small-order keys itself")
	}
}

func mustHex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSmallOrderList(t *testing.T) {
	if len(smallOrder) != 5 {
		t.Fatalf("%d distinct small-order y coordinates, want 5", len(smallOrder))
	}
	// Every real key passes.
	for n := range byte(50) {
		if err := testKey(t, n).Public().check(); err != nil {
			t.Fatalf("key %d: %v", n, err)
		}
	}
}

func TestKeyEquality(t *testing.T) {
	a, b := testKey(t, 1), testKey(t, 2)
	if !a.Equal(testKey(t, 1)) || a.Equal(b) {
		t.Fatal("PrivateKey.Equal is wrong")
	}
	if !a.Public().Equal(testKey(t, 1).Public()) || a.Public().Equal(b.Public()) {
		t.Fatal("PublicKey.Equal is wrong")
	}
	if !(PublicKey{}).IsZero() || a.Public().IsZero() {
		t.Fatal("PublicKey.IsZero is wrong")
	}
}

func TestSignVerify(t *testing.T) {
	k := testKey(t, 3)
	msg := []byte("hello")
	sig := k.Sign(msg)
	if !k.Public().Verify(msg, sig) {
		t.Fatal("signature does not verify")
	}
	if testKey(t, 4).Public().Verify(msg, sig) {
		t.Fatal("signature verifies under another key")
	}
}

func TestPeerIDMatchesLibp2p(t *testing.T) {
	for n := range byte(20) {
		k := testKey(t, n)
		lpub, err := lcrypto.UnmarshalEd25519PublicKey(k.Public().Bytes())
		if err != nil {
			t.Fatal(err)
		}
		want, err := peer.IDFromPublicKey(lpub)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.Public().PeerID(); got != want.String() {
			t.Fatalf("PeerID() = %s, libp2p says %s", got, want)
		}
	}
}

func TestShortFingerprint(t *testing.T) {
	pk := testKey(t, 5).Public()
	fp, short := pk.Fingerprint(), pk.ShortFingerprint()
	if !strings.HasPrefix(fp, "SHA256:") || !strings.HasPrefix(fp, "SHA256:"+short) || len(short) != shortLen {
		t.Fatalf("Fingerprint() = %q, ShortFingerprint() = %q: want the short form to begin the long one", fp, short)
	}
}

package keypackage_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/identity"
)

var sentinels = []error{keypackage.ErrMalformed, keypackage.ErrUnknownVersion, keypackage.ErrBadSignature, keypackage.ErrExpired}

// isOnly fails t unless err wraps want and no other sentinel.
func isOnly(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Fatalf("error %v wraps %v as well as %v", err, s, want)
		}
	}
}

func key(t testing.TB, n byte) identity.PrivateKey {
	t.Helper()
	k, err := identity.PrivateKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var (
	created = time.Unix(1767225600, 0) // 2026-01-01T00:00:00Z
	device  = [keypackage.DeviceSize]byte{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f}
)

// derived is the package of the known-answer test.
func derived(t testing.TB) *keypackage.Package {
	t.Helper()
	p, _, err := keypackage.Derive(key(t, 1), device, created, created.Add(keypackage.Lifetime), bytes.Repeat([]byte{0x42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func encode(t testing.TB, p *keypackage.Package) []byte {
	t.Helper()
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeriveKnownAnswer pins the encoding: the identity from seed 01..01,
// the device 10..1f, created 2026-01-01T00:00:00Z, Lifetime, and the key
// derived from ikm 42..42 give a package of this SHA-256. A change of the
// layout, the signing context, the suite or the key derivation changes it;
// such a change needs a new Version.
func TestDeriveKnownAnswer(t *testing.T) {
	const want = "d12c2c713dab78eceffb9b38408768a7d362482c7a7af2cf92f95eab83635866"
	b := encode(t, derived(t))
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != want {
		t.Errorf("SHA-256 of the encoding %x, want %s", sum, want)
	}
	if len(b) != keypackage.MaxSize {
		t.Errorf("encoding of %d bytes, MaxSize %d", len(b), keypackage.MaxSize)
	}
	if id := derived(t).ID(); hex.EncodeToString(id[:]) != want {
		t.Errorf("ID %x, want the SHA-256 of the encoding %s", id, want)
	}
}

func TestRoundTrip(t *testing.T) {
	id := key(t, 1)
	p, priv, err := keypackage.New(id, device, created, created.Add(keypackage.Lifetime))
	if err != nil {
		t.Fatal(err)
	}
	b := encode(t, p)
	q, err := keypackage.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if again := encode(t, q); !bytes.Equal(again, b) {
		t.Fatal("parsed package encodes differently")
	}
	if q.ID() != p.ID() || !q.Identity.Equal(id.Public()) || q.Device != device || q.Created != created.Unix() {
		t.Fatalf("parsed package differs: %+v", q)
	}
	pub, err := q.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub.Bytes(), priv.PublicKey().Bytes()) {
		t.Fatal("public key differs from the private key's")
	}
	kb, err := keypackage.PrivateKeyBytes(priv)
	if err != nil {
		t.Fatal(err)
	}
	priv2, err := keypackage.ParsePrivateKey(kb)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(priv2.PublicKey().Bytes(), p.Public) {
		t.Fatal("stored private key has another public key")
	}
	_, err = keypackage.ParsePrivateKey(kb[1:])
	isOnly(t, err, keypackage.ErrMalformed)
	other, _, _ := keypackage.New(id, device, created, created.Add(keypackage.Lifetime))
	if other.ID() == p.ID() || bytes.Equal(other.Public, p.Public) {
		t.Fatal("New made the same key twice")
	}
}

// TestTamper: a change of any one byte makes the package fail to parse.
func TestTamper(t *testing.T) {
	b := encode(t, derived(t))
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		_, err := keypackage.Parse(c)
		switch {
		case i < 7:
			isOnly(t, err, keypackage.ErrUnknownVersion)
		case err == nil:
			t.Fatalf("package with byte %d changed parses", i)
		case errors.Is(err, keypackage.ErrMalformed):
			isOnly(t, err, keypackage.ErrMalformed)
		default:
			isOnly(t, err, keypackage.ErrBadSignature)
		}
	}
}

// resign replaces the signature of the encoding b with id's.
func resign(id identity.PrivateKey, b []byte) []byte {
	body := b[:len(b)-ed25519.SignatureSize]
	sig := id.Sign(append([]byte("parley key package v1\x00"), body...))
	return append(bytes.Clone(body), sig...)
}

func TestOtherSigner(t *testing.T) {
	b := encode(t, derived(t))
	if _, err := keypackage.Parse(resign(key(t, 1), b)); err != nil {
		t.Fatalf("re-signed by its own key: %v", err)
	}
	_, err := keypackage.Parse(resign(key(t, 2), b))
	isOnly(t, err, keypackage.ErrBadSignature)

	// A package naming another identity, signed by the first one.
	p := derived(t)
	p.Identity = key(t, 2).Public()
	_, err = keypackage.Parse(encode(t, p))
	isOnly(t, err, keypackage.ErrBadSignature)

	// The signature of another context does not verify.
	body := b[:len(b)-ed25519.SignatureSize]
	_, err = keypackage.Parse(append(bytes.Clone(body), key(t, 1).Sign(body)...))
	isOnly(t, err, keypackage.ErrBadSignature)
}

// Offsets in the encoding.
const (
	offCreated = 1 + 6 + 32 + keypackage.DeviceSize
	offExpires = offCreated + 8
	offPubLen  = offExpires + 8
)

func TestParseRefuses(t *testing.T) {
	id := key(t, 1)
	good := encode(t, derived(t))
	set := func(off int, v uint64) []byte {
		c := bytes.Clone(good)
		binary.BigEndian.PutUint64(c[off:], v)
		return resign(id, c)
	}
	life := uint64(keypackage.MaxLifetime / time.Second)
	c := uint64(created.Unix())
	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{
		"empty":               {nil, keypackage.ErrMalformed},
		"version 2":           {append([]byte{2}, good[1:]...), keypackage.ErrUnknownVersion},
		"version 0":           {append([]byte{0}, good[1:]...), keypackage.ErrUnknownVersion},
		"other aead":          {resign(id, append(bytes.Clone(good[:5]), append([]byte{0, 1}, good[7:]...)...)), keypackage.ErrUnknownVersion},
		"trailing byte":       {append(bytes.Clone(good), 0), keypackage.ErrMalformed},
		"created > 1<<62":     {set(offCreated, 1<<62+1), keypackage.ErrMalformed},
		"expires > 1<<62":     {set(offExpires, 1<<62+1), keypackage.ErrMalformed},
		"created top bit":     {set(offCreated, 1<<63), keypackage.ErrMalformed},
		"expires = created":   {set(offExpires, c), keypackage.ErrMalformed},
		"expires < created":   {set(offExpires, c-1), keypackage.ErrMalformed},
		"over MaxLifetime":    {set(offExpires, c+life+1), keypackage.ErrMalformed},
		"zero identity":       {resign(id, append(bytes.Clone(good[:7]), append(make([]byte, 32), good[39:]...)...)), keypackage.ErrMalformed},
		"short public key":    {resign(id, append(append(bytes.Clone(good[:offPubLen]), 0x04, 0xbf), good[offPubLen+2:len(good)-1]...)), keypackage.ErrMalformed},
		"bad ML-KEM key":      {resign(id, append(append(bytes.Clone(good[:offPubLen+2]), 0xff, 0xff), good[offPubLen+4:]...)), keypackage.ErrMalformed},
		"length past the end": {resign(id, append(append(bytes.Clone(good[:offPubLen]), 0x04, 0xc1), good[offPubLen+2:]...)), keypackage.ErrMalformed},
	} {
		_, err := keypackage.Parse(tc.b)
		if err == nil {
			t.Errorf("%s: parses", name)
			continue
		}
		isOnly(t, err, tc.want)
	}
	if _, err := keypackage.Parse(set(offExpires, c+life)); err != nil {
		t.Errorf("a package of MaxLifetime: %v", err)
	}
	for n := range good {
		_, err := keypackage.Parse(good[:n])
		if !errors.Is(err, keypackage.ErrMalformed) && !errors.Is(err, keypackage.ErrUnknownVersion) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	id := key(t, 1)
	for _, expires := range []time.Time{
		created.Add(-time.Second), // before created
		created,                   // at created
		created.Add(keypackage.MaxLifetime + time.Second), // too long
	} {
		_, _, err := keypackage.New(id, device, created, expires)
		isOnly(t, err, keypackage.ErrMalformed)
	}
	_, _, err := keypackage.New(id, device, time.Unix(-1, 0), created)
	isOnly(t, err, keypackage.ErrMalformed)
	_, _, err = keypackage.New(identity.PrivateKey{}, device, created, created.Add(time.Hour))
	isOnly(t, err, keypackage.ErrMalformed)
	_, _, err = keypackage.Derive(id, device, created, created.Add(time.Hour), make([]byte, 31))
	isOnly(t, err, keypackage.ErrMalformed)
}

func TestValid(t *testing.T) {
	p := derived(t)
	expires := created.Add(keypackage.Lifetime)
	for _, now := range []time.Time{
		created.Add(-keypackage.MaxSkew),
		created,
		expires.Add(-time.Nanosecond),
	} {
		if err := p.Valid(now); err != nil {
			t.Errorf("at %v: %v", now, err)
		}
	}
	for _, now := range []time.Time{
		created.Add(-keypackage.MaxSkew - time.Second),
		expires,
		expires.Add(time.Hour),
	} {
		isOnly(t, p.Valid(now), keypackage.ErrExpired)
	}
}

func TestNewer(t *testing.T) {
	id := key(t, 1)
	mk := func(c time.Time, ikm byte) *keypackage.Package {
		p, _, err := keypackage.Derive(id, device, c, c.Add(keypackage.Lifetime), bytes.Repeat([]byte{ikm}, 32))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	old, later := mk(created, 1), mk(created.Add(time.Second), 2)
	if !later.Newer(old) || old.Newer(later) {
		t.Error("the later package is not the newer")
	}
	if old.Newer(old) {
		t.Error("a package is newer than itself")
	}
	a, b := mk(created, 3), mk(created, 4)
	aid, bid := a.ID(), b.ID()
	if a.Newer(b) == b.Newer(a) || a.Newer(b) != (bytes.Compare(aid[:], bid[:]) > 0) {
		t.Error("a tie is not broken by the larger ID")
	}
}

package wire

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/parleychat/parley/identity"
)

func testKeys(t *testing.T, n int) []identity.PublicKey {
	t.Helper()
	keys := make([]identity.PublicKey, n)
	for i := range keys {
		k, err := identity.Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k.Public()
	}
	return keys
}

func TestGetKeysRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, MaxGetKeys} {
		keys := testKeys(t, n)
		body, err := (&GetKeys{Keys: keys}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(body) != 2+32*n {
			t.Fatalf("%d keys: body of %d bytes", n, len(body))
		}
		m, err := ParseGetKeys(body)
		if err != nil {
			t.Fatal(err)
		}
		for i := range keys {
			if !m.Keys[i].Equal(keys[i]) {
				t.Fatalf("key %d changed", i)
			}
		}
	}
	keys := testKeys(t, MaxGetKeys+1)
	for _, bad := range [][]identity.PublicKey{nil, keys, {keys[0], keys[0]}, {{}}} {
		if _, err := (&GetKeys{Keys: bad}).MarshalBinary(); err == nil {
			t.Errorf("marshalled a get-keys of %d keys that the relay would refuse", len(bad))
		}
	}
}

func TestParseGetKeysStrict(t *testing.T) {
	k := testKeys(t, 1)[0].Bytes()
	for _, body := range [][]byte{
		nil, {0}, {0, 0}, {0, 1}, append([]byte{0, 2}, k...), append(append([]byte{0, 1}, k...), 0),
		append([]byte{1, 1}, bytes.Repeat(k, MaxGetKeys+1)...), append(append([]byte{0, 2}, k...), k...),
		append([]byte{0, 1}, make([]byte, 32)...),
	} {
		if _, err := ParseGetKeys(body); !errors.Is(err, ErrBadFrame) {
			t.Errorf("ParseGetKeys(%x...): %v, want ErrBadFrame", body[:min(len(body), 8)], err)
		}
	}
}

func TestKeyPackageFrames(t *testing.T) {
	p := bytes.Repeat([]byte{7}, MaxKeyPackage)
	for _, parse := range []func([]byte) ([]byte, error){
		func(b []byte) ([]byte, error) { m, err := ParsePutKeys(b); return pkg(m, err) },
		func(b []byte) ([]byte, error) { m, err := ParseKeyPackage(b); return pkgOf(m, err) },
	} {
		if got, err := parse(p); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("a package of the largest size: %v", err)
		}
		if _, err := parse(nil); !errors.Is(err, ErrBadFrame) || errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("an empty package: %v, want ErrBadFrame", err)
		}
		if _, err := parse(append(p, 0)); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("a package over the size: %v, want ErrFrameTooLarge", err)
		}
	}
	if _, err := (&PutKeys{}).MarshalBinary(); err == nil {
		t.Error("marshalled an empty put-keys")
	}
	if _, err := (&KeyPackage{Package: append(p, 0)}).MarshalBinary(); err == nil {
		t.Error("marshalled a key package over the size")
	}
}

func pkg(m *PutKeys, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	return m.Package, nil
}

func pkgOf(m *KeyPackage, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	return m.Package, nil
}

// TestFrameNames: every known type has a name, and an unknown one is
// refused with the text clients look for ("unknown type N").
func TestFrameNames(t *testing.T) {
	for ft := FramePublish; ft.Known(); ft++ {
		if ft.String() == "" || strings.HasPrefix(ft.String(), "frame(") {
			t.Errorf("frame type %d has no name", uint8(ft))
		}
	}
	_, _, err := ParseFrameHeader([FrameHeaderSize]byte{byte(FrameRooms + 1)})
	if !errors.Is(err, ErrBadFrame) || !strings.Contains(err.Error(), "unknown type 26") {
		t.Fatalf("an unknown type: %v", err)
	}
}

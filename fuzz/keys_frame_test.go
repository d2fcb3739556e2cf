package fuzz

import (
	"bytes"
	"errors"
	"testing"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/relay/wire"
)

// keysFrameSeeds returns bodies of the key package frames: get-keys of
// one and of several identities, a key package, and a few that are not
// valid bodies of some of them.
func keysFrameSeeds(t testing.TB) [][]byte {
	keys := make([]identity.PublicKey, 5)
	for i := range keys {
		keys[i] = testKey(t, byte(i+1)).Public()
	}
	pkg := mustMarshal(t, announceTestPackage(t))
	one := mustMarshal(t, &wire.GetKeys{Keys: keys[:1]})
	five := mustMarshal(t, &wire.GetKeys{Keys: keys})
	twice := append(append([]byte{0, 2}, keys[0].Bytes()...), keys[0].Bytes()...)
	zeroKey := append([]byte{0, 1}, make([]byte, 32)...)
	return [][]byte{one, five, pkg, mustMarshal(t, &wire.PutKeys{Package: []byte{1}}),
		twice, zeroKey, one[:len(one)-1], make([]byte, wire.MaxKeyPackage+1), {}}
}

// FuzzKeysFrames: a PutKeys, GetKeys or KeyPackage body that parses
// encodes back to exactly the input; one that does not is refused with
// wire.ErrBadFrame, and with ErrFrameTooLarge exactly when a key package
// is over MaxKeyPackage.
func FuzzKeysFrames(f *testing.F) {
	for _, b := range keysFrameSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		refused := func(what string, err error, tooLarge bool) {
			t.Helper()
			if !errors.Is(err, wire.ErrBadFrame) {
				t.Fatalf("%s: error %v does not wrap ErrBadFrame", what, err)
			}
			if errors.Is(err, wire.ErrFrameTooLarge) != tooLarge {
				t.Fatalf("%s of %d bytes: error %v; too large: %v", what, len(b), err, tooLarge)
			}
		}
		fits := len(b) >= 1 && len(b) <= wire.MaxKeyPackage
		put, err := wire.ParsePutKeys(b)
		if err != nil {
			refused("put-keys", err, len(b) > wire.MaxKeyPackage)
		} else {
			sameBytes(t, b)(put.MarshalBinary())
		}
		if (err == nil) != fits {
			t.Fatalf("put-keys of %d bytes: %v", len(b), err)
		}
		kp, err := wire.ParseKeyPackage(b)
		if err != nil {
			refused("key-package", err, len(b) > wire.MaxKeyPackage)
		} else {
			sameBytes(t, b)(kp.MarshalBinary())
			if len(b) > 0 && &kp.Package[0] == &b[0] {
				t.Fatal("the key package aliases the frame's body")
			}
		}
		if (err == nil) != fits {
			t.Fatalf("key-package of %d bytes: %v", len(b), err)
		}
		get, err := wire.ParseGetKeys(b)
		if err != nil {
			refused("get-keys", err, false)
			return
		}
		sameBytes(t, b)(get.MarshalBinary())
		if n := len(get.Keys); n < 1 || n > wire.MaxGetKeys || len(b) != 2+32*n {
			t.Fatalf("get-keys of %d keys from %d bytes", n, len(b))
		}
		for i, k := range get.Keys {
			if k.IsZero() || !bytes.Equal(k.Bytes(), b[2+32*i:2+32*(i+1)]) {
				t.Fatalf("key %d is %x", i, k.Bytes())
			}
			if _, err := identity.PublicKeyFromBytes(k.Bytes()); err != nil {
				t.Fatalf("key %d does not parse alone: %v", i, err)
			}
		}
	})
}

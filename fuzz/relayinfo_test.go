package fuzz

import (
	"bytes"
	"errors"
	"testing"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/mesh"
)

// FuzzRelayInfo: a relay's answer on mesh.RelayInfoProtocol (what it says
// of itself when a client finds it on the DHT). Whatever the bytes, the
// parser refuses them with mesh.ErrRelayInfo, or takes them, and then
// what it took encodes back to exactly the same bytes (no byte is
// ignored: no trailing bytes, no slack in a length), within the bounds.
func FuzzRelayInfo(f *testing.F) {
	priv, err := identity.PrivateKeyFromSeed(make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	good, err := mesh.EncodeRelayInfo(mesh.RelayInfo{Addr: "SHA256:qJ3n0bq6@127.0.0.1:4433", Vouches: []identity.PublicKey{priv.Public()}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(append(bytes.Clone(good), 0))
	f.Add([]byte{})
	f.Add([]byte{1, 1, 'a', 0})
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{2, 1, 'a', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := mesh.ParseRelayInfo(b)
		if err != nil {
			if !errors.Is(err, mesh.ErrRelayInfo) {
				t.Fatalf("error %v does not wrap ErrRelayInfo", err)
			}
			return
		}
		if len(b) > mesh.MaxRelayInfoSize || len(info.Vouches) > mesh.MaxRelayInfoVouch {
			t.Fatalf("took %d bytes, %d keys: past the bounds", len(b), len(info.Vouches))
		}
		again, err := mesh.EncodeRelayInfo(info)
		if err != nil {
			t.Fatalf("took %x, which does not encode: %v", b, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("took %x, which encodes to %x", b, again)
		}
	})
}

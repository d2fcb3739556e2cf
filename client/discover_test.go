package client

import (
	"bytes"
	"errors"
	"testing"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/relay"
)

// TestRelayInfoParse: what EncodeRelayInfo gives parses back to the
// same; bad versions, lengths, keys and trailing bytes are refused with
// mesh.ErrRelayInfo.
func TestRelayInfoParse(t *testing.T) {
	self, v1, v2 := testkit.Key(t).Public(), testkit.Key(t).Public(), testkit.Key(t).Public()
	info := mesh.RelayInfo{Addr: relay.AddrOf(self, "127.0.0.1:4433").String(), Vouches: []identity.PublicKey{v1, v2}}
	good, err := mesh.EncodeRelayInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	got, err := mesh.ParseRelayInfo(good)
	if err != nil || got.Addr != info.Addr || len(got.Vouches) != 2 || got.Vouches[0] != v1 || got.Vouches[1] != v2 {
		t.Fatalf("ParseRelayInfo(EncodeRelayInfo(%+v)) = %+v, %v", info, got, err)
	}
	n := len(info.Addr)
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	bad := map[string][]byte{
		"empty":            nil,
		"version only":     {1},
		"other version":    edit(func(b []byte) []byte { b[0] = 2; return b }),
		"empty address":    {1, 0, 0},
		"address past end": edit(func(b []byte) []byte { b[1] = 255; return b }),
		"control in addr":  edit(func(b []byte) []byte { b[2] = '\n'; return b }),
		"invalid utf-8":    edit(func(b []byte) []byte { b[2] = 0xff; return b }),
		"trailing byte":    append(bytes.Clone(good), 0),
		"key cut short":    good[:len(good)-1],
		"count too big":    edit(func(b []byte) []byte { b[2+n] = 3; return b }),
		"count too small":  edit(func(b []byte) []byte { b[2+n] = 1; return b }),
		"count past bound": edit(func(b []byte) []byte { b[2+n] = mesh.MaxRelayInfoVouch + 1; return b }),
		"key twice":        edit(func(b []byte) []byte { copy(b[3+n+32:], v1.Bytes()); return b }),
		"zero key":         edit(func(b []byte) []byte { clear(b[3+n : 3+n+32]); return b }),
		"too long":         make([]byte, mesh.MaxRelayInfoSize+1),
	}
	for name, b := range bad {
		if got, err := mesh.ParseRelayInfo(b); !errors.Is(err, mesh.ErrRelayInfo) {
			t.Errorf("%s: ParseRelayInfo = %+v, %v; want ErrRelayInfo", name, got, err)
		}
	}
	if _, err := mesh.EncodeRelayInfo(mesh.RelayInfo{Addr: string(make([]byte, 256))}); !errors.Is(err, mesh.ErrRelayInfo) {
		t.Errorf("EncodeRelayInfo of a 256-byte address: %v; want ErrRelayInfo", err)
	}
}

// TestRelayInfoCheck: an info is taken from a peer only if its address
// names the peer's key.
func TestRelayInfoCheck(t *testing.T) {
	key, other := testkit.Key(t).Public(), testkit.Key(t).Public()
	if err := checkInfo(key, mesh.RelayInfo{Addr: relay.AddrOf(key, "127.0.0.1:1").String()}); err != nil {
		t.Errorf("own address: %v", err)
	}
	if err := checkInfo(key, mesh.RelayInfo{Addr: relay.AddrOf(other, "127.0.0.1:1").String()}); !errors.Is(err, ErrRelayMismatch) {
		t.Errorf("another key's address: %v; want ErrRelayMismatch", err)
	}
	for _, addr := range []string{"127.0.0.1:1", key.Fingerprint() + "@nohostport", "SHA256:short@127.0.0.1:1"} {
		if err := checkInfo(key, mesh.RelayInfo{Addr: addr}); err == nil || errors.Is(err, ErrRelayMismatch) {
			t.Errorf("%q: %v; want a malformed-address error", addr, err)
		}
	}
}

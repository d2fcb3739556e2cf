package seal

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/parleychat/parley/crypto/ratchet"
)

// sealFrame seals a hand-made frame, which Seal would never make.
func sealFrame(mk ratchet.MessageKey, frame []byte) []byte {
	return derive(mk, nil).Seal(nil, nonce[:], frame, nil)
}

// TestOpenRefusesFraming: authentic ciphertexts whose frame Seal would not
// make (by a sender with a bug, or one that tries to leak through the
// padding) fail with ErrMalformed.
func TestOpenRefusesFraming(t *testing.T) {
	frame := func(size int, n uint32, pad byte) []byte {
		f := make([]byte, size)
		binary.BigEndian.PutUint32(f, n)
		if pad != 0 {
			f[size-1] = pad
		}
		return f
	}
	var mk ratchet.MessageKey
	for name, f := range map[string][]byte{
		"nonzero padding":       frame(64, 5, 1),
		"length past the end":   frame(64, 61, 0),
		"length far past":       frame(64, 1<<31, 0),
		"not the least bucket":  frame(128, 5, 0),
		"max length, big frame": frame(32768, MaxPlaintext+1, 0),
	} {
		_, err := Open(mk, nil, sealFrame(mk, f))
		if !errors.Is(err, ErrMalformed) || errors.Is(err, ErrOpen) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if pt, err := Open(mk, nil, sealFrame(mk, frame(64, 60, 0))); err != nil || len(pt) != 60 {
		t.Errorf("a full frame: %v", err)
	}
}

package seal_test

import (
	"testing"

	"github.com/parleychat/parley/crypto/ratchet"
	"github.com/parleychat/parley/crypto/seal"
)

// BenchmarkSeal256: the sender's cost of one 256-byte message, the message
// key's derivation (Step) included.
func BenchmarkSeal256(b *testing.B) {
	ck, pt, aad := ratchet.ChainKey{1}, make([]byte, 256), make([]byte, 64)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		var mk ratchet.MessageKey
		ck, mk = ratchet.Step(ck)
		if _, err := seal.Seal(mk, aad, pt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen256: the recipient's cost of one 256-byte message, the
// message key's derivation (Step) included.
func BenchmarkOpen256(b *testing.B) {
	ck, aad := ratchet.ChainKey{1}, make([]byte, 64)
	_, mk := ratchet.Step(ck)
	ct, err := seal.Seal(mk, aad, make([]byte, 256))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(256)
	b.ReportAllocs()
	for b.Loop() {
		_, mk := ratchet.Step(ck)
		if _, err := seal.Open(mk, aad, ct); err != nil {
			b.Fatal(err)
		}
	}
}

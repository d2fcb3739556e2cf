package senderkey_test

import (
	"testing"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/crypto/senderkey"
)

func BenchmarkSenderKeySeal(b *testing.B) {
	p, _ := recipient(b, 7)
	in := info(b, p)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := senderkey.Seal(p, in, chain()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSenderKeyOpen(b *testing.B) {
	p, priv := recipient(b, 7)
	in := info(b, p)
	sealed := seal(b, p, in)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := senderkey.Open(priv, in, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEpoch100: the cost to one member of a new epoch in a room of
// 100: its fresh chain key sealed to the packages of the 99 others.
func BenchmarkEpoch100(b *testing.B) {
	pkgs := make([]*keypackage.Package, 99)
	infos := make([]senderkey.Info, len(pkgs))
	for i := range pkgs {
		pkgs[i], _ = recipient(b, byte(i))
		infos[i] = info(b, pkgs[i])
	}
	b.ReportAllocs()
	for b.Loop() {
		for i, p := range pkgs {
			if _, err := senderkey.Seal(p, infos[i], chain()); err != nil {
				b.Fatal(err)
			}
		}
	}
}

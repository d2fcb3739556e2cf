package protocol

import (
	"crypto/ed25519"
	"fmt"
	"testing"
)

// The envelope benchmarks use a 256-byte payload. The bare ed25519 ones sign
// and verify the envelope's signing input, the very bytes the envelope
// signs, so that the ratio of Envelope/Verify to Ed25519/Verify is the cost
// of the envelope itself; VoiVerify is the rule envelopes are checked with
// (protocol/verify.go) on the same bytes. Run them together:
//
//	go test -run '^$' -bench . -count 10 ./protocol | benchstat -
func benchEnvelope(b *testing.B) (*Envelope, []byte, rawKey) {
	b.Helper()
	k := key(b, 1)
	e := &Envelope{Kind: KindText, Room: "general", Seq: 1234, Prev: ID{1}, Lamport: 99, Time: t0.UnixMilli(), Payload: make([]byte, 256)}
	for i := range e.Payload {
		e.Payload[i] = byte(i)
	}
	if _, err := e.Sign(k); err != nil {
		b.Fatal(err)
	}
	enc, err := e.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	return e, enc, rawKey{priv: k.Ed25519(), pub: k.Public().Bytes()}
}

type rawKey struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

func BenchmarkEnvelope(b *testing.B) {
	e, enc, id := benchEnvelope(b)
	k := key(b, 1)
	input := e.signingInput(nil)
	sig := ed25519.Sign(id.priv, input)

	b.Run("Sign", func(b *testing.B) {
		b.ReportAllocs()
		c := *e
		for b.Loop() {
			if _, err := c.Sign(k); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Ed25519Sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ed25519.Sign(id.priv, input)
		}
	})
	b.Run("Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := e.Verify(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Ed25519Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !ed25519.Verify(id.pub, input, sig) {
				b.Fatal("bad signature")
			}
		}
	})
	b.Run("VoiVerify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !verifySig(id.pub, input, sig) {
				b.Fatal("bad signature")
			}
		}
	})
	b.Run("Encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, len(enc))
		for b.Loop() {
			if _, err := e.AppendBinary(buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Parse(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ParseVerify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := ParseVerify(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVerifyBatch: what verifying a relay publish stream's waiting
// envelopes (one sender) costs per envelope, by batch size.
func BenchmarkVerifyBatch(b *testing.B) {
	k := key(b, 1)
	for _, n := range []int{1, 4, 16, 64} {
		envs := make([]*Envelope, n)
		for i := range envs {
			e := &Envelope{Kind: KindText, Room: "general", Seq: uint64(i + 1), Lamport: 99, Time: t0.UnixMilli(), Payload: make([]byte, 256)}
			if _, err := e.Sign(k); err != nil {
				b.Fatal(err)
			}
			envs[i] = e
		}
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			for b.Loop() {
				if errs := VerifyBatch(envs); errs != nil {
					b.Fatal(errs)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n)/1000, "µs/envelope")
		})
	}
}

// BenchmarkVerifier: a check of one sender's envelope by Envelope.Verify,
// and by a Verifier that keeps the sender's key, side by side.
func BenchmarkVerifier(b *testing.B) {
	e := &Envelope{Kind: KindText, Room: "general", Seq: 1, Lamport: 99, Time: t0.UnixMilli(), Payload: make([]byte, 256)}
	if _, err := e.Sign(key(b, 1)); err != nil {
		b.Fatal(err)
	}
	b.Run("Verify", func(b *testing.B) {
		for b.Loop() {
			if err := e.Verify(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Verifier", func(b *testing.B) {
		var v Verifier
		b.ReportAllocs()
		for b.Loop() {
			if err := v.Verify(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

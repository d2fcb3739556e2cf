package protocol

import (
	"crypto/ed25519"
	"crypto/sha512"
	"math/rand/v2"
	"testing"

	"filippo.io/edwards25519"

	"github.com/parleychat/parley/identity"
)

// TestVerifyBatchAgreesWithVerify: random batches of good, tampered and
// malformed envelopes from a few senders; VerifyBatch's answer for each
// is Verify's.
func TestVerifyBatchAgreesWithVerify(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []identity.PrivateKey{key(t, 1), key(t, 2), key(t, 3)}
	for round := range 60 {
		n := 1 + rng.IntN(150) // more than one batch equation at times
		envs := make([]*Envelope, n)
		for i := range envs {
			envs[i] = maybeSpoilt(t, rng, 12, keys[rng.IntN(len(keys))], uint64(i+1), keys)
		}
		errs := VerifyBatch(envs)
		for i, e := range envs {
			want := e.Verify()
			var got error
			if errs != nil {
				got = errs[i]
			}
			if !sameError(got, want) {
				t.Fatalf("round %d, envelope %d of %d: VerifyBatch says %v, Verify says %v", round, i, n, got, want)
			}
		}
	}
	if errs := VerifyBatch(nil); errs != nil {
		t.Errorf("empty batch: %v", errs)
	}
}

// TestVerifierAgreesWithVerify: good, tampered and malformed envelopes
// from more senders than a Verifier keeps, through one Verifier: its
// answer for each is Verify's, whether the sender's key is kept, new, or
// was displaced.
func TestVerifierAgreesWithVerify(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	keys := make([]identity.PrivateKey, verifierKeys+44)
	for i := range keys {
		seed := make([]byte, ed25519.SeedSize)
		seed[0], seed[1] = byte(i), byte(i>>8)
		k, err := identity.PrivateKeyFromSeed(seed)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	var v Verifier
	for i := range 3000 {
		// Half from a few busy senders, half from all of them.
		k := keys[rng.IntN(8)]
		if rng.IntN(2) == 0 {
			k = keys[rng.IntN(len(keys))]
		}
		e := maybeSpoilt(t, rng, 8, k, uint64(i+1), keys)
		if got, want := v.Verify(e), e.Verify(); !sameError(got, want) {
			t.Fatalf("envelope %d: the Verifier says %v, Verify says %v", i, got, want)
		}
	}
	if n := len(v.keys); n != verifierKeys {
		t.Errorf("the Verifier keeps %d keys, want %d (all it may)", n, verifierKeys)
	}
}

// maybeSpoilt returns an envelope numbered seq signed by k, spoilt 4
// times in odds (odds at least 4): its payload or signature changed after
// signing, its room taken away (it cannot be encoded), or its sender
// swapped for one of others.
func maybeSpoilt(t *testing.T, rng *rand.Rand, odds int, k identity.PrivateKey, seq uint64, others []identity.PrivateKey) *Envelope {
	t.Helper()
	e, _ := signed(t, k, "general", seq, "hello")
	switch rng.IntN(odds) {
	case 0:
		e.Payload = []byte("changed")
	case 1:
		e.Sig[rng.IntN(len(e.Sig))] ^= 1 << rng.IntN(8)
	case 2:
		e.Room = "" // cannot be encoded
	case 3:
		e.Sender = others[rng.IntN(len(others))].Public()
	}
	return e
}

// sameError reports whether got and want are both nil, or errors with
// the same text.
func sameError(got, want error) bool {
	if got == nil || want == nil {
		return got == want
	}
	return got.Error() == want.Error()
}

// TestSignatureRule: a signature made with a key that has a small-order
// component passes the cofactored equation Parley uses and fails
// crypto/ed25519's cofactorless one. Verify, VerifyBatch and a Verifier must agree on
// it, alone and among good envelopes: that agreement is why the rule is
// the cofactored one.
func TestSignatureRule(t *testing.T) {
	// A key a·B + T, with T of order 8: canonical, not of small order, so
	// it is a well-formed sender.
	var seed [64]byte
	seed[0] = 7
	a, err := edwards25519.NewScalar().SetUniformBytes(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	A := new(edwards25519.Point).Add(new(edwards25519.Point).ScalarBaseMult(a), torsion8(t))
	sender, err := identity.PublicKeyFromBytes(A.Bytes())
	if err != nil {
		t.Fatalf("the mixed key does not parse: %v", err)
	}
	var v Verifier
	bad := 0
	for seq := uint64(1); seq <= 64 && bad < 3; seq++ {
		e := &Envelope{Kind: KindText, Room: "general", Seq: seq, Lamport: seq, Time: t0.UnixMilli(), Payload: []byte("torsion"), Sender: sender}
		msg := e.signingInput(nil)
		// R = r·B; S = r + k·a with k = H(R, A, msg).
		var rs [64]byte
		rs[0], rs[1] = byte(seq), 1
		r, _ := edwards25519.NewScalar().SetUniformBytes(rs[:])
		R := new(edwards25519.Point).ScalarBaseMult(r)
		h := sha512.New()
		h.Write(R.Bytes())
		h.Write(A.Bytes())
		h.Write(msg)
		k, _ := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
		S := edwards25519.NewScalar().MultiplyAdd(k, a, r)
		copy(e.Sig[:32], R.Bytes())
		copy(e.Sig[32:], S.Bytes())
		if ed25519.Verify(sender.Bytes(), msg, e.Sig[:]) {
			continue // k·T happened to be the identity: nothing to see
		}
		bad++
		if err := e.Verify(); err != nil {
			t.Fatalf("Verify refuses a signature valid under the cofactored equation: %v", err)
		}
		good, _ := signed(t, key(t, 1), "general", 1, "hello")
		if errs := VerifyBatch([]*Envelope{good, e, good}); errs != nil {
			t.Fatalf("VerifyBatch disagrees with Verify: %v", errs)
		}
		for range 2 { // the second from the kept key
			if err := v.Verify(e); err != nil {
				t.Fatalf("Verifier disagrees with Verify: %v", err)
			}
		}
	}
	if bad == 0 {
		t.Fatal("no signature separated the two equations")
	}
}

// torsion8 returns a point of order 8.
func torsion8(t *testing.T) *edwards25519.Point {
	eight := make([]byte, 32)
	eight[0] = 8
	s8, err := edwards25519.NewScalar().SetCanonicalBytes(eight)
	if err != nil {
		t.Fatal(err)
	}
	inv8 := edwards25519.NewScalar().Invert(s8)
	id := edwards25519.NewIdentityPoint()
	for y := byte(2); y < 255; y++ {
		enc := make([]byte, 32)
		enc[0] = y
		p, err := new(edwards25519.Point).SetBytes(enc)
		if err != nil {
			continue
		}
		q := new(edwards25519.Point).ScalarMult(inv8, new(edwards25519.Point).MultByCofactor(p))
		tor := new(edwards25519.Point).Subtract(p, q)
		four := new(edwards25519.Point).Add(tor, tor)
		four.Add(four, four)
		if four.Equal(id) == 0 {
			return tor
		}
	}
	t.Fatal("no point of order 8 found")
	return nil
}

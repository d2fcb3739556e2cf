package protocol

import (
	"sync"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"github.com/parleychat/parley/identity"
)

// sigRule is the signature rule every Parley node applies to envelopes:
// Ed25519 as RFC 8032 and FIPS 186-5 define it with the cofactored
// verification equation ([8][S]B = [8]R + [8][k]A), canonical encodings of
// A and R, S below the group order, and A not of small order. It is
// curve25519-voi's default rule.
//
// Every signature crypto/ed25519.Sign makes is valid under it. It differs
// from crypto/ed25519.Verify (the cofactorless equation) only on
// signatures crafted with a small-order component, which a signer can make
// only for its own key. The reason for the rule is that verifying a batch
// of signatures under it accepts exactly when verifying each one would, so
// a relay may check many publishes at once (about three times faster)
// without ever disagreeing with a node that checks them one by one.
var sigRule = &voi.Options{Verify: voi.VerifyOptionsDefault}

// maxBatch is the largest batch VerifyBatch checks in one equation; up to
// it, curve25519-voi uses its precomputed tables for the keys.
const maxBatch = 64

// VerifyBatch checks the signatures of envs together and returns nil when
// all are valid. Otherwise it returns one error per envelope, nil for each
// valid one, as Verify would: the results never differ from calling Verify
// on each envelope. It is faster than that when most are valid and
// envelopes share senders (a relay's publish stream has one sender).
func VerifyBatch(envs []*Envelope) []error {
	switch len(envs) {
	case 0:
		return nil
	case 1:
		if err := envs[0].Verify(); err != nil {
			return []error{err}
		}
		return nil
	}
	var errs []error
	for start := 0; start < len(envs); start += maxBatch {
		part := envs[start:min(start+maxBatch, len(envs))]
		valid := batchCheck(part)
		if valid == nil {
			continue
		}
		for i, e := range part {
			if valid[i] {
				continue
			}
			// Verify names the error; it refuses what the batch refused.
			if err := e.Verify(); err != nil {
				if errs == nil {
					errs = make([]error, len(envs))
				}
				errs[start+i] = err
			}
		}
	}
	return errs
}

// batchCheck checks at most maxBatch envelopes in one batch equation. It
// returns nil when every signature is valid; otherwise which are. When the
// batch fails, curve25519-voi checks its entries one by one, reusing what
// it decoded for the batch.
func batchCheck(envs []*Envelope) []bool {
	bv := voi.NewBatchVerifierWithCapacity(len(envs))
	keys := make(map[identity.PublicKey]*voi.ExpandedPublicKey, 1)
	var (
		buf   [512]byte
		added []int // bv's entry j is envs[added[j]]
	)
	for i, e := range envs {
		if e.check() != nil {
			continue
		}
		ek, ok := keys[e.Sender]
		if !ok {
			var err error
			if ek, err = voi.NewExpandedPublicKey(e.Sender.Bytes()); err != nil {
				continue // not a point: no signature verifies
			}
			keys[e.Sender] = ek
		}
		// The message is hashed as it is added, so buf is free again.
		bv.AddExpandedWithOptions(ek, e.signingInput(buf[:0]), e.Sig[:], sigRule)
		added = append(added, i)
	}
	valid := make([]bool, len(envs))
	if len(added) == 0 {
		return valid
	}
	all, each := bv.Verify(nil)
	if all && len(added) == len(envs) {
		return nil
	}
	for j, i := range added {
		valid[i] = each[j]
	}
	return valid
}

// verifySig reports whether sig is a valid signature of msg by key under
// sigRule.
func verifySig(key, msg, sig []byte) bool {
	return voi.VerifyWithOptions(key, msg, sig, sigRule)
}

// verifierKeys is how many senders' keys a Verifier keeps: every sender
// of a busy room, at about 1.5 KB each.
const verifierKeys = 256

// A Verifier checks envelopes as Envelope.Verify does, with the same
// result and error, but faster for a sender it has seen: it keeps the
// expanded form of the last senders' keys (the key as a point, negated,
// with its table of multiples), which a check otherwise builds from the
// 32 bytes every time. That is about a sixth of a check (5 of 33 µs,
// BenchmarkVerifier), and a mesh node checks every envelope of its rooms,
// mostly from the same few senders. The zero Verifier is ready to use,
// and it is safe for concurrent use.
//
// A key it does not keep is expanded and then checked against, which
// costs what Verify costs (Verify expands it too, on the stack); it is
// kept only once a signature by it has verified, so forgeries under
// made-up keys displace nothing. Validly signed envelopes from new
// senders displace a kept key, one at random once verifierKeys are
// kept. The expanded check tests the key as the plain one does (a point,
// canonical, not of small order under sigRule), from flags set when it
// was expanded: the result is the plain check's
// (TestVerifierAgreesWithVerify, FuzzEnvelope).
type Verifier struct {
	mu   sync.RWMutex
	keys map[identity.PublicKey]*voi.ExpandedPublicKey
}

// Verify checks e's signature. It returns nil or an error wrapping
// ErrBadSignature (or ErrMalformed), as e.Verify does.
func (v *Verifier) Verify(e *Envelope) error {
	return e.verify(v)
}

// verifySig reports whether sig is a valid signature of msg by key under
// sigRule, through key's expanded form if v keeps it. A nil v keeps none.
func (v *Verifier) verifySig(key identity.PublicKey, msg, sig []byte) bool {
	if v == nil {
		return verifySig(key.Bytes(), msg, sig)
	}
	if ek := v.key(key); ek != nil {
		return voi.VerifyExpandedWithOptions(ek, msg, sig, sigRule)
	}
	ek, err := voi.NewExpandedPublicKey(key.Bytes())
	if err != nil {
		return false // not a point: the plain check refuses it too
	}
	if !voi.VerifyExpandedWithOptions(ek, msg, sig, sigRule) {
		return false
	}
	v.keep(key, ek)
	return true
}

func (v *Verifier) key(key identity.PublicKey) *voi.ExpandedPublicKey {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.keys[key]
}

// keep adds key's expanded form, displacing a kept key (whichever the
// map's iteration gives first) when verifierKeys are kept.
func (v *Verifier) keep(key identity.PublicKey, ek *voi.ExpandedPublicKey) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.keys == nil {
		v.keys = make(map[identity.PublicKey]*voi.ExpandedPublicKey)
	}
	if _, kept := v.keys[key]; kept {
		return // by another check meanwhile
	}
	if len(v.keys) >= verifierKeys {
		for k := range v.keys {
			delete(v.keys, k)
			break
		}
	}
	v.keys[key] = ek
}

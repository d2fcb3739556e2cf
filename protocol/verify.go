package protocol

import (
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
		if batchValid(part) {
			continue
		}
		// Some are bad: find which, one by one.
		for i, e := range part {
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

// batchValid reports whether every one of at most maxBatch envelopes has
// a valid signature, checked in one batch equation.
func batchValid(envs []*Envelope) bool {
	bv := voi.NewBatchVerifierWithCapacity(len(envs))
	keys := make(map[identity.PublicKey]*voi.ExpandedPublicKey, 1)
	var buf [512]byte
	for _, e := range envs {
		if e.check() != nil {
			return false
		}
		ek, ok := keys[e.Sender]
		if !ok {
			var err error
			if ek, err = voi.NewExpandedPublicKey(e.Sender.Bytes()); err != nil {
				return false // not a point: no signature verifies
			}
			keys[e.Sender] = ek
		}
		// The message is hashed as it is added, so buf is free again.
		bv.AddExpandedWithOptions(ek, e.signingInput(buf[:0]), e.Sig[:], sigRule)
	}
	return bv.VerifyBatchOnly(nil)
}

// verifySig reports whether sig is a valid signature of msg by key under
// sigRule.
func verifySig(key, msg, sig []byte) bool {
	return voi.VerifyWithOptions(key, msg, sig, sigRule)
}

package audit

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// ErrBadProof: an inclusion proof does not lead from the record to the
// checkpoint's root.
var ErrBadProof = errors.New("audit: invalid inclusion proof")

// ProofChecker checks inclusion proofs as tlog.CheckRecord does, for many
// records of the same tree: the receipts of one commit share most of their
// paths. It remembers every node of the paths it has verified, with their
// siblings, for the tree it last checked; a later proof is hashed only up
// to the first node it shares with them, and its remaining hashes are
// compared with the remembered ones. It accepts and refuses exactly the
// proofs that tlog.CheckRecord does. It is safe for concurrent use.
type ProofChecker struct {
	mu    sync.Mutex
	size  int64
	root  tlog.Hash
	known map[[2]int64]tlog.Hash // subtree [lo, hi) -> its verified hash
}

// maxKnown bounds what the checker remembers of one tree.
const maxKnown = 1 << 16

type pathStep struct {
	node, sib [2]int64 // the subtree holding the record, and its sibling
	sibRight  bool
}

// Check reports whether proof proves that the record with hash leaf is
// record n of the tree of size t with root hash root.
func (v *ProofChecker) Check(proof tlog.RecordProof, t int64, root tlog.Hash, n int64, leaf tlog.Hash) error {
	if n < 0 || n >= t {
		return fmt.Errorf("%w: record %d of a tree of %d", ErrBadProof, n, t)
	}
	// The path from the root down to the record, as RFC 6962 splits trees.
	var steps []pathStep
	for lo, hi := int64(0), t; hi-lo > 1; {
		k := split(hi - lo)
		if n < lo+k {
			steps = append(steps, pathStep{node: [2]int64{lo, lo + k}, sib: [2]int64{lo + k, hi}, sibRight: true})
			hi = lo + k
		} else {
			steps = append(steps, pathStep{node: [2]int64{lo + k, hi}, sib: [2]int64{lo, lo + k}})
			lo += k
		}
	}
	if len(steps) != len(proof) {
		return fmt.Errorf("%w: %d hashes for a path of %d", ErrBadProof, len(proof), len(steps))
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	if v.known == nil || t != v.size || root != v.root || len(v.known) > maxKnown {
		v.size, v.root, v.known = t, root, make(map[[2]int64]tlog.Hash)
	}
	type seen struct {
		node [2]int64
		h    tlog.Hash
	}
	var fresh []seen
	h := leaf
	for i := len(steps) - 1; i >= 0; i-- {
		st, sib := steps[i], proof[len(steps)-1-i]
		if kh, ok := v.known[st.node]; ok {
			if kh != h {
				return fmt.Errorf("%w: record %d", ErrBadProof, n)
			}
			if ks, ok := v.known[st.sib]; ok {
				if ks != sib {
					return fmt.Errorf("%w: record %d", ErrBadProof, n)
				}
				// Both children verified: so is their parent.
				parent := [2]int64{0, t}
				if i > 0 {
					parent = steps[i-1].node
				}
				h = v.known[parent]
				continue
			}
		}
		fresh = append(fresh, seen{st.node, h}, seen{st.sib, sib})
		if st.sibRight {
			h = tlog.NodeHash(h, sib)
		} else {
			h = tlog.NodeHash(sib, h)
		}
	}
	if h != root {
		return fmt.Errorf("%w: record %d", ErrBadProof, n)
	}
	for _, s := range fresh {
		v.known[s.node] = s.h
	}
	v.known[[2]int64{0, t}] = root
	return nil
}

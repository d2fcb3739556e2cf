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
// paths. It remembers the last path it verified in the tree it last
// checked: every node on it, with its sibling. A later proof's path
// coincides with it from the root down to some node; the proof is hashed
// from its record up to that node only, and its hashes above are compared
// with the remembered siblings. It accepts and refuses exactly the proofs
// that tlog.CheckRecord does (short of a SHA-256 collision, which a
// difference would take). It is safe for concurrent use.
type ProofChecker struct {
	mu    sync.Mutex
	size  int64
	root  tlog.Hash
	depth int                  // of the remembered path; 0: none
	path  [maxDepth]verifiedAt // the remembered path, from the top
}

// maxDepth bounds a path: a tree of up to 2^63 records.
const maxDepth = 64

// verifiedAt is a node of a verified path: the subtree [lo, hi) holding
// the record, its hash, and its sibling's.
type verifiedAt struct {
	node    [2]int64
	h, sibH tlog.Hash
}

type pathStep struct {
	node     [2]int64 // the subtree holding the record
	sibRight bool     // its sibling is to its right
}

// Check reports whether proof proves that the record with hash leaf is
// record n of the tree of size t with root hash root.
func (v *ProofChecker) Check(proof tlog.RecordProof, t int64, root tlog.Hash, n int64, leaf tlog.Hash) error {
	return check(v, proof, t, root, n, leaf)
}

// CheckHashes is Check for a proof as a receipt carries it.
func (v *ProofChecker) CheckHashes(proof [][32]byte, t int64, root tlog.Hash, n int64, leaf tlog.Hash) error {
	return check(v, proof, t, root, n, leaf)
}

func check[H ~[32]byte](v *ProofChecker, proof []H, t int64, root tlog.Hash, n int64, leaf tlog.Hash) error {
	if n < 0 || n >= t {
		return fmt.Errorf("%w: record %d of a tree of %d", ErrBadProof, n, t)
	}
	// The path from the root down to the record, as RFC 6962 splits trees.
	var steps [maxDepth]pathStep
	depth := 0
	for lo, hi := int64(0), t; hi-lo > 1; depth++ {
		if depth == maxDepth {
			return fmt.Errorf("%w: a tree of %d", ErrBadProof, t)
		}
		k := split(hi - lo)
		if n < lo+k {
			steps[depth] = pathStep{node: [2]int64{lo, lo + k}, sibRight: true}
			hi = lo + k
		} else {
			steps[depth] = pathStep{node: [2]int64{lo + k, hi}}
			lo += k
		}
	}
	if depth != len(proof) {
		return fmt.Errorf("%w: %d hashes for a path of %d", ErrBadProof, len(proof), depth)
	}
	// proof[0] is the leaf's sibling: the sibling of steps[depth-1].
	sib := func(i int) tlog.Hash { return tlog.Hash(proof[depth-1-i]) }

	v.mu.Lock()
	defer v.mu.Unlock()
	if t != v.size || root != v.root {
		v.size, v.root, v.depth = t, root, 0
	}
	// shared: how far from the top this path is the remembered one, with
	// the same siblings; the node at shared-1 is then verified.
	shared := 0
	for shared < depth && shared < v.depth && steps[shared].node == v.path[shared].node {
		if sib(shared) != v.path[shared].sibH {
			return fmt.Errorf("%w: record %d", ErrBadProof, n)
		}
		shared++
	}
	var hs [maxDepth]tlog.Hash // the hash of each node of the path
	h := leaf
	for i := depth - 1; i >= shared; i-- {
		hs[i] = h
		if steps[i].sibRight {
			h = tlog.NodeHash(h, sib(i))
		} else {
			h = tlog.NodeHash(sib(i), h)
		}
	}
	// h is now the hash of the parent of steps[shared]: the root, or a
	// verified node of the remembered path.
	want := root
	if shared > 0 {
		want = v.path[shared-1].h
	}
	if h != want {
		return fmt.Errorf("%w: record %d", ErrBadProof, n)
	}
	for i := shared; i < depth; i++ {
		v.path[i] = verifiedAt{node: steps[i].node, h: hs[i], sibH: sib(i)}
	}
	v.depth = depth
	return nil
}

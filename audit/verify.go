package audit

import (
	"fmt"
	"slices"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/parleychat/parley/identity"
)

// Entry is one stored record: its index in the log, its bytes and, when
// the store has one, the leaf hash stored with it.
type Entry struct {
	Index int64
	Data  []byte
	Leaf  *tlog.Hash
	// Stored are the tree hashes stored with the record (its leaf hash
	// first), when the store keeps them; nil otherwise.
	Stored []tlog.Hash
}

// Problem is the first thing found wrong with a log. Index is the first
// bad record, or -1 when the fault is not in a record (a checkpoint).
type Problem struct {
	Index  int64
	Reason string
}

func (p *Problem) Error() string {
	if p.Index < 0 {
		return "audit: " + p.Reason
	}
	return fmt.Sprintf("audit: record %d: %s", p.Index, p.Reason)
}

// Result is what Verify checked.
type Result struct {
	Records     int64      // records covered by the newest checkpoint
	Checkpoints int        // signed checkpoints checked
	Newest      Checkpoint // the one the whole log matches
}

// Verify checks a log against its signed checkpoints: that every
// checkpoint is signed by the relay's key, that the records are there
// from index 0 on with none missing, that each parses and matches its
// stored leaf hash (when given), and that the tree they make has the root
// of every checkpoint. It returns the first problem as a *Problem.
//
// Where a record is named: a record changed, missing, moved or cut off
// is named exactly when its stored leaf hash was left alone; when the
// hashes were rewritten too, the first checkpoint that no longer matches
// bounds the first bad record, and the first record after the last
// checkpoint that still matches is named.
func Verify(relay identity.PublicKey, entries []Entry, checkpoints [][]byte) (Result, error) {
	if len(checkpoints) == 0 {
		if len(entries) == 0 {
			return Result{}, nil // an empty log: nothing recorded yet
		}
		return Result{}, &Problem{Index: -1, Reason: "no signed checkpoint"}
	}
	cps := make([]Checkpoint, 0, len(checkpoints))
	for _, signed := range checkpoints {
		c, err := Open(signed, relay)
		if err != nil {
			return Result{}, &Problem{Index: -1, Reason: err.Error()}
		}
		cps = append(cps, c)
	}
	slices.SortFunc(cps, func(a, b Checkpoint) int { return int(a.Size - b.Size) })
	newest := cps[len(cps)-1]
	// Every stored hash of the tree, from the records alone.
	hashes := make([]tlog.Hash, 0, tlog.StoredHashCount(int64(len(entries))))
	read := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x >= int64(len(hashes)) {
				return nil, fmt.Errorf("hash %d not computed yet", x)
			}
			out[i] = hashes[x]
		}
		return out, nil
	})
	// One pass in log order, so that the first problem found is at the
	// first bad record.
	for i, e := range entries {
		if e.Index != int64(i) {
			if e.Index > int64(i) {
				return Result{}, &Problem{Index: int64(i), Reason: "missing (the next stored record is " + fmt.Sprint(e.Index) + ")"}
			}
			return Result{}, &Problem{Index: e.Index, Reason: "stored twice or out of order"}
		}
		if int64(i) >= newest.Size {
			return Result{}, &Problem{Index: newest.Size, Reason: fmt.Sprintf("not covered by any signed checkpoint (the newest has %d records)", newest.Size)}
		}
		if _, err := ParseRecord(e.Data); err != nil {
			return Result{}, &Problem{Index: int64(i), Reason: err.Error()}
		}
		leaf := tlog.RecordHash(e.Data)
		if e.Leaf != nil && *e.Leaf != leaf {
			return Result{}, &Problem{Index: int64(i), Reason: "changed: its bytes do not match its stored hash"}
		}
		hs, err := tlog.StoredHashesForRecordHash(int64(i), leaf, read)
		if err != nil {
			return Result{}, &Problem{Index: int64(i), Reason: err.Error()}
		}
		if e.Stored != nil && !slices.Equal(e.Stored, hs) {
			return Result{}, &Problem{Index: int64(i), Reason: "the tree hashes stored with it are not the ones the records give"}
		}
		hashes = append(hashes, hs...)
	}
	if int64(len(entries)) < newest.Size {
		return Result{}, &Problem{Index: int64(len(entries)), Reason: fmt.Sprintf("missing: the log ends at %d records, the newest checkpoint has %d", len(entries), newest.Size)}
	}
	good := int64(0)
	for _, c := range cps {
		if c.Size == 0 {
			continue
		}
		root, err := tlog.TreeHash(c.Size, read)
		if err != nil {
			return Result{}, &Problem{Index: -1, Reason: err.Error()}
		}
		if root != c.Root {
			return Result{}, &Problem{Index: good, Reason: fmt.Sprintf("the records from here to %d do not match the signed checkpoint of size %d: one of them was changed, removed or moved", c.Size-1, c.Size)}
		}
		good = c.Size
	}
	return Result{Records: newest.Size, Checkpoints: len(cps), Newest: newest}, nil
}

// Checker checks a log against one signed checkpoint (the newest, when a
// relay starts), page by page in index order, keeping only the right edge
// of the tree in memory: every record's leaf hash is recomputed from its
// bytes and compared with the one stored, every tree hash stored with it
// with the one the records give, and the tree of the checkpoint's size is
// rebuilt to its root. Feed it with Add, then call Done.
//
// Unlike Verify it checks one checkpoint, not all of them: when the
// stored hashes were rewritten along with a record, Done knows only that
// the records below the checkpoint's size do not give its root, and names
// record 0 (Verify narrows that down with the older checkpoints).
type Checker struct {
	cp     Checkpoint
	any    bool // a checkpoint was given
	next   int64
	hashes map[int64]tlog.Hash // the stored hashes of the tree's right edge
}

// NewChecker checks against signed, a checkpoint signed by relay; nil
// signed is the empty log's (no record may then be added).
func NewChecker(relay identity.PublicKey, signed []byte) (*Checker, error) {
	c := &Checker{hashes: map[int64]tlog.Hash{}}
	if signed == nil {
		return c, nil
	}
	cp, err := Open(signed, relay)
	if err != nil {
		return nil, &Problem{Index: -1, Reason: "the newest checkpoint: " + err.Error()}
	}
	c.cp, c.any = cp, true
	return c, nil
}

// Size is the size of the checkpoint checked against.
func (c *Checker) Size() int64 { return c.cp.Size }

// Checked is how many records were checked so far.
func (c *Checker) Checked() int64 { return c.next }

func (c *Checker) read(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		h, ok := c.hashes[x]
		if !ok {
			return nil, fmt.Errorf("hash %d not computed", x)
		}
		out[i] = h
	}
	return out, nil
}

// Add checks the next records, which must follow those added before; the
// first problem is a *Problem.
func (c *Checker) Add(entries []Entry) error {
	for _, e := range entries {
		i := c.next
		switch {
		case e.Index > i:
			return &Problem{Index: i, Reason: "missing (the next stored record is " + fmt.Sprint(e.Index) + ")"}
		case e.Index < i:
			return &Problem{Index: e.Index, Reason: "stored twice or out of order"}
		case !c.any:
			return &Problem{Index: -1, Reason: "no signed checkpoint"}
		case i >= c.cp.Size:
			return &Problem{Index: i, Reason: fmt.Sprintf("not covered by the newest signed checkpoint (of %d records)", c.cp.Size)}
		}
		if _, err := ParseRecord(e.Data); err != nil {
			return &Problem{Index: i, Reason: err.Error()}
		}
		leaf := tlog.RecordHash(e.Data)
		if e.Leaf != nil && *e.Leaf != leaf {
			return &Problem{Index: i, Reason: "changed: its bytes do not match its stored hash"}
		}
		hs, err := tlog.StoredHashesForRecordHash(i, leaf, tlog.HashReaderFunc(c.read))
		if err != nil {
			return &Problem{Index: i, Reason: err.Error()}
		}
		if e.Stored != nil && !slices.Equal(e.Stored, hs) {
			return &Problem{Index: i, Reason: "the tree hashes stored with it are not the ones the records give"}
		}
		base := tlog.StoredHashIndex(0, i)
		for j, h := range hs {
			c.hashes[base+int64(j)] = h
		}
		c.next = i + 1
		// Keep the right edge of the tree of next records: all that the
		// next record and the root need.
		keep := frontier(c.next)
		if len(c.hashes) > len(keep) {
			kept := make(map[int64]tlog.Hash, len(keep)+8)
			for _, x := range keep {
				kept[x] = c.hashes[x]
			}
			c.hashes = kept
		}
	}
	return nil
}

// Done checks that the records added make the checkpoint's tree.
func (c *Checker) Done() (Result, error) {
	if !c.any {
		return Result{}, nil // an empty log
	}
	if c.next < c.cp.Size {
		return Result{}, &Problem{Index: c.next, Reason: fmt.Sprintf("missing: the log ends at %d records, the newest checkpoint has %d", c.next, c.cp.Size)}
	}
	if c.cp.Size > 0 {
		root, err := tlog.TreeHash(c.cp.Size, tlog.HashReaderFunc(c.read))
		if err != nil {
			return Result{}, &Problem{Index: -1, Reason: err.Error()}
		}
		if root != c.cp.Root {
			return Result{}, &Problem{Index: 0, Reason: fmt.Sprintf("the records from here to %d do not match the newest signed checkpoint, of size %d: one of them was changed, removed or moved", c.cp.Size-1, c.cp.Size)}
		}
	}
	return Result{Records: c.cp.Size, Checkpoints: 1, Newest: c.cp}, nil
}

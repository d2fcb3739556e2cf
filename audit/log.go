package audit

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/parleychat/parley/identity"
)

// StoredHash is one hash of the tree as tlog stores it: every leaf and
// every complete subtree, by tlog.StoredHashIndex.
type StoredHash struct {
	Index int64
	Hash  tlog.Hash
}

// Row is a record as the store keeps it: its index, its encoding and the
// hashes of the tree it completes, as tlog.StoredHashes gives them.
type Row struct {
	Index  int64
	Data   []byte
	Hashes []StoredHash
}

// Tx is a write transaction of the store that holds the log. Records go
// into the same transaction as the event they record, so a crash keeps
// both or neither. An append puts its records in one call, in order.
type Tx interface {
	ReadAuditHashes(indexes []int64) ([]tlog.Hash, error)
	PutAuditRecords(rows []Row) error
	PutCheckpoint(size int64, signed []byte) error
}

// Reader reads the stored log.
type Reader interface {
	ReadAuditHashes(indexes []int64) ([]tlog.Hash, error)
}

// Log appends records and signs checkpoints. One transaction at a time
// appends: Append locks the log until Commit or Abort, which the caller
// calls once its transaction is committed or rolled back.
type Log struct {
	signer signer
	origin string

	mu      sync.Mutex
	size    int64 // records committed
	pending int64 // records appended by the open transaction
	cache   *hashCache
	latest  []byte // the newest committed signed checkpoint
	sealed  []byte // the open transaction's
}

// NewLog opens the log of size records, whose newest signed checkpoint is
// latest (nil for an empty log), reading hashes through r.
func NewLog(key identity.PrivateKey, size int64, latest []byte, r Reader) (*Log, error) {
	sg, err := newSigner(key)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{signer: sg, origin: Origin(key.Public()), size: size, cache: newHashCache(1 << 16), latest: latest}
	if size > 0 {
		c, err := Open(latest, key.Public())
		if err != nil {
			return nil, fmt.Errorf("audit: the newest checkpoint: %w", err)
		}
		if c.Size != size {
			return nil, fmt.Errorf("audit: the log has %d records, its newest checkpoint %d", size, c.Size)
		}
		// The hashes the next appends need: the right edge of the tree.
		idx := frontier(size)
		hashes, err := r.ReadAuditHashes(idx)
		if err != nil {
			return nil, fmt.Errorf("audit: open log: %w", err)
		}
		for i, h := range hashes {
			l.cache.keep(idx[i], h)
		}
		root, err := tlog.TreeHash(size, l.reader(r))
		if err != nil {
			return nil, fmt.Errorf("audit: open log: %w", err)
		}
		if root != c.Root {
			return nil, fmt.Errorf("audit: the stored log does not match its newest checkpoint (run relay audit verify)")
		}
	}
	return l, nil
}

// frontier lists the stored hashes of the complete subtrees that make up
// a tree of n records: what appending and the tree hash read.
func frontier(n int64) []int64 {
	var idx []int64
	for level := 0; n>>level > 0; level++ {
		if (n>>level)&1 == 1 {
			idx = append(idx, tlog.StoredHashIndex(level, (n>>level)-1))
		}
	}
	return idx
}

// reader reads through the cache, then r.
func (l *Log) reader(r Reader) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		var miss []int64
		var at []int
		for i, x := range indexes {
			if h, ok := l.cache.get(x); ok {
				out[i] = h
				continue
			}
			miss = append(miss, x)
			at = append(at, i)
		}
		if len(miss) > 0 {
			hs, err := r.ReadAuditHashes(miss)
			if err != nil {
				return nil, err
			}
			if len(hs) != len(miss) {
				return nil, errors.New("audit: hash store returned the wrong number of hashes")
			}
			for j, h := range hs {
				out[at[j]] = h
			}
		}
		return out, nil
	})
}

// Append adds records to the log in tx and returns the index of the
// first. The log stays locked until Commit or Abort.
func (l *Log) Append(tx Tx, recs []*Record) (int64, error) {
	l.mu.Lock()
	first := l.size
	l.cache.startBatch()
	rows := make([]Row, 0, len(recs))
	// The rows go to tx at the end, in one call; a hash the cache lacks
	// is read from tx only once the rows before it are there.
	r := l.reader(readerFunc(func(idx []int64) ([]tlog.Hash, error) {
		if err := tx.PutAuditRecords(rows); err != nil {
			return nil, err
		}
		rows = rows[:0]
		return tx.ReadAuditHashes(idx)
	}))
	var arena []StoredHash // every record's stored hashes, in one array
	size := 0
	for _, rec := range recs {
		size += rec.encodedLen()
	}
	encoded := make([]byte, 0, size) // and every record's encoding
	for i, rec := range recs {
		at := len(encoded)
		var err error
		if encoded, err = rec.AppendBinary(encoded); err != nil {
			l.abortLocked()
			return 0, err
		}
		data := encoded[at:len(encoded):len(encoded)]
		n := first + int64(i)
		hashes, err := tlog.StoredHashes(n, data, r)
		if err != nil {
			l.abortLocked()
			return 0, fmt.Errorf("audit: append %d: %w", n, err)
		}
		if cap(arena)-len(arena) < len(hashes) {
			// About two hashes a record: tlog stores 2n-1 for n records.
			arena = make([]StoredHash, 0, max(2*(len(recs)-i), len(hashes)))
		}
		from := len(arena)
		base := tlog.StoredHashIndex(0, n)
		for j, h := range hashes {
			arena = append(arena, StoredHash{Index: base + int64(j), Hash: h})
			l.cache.add(base+int64(j), h)
		}
		rows = append(rows, Row{Index: n, Data: data, Hashes: arena[from:len(arena):len(arena)]})
	}
	if err := tx.PutAuditRecords(rows); err != nil {
		l.abortLocked()
		return 0, fmt.Errorf("audit: append %d to %d: %w", first, first+int64(len(recs))-1, err)
	}
	l.pending = int64(len(recs))
	return first, nil
}

// readerFunc is a Reader that is a function.
type readerFunc func(indexes []int64) ([]tlog.Hash, error)

func (f readerFunc) ReadAuditHashes(indexes []int64) ([]tlog.Hash, error) { return f(indexes) }

// Seal signs a checkpoint of the log with the open transaction's records
// and stores it in tx. It returns the signed checkpoint.
func (l *Log) Seal(tx Tx) ([]byte, error) {
	size := l.size + l.pending
	root, err := tlog.TreeHash(size, l.reader(tx))
	if err != nil {
		return nil, fmt.Errorf("audit: tree hash of %d: %w", size, err)
	}
	signed, err := l.signer.sign(Checkpoint{Origin: l.origin, Size: size, Root: root})
	if err != nil {
		return nil, err
	}
	if err := tx.PutCheckpoint(size, signed); err != nil {
		return nil, err
	}
	l.sealed = signed
	return signed, nil
}

// Commit records that the open transaction committed, and unlocks.
func (l *Log) Commit() {
	l.size += l.pending
	l.pending = 0
	if l.sealed != nil {
		l.latest, l.sealed = l.sealed, nil
	}
	l.mu.Unlock()
}

// Latest returns the newest committed signed checkpoint and its size.
func (l *Log) Latest() ([]byte, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.latest, l.size
}

// Abort records that the open transaction rolled back, and unlocks.
func (l *Log) Abort() { l.abortLocked() }

func (l *Log) abortLocked() {
	// Hashes stored for record l.size and later are gone with the
	// transaction; they all have indexes from record l.size's on.
	l.cache.dropFrom(tlog.StoredHashIndex(0, l.size))
	l.pending = 0
	l.sealed = nil
	l.mu.Unlock()
}

// Size is the number of committed records.
func (l *Log) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

// ProveRecord returns the inclusion proof of record n in the tree of size
// t, reading hashes through r.
func (l *Log) ProveRecord(t, n int64, r Reader) (tlog.RecordProof, error) {
	return tlog.ProveRecord(t, n, l.reader(r))
}

// ProveBatch returns the inclusion proofs of records first to t-1 in the
// tree of size t: the records of the last append, once committed. It is
// ProveRecord for each, in one pass down the tree: the proofs share most
// of their hashes, and each is looked up or computed once for all of them.
func (l *Log) ProveBatch(t, first int64, r Reader) ([]tlog.RecordProof, error) {
	if first < 0 || first > t {
		return nil, fmt.Errorf("audit: prove records %d to %d of a tree of %d", first, t-1, t)
	}
	p := batchProver{r: l.reader(r), cached: l.cache.get, memo: make(map[[2]int64]tlog.Hash), first: first, last: t}
	p.out = make([]tlog.RecordProof, t-first)
	// One array holds every proof: a path is at most depth hashes long.
	depth := bits.Len64(uint64(max(t-1, 0)))
	p.arena = make([]tlog.Hash, 0, int(t-first)*depth)
	if t > first {
		var path [64]tlog.Hash
		if err := p.prove(0, t, path[:0]); err != nil {
			return nil, fmt.Errorf("audit: prove records %d to %d of %d: %w", first, t-1, t, err)
		}
	}
	return p.out, nil
}

// batchProver computes the inclusion proofs of leaves first to last-1 as
// RFC 6962 defines them (and as tlog.ProveRecord returns them: the leaf's
// sibling first), remembering the hash of every subtree it computed.
type batchProver struct {
	r           tlog.HashReader
	cached      func(int64) (tlog.Hash, bool) // the log's hash cache: no allocation
	memo        map[[2]int64]tlog.Hash
	first, last int64
	out         []tlog.RecordProof // out[n-first] is leaf n's
	arena       []tlog.Hash        // the proofs' hashes
}

// prove makes the proofs of the leaves of subtree [lo, hi) that are
// wanted; path holds the siblings of the subtree's ancestors, from the
// top. Leaves are reached in order.
func (p *batchProver) prove(lo, hi int64, path []tlog.Hash) error {
	if hi-lo == 1 {
		at := len(p.arena)
		for i := len(path) - 1; i >= 0; i-- {
			p.arena = append(p.arena, path[i])
		}
		p.out[lo-p.first] = p.arena[at:len(p.arena):len(p.arena)]
		return nil
	}
	mid := lo + split(hi-lo)
	if p.first < mid { // wanted leaves on the left: the right is their sibling
		h, err := p.subtree(mid, hi)
		if err != nil {
			return err
		}
		if err := p.prove(lo, mid, append(path, h)); err != nil {
			return err
		}
	}
	if p.last > mid { // and on the right
		h, err := p.subtree(lo, mid)
		if err != nil {
			return err
		}
		if err := p.prove(mid, hi, append(path, h)); err != nil {
			return err
		}
	}
	return nil
}

// subtree returns the hash of the subtree of leaves [lo, hi): a stored
// hash when it is a complete aligned subtree, else its two halves hashed.
func (p *batchProver) subtree(lo, hi int64) (tlog.Hash, error) {
	size := hi - lo
	if size&(size-1) == 0 && lo%size == 0 {
		level := 0
		for 1<<level < size {
			level++
		}
		idx := tlog.StoredHashIndex(level, lo>>level)
		if h, ok := p.cached(idx); ok {
			return h, nil
		}
		hs, err := p.r.ReadHashes([]int64{idx})
		if err != nil {
			return tlog.Hash{}, err
		}
		return hs[0], nil
	}
	if h, ok := p.memo[[2]int64{lo, hi}]; ok {
		return h, nil
	}
	k := split(size)
	left, err := p.subtree(lo, lo+k)
	if err != nil {
		return tlog.Hash{}, err
	}
	right, err := p.subtree(lo+k, hi)
	if err != nil {
		return tlog.Hash{}, err
	}
	h := tlog.NodeHash(left, right)
	p.memo[[2]int64{lo, hi}] = h
	return h, nil
}

// split returns the largest power of two smaller than n (n > 1).
func split(n int64) int64 {
	k := int64(1)
	for k<<1 < n {
		k <<= 1
	}
	return k
}

// ProveTree returns the proof that the tree of size t contains the tree
// of size n.
func (l *Log) ProveTree(t, n int64, r Reader) (tlog.TreeProof, error) {
	return tlog.ProveTree(t, n, l.reader(r))
}

// hashCache keeps the hashes that appends, fresh receipts and the
// consistency proofs of recent checkpoints need, so that they rarely read
// the store: the newest hash of every level (the left siblings on the path
// of a fresh record, stored long ago at the higher levels), and a window
// of the most recently stored hashes. Stored hashes have consecutive
// indexes in the order they are stored, so the window is a slice.
type hashCache struct {
	mu     sync.Mutex
	base   int64       // the stored index of win[0]
	win    []tlog.Hash // consecutive stored hashes, the newest last
	max    int         // how many the window keeps, at least
	newest levels
	// before is newest as the last append started: the left siblings of
	// its records' paths, which its own hashes replace in newest.
	before levels
}

// levels holds one stored hash per level.
type levels [64]struct {
	set bool
	idx int64
	h   tlog.Hash
}

func (ls *levels) get(i int64) (tlog.Hash, bool) {
	level, _ := tlog.SplitStoredHashIndex(i)
	if n := &ls[level]; n.set && n.idx == i {
		return n.h, true
	}
	return tlog.Hash{}, false
}

func newHashCache(max int) *hashCache { return &hashCache{max: max} }

func (c *hashCache) get(i int64) (tlog.Hash, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if j := i - c.base; j >= 0 && j < int64(len(c.win)) {
		return c.win[j], true
	}
	if h, ok := c.newest.get(i); ok {
		return h, true
	}
	return c.before.get(i)
}

// startBatch notes that an append begins.
func (c *hashCache) startBatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.before = c.newest
}

// add keeps a hash the open append stored, the next in order.
func (c *hashCache) add(i int64, h tlog.Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i != c.base+int64(len(c.win)) {
		c.base, c.win = i, c.win[:0] // not next: start the window here
	}
	if len(c.win) >= 2*c.max {
		// Slide: keep the newest max, in the same array.
		n := copy(c.win, c.win[len(c.win)-c.max:])
		c.base += int64(len(c.win) - n)
		c.win = c.win[:n]
	}
	c.win = append(c.win, h)
	c.keepLocked(i, h)
}

// keep keeps h if it is the newest of its level.
func (c *hashCache) keep(i int64, h tlog.Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keepLocked(i, h)
}

func (c *hashCache) keepLocked(i int64, h tlog.Hash) {
	level, _ := tlog.SplitStoredHashIndex(i)
	if n := &c.newest[level]; !n.set || i > n.idx {
		n.set, n.idx, n.h = true, i, h
	}
}

// dropFrom forgets every hash stored at index from or later: those of a
// transaction that rolled back.
func (c *hashCache) dropFrom(from int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if j := from - c.base; j < int64(len(c.win)) {
		c.win = c.win[:max(j, 0)]
	}
	for l := range c.newest {
		if n := &c.newest[l]; n.set && n.idx >= from {
			*n = c.before[l] // the newest before the append, older than from
		}
	}
}

package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func key(t testing.TB, n byte) identity.PrivateKey {
	k, err := identity.PrivateKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// memTx is a store in memory.
type memTx struct {
	hashes      map[int64]tlog.Hash
	records     map[int64][]byte
	checkpoints map[int64][]byte
}

func newMem() *memTx {
	return &memTx{hashes: map[int64]tlog.Hash{}, records: map[int64][]byte{}, checkpoints: map[int64][]byte{}}
}

func (m *memTx) ReadAuditHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		h, ok := m.hashes[x]
		if !ok {
			return nil, fmt.Errorf("no hash %d", x)
		}
		out[i] = h
	}
	return out, nil
}

func (m *memTx) PutAuditRecords(rows []Row) error {
	for _, r := range rows {
		if _, ok := m.records[r.Index]; ok {
			return fmt.Errorf("record %d is there already", r.Index)
		}
		m.records[r.Index] = r.Data
		for _, h := range r.Hashes {
			m.hashes[h.Index] = h.Hash
		}
	}
	return nil
}

func (m *memTx) PutCheckpoint(size int64, signed []byte) error {
	m.checkpoints[size] = signed
	return nil
}

func (m *memTx) entries() []Entry {
	out := make([]Entry, len(m.records))
	for i := range out {
		leaf := m.hashes[tlog.StoredHashIndex(0, int64(i))]
		out[i] = Entry{Index: int64(i), Data: m.records[int64(i)], Leaf: &leaf}
	}
	return out
}

func (m *memTx) signed() [][]byte {
	var out [][]byte
	for _, c := range m.checkpoints {
		out = append(out, c)
	}
	return out
}

func sample(i int, k identity.PrivateKey) *Record {
	r := &Record{Kind: Kind(1 + i%7), Time: 1764137501000 + int64(i), PolicyVersion: uint64(i / 10), Identity: k.Public(),
		Message: protocol.ID{byte(i), byte(i >> 8)}, Size: uint32(100 + i), Path: Path(i % 3), Room: "room", Addr: "127.0.0.1:4433", Detail: fmt.Sprint("record ", i)}
	if r.Kind == KindRefuse || r.Kind == KindPublishRefused {
		r.Code = wire.CodeForbidden
	}
	return r
}

// buildLog appends n records in batches of random size, sealing each.
func buildLog(t testing.TB, n int, rng *rand.Rand) (*memTx, []int64) {
	var (
		mem   *memTx
		sizes []int64
	)
	commitBatches(t, rng, n, 30, func(_ *Log, m *memTx, _ int64, c Checkpoint) {
		mem, sizes = m, append(sizes, c.Size)
	})
	return mem, sizes
}

func TestRecordRoundTrip(t *testing.T) {
	k := key(t, 1)
	for i := range 14 {
		r := sample(i, k)
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := got.MarshalBinary()
		if !bytes.Equal(again, b) || got.View(int64(i)) != r.View(int64(i)) {
			t.Fatalf("record %d does not round-trip", i)
		}
	}
	if _, err := ParseRecord([]byte{2}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("version 2: %v", err)
	}
}

// TestRecordEncoding pins the record format of docs/audit.md: every
// relay's log and every client's receipt check depend on these bytes.
func TestRecordEncoding(t *testing.T) {
	k := key(t, 1)
	for _, c := range []struct {
		r    Record
		want string
	}{
		{Record{Kind: KindPublish, Time: 1764137501000, PolicyVersion: 7, Identity: k.Public(), Message: protocol.ID{1, 2, 3}, Size: 300, Path: PathRelay, Room: "general"},
			"0105" + "0000019abeca0148" + "0000000000000007" +
				"8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c" +
				"0102030000000000000000000000000000000000000000000000000000000000" +
				"0000012c" + "01" + "0000" + "0767656e6572616c" + "00" + "0000"},
		{Record{Kind: KindRefuse, Time: 1, PolicyVersion: 1 << 40, Code: wire.CodeForbidden, Addr: "[::1]:4433", Detail: "not on the allow list"},
			"0104" + "0000000000000001" + "0000010000000000" + strings.Repeat("00", 64) +
				"00000000" + "00" + "0005" + "00" + "0a5b3a3a315d3a34343333" + "0015" + "6e6f74206f6e2074686520616c6c6f77206c697374"},
	} {
		b, err := c.r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != c.want {
			t.Errorf("%v record:\n got %s\nwant %s", c.r.Kind, got, c.want)
		}
		pre := []byte("prefix")
		if b2, _ := c.r.AppendBinary(pre); !bytes.Equal(b2[len(pre):], b) || string(b2[:len(pre)]) != "prefix" {
			t.Errorf("%v record: AppendBinary differs from MarshalBinary", c.r.Kind)
		}
	}
}

// TestRecordLen: a record's length from its length fields, with what
// follows it ignored, and ErrMalformed for a record cut anywhere.
func TestRecordLen(t *testing.T) {
	k := key(t, 1)
	for i := range 14 {
		b, err := sample(i, k).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if n, err := RecordLen(append(b, "the next record"...)); err != nil || n != len(b) {
			t.Fatalf("record %d: RecordLen = %d, %v; want %d", i, n, err, len(b))
		}
		for cut := range len(b) {
			if _, err := RecordLen(b[:cut]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("record %d cut to %d of %d bytes: %v, want ErrMalformed", i, cut, len(b), err)
			}
		}
	}
}

func TestProofs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m, sizes := buildLog(t, 200, rng)
	k := key(t, 1)
	l, err := NewLog(k, 200, m.checkpoints[200], m)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range sizes {
		c, err := Open(m.checkpoints[size], k.Public())
		if err != nil || c.Size != size {
			t.Fatalf("checkpoint %d: %v", size, err)
		}
		n := rng.Int64N(size)
		p, err := l.ProveRecord(size, n, m)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, size, c.Root, n, tlog.RecordHash(m.records[n])); err != nil {
			t.Fatalf("inclusion of %d in %d: %v", n, size, err)
		}
		newest, _ := Open(m.checkpoints[200], k.Public())
		tp, err := l.ProveTree(200, size, m)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(tp, 200, newest.Root, size, c.Root); err != nil {
			t.Fatalf("consistency of %d with 200: %v", size, err)
		}
	}
	// A checkpoint signed by another key does not open.
	other, err := Sign(Checkpoint{Origin: Origin(k.Public()), Size: 1}, key(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(other, k.Public()); !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("checkpoint of another key: %v", err)
	}
}

// TestTamper changes the log 1,000 times, each time in one of the ways an
// operator could, and checks that Verify finds it and names the first bad
// record.
func TestTamper(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	m, sizes := buildLog(t, 300, rng)
	relay := key(t, 1).Public()
	clean := m.entries()
	if _, err := Verify(relay, clean, m.signed()); err != nil {
		t.Fatalf("the untouched log: %v", err)
	}
	batchStart := func(i int64) int64 {
		start := int64(0)
		for _, s := range sizes {
			if s > i {
				return start
			}
			start = s
		}
		return start
	}
	copyEntries := func() []Entry {
		out := make([]Entry, len(clean))
		for i, e := range clean {
			leaf := *e.Leaf
			out[i] = Entry{Index: e.Index, Data: bytes.Clone(e.Data), Leaf: &leaf}
		}
		return out
	}
	counts := map[string]int{}
	for round := range 1000 {
		es, cps := copyEntries(), m.signed()
		n := int64(len(es))
		var what string
		want := int64(-1) // the record Verify must name; -1: a checkpoint
		switch rng.IntN(6) {
		case 0:
			what = "byte changed"
			i := rng.Int64N(n)
			es[i].Data[rng.IntN(len(es[i].Data))] ^= byte(1 + rng.IntN(255))
			want = i
		case 1:
			what = "record deleted"
			i := rng.Int64N(n)
			es = append(es[:i], es[i+1:]...)
			want = i
		case 2:
			what = "two records swapped"
			i, j := rng.Int64N(n), rng.Int64N(n)
			for j == i || bytes.Equal(es[i].Data, es[j].Data) {
				j = rng.Int64N(n)
			}
			if rng.IntN(2) == 0 {
				es[i].Data, es[j].Data = es[j].Data, es[i].Data // contents swapped
			} else {
				es[i], es[j] = es[j], es[i] // rows swapped, indexes and all
			}
			want = min(i, j)
		case 3:
			what = "log truncated"
			k := rng.Int64N(n)
			es = es[:k]
			want = k
		case 4:
			what = "checkpoint replaced"
			forged, err := Sign(Checkpoint{Origin: Origin(relay), Size: n, Root: tlog.Hash{1}}, key(t, byte(2+rng.IntN(200))))
			if err != nil {
				t.Fatal(err)
			}
			cps = append(cps, forged)
		case 5:
			what = "byte and stored hash changed"
			i := rng.Int64N(n)
			es[i].Data[rng.IntN(len(es[i].Data))] ^= byte(1 + rng.IntN(255))
			leaf := tlog.RecordHash(es[i].Data)
			es[i].Leaf = &leaf
			// Named: the first record after the last checkpoint that still
			// matches, which is where i's batch starts (unless the change
			// made it unparsable: then i itself).
			wantRange := [2]int64{batchStart(i), i}
			_, err := Verify(relay, es, cps)
			var p *Problem
			if !errors.As(err, &p) || p.Index < wantRange[0] || p.Index > wantRange[1] {
				t.Fatalf("round %d (%s of record %d): %v, want a record in %v", round, what, i, err, wantRange)
			}
			counts[what]++
			continue
		}
		_, err := Verify(relay, es, cps)
		var p *Problem
		if !errors.As(err, &p) || p.Index != want {
			t.Fatalf("round %d (%s): %v, want record %d named", round, what, err, want)
		}
		counts[what]++
	}
	t.Logf("tamperings detected: %v", counts)
}

// countingReader counts the hashes read from the store.
type countingReader struct {
	m     *memTx
	reads int
}

func (c *countingReader) ReadAuditHashes(idx []int64) ([]tlog.Hash, error) {
	c.reads += len(idx)
	return c.m.ReadAuditHashes(idx)
}

// TestProveBatch: the proofs of a batch's records, made in one pass, are
// exactly tlog's, check against the batch's checkpoint, and come from the
// log's cache without reading the store.
func TestProveBatch(t *testing.T) {
	commitBatches(t, rand.New(rand.NewPCG(3, 4)), 700, 70, func(l *Log, m *memTx, first int64, c Checkpoint) {
		size := c.Size
		cr := &countingReader{m: m}
		proofs, err := l.ProveBatch(size, first, cr)
		if err != nil {
			t.Fatal(err)
		}
		if cr.reads != 0 {
			t.Errorf("batch %d..%d: %d hashes read from the store", first, size-1, cr.reads)
		}
		if len(proofs) != int(size-first) {
			t.Fatalf("%d proofs for %d records", len(proofs), size-first)
		}
		for j, p := range proofs {
			n := first + int64(j)
			want, err := tlog.ProveRecord(size, n, tlog.HashReaderFunc(m.ReadAuditHashes))
			if err != nil {
				t.Fatal(err)
			}
			if len(p) != len(want) {
				t.Fatalf("proof of %d in %d: %d hashes, tlog's %d", n, size, len(p), len(want))
			}
			for i := range p {
				if p[i] != want[i] {
					t.Fatalf("proof of %d in %d differs from tlog's at hash %d", n, size, i)
				}
			}
			if err := tlog.CheckRecord(p, size, c.Root, n, tlog.RecordHash(m.records[n])); err != nil {
				t.Fatalf("proof of %d in %d: %v", n, size, err)
			}
		}
	})
}

// commitBatches appends batches of up to maxBatch records until the log
// holds n, committing each with its checkpoint, and calls each with the
// first record of the batch and the batch's opened checkpoint.
func commitBatches(t testing.TB, rng *rand.Rand, n, maxBatch int, each func(l *Log, m *memTx, first int64, c Checkpoint)) {
	t.Helper()
	k := key(t, 1)
	m := newMem()
	l, err := NewLog(k, 0, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	for done := 0; done < n; {
		b := min(1+rng.IntN(maxBatch), n-done)
		recs := make([]*Record, b)
		for i := range recs {
			recs[i] = sample(done+i, k)
		}
		first, err := l.Append(m, recs)
		if err != nil {
			t.Fatal(err)
		}
		if first != int64(done) {
			t.Fatalf("batch starts at %d, want %d", first, done)
		}
		signed, err := l.Seal(m)
		if err != nil {
			t.Fatal(err)
		}
		l.Commit()
		done += b
		c, err := Open(signed, k.Public())
		if err != nil {
			t.Fatal(err)
		}
		each(l, m, first, c)
	}
}

func TestHashCacheWindow(t *testing.T) {
	c := newHashCache(4)
	h := func(i int64) tlog.Hash { return tlog.Hash{byte(i), byte(i >> 8)} }
	for i := int64(0); i < 20; i++ {
		c.add(i, h(i))
	}
	for i := int64(0); i < 20; i++ {
		got, ok := c.get(i)
		level, _ := tlog.SplitStoredHashIndex(i)
		newest := c.newest[level].idx == i
		if ok != (i >= 12 || newest) || ok && got != h(i) {
			t.Errorf("get(%d) = %v, %v", i, got, ok)
		}
	}
	// A rolled-back append's hashes are gone; the levels fall back.
	c.startBatch()
	for i := int64(20); i < 23; i++ {
		c.add(i, h(i))
	}
	c.dropFrom(20)
	for i := int64(20); i < 23; i++ {
		if _, ok := c.get(i); ok {
			t.Errorf("hash %d of a rolled-back append is still there", i)
		}
	}
	if _, ok := c.get(19); !ok {
		t.Error("hash 19 lost by the roll-back")
	}
}

// TestProofChecker: the checker accepts every proof tlog.CheckRecord
// accepts and refuses every one it refuses: the proofs of whole batches in
// random order, and each of them with one hash changed, or for the wrong
// record, while it remembers the paths it verified.
func TestProofChecker(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var v ProofChecker
	checked, refused := 0, 0
	commitBatches(t, rng, 600, 60, func(l *Log, m *memTx, first int64, c Checkpoint) {
		size := c.Size
		proofs, err := l.ProveBatch(size, first, m)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range rng.Perm(len(proofs)) {
			n := first + int64(j)
			leaf := tlog.RecordHash(m.records[n])
			if err := v.Check(proofs[j], size, c.Root, n, leaf); err != nil {
				t.Fatalf("record %d of %d: %v", n, size, err)
			}
			checked++
			// Tampered: one hash changed, or another record's leaf.
			if len(proofs[j]) > 0 {
				bad := append(tlog.RecordProof(nil), proofs[j]...)
				bad[rng.IntN(len(bad))][rng.IntN(32)] ^= 1 << rng.IntN(8)
				if v.Check(bad, size, c.Root, n, leaf) == nil {
					t.Fatalf("record %d of %d: a changed proof passed", n, size)
				}
				// As a receipt carries it.
				wire := make([][32]byte, len(bad))
				for i, h := range bad {
					wire[i] = h
				}
				if v.CheckHashes(wire, size, c.Root, n, leaf) == nil {
					t.Fatalf("record %d of %d: a changed proof passed CheckHashes", n, size)
				}
				for i, h := range proofs[j] {
					wire[i] = h
				}
				if err := v.CheckHashes(wire, size, c.Root, n, leaf); err != nil {
					t.Fatalf("record %d of %d: CheckHashes: %v", n, size, err)
				}
				if tlog.CheckRecord(bad, size, c.Root, n, leaf) == nil {
					t.Fatal("tlog accepts the changed proof")
				}
				refused++
			}
			if n > 0 {
				other := tlog.RecordHash(m.records[n-1])
				if v.Check(proofs[j], size, c.Root, n, other) == nil {
					t.Fatalf("record %d of %d: another record's hash passed", n, size)
				}
				refused++
			}
			if v.Check(proofs[j], size, c.Root, n, leaf) != nil {
				t.Fatalf("record %d of %d: refused after a refusal", n, size)
			}
		}
	})
	// A root that is not the tree's.
	if v.Check(nil, 1, tlog.Hash{1}, 0, tlog.Hash{2}) == nil {
		t.Fatal("a one-record tree with another root passed")
	}
	t.Logf("%d proofs checked, %d refused", checked, refused)
}

// TestOpenerAgreesWithNote: the Opener's precomputed-key check accepts
// and refuses what the standard signed-note verifier does, for every
// one-bit change of a signed checkpoint, except that it also refuses a
// signature line that is not canonical base64 (a change of the padding
// bits of its last character, which note.Open decodes to the same
// signature): this checkpoint has one such change.
func TestOpenerAgreesWithNote(t *testing.T) {
	k := key(t, 3)
	signed, err := Sign(Checkpoint{Origin: Origin(k.Public()), Size: 42, Root: tlog.Hash{1, 2, 3}}, k)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	std, err := verifier(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(signed); err != nil {
		t.Fatal(err)
	}
	lax := 0 // changes note.Open accepts only for its lax base64
	for i := range signed {
		for bit := range 8 {
			b := bytes.Clone(signed)
			b[i] ^= 1 << bit
			_, got := o.Open(b)
			n, want := note.Open(b, note.VerifierList(std))
			if want == nil {
				_, want = parseText(string(b[:bytes.Index(b, []byte("\n\n"))+1]))
			}
			if want == nil && !bytes.Equal(b, signed) {
				raw, _ := base64.StdEncoding.DecodeString(n.Sigs[0].Base64)
				if base64.StdEncoding.EncodeToString(raw) != n.Sigs[0].Base64 {
					want = errors.New("not canonical base64")
					lax++
				}
			}
			if (got == nil) != (want == nil) {
				t.Fatalf("byte %d bit %d: Opener says %v, note says %v", i, bit, got, want)
			}
		}
	}
	if lax == 0 {
		t.Error("no change of the signature's padding bits: the test no longer covers them")
	}
}

// BenchmarkProveBatch: the receipts' proofs of one commit of 340 records
// (the relay's batch under load) in a log of 200,000:
//
//	go test -run '^$' -bench ProveBatch ./audit
func BenchmarkProveBatch(b *testing.B) {
	const size, batch = 200_000, 340
	k := key(b, 1)
	m := newMem()
	l, err := NewLog(k, 0, nil, m)
	if err != nil {
		b.Fatal(err)
	}
	for n := 0; n < size; {
		// Commits of 1,000, then the batch proved.
		end := min(n+1000, size-batch)
		if n == size-batch {
			end = size
		}
		recs := make([]*Record, 0, end-n)
		for ; n < end; n++ {
			recs = append(recs, sample(n, k))
		}
		if _, err := l.Append(m, recs); err != nil {
			b.Fatal(err)
		}
		l.Commit()
	}
	if l.Size() != size {
		b.Fatalf("log of %d", l.Size())
	}
	b.ResetTimer()
	for range b.N {
		if _, err := l.ProveBatch(size, size-batch, m); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/batch, "ns/proof")
}

package audit

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

// recordTimeAt is the offset of a record's time: version, kind.
const recordTimeAt = 2

// TestRecordTimeExtremes: a record's time (Unix ms, u64 on disk, at most
// MaxInt64) at every extreme. A negative one is refused when a record is
// written (so the relay cannot log it) and the bytes of one are refused
// when read (so a tampered log holding one fails to verify); every other
// one round-trips and shows in View without a panic.
func TestRecordTimeExtremes(t *testing.T) {
	k := key(t, 1)
	for _, at := range []int64{math.MinInt64, math.MinInt64 + 1, -1, 0, 1, 1 << 58, math.MaxInt64 - 1, math.MaxInt64} {
		r := sample(0, k)
		r.Time = at
		b, err := r.MarshalBinary()
		if at < 0 {
			if err == nil {
				t.Errorf("time %d: encoded", at)
			}
			// The same bytes with the time written in: refused on reading.
			ok, err := sample(0, k).MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			binary.BigEndian.PutUint64(ok[recordTimeAt:], uint64(at))
			if _, err := ParseRecord(ok); !errors.Is(err, ErrMalformed) {
				t.Errorf("time %d written into a record: %v, want ErrMalformed", at, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("time %d: %v", at, err)
		}
		got, err := ParseRecord(b)
		if err != nil || got.Time != at {
			t.Fatalf("time %d: parsed %v, %v", at, got, err)
		}
		if v := got.View(0); v.Time == "" {
			t.Errorf("time %d: no time in the view", at)
		}
	}
}

// TestLogTimeExtremes: a log whose records carry the extreme times it
// accepts (0 and MaxInt64, in either order: times need not increase)
// seals and verifies; one that tries to append a negative time appends
// nothing, and the log still verifies.
func TestLogTimeExtremes(t *testing.T) {
	k := key(t, 1)
	m := newMem()
	l, err := NewLog(k, 0, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	times := []int64{math.MaxInt64, 0, math.MaxInt64 - 1, 1}
	recs := make([]*Record, len(times))
	for i, at := range times {
		recs[i] = sample(i, k)
		recs[i].Time = at
	}
	if _, err := l.Append(m, recs); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Seal(m); err != nil {
		t.Fatal(err)
	}
	l.Commit()
	bad := sample(9, k)
	bad.Time = math.MinInt64
	if _, err := l.Append(m, []*Record{bad}); err == nil {
		t.Fatal("a record at the smallest time was appended")
	} // Append aborted the batch itself
	if l.Size() != int64(len(times)) {
		t.Fatalf("log of %d records, want %d", l.Size(), len(times))
	}
	res, err := Verify(k.Public(), m.entries(), m.signed())
	if err != nil {
		t.Fatalf("the log with extreme times: %v", err)
	}
	t.Logf("verified: %+v", res)
}

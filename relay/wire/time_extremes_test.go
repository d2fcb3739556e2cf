package wire

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/parleychat/parley/protocol"
)

// extremes are the int64 values every time field is fed.
var extremes = []int64{math.MinInt64, math.MinInt64 + 1, -1, 0, 1, 1 << 58, math.MaxInt64 - 1, math.MaxInt64}

// TestAckTimeExtremes: an Ack's time and its receipt's (Unix ms, u64 on
// the wire, at most MaxInt64) at every extreme: a negative one is
// refused by the encoder and by the parser alike (it was encoded, then
// refused by the client), every other one round-trips unchanged; the u64
// values above MaxInt64 are refused by the parser.
func TestAckTimeExtremes(t *testing.T) {
	for _, at := range extremes {
		for _, inReceipt := range []bool{false, true} {
			a := &Ack{ID: protocol.ID{1}, Status: AckStored, Pos: 1, Time: 1}
			if inReceipt {
				a.Receipt = &Receipt{Index: 1, Time: at, Checkpoint: []byte("note\n")}
			} else {
				a.Time = at
			}
			b, err := a.MarshalBinary()
			if at < 0 {
				if err == nil {
					t.Errorf("time %d (receipt %v): encoded", at, inReceipt)
				}
				continue
			}
			if err != nil {
				t.Fatalf("time %d (receipt %v): %v", at, inReceipt, err)
			}
			got, err := ParseAck(b)
			switch {
			case err != nil:
				t.Errorf("time %d (receipt %v): parse: %v", at, inReceipt, err)
			case inReceipt && got.Receipt.Time != at, !inReceipt && got.Time != at:
				t.Errorf("time %d (receipt %v): parsed as %d, %v", at, inReceipt, got.Time, got.Receipt)
			}
		}
	}
	// The u64 on the wire: 2^63 and above are negative as int64.
	a, err := (&Ack{ID: protocol.ID{1}, Status: AckStored, Pos: 1, Time: 1, Receipt: &Receipt{Index: 1, Time: 1}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	const timeAt, receiptTimeAt = 32 + 1 + 8, 32 + 1 + 8 + 8 + 1 + 8
	for _, v := range []uint64{1 << 63, math.MaxUint64} {
		for _, off := range []int{timeAt, receiptTimeAt} {
			b := append([]byte(nil), a...)
			binary.BigEndian.PutUint64(b[off:], v)
			if _, err := ParseAck(b); err == nil {
				t.Errorf("a time of %d at offset %d: parsed", v, off)
			}
		}
	}
}

// TestFetchRangeTimeExtremes: FetchRange's Since and Until at the
// extremes: what the parser refuses (a negative Since, Until before
// Since) the encoder refuses too, and every other pair round-trips.
func TestFetchRangeTimeExtremes(t *testing.T) {
	for _, since := range extremes {
		for _, until := range extremes {
			m := &FetchRange{Room: "lobby", Since: since, Until: until, Limit: 1}
			ok := since >= 0 && until >= since
			b, err := m.MarshalBinary()
			if !ok {
				if err == nil {
					t.Errorf("since %d, until %d: encoded", since, until)
				}
				continue
			}
			if err != nil {
				t.Fatalf("since %d, until %d: %v", since, until, err)
			}
			got, err := ParseFetchRange(b)
			if err != nil || got.Since != since || got.Until != until {
				t.Errorf("since %d, until %d: parsed as %+v, %v", since, until, got, err)
			}
		}
	}
}

// TestInfoRetentionDaysExtremes: RetentionDays (u32) round-trips at its
// extremes.
func TestInfoRetentionDaysExtremes(t *testing.T) {
	for _, days := range []uint32{0, 1, 106752, math.MaxUint32} {
		b, err := (&Info{Versions: []uint8{1}, RetentionDays: days, Policy: PolicyOpen}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseInfo(b)
		if err != nil || got.RetentionDays != days {
			t.Errorf("%d days: parsed as %+v, %v", days, got, err)
		}
	}
}

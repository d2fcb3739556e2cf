package relay

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
)

// TestFrameWriterRoundTrip: frames of every size class, written with
// flushes here and there, read back as they were.
func TestFrameWriterRoundTrip(t *testing.T) {
	var out bytes.Buffer
	fw := newFrameWriter(&out)
	sizes := []int{0, 1, 300, writeBuffer - protocol.FrameHeaderSize, writeBuffer, 5000, 60000, 2, 4000, 4000}
	for i, n := range sizes {
		body := bytes.Repeat([]byte{byte(i + 1)}, n)
		if err := fw.raw(protocol.FrameEnvelope, body); err != nil {
			t.Fatal(err)
		}
		if i%3 == 2 {
			if err := fw.flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := fw.flush(); err != nil {
		t.Fatal(err)
	}
	fr := newFrameReader(&out, protocol.MaxFrameBody)
	for i, n := range sizes {
		ft, body, err := fr.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if ft != protocol.FrameEnvelope || !bytes.Equal(body, bytes.Repeat([]byte{byte(i + 1)}, n)) {
			t.Fatalf("frame %d: type %s, %d bytes, want %d bytes of %d", i, ft, len(body), n, i+1)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("%d bytes left over", out.Len())
	}
}

// failAfter takes n bytes, then fails every write.
type failAfter struct {
	n   int
	got bytes.Buffer
}

var errCut = errors.New("cut")

func (w *failAfter) Write(b []byte) (int, error) {
	if len(b) > w.n {
		w.got.Write(b[:w.n])
		k := w.n
		w.n = 0
		return k, errCut
	}
	w.n -= len(b)
	return w.got.Write(b)
}

// TestFrameWriterStopsAtError: once a write fails, inside a frame, the
// writer sends nothing more (a frame after the cut would be read as part
// of the cut one): every later call returns the first error.
func TestFrameWriterStopsAtError(t *testing.T) {
	w := &failAfter{n: 100}
	fw := newFrameWriter(w)
	if err := fw.raw(protocol.FrameEnvelope, make([]byte, 300)); err != nil {
		t.Fatal(err) // buffered
	}
	if err := fw.flush(); !errors.Is(err, errCut) {
		t.Fatalf("flush: %v, want the cut", err)
	}
	w.n = 1 << 20 // the writer would take more now
	if err := fw.raw(protocol.FrameError, []byte("late")); !errors.Is(err, errCut) {
		t.Fatalf("raw after the cut: %v", err)
	}
	if err := fw.flush(); !errors.Is(err, errCut) {
		t.Fatalf("flush after the cut: %v", err)
	}
	if w.got.Len() != 100 {
		t.Fatalf("%d bytes went out, want the 100 before the cut", w.got.Len())
	}
}

// TestParseEnvelopes: what a relay sends is checked in batches; a bad
// envelope stops it there, with the good ones before it kept.
func TestParseEnvelopes(t *testing.T) {
	a := &testkit.Author{Key: testkit.Key(t), Room: "r"}
	var raws [][]byte
	for i := range 6 {
		raw, _ := a.Next(t, fmt.Sprint(i))
		raws = append(raws, raw)
	}
	all, err := parseEnvelopes(raws)
	if err != nil || len(all) != 6 {
		t.Fatalf("good envelopes: %d, %v", len(all), err)
	}
	for i, e := range all {
		if e.ID != protocol.IDOf(raws[i]) || !bytes.Equal(e.Raw, raws[i]) {
			t.Fatalf("envelope %d comes back changed", i)
		}
	}
	forged := bytes.Clone(raws[2])
	forged[len(forged)-1] ^= 1
	got, err := parseEnvelopes([][]byte{raws[0], raws[1], forged, raws[3]})
	if len(got) != 2 || err == nil || !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("a forged third: %d kept, %v", len(got), err)
	}
	got, err = parseEnvelopes([][]byte{raws[0], {protocol.Version, 1}, raws[3]})
	if len(got) != 1 || !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("a broken second: %d kept, %v", len(got), err)
	}
}

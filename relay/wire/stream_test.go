package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// TestFrameWriterRoundTrip: frames of every size class, written with
// flushes here and there, read back as they were.
func TestFrameWriterRoundTrip(t *testing.T) {
	var out bytes.Buffer
	fw := NewWriter(&out)
	sizes := []int{0, 1, 300, writeBuffer - FrameHeaderSize, writeBuffer, 5000, 60000, 2, 4000, 4000}
	for i, n := range sizes {
		body := bytes.Repeat([]byte{byte(i + 1)}, n)
		if err := fw.Raw(FrameEnvelope, body); err != nil {
			t.Fatal(err)
		}
		if i%3 == 2 {
			if err := fw.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := fw.Flush(); err != nil {
		t.Fatal(err)
	}
	fr := NewReader(&out, MaxFrameBody)
	for i, n := range sizes {
		ft, body, err := fr.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if ft != FrameEnvelope || !bytes.Equal(body, bytes.Repeat([]byte{byte(i + 1)}, n)) {
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
	fw := NewWriter(w)
	if err := fw.Raw(FrameEnvelope, make([]byte, 300)); err != nil {
		t.Fatal(err) // buffered
	}
	if err := fw.Flush(); !errors.Is(err, errCut) {
		t.Fatalf("flush: %v, want the cut", err)
	}
	w.n = 1 << 20 // the writer would take more now
	if err := fw.Raw(FrameError, []byte("late")); !errors.Is(err, errCut) {
		t.Fatalf("raw after the cut: %v", err)
	}
	if err := fw.Flush(); !errors.Is(err, errCut) {
		t.Fatalf("flush after the cut: %v", err)
	}
	if w.got.Len() != 100 {
		t.Fatalf("%d bytes went out, want the 100 before the cut", w.got.Len())
	}
}

// stalled gives its bytes, then a timeout, as a stream whose read
// deadline passed.
type stalled struct{ r *bytes.Reader }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func (s stalled) Read(p []byte) (int, error) {
	if s.r.Len() == 0 {
		return 0, timeoutErr{}
	}
	return s.r.Read(p)
}

// TestReaderDoesNotAllocatePromisedBody: a header promising 60,000 bytes,
// then 10 of them and nothing more (issue 16, finding 4). The reader
// holds a buffer that grew with what came, not one of the size promised,
// and the stall is a timeout, which the relay answers as idle.
func TestReaderDoesNotAllocatePromisedBody(t *testing.T) {
	frame := AppendFrame(nil, FramePublish, make([]byte, 60_000))
	fr := NewReader(stalled{bytes.NewReader(frame[:FrameHeaderSize+10])}, MaxFrameBody)
	_, _, err := fr.Next()
	if re := AsRelayError(err); re.Code != CodeIdle {
		t.Fatalf("a stalled body: %v (%s), want a timeout", err, re.Code)
	}
	if cap(fr.buf) > bodyGrowth {
		t.Fatalf("the reader holds %d bytes for 10 received, more than %d", cap(fr.buf), bodyGrowth)
	}
	// A whole body still reads, however it arrives.
	fr = NewReader(bytes.NewReader(frame), MaxFrameBody)
	if _, body, err := fr.Next(); err != nil || len(body) != 60_000 {
		t.Fatalf("a whole 60,000-byte body: %d bytes, %v", len(body), err)
	}
	// And its buffer is not kept while the stream idles after it.
	if _, _, err := fr.Next(); !errors.Is(err, io.EOF) || cap(fr.buf) > keepBody {
		t.Fatalf("after a large frame: %v, holding %d bytes", err, cap(fr.buf))
	}
}

// TestProveTreeSizes: a ProveTree asking for an old size of 0, or one
// larger than new, does not parse (Error 1), as docs/relay-protocol.md
// says in both its tables.
func TestProveTreeSizes(t *testing.T) {
	for _, m := range []*ProveTree{{New: 9, Old: []uint64{0}}, {New: 9, Old: []uint64{3, 10}}} {
		// By hand: MarshalBinary refuses to write these.
		body := binary.BigEndian.AppendUint64(nil, m.New)
		body = append(body, byte(len(m.Old)))
		for _, o := range m.Old {
			body = binary.BigEndian.AppendUint64(body, o)
		}
		if _, err := ParseProveTree(body); !errors.Is(err, ErrBadFrame) || AsRelayError(err).Code != CodeBadFrame {
			t.Fatalf("ProveTree %+v: %v, want a bad frame", m, err)
		}
	}
	if _, err := ParseProveTree(mustMarshal(t, &ProveTree{New: 9, Old: []uint64{9, 1}})); err != nil {
		t.Fatalf("a good ProveTree: %v", err)
	}
}

func mustMarshal(t *testing.T, m interface{ MarshalBinary() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

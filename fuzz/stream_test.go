package fuzz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/parleychat/parley/relay/wire"
)

// The relay's frame stream reader (wire.Reader): the same bytes give the
// same frames and the same error whether they arrive in one piece or in
// chunks of any size, whatever the read buffer's size and when it
// changes (Resize); what they give is what the frame format says (a
// type byte, a 4-byte big-endian body length, the body); every frame read
// encodes back to the bytes it came from; and a frame that BufferedType
// says is waiting comes without a read of the stream.

// chunked is a stream that gives data a chunk at a time, of the sizes
// the input chooses, and counts the reads that reach it.
type chunked struct {
	data  []byte
	sizes []byte
	// eofWithData: the read that gives the last bytes returns io.EOF
	// with them, as io.Reader allows.
	eofWithData bool
	reads       int
}

func (c *chunked) Read(p []byte) (int, error) {
	c.reads++
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n = int(c.sizes[c.reads%len(c.sizes)])%64 + 1
	}
	n = copy(p, c.data[:min(n, len(c.data))])
	c.data = c.data[n:]
	if len(c.data) == 0 && c.eofWithData {
		return n, io.EOF
	}
	return n, nil
}

type streamFrame struct {
	t    wire.FrameType
	body []byte
}

// errorClass names the documented outcome of a read: a clean end, a cut
// frame, a frame over the limit, a frame of an unknown type.
func errorClass(t *testing.T, err error) string {
	t.Helper()
	switch {
	case err == nil:
		return "frame"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated"
	case errors.Is(err, wire.ErrFrameTooLarge):
		return "too large"
	case errors.Is(err, wire.ErrBadFrame):
		return "bad frame"
	}
	t.Fatalf("Next: error %v of no documented class", err)
	return ""
}

// referenceFrames reads data as the frame format states, with bodies
// up to limit bytes: the frames, then the class of what ends them.
func referenceFrames(data []byte, limit int) ([]streamFrame, string) {
	var out []streamFrame
	for {
		switch {
		case len(data) == 0:
			return out, "EOF"
		case len(data) < wire.FrameHeaderSize:
			return out, "truncated"
		}
		t := wire.FrameType(data[0])
		n := binary.BigEndian.Uint32(data[1:wire.FrameHeaderSize])
		switch {
		case !t.Known():
			return out, "bad frame"
		case n > wire.MaxFrameBody || n > uint32(limit):
			return out, "too large"
		case uint64(len(data)-wire.FrameHeaderSize) < uint64(n):
			return out, "truncated"
		}
		out = append(out, streamFrame{t, data[wire.FrameHeaderSize : wire.FrameHeaderSize+int(n)]})
		data = data[wire.FrameHeaderSize+int(n):]
	}
}

// readAll reads frames until an error; when stream is the chunked stream
// under fr, it checks BufferedType's promise, and resizes the reader's
// buffer to resizeSize after resizeAt frames.
func readAll(t *testing.T, fr *wire.Reader, stream *chunked, resizeAt, resizeSize int) ([]streamFrame, string) {
	var out []streamFrame
	for i := 0; ; i++ {
		if stream != nil && i == resizeAt {
			fr.Resize(stream, resizeSize)
		}
		waiting, whole := fr.BufferedType()
		var before int
		if stream != nil {
			before = stream.reads
		}
		ft, body, err := fr.Next()
		class := errorClass(t, err)
		// A frame BufferedType says is whole comes without a read; a
		// header it could not know to refuse (unknown type, over the
		// limit) may still be refused.
		if stream != nil && whole && (ft != waiting || stream.reads != before || class == "EOF" || class == "truncated") {
			t.Fatalf("frame %d: BufferedType said a whole %s frame waits; Next gave %s, %v after %d reads", i, waiting, ft, err, stream.reads-before)
		}
		if err != nil {
			return out, class
		}
		out = append(out, streamFrame{ft, bytes.Clone(body)})
		if i > 1<<20 {
			t.Fatal("over a million frames") // each frame takes 5 bytes at least: unreachable
		}
	}
}

func sameFrames(t *testing.T, what string, got, want []streamFrame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d frames, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i].t != want[i].t || !bytes.Equal(got[i].body, want[i].body) {
			t.Fatalf("%s: frame %d is %s %x, want %s %x", what, i, got[i].t, got[i].body, want[i].t, want[i].body)
		}
	}
}

// FuzzFrameStream: see above. The input is the stream's bytes (a frame
// with a body of big bytes, if big is not 0, then tail), the
// sizes of its chunks (1 to 64 bytes, in turn; none: one byte at a
// time), the read buffer's sizes before and after Resize and when it
// happens, and the body limit (0xffff: MaxFrameBody).
func FuzzFrameStream(f *testing.F) {
	for _, s := range frameStreamSeeds() {
		f.Add(uint16(0), s, []byte{}, byte(0), byte(0), byte(0), uint16(0xffff), false)
		f.Add(uint16(0), s, []byte{3, 17, 63, 0}, byte(5), byte(40), byte(1), uint16(100), true)
	}
	// A body over the kept buffer, then a small frame; then a body
	// promised and never sent.
	small := wire.AppendFrame(nil, wire.FramePublish, []byte{1})
	f.Add(uint16(9000), small, []byte{}, byte(0), byte(0), byte(0), uint16(0xffff), false)
	f.Add(uint16(9000), small, []byte{200, 7}, byte(3), byte(200), byte(1), uint16(0xffff), true)
	f.Add(uint16(5000), []byte{byte(wire.FramePublish), 0, 0, 0x13, 0x88}, []byte{}, byte(0), byte(0), byte(0), uint16(0xffff), false)
	f.Fuzz(func(t *testing.T, big uint16, tail, sizes []byte, bufSel, resizeSel, resizeAt byte, maxSel uint16, eofWithData bool) {
		// Large bodies come from big, not from the input's bytes: the
		// fuzzer minimizes every new input, at a cost that grows with
		// the square of its size (see FuzzKeyPackage).
		data := tail
		if big > 0 {
			data = append(wire.AppendFrame(nil, wire.FramePublish, bytes.Repeat([]byte{0xab}, int(big))), tail...)
		}
		limit := int(maxSel)
		if maxSel == 0xffff {
			limit = wire.MaxFrameBody
		}
		want, wantEnd := referenceFrames(data, limit)
		whole, wholeEnd := readAll(t, wire.NewReader(bytes.NewReader(data), limit), nil, -1, 0)
		sameFrames(t, "in one piece", whole, want)
		stream := &chunked{data: data, sizes: sizes, eofWithData: eofWithData}
		fr := wire.NewReaderSize(stream, limit, 16+int(bufSel)%256)
		pieces, piecesEnd := readAll(t, fr, stream, int(resizeAt)%8, 16+int(resizeSel)*64)
		sameFrames(t, "in chunks", pieces, want)
		if wholeEnd != wantEnd || piecesEnd != wantEnd {
			t.Fatalf("the stream ends with %q in one piece, %q in chunks; the format says %q", wholeEnd, piecesEnd, wantEnd)
		}
		var again []byte
		for _, x := range whole {
			again = wire.AppendFrame(again, x.t, x.body)
		}
		if !bytes.HasPrefix(data, again) || (wantEnd == "EOF") != (len(again) == len(data)) {
			t.Fatalf("the frames read encode to %x, not the start of the stream %x", again, data)
		}
	})
}

// frameStreamSeeds are streams of frames, whole and broken.
func frameStreamSeeds() [][]byte {
	var ok []byte
	ok = wire.AppendFrame(ok, wire.FramePublish, []byte("an envelope"))
	ok = wire.AppendFrame(ok, wire.FrameRooms, nil)
	ok = wire.AppendFrame(ok, wire.FrameError, []byte{0, 1, 0, 0})
	unknown := append(bytes.Clone(ok), 0, 0, 0, 0, 0)
	tooLarge := append(bytes.Clone(ok), byte(wire.FramePublish), 0xff, 0xff, 0xff, 0xff)
	return [][]byte{
		{}, ok, unknown, tooLarge,
		ok[:len(ok)-1], // a body cut
		ok[:3],         // a header cut
	}
}

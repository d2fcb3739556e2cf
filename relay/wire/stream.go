package wire

import (
	"bufio"
	"bytes"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Reader reads frames from one stream, reusing its buffer.
type Reader struct {
	r   *bufio.Reader
	buf []byte
	max int // body limit
	// A frame's body must arrive within bodyTime of its header, when
	// set (SetBodyTimeout) and the stream has read deadlines (dl).
	dl       readDeadliner
	bodyTime time.Duration
}

type readDeadliner interface{ SetReadDeadline(time.Time) error }

func NewReader(r io.Reader, max int) *Reader {
	// Small buffers: an idle subscription holds them for as long as it
	// lives, and a large body is read into a buffer that grows with it.
	return NewReaderSize(r, max, 2<<10)
}

// NewReaderSize is NewReader with a read buffer of size bytes,
// for a stream that is read a batch at a time.
func NewReaderSize(r io.Reader, max, size int) *Reader {
	dl, _ := r.(readDeadliner)
	return &Reader{r: bufio.NewReaderSize(r, size), max: max, dl: dl}
}

// SetBodyTimeout bounds the time from a frame's header to the end of its
// body, on a stream with read deadlines; between frames the stream may
// stay idle. A body that does not come in time is a timeout error
// (AsRelayError: CodeIdle).
func (fr *Reader) SetBodyTimeout(d time.Duration) { fr.bodyTime = d }

// bodyGrowth is the least a body's buffer grows by; keepBody the most
// kept from one frame to the next.
const (
	bodyGrowth = 4 << 10
	keepBody   = 8 << 10
)

// Next returns the next frame. Its body is valid until the next call. At a
// clean end of the stream it returns io.EOF.
//
// A header only promises a body: its buffer grows with what arrives, at
// most doubling, so a peer that sends a header and stalls holds 4 KiB,
// not the 64 KiB it promised, and the body timeout ends it.
func (fr *Reader) Next() (FrameType, []byte, error) {
	if cap(fr.buf) > keepBody {
		// A large body's buffer is not kept between frames: a stream
		// that sent one and idles holds keepBody at most.
		fr.buf = nil
	}
	var h [FrameHeaderSize]byte
	if _, err := io.ReadFull(fr.r, h[:]); err != nil {
		return 0, nil, err // io.EOF before a header: a clean end
	}
	t, n, err := ParseFrameHeader(h)
	if err != nil {
		return t, nil, err
	}
	if n > fr.max {
		return t, nil, fmt.Errorf("%w: %s frame of %d bytes, limit %d", ErrFrameTooLarge, t, n, fr.max)
	}
	if fr.dl != nil && fr.bodyTime > 0 && fr.r.Buffered() < n {
		fr.dl.SetReadDeadline(time.Now().Add(fr.bodyTime))
		defer fr.dl.SetReadDeadline(time.Time{})
	}
	body, err := fr.readBody(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return t, nil, err
	}
	return t, body, nil
}

// readBody reads a body of n bytes into the reader's buffer, growing it
// only as the bytes arrive.
func (fr *Reader) readBody(n int) ([]byte, error) {
	body := fr.buf[:0]
	for len(body) < n {
		if len(body) == cap(body) {
			grown := make([]byte, len(body), min(n, max(2*cap(body), bodyGrowth)))
			copy(grown, body)
			body = grown
			fr.buf = grown
		}
		k, err := fr.r.Read(body[len(body):min(n, cap(body))])
		body = body[:len(body)+k]
		if err != nil && len(body) < n {
			return nil, err
		}
	}
	return body, nil
}

// Resize gives the reader a read buffer of size bytes from now on, for a
// stream that turns out to be read a batch at a time (r is the stream it
// reads); what it has buffered already is read first, without reading
// the stream.
func (fr *Reader) Resize(r io.Reader, size int) {
	left := make([]byte, fr.r.Buffered())
	fr.r.Read(left)
	fr.r = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(left), r), size)
}

// Buffered reports whether a whole frame is waiting in the buffer, so that
// Next returns it without waiting for the network.
func (fr *Reader) Buffered() bool {
	_, ok := fr.BufferedType()
	return ok
}

// BufferedType returns the type of the next frame if the whole frame is
// waiting in the buffer.
func (fr *Reader) BufferedType() (FrameType, bool) {
	n := fr.r.Buffered()
	if n < FrameHeaderSize {
		return 0, false
	}
	h, _ := fr.r.Peek(FrameHeaderSize) // buffered: does not block
	return FrameType(h[0]), n-FrameHeaderSize >= int(binary.BigEndian.Uint32(h[1:]))
}

// Writer buffers frames for one stream; Flush sends them. Its buffer
// is taken from a pool when a frame is written and given back by Flush,
// so an idle stream (a subscription waiting for news) holds none.
type Writer struct {
	w   io.Writer
	buf *[]byte // nil when empty
	err error   // the first write error: a stream cut inside a frame takes no more
}

// frameBufs holds the frame writers' buffers. A buffer is sent when it
// passes writeBuffer bytes.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, writeBuffer+FrameHeaderSize+512); return &b }}

const writeBuffer = 4 << 10

// NewWriter returns a Writer of frames to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Raw writes a frame of type t with body.
func (fw *Writer) Raw(t FrameType, body []byte) error {
	if fw.err != nil {
		return fw.err
	}
	if fw.buf == nil {
		fw.buf = frameBufs.Get().(*[]byte)
	}
	b := AppendFrame(*fw.buf, t, nil)
	binary.BigEndian.PutUint32(b[len(b)-FrameHeaderSize+1:], uint32(len(body)))
	if len(b)+len(body) > writeBuffer {
		// Send what is buffered with this frame's header, then its body
		// from where it is.
		*fw.buf = b
		if err := fw.Flush(); err != nil {
			return err
		}
		_, fw.err = fw.w.Write(body)
		return fw.err
	}
	*fw.buf = append(b, body...)
	return nil
}

// Msg writes a frame of type t whose body is m's encoding.
func (fw *Writer) Msg(t FrameType, m encoding.BinaryMarshaler) error {
	body, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	return fw.Raw(t, body)
}

// WriteError writes an Error frame.
func (fw *Writer) WriteError(e *RelayError) error {
	body, err := MarshalErrorFrame(e)
	if err != nil {
		return err
	}
	return fw.Raw(FrameError, body)
}

// Flush sends the frames buffered.
func (fw *Writer) Flush() error {
	if fw.buf == nil || fw.err != nil {
		return fw.err
	}
	b := fw.buf
	fw.buf = nil
	_, fw.err = fw.w.Write(*b)
	*b = (*b)[:0]
	frameBufs.Put(b)
	return fw.err
}

// AsRelayError turns err into the RelayError that tells a client about it.
func AsRelayError(err error) *RelayError {
	var re *RelayError
	switch {
	case errors.As(err, &re):
		return re
	case errors.Is(err, ErrFrameTooLarge):
		return &RelayError{Code: CodeTooLarge, Message: err.Error()}
	case errors.Is(err, ErrBadFrame):
		return &RelayError{Code: CodeBadFrame, Message: err.Error()}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &RelayError{Code: CodeBadFrame, Message: "truncated frame"}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &RelayError{Code: CodeIdle, Message: "no request in time"}
	}
	return &RelayError{Code: CodeInternal, Message: "internal error"}
}

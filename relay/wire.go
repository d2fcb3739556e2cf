package relay

import (
	"bufio"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/parleychat/parley/protocol"
)

// frameReader reads frames from one stream, reusing its buffer.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
	max int // body limit
}

func newFrameReader(r io.Reader, max int) *frameReader {
	// Small buffers: an idle subscription holds them for as long as it
	// lives, and a large body is read straight into its own buffer.
	return newFrameReaderSize(r, max, 2<<10)
}

// newFrameReaderSize is newFrameReader with a read buffer of size bytes,
// for a stream that is read a batch at a time.
func newFrameReaderSize(r io.Reader, max, size int) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, size), max: max}
}

// next returns the next frame. Its body is valid until the next call. At a
// clean end of the stream it returns io.EOF.
func (fr *frameReader) next() (protocol.FrameType, []byte, error) {
	var h [protocol.FrameHeaderSize]byte
	if _, err := io.ReadFull(fr.r, h[:]); err != nil {
		return 0, nil, err // io.EOF before a header: a clean end
	}
	t, n, err := protocol.ParseFrameHeader(h)
	if err != nil {
		return t, nil, err
	}
	if n > fr.max {
		return t, nil, fmt.Errorf("%w: %s frame of %d bytes, limit %d", protocol.ErrFrameTooLarge, t, n, fr.max)
	}
	if cap(fr.buf) < n {
		fr.buf = make([]byte, n)
	}
	body := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return t, nil, err
	}
	return t, body, nil
}

// buffered reports whether a whole frame is waiting in the buffer, so that
// next returns it without waiting for the network.
func (fr *frameReader) buffered() bool {
	_, ok := fr.bufferedType()
	return ok
}

// bufferedType returns the type of the next frame if the whole frame is
// waiting in the buffer.
func (fr *frameReader) bufferedType() (protocol.FrameType, bool) {
	n := fr.r.Buffered()
	if n < protocol.FrameHeaderSize {
		return 0, false
	}
	h, _ := fr.r.Peek(protocol.FrameHeaderSize) // buffered: does not block
	return protocol.FrameType(h[0]), n-protocol.FrameHeaderSize >= int(binary.BigEndian.Uint32(h[1:]))
}

// frameWriter buffers frames for one stream; flush sends them. Its buffer
// is taken from a pool when a frame is written and given back by flush,
// so an idle stream (a subscription waiting for news) holds none.
type frameWriter struct {
	w   io.Writer
	buf *[]byte // nil when empty
	err error   // the first write error: a stream cut inside a frame takes no more
}

// frameBufs holds the frame writers' buffers. A buffer is sent when it
// passes writeBuffer bytes.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, writeBuffer+protocol.FrameHeaderSize+512); return &b }}

const writeBuffer = 4 << 10

func newFrameWriter(w io.Writer) *frameWriter { return &frameWriter{w: w} }

func (fw *frameWriter) raw(t protocol.FrameType, body []byte) error {
	if fw.err != nil {
		return fw.err
	}
	if fw.buf == nil {
		fw.buf = frameBufs.Get().(*[]byte)
	}
	b := protocol.AppendFrame(*fw.buf, t, nil)
	binary.BigEndian.PutUint32(b[len(b)-protocol.FrameHeaderSize+1:], uint32(len(body)))
	if len(b)+len(body) > writeBuffer {
		// Send what is buffered with this frame's header, then its body
		// from where it is.
		*fw.buf = b
		if err := fw.flush(); err != nil {
			return err
		}
		_, fw.err = fw.w.Write(body)
		return fw.err
	}
	*fw.buf = append(b, body...)
	return nil
}

func (fw *frameWriter) msg(t protocol.FrameType, m encoding.BinaryMarshaler) error {
	body, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	return fw.raw(t, body)
}

func (fw *frameWriter) error(e *protocol.RelayError) error {
	body, err := protocol.MarshalErrorFrame(e)
	if err != nil {
		return err
	}
	return fw.raw(protocol.FrameError, body)
}

func (fw *frameWriter) flush() error {
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

// asRelayError turns err into the RelayError that tells a client about it.
func asRelayError(err error) *protocol.RelayError {
	var re *protocol.RelayError
	switch {
	case errors.As(err, &re):
		return re
	case errors.Is(err, protocol.ErrFrameTooLarge):
		return &protocol.RelayError{Code: protocol.CodeTooLarge, Message: err.Error()}
	case errors.Is(err, protocol.ErrBadFrame):
		return &protocol.RelayError{Code: protocol.CodeBadFrame, Message: err.Error()}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &protocol.RelayError{Code: protocol.CodeBadFrame, Message: "truncated frame"}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &protocol.RelayError{Code: protocol.CodeIdle, Message: "no request in time"}
	}
	return &protocol.RelayError{Code: protocol.CodeInternal, Message: "internal error"}
}

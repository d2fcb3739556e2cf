package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"
)

// Over TCP, Stream.Context must notice that the other end ended or reset
// a stream nobody reads (a subscription: the relay only writes to it).
// Reading each such stream on a goroutine of its own until it fails would
// cost an idle subscription a goroutine. Instead, frameConn follows the
// yamux framing of what yamux reads from the connection, and tells the
// streams watched when a frame ends them. A frame with data for one of
// them hands that stream to a goroutine that reads and discards, as
// before: a client sends nothing after its first frame, so that goroutine
// only runs for one that misbehaves, and what it sends is not left to
// fill the stream's window in memory.
//
// The yamux framing (go-yamux's spec.md): a 12-byte header (version,
// type, flags, stream ID, length, the last three big-endian), followed,
// for a data frame only, by length bytes.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	yamuxFlagFIN    = 4
	yamuxFlagRST    = 8
)

// frameEvent is what a frame, or the connection, did to a watched stream.
type frameEvent uint8

const (
	eventData frameEvent = 1 << iota // data came: it must be read
	eventEnd                         // the stream or the connection ended
)

// frameHeader is the part of a yamux header a watch needs.
type frameHeader struct {
	stream uint32
	event  frameEvent
}

func parseHeader(h *[yamuxHeaderSize]byte) (hdr frameHeader, body uint32) {
	hdr.stream = binary.BigEndian.Uint32(h[4:8])
	length := binary.BigEndian.Uint32(h[8:12])
	if h[1] == yamuxTypeData {
		body = length
		if length > 0 {
			hdr.event |= eventData
		}
	}
	if binary.BigEndian.Uint16(h[2:4])&(yamuxFlagFIN|yamuxFlagRST) != 0 {
		hdr.event |= eventEnd
	}
	return hdr, body
}

// frameConn is the TLS connection as yamux reads it. yamux must read it
// without a buffer of its own (TCPOptions.yamux sets ReadBufSize to 0), so
// that what frameConn has passed on is what yamux has read.
type frameConn struct {
	net.Conn

	mu   sync.Mutex
	hdr  [yamuxHeaderSize]byte
	have int    // bytes of hdr read so far
	body uint32 // bytes of the current data frame still to come
	// last is the last frame whose header was read; while pending,
	// yamux may still be handling it, so that a stream watched from now
	// on would not see it in what yamux has handled. yamux handles one
	// frame at a time: its next read of a header means it is done.
	last    frameHeader
	pending bool
	// handled, if not nil, is closed when yamux is done with last.
	handled chan struct{}
	watched map[uint32]*streamWatch
	// ended: the connection's reads failed, or yamux closed it (which
	// it does whenever its session ends): every stream has ended.
	ended bool
}

// streamWatch is a watched stream's context.
type streamWatch struct {
	str    *tcpStream
	cancel context.CancelFunc
	// While the watch starts (watch), events are noted here, not acted on.
	starting bool
	noted    frameEvent
}

func (c *frameConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.have == 0 && c.body == 0 {
		c.done()
	}
	c.mu.Unlock()
	n, err := c.Conn.Read(b)
	var fire []fired
	c.mu.Lock()
	for p := b[:n]; len(p) > 0; {
		if c.body > 0 {
			k := min(uint32(len(p)), c.body)
			c.body -= k
			p = p[k:]
			continue
		}
		k := copy(c.hdr[c.have:], p)
		c.have += k
		p = p[k:]
		if c.have == yamuxHeaderSize {
			c.have = 0
			c.last, c.body = parseHeader(&c.hdr)
			c.pending = true
			fire = c.note(fire, c.last.stream, c.last.event)
		}
	}
	if err != nil {
		fire = c.end(fire)
	}
	c.mu.Unlock()
	for _, f := range fire {
		f.run()
	}
	return n, err
}

// Close ends every watch: yamux closes the connection whenever its
// session ends, also after a frame it refused, with no read failing.
func (c *frameConn) Close() error {
	c.mu.Lock()
	fire := c.end(nil)
	c.mu.Unlock()
	for _, f := range fire {
		f.run()
	}
	return c.Conn.Close()
}

// done records that yamux is done with the last frame. The caller holds
// c.mu.
func (c *frameConn) done() {
	c.pending = false
	if c.handled != nil {
		close(c.handled)
		c.handled = nil
	}
}

// end ends every watch, appending them to fire. The caller holds c.mu.
func (c *frameConn) end(fire []fired) []fired {
	if c.ended {
		return fire
	}
	c.ended = true
	c.done()
	for id := range c.watched {
		fire = c.note(fire, id, eventEnd)
	}
	return fire
}

// fired is an event to act on once c.mu is let go.
type fired struct {
	w     *streamWatch
	event frameEvent
}

func (f fired) run() {
	if f.event&eventData != 0 {
		go f.w.str.discard(f.w.cancel)
		return
	}
	f.w.cancel()
}

// note records event for stream, if watched: while its watch starts, for
// watch to act on; else the watch ends and the event is appended to fire.
// The caller holds c.mu.
func (c *frameConn) note(fire []fired, stream uint32, event frameEvent) []fired {
	w := c.watched[stream]
	if w == nil || event == 0 {
		return fire
	}
	if w.starting {
		w.noted |= event
		return fire
	}
	delete(c.watched, stream)
	return append(fire, fired{w, event})
}

// watch returns a context that ends when the other end ends or resets
// str, or the connection ends; what comes on str meanwhile is read and
// discarded. Nothing else may read str.
func (c *frameConn) watch(str *tcpStream) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	id := str.StreamID()
	w := &streamWatch{str: str, cancel: cancel, starting: true}
	c.mu.Lock()
	// A data frame of str that yamux may not have handled yet: wait
	// until it has, so that the poll below finds its data if it is
	// unread. (The relay watches a stream right after reading its first
	// frame, while yamux may still be on the way back from handing it
	// over.)
	for !c.ended && c.pending && c.last.stream == id && c.last.event&eventData != 0 {
		if c.handled == nil {
			c.handled = make(chan struct{})
		}
		handled := c.handled
		c.mu.Unlock()
		<-handled
		c.mu.Lock()
	}
	if c.ended {
		c.mu.Unlock()
		cancel()
		return ctx
	}
	if c.watched == nil {
		c.watched = map[uint32]*streamWatch{}
	}
	c.watched[id] = w
	if c.pending && c.last.stream == id {
		w.noted |= c.last.event // an end: data was waited for above
	}
	c.mu.Unlock()
	// What yamux handled before the watch began: data waiting, or the
	// stream's end.
	noted := str.poll()
	c.mu.Lock()
	w.starting = false
	noted |= w.noted
	if noted != 0 && c.watched[id] == w {
		delete(c.watched, id)
	}
	c.mu.Unlock()
	if noted != 0 {
		fired{w, noted}.run()
	}
	return ctx
}

// unwatch ends str's watch, if any: this end is done with the stream.
func (c *frameConn) unwatch(str *tcpStream) {
	c.mu.Lock()
	w := c.watched[str.StreamID()]
	switch {
	case w == nil || w.str != str:
		w = nil
	case w.starting:
		w.noted |= eventEnd // watch ends it
		w = nil
	default:
		delete(c.watched, str.StreamID())
	}
	c.mu.Unlock()
	if w != nil {
		w.cancel()
	}
}

// poll reads what the stream holds without waiting: eventData if
// anything, eventEnd if the stream has ended, 0 if neither.
func (s *tcpStream) poll() frameEvent {
	s.Stream.SetReadDeadline(time.Now())
	defer s.Stream.SetReadDeadline(time.Time{})
	var b [1]byte
	n, err := s.Stream.Read(b[:])
	var ne net.Error
	switch {
	case n > 0:
		return eventData
	case err == nil || (errors.As(err, &ne) && ne.Timeout()):
		return 0
	}
	return eventEnd
}

// discard reads the stream until it ends, then calls done.
func (s *tcpStream) discard(done context.CancelFunc) {
	defer done()
	var b [512]byte
	for {
		if _, err := s.Stream.Read(b[:]); err != nil {
			return
		}
	}
}

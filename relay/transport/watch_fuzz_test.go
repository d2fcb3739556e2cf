package transport

import (
	"context"
	"net"
	"testing"
)

// FuzzFrameConn: frameConn follows yamux's framing from bytes a client
// controls. Whatever the bytes and however the reads split them, it ends
// the watch of exactly the streams whose frames end them (as a parse of
// the whole stream at once finds), ends no other, and is at the same
// place in the framing at the end (the header bytes begun, the body
// bytes still to come).
func FuzzFrameConn(f *testing.F) {
	f.Add(append(yamuxHeader(yamuxTypeData, 0, 7, 12), yamuxHeader(1, yamuxFlagRST, 5, 0)...), []byte{1, 2, 3})
	f.Add(append(yamuxHeader(1, yamuxFlagFIN, 3, 0), yamuxHeader(2, 0, 0, 42)...), []byte{12, 1})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, data, splits []byte) {
		ends, named, have, body := referenceFraming(data)
		c := &frameConn{Conn: &chunked{data: data, splits: splits}, watched: map[uint32]*streamWatch{}}
		ctxs := map[uint32]context.Context{}
		watch := func(id uint32) {
			ctx, cancel := context.WithCancel(context.Background())
			c.watched[id] = &streamWatch{cancel: cancel}
			ctxs[id] = ctx
		}
		for id := range ends {
			watch(id)
		}
		never := uint32(0) // a stream no frame names
		for named[never] {
			never++
		}
		watch(never)
		buf := make([]byte, 64)
		for read := 0; read < len(data); {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			read += n
		}
		for id, ctx := range ctxs {
			if want := id != never; (ctx.Err() != nil) != want {
				t.Fatalf("stream %d: ended %v, want %v", id, ctx.Err() != nil, want)
			}
		}
		if c.have != have || c.body != body {
			t.Fatalf("at header byte %d with %d body bytes to come, want %d and %d", c.have, c.body, have, body)
		}
	})
}

// referenceFraming parses a whole byte stream as yamux frames: the
// streams whose first frame with an event only ends them (a watch of one
// with data first hands it to a reader instead), every stream a header
// names, and where the bytes stop in the framing.
func referenceFraming(data []byte) (ends, named map[uint32]bool, have int, body uint32) {
	ends, named = map[uint32]bool{}, map[uint32]bool{}
	seen := map[uint32]bool{}
	for len(data) > 0 {
		if len(data) < yamuxHeaderSize {
			return onlyTrue(ends), named, len(data), 0
		}
		var h [yamuxHeaderSize]byte
		copy(h[:], data)
		data = data[yamuxHeaderSize:]
		hdr, n := parseHeader(&h)
		named[hdr.stream] = true
		if hdr.event != 0 && !seen[hdr.stream] {
			seen[hdr.stream] = true
			ends[hdr.stream] = hdr.event == eventEnd
		}
		if uint64(n) > uint64(len(data)) {
			return onlyTrue(ends), named, 0, n - uint32(len(data))
		}
		data = data[n:]
	}
	return onlyTrue(ends), named, 0, 0
}

func onlyTrue(m map[uint32]bool) map[uint32]bool {
	for k, v := range m {
		if !v {
			delete(m, k)
		}
	}
	return m
}

// chunked returns data in reads of the sizes splits gives (1 to 64
// bytes each, cycling), and never io.EOF: the test stops reading first.
type chunked struct {
	net.Conn
	data   []byte
	splits []byte
	i      int
}

func (c *chunked) Read(b []byte) (int, error) {
	size := len(b)
	if len(c.splits) > 0 {
		size = int(c.splits[c.i%len(c.splits)])%64 + 1
		c.i++
	}
	n := copy(b[:min(size, len(b))], c.data)
	c.data = c.data[n:]
	return n, nil
}

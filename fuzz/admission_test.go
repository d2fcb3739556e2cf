package fuzz

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
)

// FuzzAdmission: the relay's admission frame over TCP (the first frame
// after the TLS handshake). Whatever the bytes, the client reads the
// frame and not a byte more (yamux starts right after it), and ends with
// one of: admitted, exactly when the bytes begin with an OK frame; the
// relay's refusal, whose frame re-encodes to the bytes read; not an
// admission (ErrHandshake); or a short read.
func FuzzAdmission(f *testing.F) {
	for _, e := range []*wire.RelayError{{Code: wire.CodeOK}, {Code: wire.CodeBanned, Message: "spam"}, {Code: wire.CodeNotAllowed, Message: "not on the allow list"}} {
		body, err := wire.MarshalErrorFrame(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append(wire.AppendFrame(nil, wire.FrameError, body), 0, 0, 0, 1)) // yamux's first bytes after it
	}
	f.Add([]byte{})
	f.Add(wire.AppendFrame(nil, wire.FrameInfo, []byte{1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		err := transport.ReadAdmission(r)
		read := b[:len(b)-r.Len()]
		var re *wire.RelayError
		switch {
		case err == nil:
			ok, _ := wire.MarshalErrorFrame(&wire.RelayError{Code: wire.CodeOK})
			if want := wire.AppendFrame(nil, wire.FrameError, ok); !bytes.Equal(read, want) {
				t.Fatalf("admitted after reading %x, want exactly %x", read, want)
			}
		case errors.As(err, &re):
			if re.Code == wire.CodeOK {
				t.Fatal("a refusal with code OK")
			}
			body, merr := wire.MarshalErrorFrame(re)
			if merr != nil {
				t.Fatalf("the refusal %v does not encode: %v", re, merr)
			}
			if want := wire.AppendFrame(nil, wire.FrameError, body); !bytes.Equal(read, want) {
				t.Fatalf("refused after reading %x, which is not the refusal's frame %x", read, want)
			}
		case errors.Is(err, transport.ErrHandshake):
			if len(read) > 5+2+2+wire.MaxErrorMessage {
				t.Fatalf("read %d bytes for a frame it refused", len(read))
			}
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			if len(read) != len(b) {
				t.Fatalf("a short read with %d bytes left", r.Len())
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}

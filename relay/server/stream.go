package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
)

// A stream: its first frame says what it is for (a publish stream, a
// subscription, a request), and serveStream hands it to that.

// deadlineWriter sets a write deadline before each write.
type deadlineWriter struct {
	str     transport.Stream
	timeout time.Duration
}

func (w deadlineWriter) Write(b []byte) (int, error) {
	w.str.SetWriteDeadline(time.Now().Add(w.timeout))
	n, err := w.str.Write(b)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		err = &wire.RelayError{Code: wire.CodeSlowConsumer, Message: "the client did not read for " + w.timeout.String()}
	}
	return n, err
}

// truncate makes msg fit an error frame: printable, at most
// wire.MaxErrorMessage bytes.
func truncate(msg string) string {
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, msg)
	if len(msg) > wire.MaxErrorMessage {
		msg = msg[:wire.MaxErrorMessage-3]
		for len(msg) > 0 && !utf8ValidEnd(msg) {
			msg = msg[:len(msg)-1]
		}
		msg += "..."
	}
	return msg
}

func utf8ValidEnd(s string) bool { return strings.ToValidUTF8(s, "\x00") == s }

// endStream ends a stream with an error: an Error frame, then the
// stream's close, and both directions reset with the code.
func (s *Server) endStream(c *client, str transport.Stream, fw *wire.Writer, e *wire.RelayError) {
	s.metrics.dropped.WithLabelValues(e.Code.String()).Inc()
	c.log.Debug("stream ended", "code", e.Code.String(), "reason", e.Message)
	e = &wire.RelayError{Code: e.Code, Message: truncate(e.Message)}
	str.SetWriteDeadline(time.Now().Add(s.lim().WriteTimeout.Duration))
	if fw.WriteError(e) == nil && fw.Flush() == nil {
		str.Close()
	} else {
		str.CancelWrite(e.Code)
	}
	str.CancelRead(e.Code)
}

// serveStream reads a stream's first frame and serves what it asks.
func (s *Server) serveStream(ctx context.Context, c *client, str transport.Stream) {
	fr := wire.NewReader(str, wire.MaxFrameBody)
	// Every frame's body gets the handshake timeout once its header has
	// come: a stream may idle between frames, never inside one.
	fr.SetBodyTimeout(s.lim().HandshakeTimeout.Duration)
	// Every write gets the write timeout: a client that stops reading
	// holds a stream for that long, never longer.
	fw := wire.NewWriter(deadlineWriter{str, s.lim().WriteTimeout.Duration})
	t, body, ok := s.firstFrame(ctx, c, str, fr, fw)
	if !ok {
		return
	}
	switch t {
	case wire.FramePublish:
		s.publishStream(ctx, c, str, fr, fw, body)
	case wire.FrameSubscribe:
		s.subscribeStream(ctx, c, str, fw, body) // ends the stream itself
	default:
		s.endRequest(ctx, c, str, fw, s.request(ctx, c, fw, t, body))
	}
}

// firstFrame reads the frame that says what a stream is for, and checks
// that the client may ask it. If not, or if there is none, it has ended
// the stream.
func (s *Server) firstFrame(ctx context.Context, c *client, str transport.Stream, fr *wire.Reader, fw *wire.Writer) (wire.FrameType, []byte, bool) {
	// A client gets the handshake timeout to say what the stream is for,
	// and no longer once the relay shuts down.
	str.SetReadDeadline(time.Now().Add(s.lim().HandshakeTimeout.Duration))
	stopWait := context.AfterFunc(ctx, func() { str.CancelRead(wire.CodeShuttingDown) })
	t, body, err := fr.Next()
	if !stopWait() {
		return 0, nil, false // shutting down: the connection closes with the code
	}
	if errors.Is(err, io.EOF) || (err != nil && isStreamEnd(err) && !errors.Is(err, io.ErrUnexpectedEOF)) {
		str.CancelRead(wire.CodeOK)
		str.Close() // an empty stream: nothing asked, nothing to say
		return 0, nil, false
	}
	if err != nil {
		s.endStream(c, str, fw, wire.AsRelayError(err))
		return 0, nil, false
	}
	str.SetReadDeadline(time.Time{})
	if !c.admitted.Load() && t != wire.FrameRedeem && t != wire.FrameInfoRequest {
		// The operator may have allowed the identity since it connected.
		if d := s.policy.Connect(c.id); d.Allow {
			c.admitted.Store(true)
		} else {
			s.endStream(c, str, fw, d.Err().(*wire.RelayError))
			return 0, nil, false
		}
	}
	return t, body, true
}

// request serves a stream that is neither a publish stream nor a
// subscription.
func (s *Server) request(ctx context.Context, c *client, fw *wire.Writer, t wire.FrameType, body []byte) error {
	switch t {
	case wire.FrameFetchRange:
		return s.fetchRange(ctx, c, fw, body)
	case wire.FrameFetchIDs:
		return s.fetchIDs(ctx, c, fw, body)
	case wire.FramePeersRequest:
		return s.peers(c, fw, body)
	case wire.FrameInfoRequest:
		return s.info(fw, body)
	case wire.FrameRedeem:
		return s.redeem(ctx, c, fw, body)
	case wire.FrameProveTree:
		return s.proveTree(fw, body)
	case wire.FramePutKeys:
		return s.putKeys(ctx, c, fw, body)
	case wire.FrameGetKeys:
		return s.getKeys(ctx, c, fw, body)
	case wire.FrameRoomsRequest:
		return s.privateRoomsOf(ctx, c, fw, body)
	}
	return &wire.RelayError{Code: wire.CodeBadFrame, Message: fmt.Sprintf("a stream cannot start with a %s frame", t)}
}

// endRequest ends a request's stream: with the error it ended in, if
// any, else with what is still buffered and the stream's close.
func (s *Server) endRequest(ctx context.Context, c *client, str transport.Stream, fw *wire.Writer, rerr error) {
	if rerr != nil && ctx.Err() == nil && (errors.Is(rerr, context.Canceled) || isStreamEnd(rerr)) {
		// The client went away (a subscription it ended, a reset).
		str.CancelRead(wire.CodeOK)
		str.CancelWrite(wire.CodeOK)
		return
	}
	if rerr != nil {
		if ctx.Err() != nil {
			rerr = &wire.RelayError{Code: wire.CodeShuttingDown, Message: "the relay is shutting down"}
		}
		s.endStream(c, str, fw, wire.AsRelayError(rerr))
		return
	}
	str.SetWriteDeadline(time.Now().Add(s.lim().WriteTimeout.Duration))
	if err := fw.Flush(); err != nil {
		str.CancelWrite(wire.CodeSlowConsumer)
	} else {
		str.Close()
	}
	str.CancelRead(wire.CodeOK)
}

// isStreamEnd reports whether err is the client ending or resetting the
// stream, or the relay stopping reads at shutdown: no error to report.
func isStreamEnd(err error) bool {
	return transport.IsStreamEnd(err)
}

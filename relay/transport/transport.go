// Package transport carries the relay protocol's streams between a client
// and a relay, over QUIC or over TCP with TLS 1.3 and yamux. Both
// transports authenticate both ends the same way (the TLS configurations
// of package relay: Ed25519 certificates, the relay's key pinned, the
// protocol's ALPN) and give the same thing to the code above: a Conn of
// bidirectional Streams, closed with a wire.ErrorCode.
//
// QUIC is the first choice: no head-of-line blocking between streams,
// connection migration, 1-RTT handshakes. TCP is for the networks that
// block UDP, which are exactly those where a relay matters most; yamux
// multiplexes its streams, as it does for libp2p.
//
// What differs, and how this package hides it:
//   - A refusal's reason. QUIC closes a connection with a code and a
//     text. Over TCP the relay writes one frame after the TLS handshake,
//     before the multiplexer starts: an Error frame with CodeOK when it
//     admits the client, or its refusal's code and reason (Accepted,
//     Close). A connection closed later carries only the code (yamux's
//     GoAway has no text).
//   - A reset. QUIC resets each direction of a stream on its own; yamux
//     resets the stream. Every caller here resets both directions
//     together, so CancelWrite resetting the stream loses nothing.
//   - Noticing that the other end ended a stream nobody reads
//     (Stream.Context): QUIC tells it by STOP_SENDING; over TCP a small
//     reader waits for the reset.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/parleychat/parley/relay/wire"
)

// Kind is a transport.
type Kind uint8

const (
	QUIC Kind = iota + 1
	TCP
)

func (k Kind) String() string {
	switch k {
	case QUIC:
		return "quic"
	case TCP:
		return "tcp"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// ParseKind parses "quic" or "tcp"; anything else is zero.
func ParseKind(s string) Kind {
	switch s {
	case "quic":
		return QUIC
	case "tcp":
		return TCP
	}
	return 0
}

// Conn is one authenticated connection between a client and a relay.
type Conn interface {
	// OpenStream opens a stream, waiting within ctx while the other
	// end allows no more.
	OpenStream(ctx context.Context) (Stream, error)
	// AcceptStream waits for the next stream the other end opens.
	AcceptStream(ctx context.Context) (Stream, error)
	// Close ends the connection, telling the other end code and, where
	// the transport carries it, reason.
	Close(code wire.ErrorCode, reason string) error
	// Context ends when the connection does; context.Cause says why.
	Context() context.Context
	RemoteAddr() net.Addr
	// TLS is the handshake's outcome: the peer's certificate, the ALPN.
	TLS() tls.ConnectionState
	// Stats are the connection's round-trip time and a count that grows
	// whenever anything arrives, for telling a live connection from a
	// silent one.
	Stats() Stats
	Kind() Kind
}

// Stats describe a connection.
type Stats struct {
	// RTT is the smoothed round-trip time: QUIC's, from its
	// acknowledgements (RFC 9002); yamux's, from its pings (zero until
	// the first one is answered).
	RTT time.Duration
	// Received grows whenever something arrives: packets over QUIC,
	// reads from the TLS connection over TCP.
	Received uint64
}

// Stream is a bidirectional stream of a Conn.
type Stream interface {
	io.Reader
	io.Writer
	// Close ends the write side cleanly; the other end reads io.EOF
	// after what was written.
	Close() error
	// CancelRead stops reading: what arrives from now on is dropped.
	CancelRead(code wire.ErrorCode)
	// CancelWrite abandons the write side with code. Over TCP it resets
	// the whole stream.
	CancelWrite(code wire.ErrorCode)
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	// Context ends once the other end has ended or reset the stream,
	// or stopped reading it, or the connection ended. Over TCP, it
	// reads the stream to notice, discarding what comes: call it only
	// on a stream that is no longer read otherwise.
	Context() context.Context
}

// ErrHandshake: the TLS handshake failed, or the other end does not speak
// the relay protocol: no dialling again will help.
var ErrHandshake = errors.New("transport: handshake failed")

// RemoteError turns the error with which the other end closed a
// connection or reset a stream into a *wire.RelayError with its code, and
// returns other errors as they are.
func RemoteError(err error) error {
	if err == nil {
		return nil
	}
	if re := quicRemote(err); re != nil {
		return re
	}
	if re := yamuxRemote(err); re != nil {
		return re
	}
	return err
}

// IsStreamEnd reports whether err is the other end ending or resetting a
// stream or its connection, or this end closing it: no error to report.
func IsStreamEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isQUICEnd(err) || isYamuxEnd(err)
}

package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"github.com/parleychat/parley/relay/wire"
	"github.com/quic-go/quic-go"
)

// FromQUIC makes a QUIC connection a Conn.
func FromQUIC(c *quic.Conn) Conn { return quicConn{c} }

type quicConn struct{ c *quic.Conn }

func (q quicConn) OpenStream(ctx context.Context) (Stream, error) {
	s, err := q.c.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{s}, nil
}

func (q quicConn) AcceptStream(ctx context.Context) (Stream, error) {
	s, err := q.c.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{s}, nil
}

func (q quicConn) Close(code wire.ErrorCode, reason string) error {
	return q.c.CloseWithError(quic.ApplicationErrorCode(code), reason)
}

func (q quicConn) Context() context.Context { return q.c.Context() }
func (q quicConn) RemoteAddr() net.Addr     { return q.c.RemoteAddr() }
func (q quicConn) TLS() tls.ConnectionState { return q.c.ConnectionState().TLS }
func (q quicConn) Kind() Kind               { return QUIC }

func (q quicConn) Stats() Stats {
	s := q.c.ConnectionStats()
	return Stats{RTT: s.SmoothedRTT, Received: s.PacketsReceived}
}

type quicStream struct{ *quic.Stream }

func (s quicStream) CancelRead(code wire.ErrorCode) {
	s.Stream.CancelRead(quic.StreamErrorCode(code))
}

func (s quicStream) CancelWrite(code wire.ErrorCode) {
	s.Stream.CancelWrite(quic.StreamErrorCode(code))
}

// Context: a QUIC stream's context ends when its write side does, which
// the other end's STOP_SENDING does too.

func quicRemote(err error) *wire.RelayError {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote {
		return &wire.RelayError{Code: wire.ErrorCode(ae.ErrorCode), Message: ae.ErrorMessage}
	}
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		return &wire.RelayError{Code: wire.ErrorCode(se.ErrorCode)}
	}
	return nil
}

func isQUICEnd(err error) bool {
	var se *quic.StreamError
	var ae *quic.ApplicationError
	return errors.As(err, &se) || errors.As(err, &ae)
}

// IsHandshakeError reports whether err is a failed TLS handshake, over
// either transport: a wrong key, a bad certificate, another protocol.
func IsHandshakeError(err error) bool {
	if errors.Is(err, ErrHandshake) {
		return true
	}
	var te *quic.TransportError
	return errors.As(err, &te) && te.ErrorCode.IsCryptoError()
}

// NoCommonVersion reports whether err is a handshake the server failed
// because the client offered none of its protocols (TLS alert 120,
// no_application_protocol), over either transport: a relay that speaks
// other relay protocol versions than the client, and is too old to say
// which (a relay of this code completes the handshake to say it).
func NoCommonVersion(err error) bool {
	var te *quic.TransportError
	if errors.As(err, &te) {
		return te.Remote && te.ErrorCode == quic.TransportErrorCode(0x100+alertNoApplicationProtocol)
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error" && oe.Err != nil && oe.Err.Error() == "tls: no application protocol"
}

// alertNoApplicationProtocol is TLS alert 120 (RFC 7301); QUIC carries a
// TLS alert as the transport error 0x100 plus the alert (RFC 9001).
const alertNoApplicationProtocol = 120

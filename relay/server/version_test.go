package server

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
)

// dialOffering connects to r over via offering the ALPNs protos, and
// returns the relay's refusal, or nil once admitted.
func dialOffering(t *testing.T, r *testRelay, via transport.Kind, protos []string) error {
	t.Helper()
	conf := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: protos, Certificates: []tls.Certificate{selfSigned(t)}}
	ctx := ctxT(t)
	if via == transport.TCP {
		conn, err := transport.DialTCP(ctx, r.srv.TCPAddr().String(), conf, transport.TCPOptions{})
		if err != nil {
			return err
		}
		defer conn.Close(wire.CodeOK, "")
		return askInfo(ctx, conn)
	}
	qc, err := quic.DialAddr(ctx, r.addr.HostPort, conf, &quic.Config{})
	if err != nil {
		t.Fatalf("QUIC handshake offering %q: %v", protos, err)
	}
	conn := transport.FromQUIC(qc)
	defer conn.Close(wire.CodeOK, "")
	return askInfo(ctx, conn)
}

// askInfo asks for the relay's Info: an admitted connection gets it, a
// refused one the refusal.
func askInfo(ctx context.Context, conn transport.Conn) error {
	str, err := conn.OpenStream(ctx)
	if err != nil {
		return transport.RemoteError(err)
	}
	if _, err := str.Write(wire.AppendFrame(nil, wire.FrameInfoRequest, nil)); err != nil {
		return transport.RemoteError(err)
	}
	str.Close()
	typ, _, err := wire.NewReader(str, wire.MaxFrameBody).Next()
	if err != nil {
		return transport.RemoteError(err)
	}
	if typ != wire.FrameInfo {
		return errors.New("the relay answered " + typ.String())
	}
	return nil
}

// TestNewerClientRefusedByVersion: a client that speaks only a relay
// protocol version newer than the relay's completes the handshake and is
// refused with a text that names both versions, over QUIC and TCP; one
// that offers the relay's version beside a newer one is served.
func TestNewerClientRefusedByVersion(t *testing.T) {
	r := startRelay(t, nil)
	newer := wire.ALPN(wire.Current.Max + 1)
	for _, via := range []transport.Kind{transport.QUIC, transport.TCP} {
		err := dialOffering(t, r, via, []string{newer})
		var re *wire.RelayError
		if !errors.As(err, &re) || re.Code != wire.CodeUnsupported {
			t.Fatalf("%s, offering %s: %v, want a refusal with code unsupported", via, newer, err)
		}
		for _, want := range []string{newer[len("parley-relay/"):], wire.Current.String(), "upgrade the relay"} {
			if !strings.Contains(re.Message, want) {
				t.Errorf("%s: the refusal %q does not say %q", via, re.Message, want)
			}
		}
		if err := dialOffering(t, r, via, []string{newer, wire.ALPN(wire.Current.Max)}); err != nil {
			t.Errorf("%s, offering %s and %s: %v", via, newer, wire.ALPN(wire.Current.Max), err)
		}
	}
}

// TestOlderClientRefusedByVersion: a relay that speaks only versions
// newer than this client's refuses it, over either transport, with a
// text that names both and tells the client to upgrade; chat's relay
// client takes it as a refusal, not as a relay to dial again.
func TestOlderClientRefusedByVersion(t *testing.T) {
	newer := wire.Versions{Min: wire.Current.Max + 1, Max: wire.Current.Max + 2}
	r := startRelayAt(t, t.TempDir()+"/relay.db", testkit.Key(t), nil, func(s *Server) { s.versions = newer })
	for _, via := range []relay.Via{relay.ViaQUIC, relay.ViaTCP, relay.ViaAuto} {
		ctx := ctxT(t)
		c, err := relay.Dial(ctx, r.addr, testkit.Key(t), relay.ClientOptions{Via: via})
		if err == nil {
			c.Close()
			t.Fatalf("%s: a relay of %s admitted a client of %s", via, newer, wire.Current)
		}
		var re *wire.RelayError
		if !errors.As(err, &re) || re.Code != wire.CodeUnsupported {
			t.Fatalf("%s: %v, want a refusal with code unsupported", via, err)
		}
		for _, want := range []string{"version " + itoa(wire.Current.Max), newer.String(), "upgrade the client"} {
			if !strings.Contains(re.Message, want) {
				t.Errorf("%s: the refusal %q does not say %q", via, re.Message, want)
			}
		}
	}
}

func itoa(v int) string { return strings.TrimPrefix(wire.ALPN(v), "parley-relay/") }

package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
)

// oldRelay listens on QUIC and TCP like a relay that speaks only the
// relay protocol version v and, as relays did before versions were
// negotiated, fails the handshake of a client that offers no version it
// speaks (TLS alert no_application_protocol) instead of naming its own.
func oldRelay(t *testing.T, v int) Addr {
	t.Helper()
	key := testkit.Key(t)
	conf, err := ServerTLS(key)
	if err != nil {
		t.Fatal(err)
	}
	conf.GetConfigForClient = nil
	conf.NextProtos = []string{wire.ALPN(v)}
	ql, err := quic.ListenAddr("127.0.0.1:0", conf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := tls.Listen("tcp", ql.Addr().String(), conf)
	if err != nil {
		ql.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			c, err := ql.Accept(ctx)
			if err != nil {
				return
			}
			c.CloseWithError(0, "")
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).HandshakeContext(ctx)
			c.Close()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ql.Close()
		tl.Close()
		<-done
		<-done
	})
	return AddrOf(key.Public(), ql.Addr().String())
}

// TestOldRelayNoVersionInCommon: a relay too old to name its version
// fails the handshake; the client says that it speaks none of the
// client's versions, names the client's, and does not dial again.
func TestOldRelayNoVersionInCommon(t *testing.T) {
	addr := oldRelay(t, wire.Current.Max+1)
	for _, via := range []Via{ViaQUIC, ViaTCP, ViaAuto} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := Dial(ctx, addr, testkit.Key(t), ClientOptions{Via: via})
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("%s: connected", via)
		}
		if !errors.Is(err, ErrVersion) {
			t.Fatalf("%s: %v, want ErrVersion", via, err)
		}
		if !strings.Contains(err.Error(), wire.Current.String()) {
			t.Errorf("%s: %q does not name the client's %s", via, err, wire.Current)
		}
		if retryable(err) || !permanent(err) {
			t.Errorf("%s: %v is taken as worth dialling again", via, err)
		}
	}
}

// TestVersionNegotiated: a relay that speaks this client's version and a
// newer one answers with the newest both speak.
func TestVersionNegotiated(t *testing.T) {
	key := testkit.Key(t)
	both := wire.Versions{Min: wire.Current.Max, Max: wire.Current.Max + 1}
	for _, tc := range []struct {
		client wire.Versions
		want   string
	}{
		{wire.Current, wire.ALPN(wire.Current.Max)},
		{both, wire.ALPN(both.Max)},
	} {
		got := handshakeALPN(t, key, both, tc.client)
		if got != tc.want {
			t.Errorf("client %s, relay %s: negotiated %q, want %q", tc.client, both, got, tc.want)
		}
	}
}

// handshakeALPN runs one TLS handshake over a pipe between a relay of
// server versions and a client of client versions.
func handshakeALPN(t *testing.T, key identity.PrivateKey, server, client wire.Versions) string {
	t.Helper()
	sconf, err := ServerTLSVersions(key, server)
	if err != nil {
		t.Fatal(err)
	}
	cconf, err := clientTLSVersions(testkit.Key(t), AddrOf(key.Public(), "pipe:1"), client)
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, sconf)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	cl := tls.Client(b, cconf)
	if err := cl.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return cl.ConnectionState().NegotiatedProtocol
}

// TestEnvelopeVersionInInfo: a relay whose Info does not list the
// envelope version this client writes is a version error that says
// which side to upgrade.
func TestEnvelopeVersionInInfo(t *testing.T) {
	v := byte(protocol.Version)
	for _, tc := range []struct {
		versions []byte
		ok       bool
		upgrade  string
	}{
		{[]byte{v}, true, ""},
		{[]byte{v, v + 1}, true, ""},
		{[]byte{v + 1, v + 2}, false, "upgrade the client"},
		{[]byte{v - 1}, false, "upgrade the relay"},
	} {
		err := acceptsOurs(&wire.Info{Versions: tc.versions})
		if tc.ok {
			if err != nil {
				t.Errorf("versions %v: %v", tc.versions, err)
			}
			continue
		}
		if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), tc.upgrade) || !permanent(err) {
			t.Errorf("versions %v: %v, want ErrVersion saying %q", tc.versions, err, tc.upgrade)
		}
	}
}

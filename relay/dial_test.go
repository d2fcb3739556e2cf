package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
)

// fakeConn is a transport.Conn that only knows whether it was closed.
type fakeConn struct {
	transport.Conn
	kind   transport.Kind
	closed atomic.Bool
}

func (f *fakeConn) Kind() transport.Kind { return f.kind }
func (f *fakeConn) Close(wire.ErrorCode, string) error {
	f.closed.Store(true)
	return nil
}

// dialerOf returns a dialer that waits for release (or its context), then
// returns conn or err, and reports on started when it starts.
func dialerOf(conn *fakeConn, err error, release <-chan struct{}, started chan<- transport.Kind) dialer {
	return func(ctx context.Context) (transport.Conn, error) {
		started <- conn.kind
		select {
		case <-release:
		case <-ctx.Done():
			if conn != nil && err == nil {
				// A connection made as the race was lost.
				return conn, nil
			}
			return nil, ctx.Err()
		}
		if err != nil {
			return nil, err
		}
		return conn, nil
	}
}

func TestRaceFirstWins(t *testing.T) {
	q, tc := &fakeConn{kind: transport.QUIC}, &fakeConn{kind: transport.TCP}
	started := make(chan transport.Kind, 2)
	now := make(chan struct{})
	close(now)
	never := make(chan struct{})
	conn, err := race(context.Background(), dialerOf(q, nil, now, started), dialerOf(tc, nil, never, started), time.Hour)
	if err != nil || conn != q {
		t.Fatalf("race: %v, %v; want the first", conn, err)
	}
	if k := <-started; k != transport.QUIC {
		t.Fatalf("started %s first", k)
	}
	select {
	case k := <-started:
		t.Fatalf("%s started though the first connected within its head start", k)
	default:
	}
}

func TestRaceSecondAfterHeadStart(t *testing.T) {
	q, tc := &fakeConn{kind: transport.QUIC}, &fakeConn{kind: transport.TCP}
	started := make(chan transport.Kind, 2)
	now := make(chan struct{})
	close(now)
	never := make(chan struct{}) // UDP dropped: QUIC never answers
	conn, err := race(context.Background(), dialerOf(q, nil, never, started), dialerOf(tc, nil, now, started), time.Millisecond)
	if err != nil || conn != tc {
		t.Fatalf("race: %v, %v; want the second", conn, err)
	}
	// The first attempt was cancelled; the connection it made as it
	// lost is closed.
	deadline := time.After(30 * time.Second)
	for !q.closed.Load() {
		select {
		case <-deadline:
			t.Fatal("the losing attempt's connection was not closed")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if tc.closed.Load() {
		t.Fatal("the winner was closed")
	}
}

func TestRaceSecondAtOnceWhenFirstFails(t *testing.T) {
	tc := &fakeConn{kind: transport.TCP}
	started := make(chan transport.Kind, 2)
	now := make(chan struct{})
	close(now)
	refused := errors.New("port unreachable")
	// A head start of an hour: the second starts because the first failed.
	conn, err := race(context.Background(), dialerOf(&fakeConn{kind: transport.QUIC}, refused, now, started), dialerOf(tc, nil, now, started), time.Hour)
	if err != nil || conn != tc {
		t.Fatalf("race: %v, %v; want the second", conn, err)
	}
}

func TestRaceBothFail(t *testing.T) {
	started := make(chan transport.Kind, 4) // two races
	now := make(chan struct{})
	close(now)
	e1, e2 := errors.New("over QUIC: timeout"), errors.New("over TCP: connection refused")
	_, err := race(context.Background(), dialerOf(&fakeConn{kind: transport.QUIC}, e1, now, started), dialerOf(&fakeConn{kind: transport.TCP}, e2, now, started), time.Hour)
	if !errors.Is(err, e1) || !errors.Is(err, e2) {
		t.Fatalf("both failed: %v, want both errors", err)
	}
	// A refusal by the relay is the answer: it would refuse the other
	// way too.
	banned := &wire.RelayError{Code: wire.CodeBanned, Message: "spam"}
	_, err = race(context.Background(), dialerOf(&fakeConn{kind: transport.QUIC}, e1, now, started), dialerOf(&fakeConn{kind: transport.TCP}, banned, now, started), time.Hour)
	if err != banned {
		t.Fatalf("refused over TCP: %v, want the refusal alone", err)
	}
}

func TestParseVia(t *testing.T) {
	for in, want := range map[string]Via{"": ViaAuto, "auto": ViaAuto, "quic": ViaQUIC, "tcp": ViaTCP} {
		if got, err := ParseVia(in); err != nil || got != want {
			t.Errorf("ParseVia(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseVia("udp"); !errors.Is(err, ErrBadVia) {
		t.Errorf("ParseVia(udp): %v, want ErrBadVia", err)
	}
}

// TestDialTCPWrongServer: a server that is not a relay (no client
// certificate wanted, another ALPN) fails the handshake for good.
func TestDialTCPWrongServer(t *testing.T) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert(t)}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	key := testkit.Key(t)
	conf, err := clientTLS(key, AddrOf(key.Public(), ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = transport.DialTCP(ctx, ln.Addr().String(), conf, transport.TCPOptions{})
	if !transport.IsHandshakeError(err) && !errors.Is(err, ErrWrongRelay) {
		t.Fatalf("dial of an HTTPS server: %v, want a handshake error", err)
	}
	if retryable(err) {
		t.Fatalf("%v is retryable", err)
	}
}

// serverCert is a certificate of a fresh key, as an HTTPS server has.
func serverCert(t testing.TB) tls.Certificate {
	cert, err := certificate(testkit.Key(t))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

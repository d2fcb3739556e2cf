package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestTCPSamePort: by default the relay listens on TCP on the port
// number QUIC has, so one address names both.
func TestTCPSamePort(t *testing.T) {
	r := startRelay(t, nil)
	_, qport, _ := net.SplitHostPort(r.srv.Addr().String())
	_, tport, _ := net.SplitHostPort(r.srv.TCPAddr().String())
	if qport != tport {
		t.Fatalf("QUIC on port %s, TCP on %s", qport, tport)
	}
	off := startRelay(t, func(c *Config) { c.ListenTCP = ListenTCPOff })
	if off.srv.TCPAddr() != nil {
		t.Fatalf("listen_tcp = off, and the relay listens on %s", off.srv.TCPAddr())
	}
	_, err := relay.Dial(ctxT(t), off.addr, testkit.Key(t), relay.ClientOptions{Via: relay.ViaTCP})
	if err == nil {
		t.Fatal("dialled a relay over TCP that does not listen on TCP")
	}
}

// TestTCPPortTaken: on port 0, where the port number the kernel gave QUIC
// is held on TCP by another socket, the relay takes another number, still
// one for both; on a TCP address it was given, it fails with the kernel's
// error; and it gives up after portAttempts numbers.
func TestTCPPortTaken(t *testing.T) {
	// holdFirst makes bindTCP find its address held on TCP, by a socket
	// of the test, for its first n calls; it counts the calls.
	holdFirst := func(n int, calls *int) func(*Server) {
		return func(s *Server) {
			bind := s.bindTCP
			s.bindTCP = func(addr string, conf *tls.Config, opts func() transport.ListenOptions) (*transport.TCPListener, error) {
				if *calls++; *calls <= n {
					held, err := net.Listen("tcp", addr)
					if err != nil {
						t.Fatalf("hold %s: %v", addr, err)
					}
					t.Cleanup(func() { held.Close() })
				}
				return bind(addr, conf, opts)
			}
		}
	}

	var calls int
	r := startRelayAt(t, filepath.Join(t.TempDir(), "relay.db"), testkit.Key(t), nil, holdFirst(2, &calls))
	if calls != 3 {
		t.Fatalf("bound TCP %d times, want 3 (two numbers held)", calls)
	}
	_, qport, _ := net.SplitHostPort(r.srv.Addr().String())
	_, tport, _ := net.SplitHostPort(r.srv.TCPAddr().String())
	if qport != tport {
		t.Fatalf("QUIC on port %s, TCP on %s", qport, tport)
	}
	for _, via := range []relay.Via{relay.ViaQUIC, relay.ViaTCP} {
		if _, err := dialVia(t, r, testkit.Key(t), via).Info(ctxT(t)); err != nil {
			t.Fatalf("over %v: %v", via, err)
		}
	}

	listen := func(cfg Config, prepare func(*Server)) error {
		st, err := store.Open(filepath.Join(t.TempDir(), "relay.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		srv, err := NewServer(context.Background(), Options{Config: cfg, Key: testkit.Key(t), Store: st, Registry: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		prepare(srv)
		err = srv.Listen()
		if err == nil {
			srv.tr.Close()
			srv.udp.Close()
			srv.tcp.Close()
		}
		return err
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	given := testConfig()
	given.ListenTCP = held.Addr().String()
	calls = 0
	err = listen(given, holdFirst(0, &calls))
	if !errors.Is(err, syscall.EADDRINUSE) || calls != 1 {
		t.Fatalf("listen_tcp %s held: %v after %d binds, want address in use after 1", given.ListenTCP, err, calls)
	}

	calls = 0
	err = listen(testConfig(), holdFirst(portAttempts+1, &calls))
	if !errors.Is(err, syscall.EADDRINUSE) || calls != portAttempts {
		t.Fatalf("every number held: %v after %d binds, want address in use after %d", err, calls, portAttempts)
	}
}

// TestHappyEyeballs: where UDP goes unanswered (a network that drops it),
// a client that may use both connects over TCP, soon; one told to use
// QUIC only does not connect.
func TestHappyEyeballs(t *testing.T) {
	// The UDP port of the address is a socket that reads and never
	// answers; its TCP port is the relay's.
	hole, port := udpHoleFreeOnTCP(t)
	r := startRelay(t, func(c *Config) { c.ListenTCP = "127.0.0.1:" + strconv.Itoa(port) })
	addr := relay.AddrOf(r.key.Public(), hole.LocalAddr().String())

	ctx := ctxT(t)
	c, err := relay.Dial(ctx, addr, testkit.Key(t), relay.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.State().Transport; got != transport.TCP {
		t.Fatalf("connected over %s, want tcp", got)
	}
	if _, err := c.Info(ctx); err != nil {
		t.Fatal(err)
	}

	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := relay.Dial(qctx, addr, testkit.Key(t), relay.ClientOptions{Via: relay.ViaQUIC}); err == nil {
		t.Fatal("connected over QUIC to a socket that never answers")
	}
}

// udpHoleFreeOnTCP binds a UDP socket on loopback that reads nothing,
// on a port number that no socket holds on TCP just after it is bound, so
// that the test can listen on TCP there.
func udpHoleFreeOnTCP(t *testing.T) (net.PacketConn, int) {
	t.Helper()
	for range 16 {
		hole, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hole.Close() })
		port := hole.LocalAddr().(*net.UDPAddr).Port
		probe, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			probe.Close()
			return hole, port
		}
	}
	t.Fatal("no port number of 16 was free on both UDP and TCP")
	return nil, 0
}

// TestTCPShutdown: a relay that stops closes its TCP connections with
// CodeShuttingDown, after acknowledging what it accepted.
func TestTCPShutdown(t *testing.T) {
	r := startRelay(t, nil)
	key := testkit.Key(t)
	ctx := ctxT(t)
	states := make(chan relay.State, 16)
	c, err := relay.Dial(ctx, r.addr, key, relay.ClientOptions{Via: relay.ViaTCP, OnState: func(st relay.State) {
		select {
		case states <- st:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := &testkit.Author{Key: key, Room: "lobby"}
	raw, _ := a.Next(t, "before the stop")
	if _, err := c.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	r.stop()
	for {
		select {
		case st := <-states:
			if st.Status != relay.StatusDown {
				continue
			}
			if !errors.Is(st.Err, &wire.RelayError{Code: wire.CodeShuttingDown}) {
				t.Fatalf("the connection ended with %v, want shutting down", st.Err)
			}
			return
		case <-ctx.Done():
			t.Fatal("the client was not told that the relay stopped")
		}
	}
}

// TestTCPSubscriptionEnds: a client that ends a subscription over TCP
// ends it on the relay too, while the connection stays.
func TestTCPSubscriptionEnds(t *testing.T) {
	r := startRelay(t, nil)
	c := dialVia(t, r, testkit.Key(t), relay.ViaTCP)
	ctx := ctxT(t)
	sub, err := c.Subscribe(ctx, "lobby", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	<-sub.Live
	if n := testutil.ToFloat64(r.srv.metrics.subscriptions); n != 1 {
		t.Fatalf("%v subscriptions on the relay, want 1", n)
	}
	sub.Close()
	for testutil.ToFloat64(r.srv.metrics.subscriptions) != 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the relay still serves a subscription the client ended")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if _, err := c.Info(ctx); err != nil {
		t.Fatalf("the connection after the subscription ended: %v", err)
	}
}

// TestTCPWrongProtocol: a TLS client that does not speak the relay's
// protocol (no ALPN, another ALPN) gets no further than the handshake.
func TestTCPWrongProtocol(t *testing.T) {
	r := startRelay(t, nil)
	cert := selfSigned(t)
	for _, protos := range [][]string{nil, {"h2"}} {
		conf := &tls.Config{InsecureSkipVerify: true, NextProtos: protos, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
		d := tls.Dialer{Config: conf}
		nc, err := d.DialContext(ctxT(t), "tcp", r.srv.TCPAddr().String())
		if err != nil {
			t.Logf("ALPN %q: %v", protos, err)
			continue // refused in the handshake
		}
		nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		var b [1]byte
		if n, err := nc.Read(b[:]); n > 0 || err == nil {
			t.Fatalf("ALPN %q: the relay sent %d bytes", protos, n)
		}
		nc.Close()
	}
}

// selfSigned is a client certificate of a fresh Ed25519 key.
func selfSigned(t testing.TB) tls.Certificate {
	priv := testkit.Key(t).Ed25519()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/parleychat/parley/relay/wire"
)

// testTLS returns a server and a client configuration as the relay's:
// TLS 1.3, the relay's ALPN, a certificate on both ends.
func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	cert := func() tls.Certificate {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
	}
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert()}, NextProtos: []string{wire.RelayALPN}, ClientAuth: tls.RequireAnyClientCert}
	client = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert()}, NextProtos: []string{wire.RelayALPN}, InsecureSkipVerify: true}
	return server, client
}

// tcpPair connects a client to a listener over loopback and returns both
// ends, admitted; they close with the test.
func tcpPair(t *testing.T) (server, client *tcpConn) {
	t.Helper()
	sconf, cconf := testTLS(t)
	ln, err := ListenTCP("127.0.0.1:0", sconf, func() ListenOptions {
		return ListenOptions{TCPOptions: TCPOptions{MaxStreams: 100}, HandshakeTimeout: 10 * time.Second}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	dialled := make(chan Conn, 1)
	go func() {
		c, err := DialTCP(ctx, ln.Addr().String(), cconf, TCPOptions{})
		if err != nil {
			t.Error(err)
		}
		dialled <- c
	}()
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	server = sc.(*tcpConn)
	if _, err := server.session(); err != nil { // admits it
		t.Fatal(err)
	}
	c := <-dialled
	if c == nil {
		t.FailNow()
	}
	client = c.(*tcpConn)
	t.Cleanup(func() {
		client.Close(wire.CodeOK, "")
		server.Close(wire.CodeOK, "")
	})
	return server, client
}

// streamPair opens a stream from client, writes first on it, and returns
// both ends of it.
func streamPair(t *testing.T, server, client *tcpConn, first []byte) (srv, cli *tcpStream) {
	t.Helper()
	cs, err := client.OpenStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Write(first); err != nil {
		t.Fatal(err)
	}
	ss, err := server.AcceptStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	srv = ss.(*tcpStream)
	// The first frame, as the relay reads one before it watches.
	b := make([]byte, len(first))
	srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(srv, b); err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Time{})
	return srv, cs.(*tcpStream)
}

func ended(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

func stillOpen(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
		t.Fatal("the stream's context ended while the stream is open")
	case <-time.After(50 * time.Millisecond):
	}
}

func watching(c *tcpConn) int {
	c.frames.mu.Lock()
	defer c.frames.mu.Unlock()
	return len(c.frames.watched)
}

// TestStreamContextEnds: a watched stream's context ends when the other
// end resets the stream, closes its side, or its connection; or when
// this end stops reading it. It then is no longer watched.
func TestStreamContextEnds(t *testing.T) {
	for _, c := range []struct {
		name string
		end  func(srv, cli *tcpStream, client *tcpConn)
	}{
		{"reset", func(_, cli *tcpStream, _ *tcpConn) { cli.CancelWrite(wire.CodeOK) }},
		{"closed", func(_, cli *tcpStream, _ *tcpConn) { cli.Close() }},
		{"connection closed", func(_, _ *tcpStream, client *tcpConn) { client.Close(wire.CodeOK, "") }},
		{"connection dropped", func(_, _ *tcpStream, client *tcpConn) { client.abort() }},
		{"this end", func(srv, _ *tcpStream, _ *tcpConn) { srv.CancelRead(wire.CodeOK) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			server, client := tcpPair(t)
			srv, cli := streamPair(t, server, client, []byte("subscribe"))
			ctx := srv.Context()
			stillOpen(t, ctx)
			if n := watching(server); n != 1 {
				t.Fatalf("%d streams watched, want 1", n)
			}
			c.end(srv, cli, client)
			if !ended(ctx) {
				t.Fatal("the stream's context did not end")
			}
			if n := watching(server); n != 0 {
				t.Fatalf("%d streams still watched", n)
			}
		})
	}
}

// TestStreamContextReadsWhatComes: what comes on a watched stream is read
// and discarded, before the watch began or after, so that the sender is
// never held up by the stream's window (256 KiB); the context ends only
// when the stream does.
func TestStreamContextReadsWhatComes(t *testing.T) {
	for _, before := range []bool{true, false} {
		name := map[bool]string{true: "before", false: "after"}[before]
		t.Run(name, func(t *testing.T) {
			server, client := tcpPair(t)
			srv, cli := streamPair(t, server, client, []byte("subscribe"))
			junk := make([]byte, 1<<20)
			if before {
				if _, err := cli.Write(junk[:1000]); err != nil {
					t.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond) // yamux has it
			}
			ctx := srv.Context()
			cli.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := cli.Write(junk); err != nil {
				t.Fatalf("a write of 1 MiB: %v", err)
			}
			stillOpen(t, ctx)
			cli.Close()
			if !ended(ctx) {
				t.Fatal("the stream's context did not end")
			}
		})
	}
}

// TestStreamContextNoGoroutine: an idle watched stream costs no
// goroutine.
func TestStreamContextNoGoroutine(t *testing.T) {
	server, client := tcpPair(t)
	const n = 50
	type pair struct {
		ctx context.Context
		cli *tcpStream
	}
	pairs := make([]pair, n)
	before := runtime.NumGoroutine()
	for i := range pairs {
		srv, cli := streamPair(t, server, client, []byte("subscribe"))
		pairs[i] = pair{srv.Context(), cli}
	}
	if grown := runtime.NumGoroutine() - before; grown >= n/2 {
		t.Fatalf("%d goroutines more for %d watched streams", grown, n)
	}
	for _, p := range pairs {
		p.cli.CancelWrite(wire.CodeOK)
	}
	for _, p := range pairs {
		if !ended(p.ctx) {
			t.Fatal("a stream's context did not end")
		}
	}
	if w := watching(server); w != 0 {
		t.Fatalf("%d streams still watched", w)
	}
}

// TestStreamContextRace: the other end ends the stream while its watch
// begins; the context ends all the same.
func TestStreamContextRace(t *testing.T) {
	server, client := tcpPair(t)
	for i := range 200 {
		cs, err := client.OpenStream(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.Write([]byte("s")); err != nil {
			t.Fatal(err)
		}
		ss, err := server.AcceptStream(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := ss.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		go func() {
			if i%2 == 0 {
				cs.Close()
			} else {
				cs.CancelWrite(wire.CodeOK)
			}
		}()
		if !ended(ss.Context()) {
			t.Fatalf("round %d: the stream's context did not end", i)
		}
		ss.CancelWrite(wire.CodeOK) // as the relay ends it: else it counts against MaxStreams
	}
}

// scripted is a connection whose reads return script a few bytes at a
// time, then io.EOF.
type scripted struct {
	net.Conn
	script *bytes.Reader
	step   int
}

func (s *scripted) Read(b []byte) (int, error) {
	s.step = s.step%3 + 1
	return s.script.Read(b[:min(len(b), s.step)])
}

func yamuxHeader(typ uint8, flags uint16, stream, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], stream)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// TestFrameConnFollowsFraming: frameConn tells a stream's end from the
// frames' headers however the reads split them, skips data frames' bodies
// (even one that looks like a header), and ends every watch when the
// connection's reads fail.
func TestFrameConnFollowsFraming(t *testing.T) {
	const windowUpdate, ping = 1, 2
	fake := yamuxHeader(windowUpdate, yamuxFlagRST, 5, 0) // a body, not a frame
	var script []byte
	script = append(script, yamuxHeader(yamuxTypeData, 0, 7, uint32(len(fake)))...)
	script = append(script, fake...)
	script = append(script, yamuxHeader(ping, 0, 0, 42)...)
	script = append(script, yamuxHeader(windowUpdate, yamuxFlagFIN, 3, 0)...)
	c := &frameConn{Conn: &scripted{script: bytes.NewReader(script)}}
	watch := func(stream uint32) context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		if c.watched == nil {
			c.watched = map[uint32]*streamWatch{}
		}
		c.watched[stream] = &streamWatch{cancel: cancel}
		return ctx
	}
	three, five := watch(3), watch(5)
	b := make([]byte, 64)
	for five.Err() == nil {
		_, err := c.Read(b)
		if three.Err() == nil && err != nil {
			t.Fatal("the FIN of stream 3 went unnoticed")
		}
		if five.Err() != nil && err == nil {
			t.Fatal("stream 5 ended by a data frame's body")
		}
	}
	if len(c.watched) != 0 {
		t.Fatalf("%d watches left", len(c.watched))
	}
}

// TestDialledHasRTT: a connection dialled over TCP has a round-trip time
// as soon as DialTCP returns, not only once yamux has measured one in the
// background (the relay client reports it at once as connected).
func TestDialledHasRTT(t *testing.T) {
	_, client := tcpPair(t)
	if rtt := client.Stats().RTT; rtt <= 0 {
		t.Fatalf("RTT right after the dial: %s, want > 0", rtt)
	}
}

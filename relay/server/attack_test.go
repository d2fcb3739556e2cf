package server

// The relay attack suite (issue 21): each attack runs against a relay on
// loopback while honest clients publish and subscribe through it, and
// each is bounded in time. Run it with
//
//	go test -race -count=1 -timeout 20m -run TestAttack ./relay/server/
//
// Larger runs are behind environment variables (see each test):
// PARLEY_ATTACK_SEED, PARLEY_ATTACK_RANDOM, PARLEY_ATTACK_IDLE,
// PARLEY_ATTACK_FLOOD.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// attackWait bounds every wait of the suite for an event; it is no
// statement about speed.
const attackWait = 60 * time.Second

// envInt is the integer in the environment variable name, or def.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// attackLimits lets every connection of the test's loopback address in
// (they all come from 127.0.0.1), and waits shortly for unfinished
// frames, so that the attacks that stall end soon.
func attackLimits(c *Config) {
	c.Limits.AddrRate, c.Limits.AddrBurst = 1e6, 1_000_000
	c.Limits.ConnsPerAddr = 100_000
	c.Limits.MaxConnections = 100_000
	c.Limits.HandshakeTimeout = Duration{3 * time.Second}
}

// honest is a publisher and a subscriber of one room that go on through
// an attack: the publisher over QUIC, the subscriber over TCP. Each
// envelope is published, acknowledged and delivered before the next, and
// its latency (publish to delivery) is kept.
type honest struct {
	r    *testRelay
	pub  *relay.Client
	sub  *relay.Subscription
	raws [][]byte
	ids  []protocol.ID
	next int // the next of raws to publish

	idle  []time.Duration // latencies before the attack
	under []time.Duration // latencies during it

	stop chan struct{}
	done chan error
}

const (
	honestRoom     = "honest"
	honestIdle     = 100                   // envelopes measured on the idle relay
	honestEnvs     = 900                   // all the envelopes prepared (under the publish burst)
	honestInterval = 40 * time.Millisecond // between the background publishes
)

// startHonest connects the honest clients, measures the idle relay's
// latency, then keeps publishing in the background until stop.
func startHonest(t *testing.T, r *testRelay) *honest {
	t.Helper()
	pk, sk := testkit.Key(t), testkit.Key(t)
	if r.srv.Policy().Mode() != wire.PolicyOpen {
		for _, k := range []identity.PrivateKey{pk, sk} {
			if _, err := r.srv.Policy().Allow(ctxT(t), k.Public(), "honest"); err != nil {
				t.Fatal(err)
			}
		}
	}
	h := &honest{r: r, pub: dialVia(t, r, pk, relay.ViaQUIC), stop: make(chan struct{}), done: make(chan error, 1)}
	cs := dialVia(t, r, sk, relay.ViaTCP)
	a := &testkit.Author{Key: pk, Room: honestRoom}
	for i := range honestEnvs {
		raw, id := a.Next(t, fmt.Sprint("honest ", i))
		h.raws, h.ids = append(h.raws, raw), append(h.ids, id)
	}
	ctx, cancel := context.WithCancel(context.Background()) // the subscription lives as long as the test
	t.Cleanup(cancel)
	sub, err := cs.Subscribe(ctx, honestRoom, protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	h.sub = sub
	select {
	case <-sub.Live:
	case <-time.After(attackWait):
		t.Fatal("the honest subscription did not go live within 60 s")
	}
	for range honestIdle {
		d, err := h.one()
		if err != nil {
			t.Fatalf("the idle relay: %v", err)
		}
		h.idle = append(h.idle, d)
		time.Sleep(honestInterval)
	}
	go func() { h.done <- h.loop() }()
	t.Cleanup(h.halt)
	return h
}

// one publishes the next envelope and waits for its ack and its delivery.
func (h *honest) one() (time.Duration, error) {
	i := h.next
	h.next++
	ctx, cancel := context.WithTimeout(context.Background(), attackWait)
	defer cancel()
	start := time.Now()
	ack, err := h.pub.Publish(ctx, h.raws[i])
	if err != nil {
		return 0, fmt.Errorf("honest publish %d: %w", i, err)
	}
	if ack.ID != h.ids[i] || ack.Status != wire.AckStored {
		return 0, fmt.Errorf("honest publish %d: ack %+v", i, ack)
	}
	for {
		select {
		case d, ok := <-h.sub.C:
			if !ok {
				return 0, fmt.Errorf("the honest subscription ended before envelope %d: %w", i, h.sub.Err())
			}
			if d.Committed {
				continue
			}
			if d.ID != h.ids[i] {
				return 0, fmt.Errorf("honest delivery: got %s, want envelope %d (%s)", d.ID, i, h.ids[i])
			}
			return time.Since(start), nil
		case <-ctx.Done():
			return 0, fmt.Errorf("honest envelope %d not delivered within 60 s", i)
		}
	}
}

// loop publishes until stop, or until the prepared envelopes run out.
func (h *honest) loop() error {
	for h.next < len(h.raws) {
		select {
		case <-h.stop:
			return nil
		case <-time.After(honestInterval):
		}
		d, err := h.one()
		if err != nil {
			return err
		}
		h.under = append(h.under, d)
	}
	return nil
}

func (h *honest) halt() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
}

// check stops the honest clients and fails t if they lost anything:
// every envelope published was acknowledged, delivered once and in
// order (one checks that), and is in the relay's store. It logs the
// latencies beside the idle relay's.
func (h *honest) check(t *testing.T) {
	t.Helper()
	h.halt()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * attackWait):
		t.Fatal("the honest publisher did not stop within 120 s")
	}
	ctx := ctxT(t)
	for i := range h.next {
		if _, err := h.r.st.Get(ctx, h.ids[i]); err != nil {
			t.Fatalf("honest envelope %d of %d is not in the store: %v", i, h.next, err)
		}
	}
	ip, up := p99(h.idle), p99(h.under)
	t.Logf("honest clients: %d envelopes published and delivered, none lost; p99 latency idle %v (n=%d), under attack %v (n=%d), ratio %.2f",
		h.next, ip.Round(time.Microsecond), len(h.idle), up.Round(time.Microsecond), len(h.under), float64(up)/float64(ip))
}

// p99 is the 99th percentile of ds (nearest rank), 0 for none.
func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)*99+99)/100-1]
}

// auditCount counts the records of kind in r's audit log; with id not
// zero, only those of id.
func auditCount(t testing.TB, r *testRelay, kind audit.Kind, id identity.PublicKey) int {
	t.Helper()
	entries, err := r.st.AuditEntries(ctxT(t), 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		rec, err := audit.ParseRecord(e.Data)
		if err == nil && rec.Kind == kind && (id == identity.PublicKey{} || rec.Identity == id) {
			n++
		}
	}
	return n
}

// admitted is how many connections the relay has admitted and holds.
func admitted(s *Server) (counted, clients int) {
	s.conns.mu.Lock()
	counted = s.conns.total
	s.conns.mu.Unlock()
	s.clientsMu.Lock()
	clients = len(s.clients)
	s.clientsMu.Unlock()
	return counted, clients
}

// ecdsaCert is a self-signed certificate of a P-256 key: a valid X.509
// certificate whose key is not an identity.
func ecdsaCert(t testing.TB) tls.Certificate {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

// TestAttackHandshake: clients without a certificate, with an ECDSA
// certificate, and offering only an ALPN that is not the relay's ("h2",
// "foo"), over QUIC and TCP, are refused in the handshake: no frame
// reaches them, and the relay neither admits nor refuses them after the
// handshake (no connection counted, no audit record).
func TestAttackHandshake(t *testing.T) {
	r := startRelay(t, attackLimits)
	h := startHonest(t, r)
	connects, refuses := auditCount(t, r, audit.KindConnect, identity.PublicKey{}), auditCount(t, r, audit.KindRefuse, identity.PublicKey{})
	alpn := wire.Current.ALPNs()
	cases := []struct {
		name  string
		certs []tls.Certificate
		alpn  []string
	}{
		{"no certificate", nil, alpn},
		{"an ECDSA certificate", []tls.Certificate{ecdsaCert(t)}, alpn},
		{"ALPN h2", []tls.Certificate{selfSigned(t)}, []string{"h2"}},
		{"ALPN foo", []tls.Certificate{selfSigned(t)}, []string{"foo"}},
	}
	for _, tc := range cases {
		conf := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: tc.alpn, Certificates: tc.certs}
		for i := range 3 {
			if err := handshakeQUIC(r, conf); err != nil {
				t.Errorf("QUIC, %s (%d): %v", tc.name, i, err)
			}
			if err := handshakeTCP(r, conf); err != nil {
				t.Errorf("TCP, %s (%d): %v", tc.name, i, err)
			}
		}
	}
	h.check(t)
	if c, n := admitted(r.srv); c != 2 || n != 2 {
		t.Fatalf("the relay counts %d connections and holds %d; want the 2 honest ones", c, n)
	}
	if c, f := auditCount(t, r, audit.KindConnect, identity.PublicKey{}), auditCount(t, r, audit.KindRefuse, identity.PublicKey{}); c != connects || f != refuses {
		t.Fatalf("audit records after the handshakes: %d connects and %d refusals, want %d and %d (none past the handshake)", c, f, connects, refuses)
	}
}

// handshakeQUIC connects over QUIC with conf and asks for Info; it
// returns nil if the handshake failed with a TLS error, which is what a
// client the relay refuses in the handshake must see.
func handshakeQUIC(r *testRelay, conf *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), attackWait)
	defer cancel()
	qc, err := quic.DialAddr(ctx, r.addr.HostPort, conf, &quic.Config{HandshakeIdleTimeout: 10 * time.Second})
	if err == nil {
		// TLS 1.3: the client may finish before the relay has checked its
		// certificate; the relay's answer comes on the first stream.
		defer qc.CloseWithError(0, "")
		err = askInfo(ctx, transport.FromQUIC(qc))
		if err == nil {
			return errors.New("admitted")
		}
	}
	var te *quic.TransportError
	if !errors.As(err, &te) || !te.ErrorCode.IsCryptoError() {
		return fmt.Errorf("ended with %v (%T), want a TLS error of the handshake", err, err)
	}
	return nil
}

// handshakeTCP connects over TCP with conf; it returns nil if the
// handshake failed, or the relay sent nothing and closed.
func handshakeTCP(r *testRelay, conf *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), attackWait)
	defer cancel()
	d := tls.Dialer{Config: conf}
	nc, err := d.DialContext(ctx, "tcp", r.srv.TCPAddr().String())
	if err != nil {
		return nil // refused in the handshake
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(attackWait))
	var b [1]byte
	n, err := nc.Read(b[:])
	if n > 0 || err == nil {
		return fmt.Errorf("the relay sent %d bytes after the handshake", n)
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("the relay kept the connection open for 60 s")
	}
	return nil
}

// rawConn is a bare connection to r as key over via, for writing frames
// by hand.
func rawConn(t testing.TB, r *testRelay, key identity.PrivateKey, via transport.Kind) transport.Conn {
	t.Helper()
	ctx := ctxT(t)
	var conn transport.Conn
	if via == transport.TCP {
		c, err := relay.DialTCP(ctx, r.addr, key)
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	} else {
		qc, err := relay.DialQUIC(ctx, r.addr, key)
		if err != nil {
			t.Fatal(err)
		}
		conn = transport.FromQUIC(qc)
	}
	t.Cleanup(func() { conn.Close(wire.CodeOK, "") })
	return conn
}

// frame is one frame read from the relay.
type frame struct {
	t    wire.FrameType
	body []byte
}

// talk opens a stream on conn, writes chunks with gap between them,
// closes its side if end, and reads the relay's frames until the stream
// ends; a subscription is ended by talk once it goes live. It returns
// the frames and how the stream ended (io.EOF: cleanly). It waits at
// most 60 s: a stream the relay leaves open that long is an error.
func talk(conn transport.Conn, chunks [][]byte, gap time.Duration, end bool) ([]frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), attackWait)
	defer cancel()
	str, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("open a stream: %w", err)
	}
	defer str.CancelRead(wire.CodeOK)
	str.SetReadDeadline(time.Now().Add(attackWait))
	str.SetWriteDeadline(time.Now().Add(attackWait))
	for i, c := range chunks {
		if i > 0 && gap > 0 {
			time.Sleep(gap)
		}
		if _, err := str.Write(c); err != nil {
			break // the relay may end the stream before all is written
		}
	}
	if end {
		str.Close()
	}
	fr := wire.NewReader(str, wire.MaxFrameBody)
	var out []frame
	for len(out) < 10_000 {
		ft, body, err := fr.Next()
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				return out, fmt.Errorf("the relay left the stream open for 60 s after %d frames", len(out))
			}
			return out, err
		}
		out = append(out, frame{ft, slices.Clone(body)})
		if ft == wire.FrameLive {
			str.CancelWrite(wire.CodeOK)
			return out, io.EOF
		}
	}
	return out, errors.New("more than 10,000 frames")
}

// header is a frame header of type t naming a body of n bytes.
func header(t wire.FrameType, n uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{byte(t)}, n)
}

// bytewise splits b into chunks of one byte.
func bytewise(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

// frameCase is a stream of frames written by hand and the answer the
// protocol documents for it: the relay's frames, in order, the last one
// an Error frame with code (if code is not none) whose text has want.
type frameCase struct {
	name  string
	send  [][]byte
	gap   time.Duration
	end   bool // close the write side after send
	want  []wire.FrameType
	code  wire.ErrorCode
	text  string
	noErr bool // no Error frame expected
}

func frameCases(t testing.TB, key identity.PrivateKey) []frameCase {
	a := &testkit.Author{Key: key, Room: "attack"}
	env, _ := a.Next(t, "published one byte at a time")
	stall := append(wire.AppendFrame(nil, wire.FramePublish, []byte{1}), header(wire.FramePublish, 60_000)...)
	errf := wire.FrameError
	return []frameCase{
		{name: "a length longer than the body", send: [][]byte{header(wire.FrameInfoRequest, 100), make([]byte, 10)}, end: true, want: []wire.FrameType{errf}, code: wire.CodeBadFrame, text: "truncated"},
		{name: "a length over the limit", send: [][]byte{header(wire.FramePublish, 0xffff_ffff)}, want: []wire.FrameType{errf}, code: wire.CodeTooLarge},
		{name: "a length just over the limit", send: [][]byte{header(wire.FrameFetchIDs, wire.MaxFrameBody+1)}, want: []wire.FrameType{errf}, code: wire.CodeTooLarge},
		{name: "a length shorter than the body", send: [][]byte{header(wire.FramePublish, 5), make([]byte, 20)}, end: true, want: []wire.FrameType{wire.FrameNack, errf}, code: wire.CodeBadFrame, text: "unknown type 0"},
		{name: "unknown type 0", send: [][]byte{wire.AppendFrame(nil, 0, nil)}, end: true, want: []wire.FrameType{errf}, code: wire.CodeBadFrame, text: "unknown type 0"},
		{name: "unknown type 26", send: [][]byte{wire.AppendFrame(nil, 26, []byte{1})}, end: true, want: []wire.FrameType{errf}, code: wire.CodeBadFrame, text: "unknown type 26"},
		{name: "unknown type 255", send: [][]byte{header(255, 0xffff_ffff)}, want: []wire.FrameType{errf}, code: wire.CodeBadFrame, text: "unknown type 255"},
		{name: "an unknown type after a publish", send: [][]byte{wire.AppendFrame(wire.AppendFrame(nil, wire.FramePublish, []byte{1}), 99, nil)}, want: []wire.FrameType{wire.FrameNack, errf}, code: wire.CodeBadFrame, text: "unknown type 99"},
		{name: "an info request one byte at a time", send: bytewise(wire.AppendFrame(nil, wire.FrameInfoRequest, nil)), gap: 50 * time.Millisecond, end: true, want: []wire.FrameType{wire.FrameInfo}, noErr: true},
		{name: "a publish one byte at a time", send: bytewise(wire.AppendFrame(nil, wire.FramePublish, env)), gap: 2 * time.Millisecond, end: true, want: []wire.FrameType{wire.FrameAck}, noErr: true},
		{name: "a header never finished", send: [][]byte{header(wire.FramePublish, 100)[:3]}, want: []wire.FrameType{errf}, code: wire.CodeIdle},
		{name: "a first body never finished", send: [][]byte{header(wire.FramePublish, 1000), make([]byte, 10)}, want: []wire.FrameType{errf}, code: wire.CodeIdle},
		{name: "a later body never finished", send: [][]byte{stall, make([]byte, 10)}, want: []wire.FrameType{wire.FrameNack, errf}, code: wire.CodeIdle},
	}
}

// TestAttackFrames: frames with lying lengths, of unknown types, sent one
// byte at a time and never finished, over QUIC and TCP. Each ends only
// its own stream, with the code relay-protocol.md documents (1 bad frame,
// 2 too large, 17 idle); frames sent slowly are served; the connection
// still asks afterwards, and the honest clients lose nothing.
func TestAttackFrames(t *testing.T) {
	r := startRelay(t, attackLimits)
	h := startHonest(t, r)
	for _, via := range []transport.Kind{transport.QUIC, transport.TCP} {
		key := testkit.Key(t)
		conn := rawConn(t, r, key, via)
		var wg sync.WaitGroup
		for _, tc := range frameCases(t, key) {
			wg.Go(func() {
				got, err := talk(conn, tc.send, tc.gap, tc.end)
				if msg := tc.judge(got, err); msg != "" {
					t.Errorf("%s, %s: %s", via, tc.name, msg)
				}
			})
		}
		wg.Wait()
		if got, err := talk(conn, [][]byte{wire.AppendFrame(nil, wire.FrameInfoRequest, nil)}, 0, true); err != io.EOF || len(got) != 1 || got[0].t != wire.FrameInfo {
			t.Fatalf("%s: an info request after the attacks: %v, %v", via, got, err)
		}
	}
	h.check(t)
}

// judge says what is wrong with the relay's answer got, ended by err,
// or "" if it is what the case documents.
func (tc frameCase) judge(got []frame, err error) string {
	types := make([]wire.FrameType, len(got))
	for i, f := range got {
		types[i] = f.t
	}
	if !slices.Equal(types, tc.want) {
		return fmt.Sprintf("got frames %v (then %v), want %v", types, err, tc.want)
	}
	if tc.noErr {
		if err != io.EOF {
			return fmt.Sprintf("the stream ended with %v, want a clean end", err)
		}
		return ""
	}
	re, perr := wire.ParseErrorFrame(got[len(got)-1].body)
	if perr != nil {
		return fmt.Sprintf("an Error frame that does not parse: %v", perr)
	}
	if re.Code != tc.code || !strings.Contains(re.Message, tc.text) {
		return fmt.Sprintf("the relay said %v; want code %s with %q", re, tc.code, tc.text)
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return "the stream stayed open after the Error frame"
	}
	return ""
}

// storedFrom says whether r stored id.
func storedFrom(t testing.TB, r *testRelay, id protocol.ID) bool {
	t.Helper()
	_, err := r.st.Get(ctxT(t), id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

package client

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
)

// A relay closed for the session because its first try found it is not
// the one configured says so from then on, not "connecting" (what a
// closed connection says otherwise).
func TestRelayClosedSaysWhy(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hp := pc.LocalAddr().String()
	pc.Close()
	addr := relay.AddrOf(testkit.Key(t).Public(), hp)
	p := &relayPath{name: addr.Fingerprint, addr: addr, down: make(chan struct{})}
	if p.rc, err = relay.Start(addr, testkit.Key(t), relay.ClientOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := p.err(); !errors.Is(err, ErrRelayUnreachable) {
		t.Fatalf("before its first try: %v, want ErrRelayUnreachable", err)
	}
	p.rc.CloseFor(relay.ErrWrongRelay)
	p.setState(p.rc.State())
	if err := p.err(); !errors.Is(err, relay.ErrWrongRelay) || errors.Is(err, ErrRelayUnreachable) {
		t.Errorf("closed as not the relay configured: %v, want ErrWrongRelay, not unreachable", err)
	}
	if st := p.rc.State(); st.Status != relay.StatusClosed || !errors.Is(st.Err, relay.ErrWrongRelay) {
		t.Errorf("the connection's state: %v %v, want closed, ErrWrongRelay", st.Status, st.Err)
	}
	p.rc.Close() // a second close changes nothing
	if st := p.rc.State(); !errors.Is(st.Err, relay.ErrWrongRelay) {
		t.Errorf("after a second Close: %v, want ErrWrongRelay kept", st.Err)
	}
}

// TestTransportKeptAfterACutWrite: a transport whose write was cut short
// (the client closing while onState kept it) is not counted as kept, so
// that close keeps it: a status or a send that ends as it connects still
// leaves the next session the transport that worked.
func TestTransportKeptAfterACutWrite(t *testing.T) {
	c := openOffline(t)
	p := &relayPath{c: c, name: "relay"}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	p.keepTransport(ended, "tcp")
	ctx := context.Background()
	if got, err := c.st.RelayTransport(ctx, "relay"); err != nil || got != "" {
		t.Fatalf("after a cut write: %q, %v; want nothing kept", got, err)
	}
	p.keepTransport(ctx, "tcp")
	if got, err := c.st.RelayTransport(ctx, "relay"); err != nil || got != "tcp" {
		t.Fatalf("kept again: %q, %v; want tcp", got, err)
	}
}

package server

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	chat "github.com/parleychat/parley/client"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
)

// TestRelayAckAllAcrossAttempts: under relay_ack = "all" of two relays, a
// message that one relay acknowledged while the other was down is kept
// in the outbox; when it goes out again and the other acknowledges it,
// it is delivered, even if the first is down by then: the first's
// receipt, kept, counts. (Counted per attempt, it would never be: the
// two relays are never up together.)
func TestRelayAckAllAcrossAttempts(t *testing.T) {
	const room = "acks"
	a := runFedRelay(t, "open", nil, nil)
	b := runFedRelay(t, "open", nil, nil)
	home, err := chat.OpenHome(t.TempDir(), chat.HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// First session: a is up, b is not there (its key, a dead port).
	c := openAckClient(t, home, a.addr, deadAddr(t, b.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sent, err := c.Send(ctx, room, "to both")
	if !errors.Is(err, chat.ErrNoPath) {
		t.Fatalf("send with one of two relays down under relay_ack all: %v, want ErrNoPath", err)
	}
	if !slices.Equal(sent.Relays, []string{a.addr.String()}) || sent.Delivered() {
		t.Fatalf("first attempt: acknowledged by %q, delivered %v; want a's only, not delivered", sent.Relays, sent.Delivered())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Second session: b is up, a is not. Once the room is joined, the
	// outbox sends it again, to b only: a's receipt is kept.
	deadA := deadAddr(t, a.addr)
	c = openAckClient(t, home, deadA, b.addr)
	if err := c.Join(ctx, room); err != nil {
		t.Fatal(err)
	}
	got := awaitDelivered(t, c, sent.ID)
	if !slices.Equal(got.Relays, []string{deadA.String(), b.addr.String()}) {
		t.Errorf("second attempt: delivered with the relays %q, want a's (kept) and b's", got.Relays)
	}
	msgs, err := c.History(ctx, room, "", 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("history: %d messages, %v", len(msgs), err)
	}
	var have []string
	for _, rc := range msgs[0].Receipts {
		have = append(have, rc.Relay)
	}
	slices.Sort(have)
	want := []string{a.addr.Fingerprint, b.addr.Fingerprint}
	slices.Sort(want)
	if !slices.Equal(have, want) {
		t.Errorf("receipts of relays %q, want %q", have, want)
	}
}

// TestKeyPackagesFromEachRelay: someone on two relays writes directly to
// someone who uses only the second: the key package they need is on
// that relay alone, and is found there, though the first answers first.
func TestKeyPackagesFromEachRelay(t *testing.T) {
	a := runFedRelay(t, "open", nil, nil)
	b := runFedRelay(t, "open", nil, nil)
	bob := openRelayClient(t, "bob", "any", b.addr)
	alice := openRelayClient(t, "alice", "any", a.addr, b.addr)
	awaitConnected(t, alice)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	room, err := alice.Direct(ctx, bob.Key().Public())
	if err != nil {
		t.Fatal(err)
	}
	// Bob's session puts his package on b in the background: until it is
	// there, the send says so (ErrNoKeyPackage). Asked of a only, it
	// would say so for ever.
	for {
		sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
		_, err = alice.Send(sctx, room, "hello bob")
		scancel()
		if !errors.Is(err, chat.ErrNoKeyPackage) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("direct message to someone on the second relay only: %v", err)
	}
}

// awaitConnected waits until each of c's relays is connected, a minute
// at most.
func awaitConnected(t *testing.T, c *chat.Client) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, rc := range c.Relays() {
		for rc.State().Status != relay.StatusConnected {
			if time.Now().After(deadline) {
				t.Fatalf("relay %s not connected within a minute: %v", rc.Addr(), rc.State().Err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// openAckClient opens a relay-only session of home on relays, under
// relay_ack all, closed when the test ends.
func openAckClient(t *testing.T, home *chat.Home, relays ...relay.Addr) *chat.Client {
	t.Helper()
	return openSession(t, home, "acker", "all", relays...)
}

// openRelayClient opens a relay-only session of a new home, named nick,
// on relays, closed when the test ends.
func openRelayClient(t *testing.T, nick, ack string, relays ...relay.Addr) *chat.Client {
	t.Helper()
	home, err := chat.OpenHome(t.TempDir(), chat.HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return openSession(t, home, nick, ack, relays...)
}

// openSession opens a relay-only session of home on relays, under
// relay_ack ack, closed when the test ends.
func openSession(t *testing.T, home *chat.Home, nick, ack string, relays ...relay.Addr) *chat.Client {
	t.Helper()
	cfg := chat.DefaultConfig()
	cfg.Nick, cfg.MDNS, cfg.Mode, cfg.RelayAck = nick, false, chat.ModeRelay, ack
	for _, a := range relays {
		cfg.Relays = append(cfg.Relays, a.String())
	}
	return openClient(t, home, cfg)
}

// openClient opens a session of home with cfg, a minute at most, closed
// when the test ends.
func openClient(t *testing.T, home *chat.Home, cfg chat.Config) *chat.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := chat.Open(ctx, home, chat.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// deadAddr is a's key at a loopback port where nothing answers.
func deadAddr(t *testing.T, a relay.Addr) relay.Addr {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hp := pc.LocalAddr().String()
	pc.Close()
	return relay.Addr{Fingerprint: a.Fingerprint, HostPort: hp}
}

// awaitDelivered reads c's events until one says that message id is
// delivered, a minute at most.
func awaitDelivered(t *testing.T, c *chat.Client, id protocol.ID) chat.Sent {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case e, ok := <-c.Events():
			if !ok {
				t.Fatal("events closed before the message was delivered")
			}
			if d, ok := e.(*chat.DeliveryEvent); ok && d.Sent.ID == id && d.Sent.Delivered() {
				return d.Sent
			}
		case <-timeout:
			t.Fatal("the message kept from the first session was not delivered within a minute")
		}
	}
}

package relay

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
)

// TestCloseEndsADial: Close does not wait for a dial in progress to a
// relay that does not answer (until the handshake times out); the dial
// ends with it, and holds no lock meanwhile.
func TestCloseEndsADial(t *testing.T) {
	quiet, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	key := testkit.Key(t)
	addr := AddrOf(testkit.Key(t).Public(), quiet.LocalAddr().String())
	conf, err := clientTLS(key, addr)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(addr, conf, ClientOptions{KeepAlive: time.Second})
	dialed := make(chan error, 1)
	go func() {
		_, err := c.connect(context.Background())
		dialed <- err
	}()
	// Wait until the dial is under way. It holds no lock: the client's
	// state and Close do not wait for it.
	for i := 0; ; i++ {
		c.mu.Lock()
		dialing := c.dialing != nil
		c.mu.Unlock()
		if dialing {
			break
		}
		if i == 5000 {
			t.Fatal("the dial did not start")
		}
		time.Sleep(time.Millisecond)
	}
	if !c.mu.TryLock() {
		t.Fatal("a dial in progress holds the client's lock")
	}
	c.mu.Unlock()
	c.Close()
	if err := <-dialed; !errors.Is(err, context.Canceled) {
		t.Fatalf("the dial ended with %v, want it cancelled by Close", err)
	}
}

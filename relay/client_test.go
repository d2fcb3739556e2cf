package relay

import (
	"context"
	"errors"
	"net"
	"sync"
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

// TestCloseAfterLastOnState: Close returns after OnState has been told
// StatusClosed, and no call comes after, so an application can close what
// its OnState uses right after closing the client.
func TestCloseAfterLastOnState(t *testing.T) {
	key := testkit.Key(t)
	addr := AddrOf(testkit.Key(t).Public(), "127.0.0.1:9") // never dialled
	conf, err := clientTLS(key, addr)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		told   []Status
		closed bool
		late   bool
	)
	c := newClient(addr, conf, ClientOptions{OnState: func(st State) {
		mu.Lock()
		defer mu.Unlock()
		late = late || closed
		told = append(told, st.Status)
	}})
	c.Close()
	mu.Lock()
	closed = true
	got := append([]Status(nil), told...)
	mu.Unlock()
	if len(got) == 0 || got[len(got)-1] != StatusClosed {
		t.Fatalf("OnState was told %v by the time Close returned, want it to end with %v", got, StatusClosed)
	}
	c.Close() // a second Close returns too
	mu.Lock()
	defer mu.Unlock()
	if late {
		t.Fatal("OnState was called after Close returned")
	}
}

package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
)

// The idle-connections attack runs its clients in a child process (this
// test binary again, told so by PARLEY_ATTACK_CHILD), so that the heap
// measured in the test's process is the relay's alone.
const childEnv = "PARLEY_ATTACK_CHILD"

// TestAttackIdle: connections opened and left idle, over QUIC (one UDP
// socket in the child for all of them) and over TCP (a file descriptor
// on each side for each). The relay admits them all, the honest clients
// lose nothing meanwhile, and the relay's heap per idle connection is
// measured and logged. PARLEY_ATTACK_IDLE sets the number of QUIC
// connections (default 500); the TCP ones are a fifth of them, at most
// an eighth of the file descriptor limit.
func TestAttackIdle(t *testing.T) {
	if addr := os.Getenv(childEnv); addr != "" {
		idleChild(t, addr)
		return
	}
	nq := envInt(t, "PARLEY_ATTACK_IDLE", 500)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	nt := min(nq/5, int(lim.Cur/8))
	t.Logf("%d QUIC and %d TCP idle connections; file descriptor limit %d", nq, nt, lim.Cur)
	r := startRelay(t, func(c *Config) {
		attackLimits(c)
		c.Limits.ConnsPerIdentity = 100_000
		c.Limits.IdleTimeout = Duration{10 * time.Minute}
		// The default: a burst of handshakes on a loaded machine under
		// -race needs it (with 3 s, some of 500 timed out).
		c.Limits.HandshakeTimeout = DefaultConfig().Limits.HandshakeTimeout
	})
	h := startHonest(t, r)
	ch := startChild(t, r, nq, nt)
	base := liveHeap()
	ch.next(t, "quic")
	t.Cleanup(func() {
		c, n := admitted(r.srv)
		t.Logf("at the end the relay counted %d connections and held %d", c, n)
	})
	waitFor(t, fmt.Sprintf("%d connections admitted", 2+nq), func() bool { c, _ := admitted(r.srv); return c == 2+nq })
	afterQUIC := liveHeap()
	ch.send(t, "tcp")
	ch.next(t, "tcp")
	waitFor(t, fmt.Sprintf("%d connections admitted", 2+nq+nt), func() bool { c, _ := admitted(r.srv); return c == 2+nq+nt })
	afterTCP := liveHeap()
	t.Logf("relay heap: %.1f MiB before, %.1f MiB with %d idle QUIC connections (%.1f KiB each), %.1f MiB with %d TCP ones more (%.1f KiB each)",
		mib(base), mib(afterQUIC), nq, kib(afterQUIC-base)/float64(nq), mib(afterTCP), nt, kib(afterTCP-afterQUIC)/float64(max(nt, 1)))
	ch.stop(t)
	waitFor(t, "the idle connections to be gone from the relay", func() bool { c, n := admitted(r.srv); return c == 2 && n == 2 })
	h.check(t)
}

// liveHeap is the test process's live heap, in bytes, after two
// collections.
func liveHeap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
func kib(b int64) float64 { return float64(b) / (1 << 10) }

// child is the process that holds the idle connections.
type child struct{ *testkit.Proc }

// startChild runs this test in a child process that opens nq QUIC
// connections to r, then, when told, nt TCP ones.
func startChild(t *testing.T, r *testRelay, nq, nt int) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestAttackIdle$", "-test.count=1", "-test.timeout=30m")
	cmd.Env = append(os.Environ(), childEnv+"="+r.addr.String(), fmt.Sprintf("PARLEY_ATTACK_IDLE_N=%d,%d", nq, nt))
	p := testkit.Start(t, "the idle child", cmd, 100)
	// Runs before Start's cleanup, which kills what still runs: the child
	// first gets its standard input closed and attackWait to end.
	t.Cleanup(func() {
		p.Stdin.Close()
		select {
		case <-p.Exited:
		case <-time.After(attackWait):
		}
	})
	return &child{p}
}

// next waits for the child to say "ready what".
func (ch *child) next(t *testing.T, what string) {
	t.Helper()
	timeout := time.After(20 * time.Minute) // 10,000 handshakes under -race take minutes
	for {
		select {
		case l, ok := <-ch.Lines:
			if !ok {
				t.Fatalf("the child ended before it was ready with %s\n%s", what, ch.Log())
			}
			if l == "ready "+what {
				return
			}
			t.Logf("child: %s", l)
		case <-timeout:
			t.Fatalf("the child was not ready with %s in 20 minutes", what)
		}
	}
}

func (ch *child) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(ch.Stdin, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// stop tells the child to close its connections and waits for it.
func (ch *child) stop(t *testing.T) {
	t.Helper()
	ch.Stdin.Close()
	for l := range ch.Lines {
		if strings.HasPrefix(l, "FAIL") || strings.HasPrefix(l, "---") {
			t.Errorf("child: %s", l)
		}
	}
	if code := ch.Wait(t); code != 0 {
		t.Errorf("the child exited with %d\n%s", code, ch.Log())
	}
}

// idleChild is the child process: it opens the connections, says so,
// and holds them until its standard input ends.
func idleChild(t *testing.T, addrText string) {
	addr, err := relay.ParseAddr(addrText)
	if err != nil {
		t.Fatal(err)
	}
	var nq, nt int
	if _, err := fmt.Sscanf(os.Getenv("PARLEY_ATTACK_IDLE_N"), "%d,%d", &nq, &nt); err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer udp.Close()
	defer tr.Close()
	key := testkit.Key(t)
	conns := make([]transport.Conn, nq+nt)
	pipelined(nq, 4, func(i int) {
		conns[i] = dialRetrying(t, fmt.Sprint("QUIC connection ", i), func(ctx context.Context) (transport.Conn, error) {
			qc, err := relay.DialQUICOn(ctx, tr, addr, key)
			if err != nil {
				return nil, err
			}
			return transport.FromQUIC(qc), nil
		})
	})
	fmt.Println("ready quic")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "tcp" {
		closeAll(conns)
		return
	}
	pipelined(nt, 4, func(i int) {
		conns[nq+i] = dialRetrying(t, fmt.Sprint("TCP connection ", i), func(ctx context.Context) (transport.Conn, error) {
			return relay.DialTCP(ctx, addr, key)
		})
	})
	fmt.Println("ready tcp")
	for in.Scan() { // until the parent closes it
	}
	closeAll(conns)
}

func closeAll(conns []transport.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close(wire.CodeOK, "")
		}
	}
}

// dialRetrying dials as a client does, and asks for Info on the new
// connection; a failed attempt is said (the parent logs it) and tried
// again, three times at most.
func dialRetrying(t *testing.T, what string, dial func(context.Context) (transport.Conn, error)) transport.Conn {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), attackWait)
		c, err := dial(ctx)
		if err == nil {
			// As the reference client does: ask, to learn that the relay
			// admitted the connection and holds it.
			if err = askInfo(ctx, c); err == nil {
				cancel()
				return c
			}
			c.Close(wire.CodeOK, "")
		}
		cancel()
		fmt.Printf("error: %s, attempt %d: %v\n", what, attempt, err)
		if attempt == 3 {
			t.Errorf("%s: %v", what, err)
			return nil
		}
	}
}

package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/parleychat/parley/relay/wire"
)

// floodProxy stands between QUIC clients and the relay on loopback: it
// gives each client address its own socket towards the relay, so that
// the relay sees each client on its own source port, and counts the
// bytes each way and the packets the relay sends by their type. It
// passes nothing back to the clients: none of them proves its address,
// which is what a flood of spoofed source addresses looks like to the
// relay.
type floodProxy struct {
	front net.PacketConn
	relay *net.UDPAddr
	mu    sync.Mutex
	ups   map[string]*floodUpstream
	wg    sync.WaitGroup
	once  sync.Once
}

// floodUpstream is one client's path to the relay, and its counts.
type floodUpstream struct {
	conn     *net.UDPConn
	in, out  atomic.Int64 // bytes to the relay, from the relay (UDP payloads)
	retries  atomic.Int64 // Retry packets from the relay
	initials atomic.Int64 // other long-header packets from the relay (Initial, Handshake)
	pktIn    atomic.Int64 // packets to the relay
	pktOut   atomic.Int64 // packets from the relay
	shortOut atomic.Int64 // bytes of short-header packets from the relay
	maxOut   atomic.Int64 // the largest datagram from the relay
}

func startFloodProxy(t testing.TB, relayAddr net.Addr) *floodProxy {
	t.Helper()
	front, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &floodProxy{front: front, relay: relayAddr.(*net.UDPAddr), ups: map[string]*floodUpstream{}}
	p.wg.Go(p.forward)
	t.Cleanup(p.close)
	return p
}

// forward passes the clients' packets to the relay until front closes.
func (p *floodProxy) forward() {
	buf := make([]byte, 2048)
	for {
		n, from, err := p.front.ReadFrom(buf)
		if err != nil {
			return
		}
		up := p.upstream(from)
		if up == nil {
			continue
		}
		if _, err := up.conn.Write(buf[:n]); err == nil {
			up.in.Add(int64(n))
			up.pktIn.Add(1)
		}
	}
}

// upstream is the path of the client at from, made on its first packet.
func (p *floodProxy) upstream(from net.Addr) *floodUpstream {
	p.mu.Lock()
	defer p.mu.Unlock()
	if up, ok := p.ups[from.String()]; ok {
		return up
	}
	conn, err := net.DialUDP("udp", nil, p.relay)
	if err != nil {
		return nil
	}
	up := &floodUpstream{conn: conn}
	p.ups[from.String()] = up
	p.wg.Go(func() { up.count() })
	return up
}

// count reads what the relay sends to up until its socket closes.
func (up *floodUpstream) count() {
	buf := make([]byte, 2048)
	for {
		n, err := up.conn.Read(buf)
		if err != nil {
			return
		}
		up.out.Add(int64(n))
		up.pktOut.Add(1)
		if int64(n) > up.maxOut.Load() {
			up.maxOut.Store(int64(n))
		}
		if n > 0 && buf[0]&0x80 == 0 {
			up.shortOut.Add(int64(n))
		}
		// A long header (RFC 9000, 17.2); QUIC v1's type 3 is Retry.
		if n > 0 && buf[0]&0x80 != 0 {
			if (buf[0]>>4)&3 == 3 {
				up.retries.Add(1)
			} else {
				up.initials.Add(1)
			}
		}
	}
}

// close stops the proxy; the counts stay.
func (p *floodProxy) close() {
	p.once.Do(func() {
		p.front.Close()
		p.mu.Lock()
		for _, up := range p.ups {
			up.conn.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}

// floodTotals sums the proxy's counts.
type floodTotals struct {
	paths, answered, retried int
	in, out, retries         int64
	worst                    float64 // the highest bytes out / bytes in of one path not sent a Retry
	worstText                string  // its counts
	over                     int     // paths sent more than 3 times what they sent
	overBeyond               int     // paths sent more than 3 times that and one datagram
}

func (p *floodProxy) totals() floodTotals {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ft floodTotals
	for _, up := range p.ups {
		in, out, r := up.in.Load(), up.out.Load(), up.retries.Load()
		ft.paths++
		ft.in += in
		ft.out += out
		ft.retries += r
		if r > 0 {
			ft.retried++
		}
		if up.initials.Load() > 0 {
			ft.answered++
			if in > 0 && r == 0 {
				if out > 3*in {
					ft.over++
				}
				if out > 3*in+up.maxOut.Load() {
					ft.overBeyond++
				}
				if ratio := float64(out) / float64(in); ratio > ft.worst {
					ft.worst = ratio
					ft.worstText = fmt.Sprintf("%d bytes in %d packets received, %d bytes in %d packets sent (%d of them in short-header packets)",
						in, up.pktIn.Load(), out, up.pktOut.Load(), up.shortOut.Load())
				}
			}
		}
	}
	return ft
}

// flood makes n clients, each on its own socket, start a QUIC handshake
// with the relay through p, and waits until each has given up (their
// answers never come back).
func flood(p *floodProxy, n int) {
	conf := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: wire.Current.ALPNs()}
	pipelined(n, 64, func(int) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		qc, err := quic.DialAddr(ctx, p.front.LocalAddr().String(), conf, &quic.Config{HandshakeIdleTimeout: 3 * time.Second})
		if err == nil {
			qc.CloseWithError(0, "")
		}
	})
}

// TestAttackHandshakeFlood: handshakes from many source ports that never
// prove their address (the proxy passes nothing back). With Retry off
// (retry_above huge), the relay answers each, and sends each source
// port at most 3 times the bytes it received from it, as QUIC's
// anti-amplification limit says. With retry_above = 5 a flood of them
// gets Retry packets, which are smaller than what they answer. Either
// way no connection is admitted, the relay's heap during and after the
// flood is logged, and the honest clients lose nothing.
// PARLEY_ATTACK_FLOOD sets the flood's size (default 200).
func TestAttackHandshakeFlood(t *testing.T) {
	n := envInt(t, "PARLEY_ATTACK_FLOOD", 200)
	r := startRelay(t, func(c *Config) {
		attackLimits(c)
		c.Limits.RetryAbove = 1_000_000
	})
	h := startHonest(t, r)
	base := liveHeap()

	noRetry := startFloodProxy(t, r.srv.Addr())
	flood(noRetry, n)
	// What the relay sends until its half-open handshakes time out counts.
	time.Sleep(r.srv.lim().HandshakeTimeout.Duration + time.Second)
	noRetry.close()
	a := noRetry.totals()
	t.Logf("Retry off: %d source ports, %d answered, %d Retry packets; %d bytes received, %d sent (%.2fx); the highest ratio of one port %.2fx: %s",
		a.paths, a.answered, a.retries, a.in, a.out, float64(a.out)/float64(max(a.in, 1)), a.worst, a.worstText)
	if a.answered == 0 || a.retries != 0 {
		t.Fatalf("with Retry off, %d of %d ports answered and %d Retry packets", a.answered, a.paths, a.retries)
	}
	// quic-go stops sending once it has sent 3 times what it received,
	// so the last datagram may pass the limit (see h21 report): the
	// test asserts that bound, and logs how often strict 3x was passed.
	t.Logf("source ports sent more than 3x before their address was proved: %d of %d", a.over, a.answered)
	if a.overBeyond > 0 {
		t.Errorf("%d source ports were sent more than 3 times what they sent and one datagram before their address was proved (worst %.2fx)", a.overBeyond, a.worst)
	}

	l := *r.srv.lim()
	l.RetryAbove = 5
	r.srv.setLimits(l)
	retry := startFloodProxy(t, r.srv.Addr())
	done := make(chan struct{})
	peak := atomic.Int64{}
	go func() {
		defer close(done)
		flood(retry, n)
	}()
	watchHeap(done, &peak)
	retry.close()
	b := retry.totals()
	after := waitHeapSettles(r)
	t.Logf("retry_above 5: %d source ports, %d sent a Retry (%d Retry packets), %d answered; %d bytes received, %d sent (%.2fx)",
		b.paths, b.retried, b.retries, b.answered, b.in, b.out, float64(b.out)/float64(max(b.in, 1)))
	t.Logf("relay heap: %.1f MiB before the floods, at most %.1f MiB during the second, %.1f MiB after it (%.1f KiB per flooding port at the peak)",
		mib(base), mib(peak.Load()), mib(after), kib(peak.Load()-base)/float64(n))
	if b.retried == 0 {
		t.Fatalf("a flood of %d handshakes over retry_above = 5 got no Retry", b.paths)
	}
	if c, k := admitted(r.srv); c != 2 || k != 2 {
		t.Fatalf("the relay holds %d connections after the floods, want the 2 honest ones", k)
	}
	h.check(t)
}

// watchHeap keeps the highest live heap in peak until done closes.
func watchHeap(done <-chan struct{}, peak *atomic.Int64) {
	for {
		if h := liveHeap(); h > peak.Load() {
			peak.Store(h)
		}
		select {
		case <-done:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitHeapSettles waits until the relay has dropped the flood's
// unfinished handshakes (their timeout is handshake_timeout), and
// returns the live heap then.
func waitHeapSettles(r *testRelay) int64 {
	deadline := time.Now().Add(r.srv.lim().HandshakeTimeout.Duration*2 + 5*time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	return liveHeap()
}

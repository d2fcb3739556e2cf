package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/server"
	"github.com/parleychat/parley/relay/wire"
	"github.com/quic-go/quic-go"
)

type relayProc struct {
	proc
	addr relay.Addr
	// floor: this is the floor forwarder (floor.go), not a relay.
	floor bool
}

// The relay runs with its defaults but for limits that would stop a load
// test from one address and a few identities.
const relayConfig = `listen = %q
admin = %q
p2p_listen = []
mdns = false
[policy]
mode = "open"
[limits]
publish_rate = 1000000.0
publish_burst = 1000000
addr_rate = 100000.0
addr_burst = 100000
max_connections = 20000
[audit]
enabled = %v
`

func startRelay(work string) (*relayProc, error) { return startRelayAudit(work, true) }

// startRelayAudit starts a relay with its audit log on or off.
func startRelayAudit(work string, audited bool) (*relayProc, error) {
	bin := filepath.Join(work, "relay")
	if _, err := os.Stat(bin); err != nil {
		if err := goBuild(bin, "github.com/parleychat/parley/cmd/relay"); err != nil {
			return nil, fmt.Errorf("build relay: %w", err)
		}
	}
	data, err := os.MkdirTemp(work, "relay-data")
	if err != nil {
		return nil, err
	}
	data = filepath.Join(data, "d")
	if out, err := exec.Command(bin, "--data", data, "init").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("relay init: %v: %s", err, out)
	}
	listen, err := freePort("udp")
	if err != nil {
		return nil, err
	}
	// PARLEY_LOADGEN_ADMIN=127.0.0.1:PORT turns on the relay's admin
	// listener, to take profiles while the load runs.
	if err := os.WriteFile(filepath.Join(data, server.ConfigFile), fmt.Appendf(nil, relayConfig, listen, os.Getenv("PARLEY_LOADGEN_ADMIN"), audited), 0o600); err != nil {
		return nil, err
	}
	return serving(exec.Command(bin, "--data", data, "serve", "--log-level", "warn"))
}

// serving starts cmd, a relay or the floor, and waits for the line
// "serving FINGERPRINT@HOST:PORT" that says it listens.
func serving(cmd *exec.Cmd) (*relayProc, error) {
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &relayProc{proc: proc{cmd}}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "serving "); ok {
			if r.addr, err = relay.ParseAddr(a); err != nil {
				r.stop()
				return nil, err
			}
			go func() {
				for sc.Scan() {
				}
			}()
			return r, nil
		}
	}
	r.stop()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd.Path, err)
	}
	return nil, fmt.Errorf("%s exited before serving", cmd.Path)
}

// fleet holds many relay clients on one UDP socket.
type fleet struct {
	tr      *quic.Transport
	clients []*relay.Client
	keys    []identity.PrivateKey
}

func newFleet() (*fleet, error) {
	tr, _, err := loopbackTransport()
	if err != nil {
		return nil, err
	}
	return &fleet{tr: tr}, nil
}

// loopbackTransport is a QUIC transport for many connections on a UDP
// socket of its own on loopback; done closes both.
func loopbackTransport() (tr *quic.Transport, done func(), err error) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, err
	}
	tr = &quic.Transport{Conn: udp}
	return tr, func() { tr.Close(); udp.Close() }, nil
}

func (f *fleet) dial(ctx context.Context, addr relay.Addr, n int, conc int) error {
	var mu sync.Mutex
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var firstErr error
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			k, err := identity.Generate(rand.Reader)
			if err == nil {
				var c *relay.Client
				c, err = relay.Dial(ctx, addr, k, relay.ClientOptions{Transport: f.tr})
				if err == nil {
					mu.Lock()
					f.clients = append(f.clients, c)
					f.keys = append(f.keys, k)
					mu.Unlock()
					return
				}
			}
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return firstErr
}

func (f *fleet) close() {
	for _, c := range f.clients {
		c.Close()
	}
	f.tr.Close()
	f.tr.Conn.Close()
}

// signed makes count envelopes of key in room, each with a 256-byte text
// body that starts with its number; signing happens before any clock runs.
func signed(key identity.PrivateKey, room string, count int) ([][]byte, map[protocol.ID]int, error) {
	raws := make([][]byte, count)
	index := make(map[protocol.ID]int, count)
	var prev protocol.ID
	pad := strings.Repeat("x", 256-16)
	for i := range count {
		payload, err := (&protocol.Text{Nick: "load", Body: fmt.Sprintf("%016x", i) + pad}).MarshalBinary()
		if err != nil {
			return nil, nil, err
		}
		e := &protocol.Envelope{Kind: protocol.KindText, Room: room, Seq: uint64(i + 1), Prev: prev, Lamport: uint64(i + 1), Time: time.Now().UnixMilli(), Payload: payload}
		id, err := e.Sign(key)
		if err != nil {
			return nil, nil, err
		}
		if raws[i], err = e.MarshalBinary(); err != nil {
			return nil, nil, err
		}
		index[id] = i
		prev = id
	}
	return raws, index, nil
}

// publishAll publishes raws on c with at most window outstanding. It
// calls pace(i) before it starts publish i, and sent(i) just before the
// call to Publish (in the publish's own goroutine: what starting it costs
// is the load generator's, not the relay's).
func publishAll(ctx context.Context, c *relay.Client, raws [][]byte, window int, pace, sent func(int)) error {
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for i, raw := range raws {
		sem <- struct{}{}
		if failed.Load() != nil {
			break
		}
		if pace != nil {
			pace(i)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if sent != nil {
				sent(i)
			}
			if _, err := c.Publish(ctx, raw); err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		return *p
	}
	return nil
}

func relayPublish(ctx context.Context, r *relayProc, clients, each int) (result, error) {
	f, err := newFleet()
	if err != nil {
		return result{}, err
	}
	defer f.close()
	if err := f.dial(ctx, r.addr, clients, clients); err != nil {
		return result{}, err
	}
	batches := make([][][]byte, clients)
	for i := range clients {
		if batches[i], _, err = signed(f.keys[i], fmt.Sprintf("publish-%d", i), each); err != nil {
			return result{}, err
		}
	}
	cpu0, err := cpuTime(os.Getpid())
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() { errs <- publishAll(ctx, f.clients[i], batches[i], 256, nil, nil) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			return result{}, err
		}
	}
	cpu1, err := cpuTime(os.Getpid())
	if err != nil {
		return result{}, err
	}
	return result{n: clients * each, rate: float64(clients*each) / elapsed.Seconds(), cpu: cpu1 - cpu0}, nil
}

// fanoutRun publishes msgs envelopes to subs subscribers of the relay at
// addr, or of the floor forwarder (floor.go) if floor is set; window is
// how many relay publishes may be unacknowledged (the floor acknowledges
// nothing). It returns deliveries per second and the publish-to-delivery
// percentiles over every delivery.
func fanoutRun(ctx context.Context, addr relay.Addr, floor bool, subs, msgs, window int, interval time.Duration) (result, error) {
	keys := make([]identity.PrivateKey, subs+1)
	for i := range keys {
		var err error
		if keys[i], err = identity.Generate(rand.Reader); err != nil {
			return result{}, err
		}
	}
	room := fmt.Sprintf("fanout-%d-%d", subs, time.Now().UnixNano())
	raws, index, err := signed(keys[0], room, msgs)
	if err != nil {
		return result{}, err
	}
	sentAt := make([]atomic.Int64, msgs)
	lat := make([][]time.Duration, subs)
	var got atomic.Int64
	var last atomic.Int64
	var wg sync.WaitGroup
	// Subscribers read frames themselves and do not check signatures, as
	// a NATS client does not: this measures the relay's fan-out, not the
	// client library's verification (36 µs an envelope).
	conns := make([]*quic.Conn, 0, subs)
	defer func() {
		for _, c := range conns {
			c.CloseWithError(0, "")
		}
	}()
	for s := range subs {
		conn, err := relay.DialQUIC(ctx, addr, keys[1+s])
		if err != nil {
			return result{}, err
		}
		conns = append(conns, conn)
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			return result{}, err
		}
		body, _ := (&wire.Subscribe{Room: room}).MarshalBinary()
		if _, err := str.Write(wire.AppendFrame(nil, wire.FrameSubscribe, body)); err != nil {
			return result{}, err
		}
		rd := bufio.NewReaderSize(str, 64<<10)
		live := make(chan error, 1)
		wg.Go(func() {
			defer str.CancelRead(0)
			var h [wire.FrameHeaderSize]byte
			buf := make([]byte, wire.MaxFrameBody)
			for n := 0; n < msgs; {
				if _, err := io.ReadFull(rd, h[:]); err != nil {
					live <- err
					return
				}
				t, size, err := wire.ParseFrameHeader(h)
				if err != nil {
					live <- err
					return
				}
				if _, err := io.ReadFull(rd, buf[:size]); err != nil {
					live <- err
					return
				}
				switch t {
				case wire.FrameLive:
					live <- nil
				case wire.FrameEnvelope:
					now := time.Now()
					i := index[protocol.IDOf(buf[:size])]
					lat[s] = append(lat[s], now.Sub(time.Unix(0, sentAt[i].Load())))
					got.Add(1)
					last.Store(now.UnixNano())
					n++
				}
			}
		})
		if err := <-live; err != nil {
			return result{}, err
		}
	}
	// The publisher connects before the clock starts.
	var (
		c       *relay.Client
		pubConn *quic.Conn
	)
	if floor {
		if pubConn, err = relay.DialQUIC(ctx, addr, keys[0]); err != nil {
			return result{}, err
		}
		defer pubConn.CloseWithError(0, "")
	} else {
		if c, err = relay.Dial(ctx, addr, keys[0], relay.ClientOptions{}); err != nil {
			return result{}, err
		}
		defer c.Close()
	}
	start := time.Now()
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	pace := func(int) {
		if tick != nil {
			<-tick
		}
	}
	sent := func(i int) { sentAt[i].Store(time.Now().UnixNano()) }
	if floor {
		err = floorPublish(ctx, pubConn, raws, pace, sent)
	} else {
		err = publishAll(ctx, c, raws, window, pace, sent)
	}
	if err != nil {
		return result{}, err
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		for _, c := range conns { // ends the subscribers' reads
			c.CloseWithError(0, "")
		}
		<-done
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	p50, p99 := percentiles(all)
	n := got.Load()
	elapsed := time.Unix(0, last.Load()).Sub(start)
	return result{n: int(n), rate: float64(n) / elapsed.Seconds(), p50: p50, p99: p99, lost: subs*msgs - int(n)}, nil
}

func relayFanout(ctx context.Context, r *relayProc, subs, msgs int) (result, error) {
	return fanoutRun(ctx, r.addr, r.floor, subs, msgs, 256, 0)
}

func relayLatency(ctx context.Context, r *relayProc, rate, msgs int) (result, error) {
	return fanoutRun(ctx, r.addr, r.floor, 1, msgs, 1<<20, time.Second/time.Duration(rate))
}

func relayIdle(ctx context.Context, r *relayProc, n int) (int64, int64, error) {
	if r.floor {
		return floorIdle(ctx, r, n)
	}
	f, err := newFleet()
	if err != nil {
		return 0, 0, err
	}
	defer f.close()
	time.Sleep(2 * time.Second)
	before, err := rss(r.cmd.Process.Pid)
	if err != nil {
		return 0, 0, err
	}
	if err := f.dial(ctx, r.addr, n, 32); err != nil {
		return 0, 0, err
	}
	for i, c := range f.clients {
		sub, err := c.Subscribe(ctx, fmt.Sprintf("idle-%d", i%100), protocol.ID{})
		if err != nil {
			return 0, 0, err
		}
		<-sub.Live
	}
	time.Sleep(2 * time.Second)
	after, err := rss(r.cmd.Process.Pid)
	return before, after, err
}

func relayConnect(ctx context.Context, r *relayProc, conc int, d time.Duration) (int, float64, error) {
	tr, done, err := loopbackTransport()
	if err != nil {
		return 0, 0, err
	}
	defer done()
	if r.floor {
		return connectLoop(conc, d, func(key identity.PrivateKey) error { return floorRequest(ctx, tr, r.addr, key) })
	}
	return connectLoop(conc, d, func(key identity.PrivateKey) error {
		c, err := relay.Dial(ctx, r.addr, key, relay.ClientOptions{Transport: tr}) // handshake and an Info round trip
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// connectLoop runs conc workers, each with an identity of its own, that
// call connect over and over for d, and counts the calls.
func connectLoop(conc int, d time.Duration, connect func(identity.PrivateKey) error) (int, float64, error) {
	keys := make([]identity.PrivateKey, conc)
	for i := range keys {
		var err error
		if keys[i], err = identity.Generate(rand.Reader); err != nil {
			return 0, 0, err
		}
	}
	var count atomic.Int64
	var failed atomic.Pointer[error]
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := connect(keys[w]); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		return 0, 0, *p
	}
	n := int(count.Load())
	return n, float64(n) / time.Since(start).Seconds(), nil
}

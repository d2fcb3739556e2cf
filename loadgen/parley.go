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
	"github.com/parleychat/parley/internal/freeport"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/server"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/quic-go/quic-go"
)

type relayProc struct {
	proc
	addr relay.Addr
	// floor: this is the floor forwarder (floor.go), not a relay.
	floor bool
}

// over is r reached over via (relay.ViaQUIC or relay.ViaTCP).
func (r *relayProc) over(via relay.Via) endpoint { return endpoint{r, via} }

// endpoint is a relay or the floor forwarder reached over one transport:
// a row of the tables. Its clients use that transport only.
type endpoint struct {
	*relayProc
	via relay.Via
}

func (e endpoint) String() string {
	switch {
	case e.floor && e.via == relay.ViaTCP:
		return "TCP+TLS floor"
	case e.floor:
		return "quic-go floor"
	case e.via == relay.ViaTCP:
		return "parley relay, TCP+TLS"
	}
	return "parley relay, QUIC"
}

// dialBare opens a bare connection to e as key, for code that writes
// frames itself: over QUIC on tr's socket (a socket of its own if tr is
// nil), or over TCP.
func dialBare(ctx context.Context, tr *quic.Transport, e endpoint, key identity.PrivateKey) (transport.Conn, error) {
	if e.via == relay.ViaTCP {
		return relay.DialTCP(ctx, e.addr, key)
	}
	conn, err := relay.DialQUICOn(ctx, tr, e.addr, key)
	if err != nil {
		return nil, err
	}
	return transport.FromQUIC(conn), nil
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
conns_per_identity = 20000
conns_per_address = 20000
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
	listen, err := freeport.Loopback()
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

// fleet holds many relay clients over one transport: over QUIC, on one
// UDP socket.
type fleet struct {
	tr      *quic.Transport
	via     relay.Via
	clients []*relay.Client
	keys    []identity.PrivateKey
}

func newFleet(via relay.Via) (*fleet, error) {
	tr, _, err := loopbackTransport()
	if err != nil {
		return nil, err
	}
	return &fleet{tr: tr, via: via}, nil
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
				c, err = relay.Dial(ctx, addr, k, relay.ClientOptions{Transport: f.tr, Via: f.via})
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

func relayPublish(ctx context.Context, e endpoint, clients, each int) (result, error) {
	f, err := newFleet(e.via)
	if err != nil {
		return result{}, err
	}
	defer f.close()
	if err := f.dial(ctx, e.addr, clients, clients); err != nil {
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

// fanoutRun publishes msgs envelopes to subs subscribers of e, the relay
// or the floor forwarder (floor.go); window is how many relay publishes
// may be unacknowledged (the floor acknowledges nothing). Publisher and
// subscribers connect over e's transport. It returns deliveries per
// second and the publish-to-delivery percentiles over every delivery.
func fanoutRun(ctx context.Context, e endpoint, subs, msgs, window int, interval time.Duration) (result, error) {
	keys, err := generateKeys(subs + 1)
	if err != nil {
		return result{}, err
	}
	room := fmt.Sprintf("fanout-%d-%d", subs, time.Now().UnixNano())
	raws, index, err := signed(keys[0], room, msgs)
	if err != nil {
		return result{}, err
	}
	sub := &subscribers{room: room, msgs: msgs, index: index, sentAt: make([]atomic.Int64, msgs), lat: make([][]time.Duration, subs)}
	defer sub.closeConns()
	for s := range subs {
		if err := sub.subscribe(ctx, e, keys[1+s], s); err != nil {
			return result{}, err
		}
	}
	// The publisher connects before the clock starts.
	publish, closePublisher, err := dialPublisher(ctx, e, keys[0], window)
	if err != nil {
		return result{}, err
	}
	defer closePublisher()
	start := time.Now()
	pace, stopPacing := pacer(interval)
	defer stopPacing()
	if err := publish(raws, pace, sub.sent); err != nil {
		return result{}, err
	}
	sub.await(30 * time.Second)
	return sub.result(start), nil
}

func generateKeys(n int) ([]identity.PrivateKey, error) {
	keys := make([]identity.PrivateKey, n)
	for i := range keys {
		var err error
		if keys[i], err = identity.Generate(rand.Reader); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// dialPublisher connects the publisher of a fan-out run, to the relay
// (a client publishing with up to window unacknowledged) or to the floor
// forwarder. publish sends raws, calling pace before and sent after each.
func dialPublisher(ctx context.Context, e endpoint, key identity.PrivateKey, window int) (publish func(raws [][]byte, pace, sent func(int)) error, hangUp func(), err error) {
	if e.floor {
		conn, err := dialBare(ctx, nil, e, key)
		if err != nil {
			return nil, nil, err
		}
		publish = func(raws [][]byte, pace, sent func(int)) error { return floorPublish(ctx, conn, raws, pace, sent) }
		return publish, func() { conn.Close(wire.CodeOK, "") }, nil
	}
	c, err := relay.Dial(ctx, e.addr, key, relay.ClientOptions{Via: e.via})
	if err != nil {
		return nil, nil, err
	}
	publish = func(raws [][]byte, pace, sent func(int)) error { return publishAll(ctx, c, raws, window, pace, sent) }
	return publish, func() { c.Close() }, nil
}

// pacer returns a pace for publishAll and floorPublish that waits for
// each tick of interval, or does not wait if interval is not positive;
// stop stops its ticker.
func pacer(interval time.Duration) (pace func(int), stop func()) {
	if interval <= 0 {
		return func(int) {}, func() {}
	}
	t := time.NewTicker(interval)
	return func(int) { <-t.C }, t.Stop
}

// subscribers are the subscribers of one fan-out run, and what they
// received: each envelope's publish-to-delivery latency, from when the
// publisher sent it (sentAt, by its index in the run). They read frames
// themselves and do not check signatures, as a NATS client does not: this
// measures the relay's fan-out, not the client library's verification
// (36 µs an envelope).
type subscribers struct {
	room   string
	msgs   int // each subscriber reads until it has this many
	index  map[protocol.ID]int
	sentAt []atomic.Int64 // unix nanoseconds
	lat    [][]time.Duration
	got    atomic.Int64
	last   atomic.Int64 // when the newest envelope arrived, unix nanoseconds
	conns  []transport.Conn
	wg     sync.WaitGroup
}

// sent records that the publisher sent envelope i now.
func (sub *subscribers) sent(i int) { sub.sentAt[i].Store(time.Now().UnixNano()) }

// subscribe connects subscriber s with key, subscribes it to the room
// and starts its reader; it returns once the subscription is live.
func (sub *subscribers) subscribe(ctx context.Context, e endpoint, key identity.PrivateKey, s int) error {
	conn, err := dialBare(ctx, nil, e, key)
	if err != nil {
		return err
	}
	sub.conns = append(sub.conns, conn)
	str, err := conn.OpenStream(ctx)
	if err != nil {
		return err
	}
	body, _ := (&wire.Subscribe{Room: sub.room}).MarshalBinary()
	if _, err := str.Write(wire.AppendFrame(nil, wire.FrameSubscribe, body)); err != nil {
		return err
	}
	rd := bufio.NewReaderSize(str, 64<<10)
	live := make(chan error, 1)
	sub.wg.Go(func() {
		defer str.CancelRead(wire.CodeOK)
		sub.read(s, rd, live)
	})
	return <-live
}

// read reads subscriber s's frames until it has msgs envelopes. It sends
// nil on live when the subscription goes live, or the error that ended
// the reading.
func (sub *subscribers) read(s int, rd *bufio.Reader, live chan<- error) {
	var h [wire.FrameHeaderSize]byte
	buf := make([]byte, wire.MaxFrameBody)
	for n := 0; n < sub.msgs; {
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
			sub.received(s, buf[:size])
			n++
		}
	}
}

// received records that subscriber s received envelope raw now.
func (sub *subscribers) received(s int, raw []byte) {
	now := time.Now()
	i := sub.index[protocol.IDOf(raw)]
	sub.lat[s] = append(sub.lat[s], now.Sub(time.Unix(0, sub.sentAt[i].Load())))
	sub.got.Add(1)
	sub.last.Store(now.UnixNano())
}

// await waits until every subscriber has read every envelope, or for
// timeout, then ends their reads.
func (sub *subscribers) await(timeout time.Duration) {
	done := make(chan struct{})
	go func() { sub.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		sub.closeConns() // ends the subscribers' reads
		<-done
	}
}

func (sub *subscribers) closeConns() {
	for _, c := range sub.conns {
		c.Close(wire.CodeOK, "")
	}
}

// result is the run's deliveries per second, from start to the last
// delivery, and the latency percentiles over every delivery.
func (sub *subscribers) result(start time.Time) result {
	var all []time.Duration
	for _, l := range sub.lat {
		all = append(all, l...)
	}
	p50, p99 := percentiles(all)
	n := sub.got.Load()
	elapsed := time.Unix(0, sub.last.Load()).Sub(start)
	return result{n: int(n), rate: float64(n) / elapsed.Seconds(), p50: p50, p99: p99, lost: len(sub.lat)*sub.msgs - int(n)}
}

func relayFanout(ctx context.Context, e endpoint, subs, msgs int) (result, error) {
	return fanoutRun(ctx, e, subs, msgs, 256, 0)
}

func relayLatency(ctx context.Context, e endpoint, rate, msgs int) (result, error) {
	return fanoutRun(ctx, e, 1, msgs, 1<<20, time.Second/time.Duration(rate))
}

// relayIdle holds n clients of e, each subscribed to a room, and returns
// e's resident memory before and after.
func relayIdle(ctx context.Context, e endpoint, n int) (int64, int64, error) {
	if e.floor {
		return floorIdle(ctx, e, n)
	}
	f, err := newFleet(e.via)
	if err != nil {
		return 0, 0, err
	}
	defer f.close()
	time.Sleep(2 * time.Second)
	before, err := rss(e.cmd.Process.Pid)
	if err != nil {
		return 0, 0, err
	}
	if err := f.dial(ctx, e.addr, n, 32); err != nil {
		return 0, 0, err
	}
	if err := f.subscribeAll(ctx); err != nil {
		return 0, 0, err
	}
	time.Sleep(2 * time.Second)
	after, err := rss(e.cmd.Process.Pid)
	return before, after, err
}

// subscribeAll subscribes each client of f to one of 100 rooms and waits
// until each subscription is live.
func (f *fleet) subscribeAll(ctx context.Context) error {
	for i, c := range f.clients {
		sub, err := c.Subscribe(ctx, fmt.Sprintf("idle-%d", i%100), protocol.ID{})
		if err != nil {
			return err
		}
		<-sub.Live
	}
	return nil
}

func relayConnect(ctx context.Context, e endpoint, conc int, d time.Duration) (int, float64, error) {
	tr, done, err := loopbackTransport()
	if err != nil {
		return 0, 0, err
	}
	defer done()
	if e.floor {
		return connectLoop(conc, d, func(key identity.PrivateKey) error { return floorRequest(ctx, tr, e, key) })
	}
	return connectLoop(conc, d, func(key identity.PrivateKey) error {
		c, err := relay.Dial(ctx, e.addr, key, relay.ClientOptions{Transport: tr, Via: e.via}) // handshake and an Info round trip
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

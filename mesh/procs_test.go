package mesh

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/internal/testkit"
)

// One process for every peer
//
// BenchmarkMesh runs all its peers in one process: one heap, one garbage
// collector, one scheduler for 100 nodes. Each collection there marks
// every node's memory at once and stalls every node at once, which no
// real mesh does: each peer is a process on a machine of its own.
// BenchmarkPeerProcesses runs each peer as a process of its own (this test
// binary again, as TestMeshPeer), on the same loopback and the same
// topology, so that what a node keeps in memory costs its own collector
// only, as it would in the field. The machine's cores are still shared,
// so the CPU a delivery takes still counts:
//
//	go test -c -o /tmp/mesh.test ./mesh
//	cd mesh && /tmp/mesh.test -test.run '^$' -test.bench 'PeerProcesses/peers=100/' -test.benchtime 3x
//
// The latency and CPU figures are those of BenchmarkMesh: publish to the
// last receiver of each message (the clock is the machine's, shared by
// the processes), and the CPU time of every peer process during the
// measured phase. A delivery costs four to five times the CPU it does in
// one process (each process has its own runtime, and the kernel switches
// between 60 or 100 of them, most of the time in system calls), so the
// rates are 20 and 10 a second; on two cores 100 peers are past their
// knee even at 10 (docs/performance.md). MESH_BENCH_PROFILE=<folder>
// makes every peer write a CPU profile of its whole life there.
func BenchmarkPeerProcesses(b *testing.B) {
	for _, peers := range []int{60, 100} {
		for _, impl := range []string{"parley", "gossipsub-default"} {
			for _, rate := range []int{20, 10} {
				b.Run(fmt.Sprintf("peers=%d/%s/latency-%dps", peers, impl, rate), func(b *testing.B) {
					procNet(b, impl, peers).latency(b, rate)
				})
			}
		}
	}
}

// peerEnv names the peer a process of this binary is to be:
// "implementation/index".
const peerEnv = "MESH_BENCH_PEER"

// TestMeshPeer is one peer of BenchmarkPeerProcesses, when the benchmark runs
// this binary as one; run otherwise, it skips. It reads commands on its
// standard input, one a line, and answers on its standard output
// (peerProc has both ends), until its input closes.
func TestMeshPeer(t *testing.T) {
	spec := os.Getenv(peerEnv)
	if spec == "" {
		t.Skip("a peer process of BenchmarkPeerProcesses")
	}
	impl, index, _ := strings.Cut(spec, "/")
	i, err := strconv.Atoi(index)
	if err != nil {
		t.Fatalf("%s=%q: %v", peerEnv, spec, err)
	}
	if dir := os.Getenv("MESH_BENCH_PROFILE"); dir != "" {
		// The whole life of the peer, its start too: go tool pprof
		// merges the peers' files.
		stop := recordPhase(t, filepath.Join(dir, fmt.Sprintf("peer-%s-%d.cpu", impl, i)), pprof.StartCPUProfile, pprof.StopCPUProfile)
		defer stop()
	}
	var p benchPeer
	switch impl {
	case "parley":
		p = newParleyPeer(t, i)
	case "gossipsub-default":
		p = newGossipsubPeer(t, i)
	default:
		t.Fatalf("%s=%q: no such implementation", peerEnv, spec)
	}
	if err := servePeer(p, os.Stdin, os.Stdout); err != nil {
		t.Fatal(err)
	}
}

// benchPeer is one peer of either implementation, in its own process.
type benchPeer interface {
	addr() string
	connect(ctx context.Context, addr string) error
	ready() bool
	publish(ctx context.Context, seq uint64) error
	log() *arrivalLog
}

// arrivalLog is when a peer got each message, and when it published.
type arrivalLog struct {
	mu   sync.Mutex
	got  map[uint64]time.Time
	sent map[uint64]time.Time
}

func newArrivalLog() *arrivalLog {
	return &arrivalLog{got: map[uint64]time.Time{}, sent: map[uint64]time.Time{}}
}

func (l *arrivalLog) arrive(seq uint64) {
	now := time.Now()
	l.mu.Lock()
	if _, dup := l.got[seq]; !dup {
		l.got[seq] = now
	}
	l.mu.Unlock()
}

func (l *arrivalLog) markSent(seq uint64) {
	now := time.Now()
	l.mu.Lock()
	l.sent[seq] = now
	l.mu.Unlock()
}

func (l *arrivalLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.got)
}

// servePeer answers the benchmark's commands:
//
//	connect ADDR  dial a peer               → ok | error TEXT
//	ready         wait for the room's mesh  → ready | error TEXT
//	pub SEQ       publish message SEQ       → (nothing)
//	wait N        wait for N messages (or 30 s, or 5 s without one more),
//	              then tell when each came and was sent
//	                                        → got SEQ NS ..., sent SEQ NS ..., end
//	cpu           CPU time used so far      → cpu NS
func servePeer(p benchPeer, in io.Reader, out io.Writer) error {
	ctx := context.Background()
	w := bufio.NewWriter(out)
	reply := func(format string, args ...any) error {
		fmt.Fprintf(w, format+"\n", args...)
		return w.Flush()
	}
	if err := reply("addr %s", p.addr()); err != nil {
		return err
	}
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		cmd, arg, _ := strings.Cut(lines.Text(), " ")
		var err error
		switch cmd {
		case "connect":
			if err = p.connect(ctx, arg); err != nil {
				err = reply("error %v", err)
			} else {
				err = reply("ok")
			}
		case "ready":
			deadline := time.Now().Add(patience)
			for !p.ready() && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if p.ready() {
				err = reply("ready")
			} else {
				err = reply("error no mesh after %v", patience)
			}
		case "pub":
			seq, perr := strconv.ParseUint(arg, 10, 64)
			if perr != nil {
				return fmt.Errorf("pub %q: %w", arg, perr)
			}
			p.log().markSent(seq)
			if err := p.publish(ctx, seq); err != nil {
				return fmt.Errorf("publish %d: %w", seq, err)
			}
		case "wait":
			n, perr := strconv.Atoi(arg)
			if perr != nil {
				return fmt.Errorf("wait %q: %w", arg, perr)
			}
			err = report(p.log(), n, w)
		case "cpu":
			d, cerr := processCPU()
			if cerr != nil {
				return cerr
			}
			err = reply("cpu %d", d)
		default:
			return fmt.Errorf("unknown command %q", lines.Text())
		}
		if err != nil {
			return err
		}
	}
	return lines.Err()
}

// report waits for n arrivals, as servePeer's wait, and writes the log.
func report(l *arrivalLog, n int, w *bufio.Writer) error {
	deadline := time.Now().Add(30 * time.Second)
	last, since := l.count(), time.Now()
	for got := last; got < n && time.Now().Before(deadline) && time.Since(since) < 5*time.Second; got = l.count() {
		if got != last {
			last, since = got, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for seq, at := range l.got {
		fmt.Fprintf(w, "got %d %d\n", seq, at.UnixNano())
	}
	for seq, at := range l.sent {
		fmt.Fprintf(w, "sent %d %d\n", seq, at.UnixNano())
	}
	fmt.Fprintln(w, "end")
	return w.Flush()
}

// parleyPeer is a Parley node with a store on disk, in the room "bench",
// as parleyNet's.
type parleyPeer struct {
	node   *Node
	room   *Room
	author testkit.Author
	l      *arrivalLog
}

func newParleyPeer(t *testing.T, i int) *parleyPeer {
	unlimited := func(c *Config) { c.SenderRate, c.SenderBurst = 1e9, 1e9 }
	n := start(t, newSpec(t, i), unlimited)
	p := &parleyPeer{node: n, room: join(t, n, "bench"), l: newArrivalLog()}
	p.author = testkit.Author{Key: n.cfg.Key, Room: "bench"}
	go func() {
		for {
			select {
			case m := <-p.room.Messages():
				if seq, ok := textSeq(m.Env.Payload); ok {
					p.l.arrive(seq)
				}
			case <-p.room.ctx.Done():
				return
			}
		}
	}()
	return p
}

func (p *parleyPeer) addr() string { return p.node.Addrs()[0] }
func (p *parleyPeer) connect(ctx context.Context, addr string) error {
	return p.node.Connect(ctx, addr)
}
func (p *parleyPeer) ready() bool {
	peers := len(p.room.Peers())
	return peers > 0 && p.room.MeshSize() >= min(peers, 4)
}
func (p *parleyPeer) log() *arrivalLog { return p.l }

// publish signs and publishes as parleyNet's publisher does.
func (p *parleyPeer) publish(ctx context.Context, seq uint64) error {
	raw, id, e, err := textEnvelope(&p.author, seq)
	if err != nil {
		return err
	}
	return p.room.PublishChecked(ctx, e, id, raw)
}

// gossipsubPeer is go-libp2p-pubsub with its default settings, as
// gossipsubNet's.
type gossipsubPeer struct {
	h     host.Host
	topic *pubsub.Topic
	l     *arrivalLog
}

func newGossipsubPeer(t *testing.T, _ int) *gossipsubPeer {
	ctx, cancel := context.WithCancel(context.Background())
	h, topic, sub, err := gossipsubNode(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		h.Close()
	})
	p := &gossipsubPeer{h: h, topic: topic, l: newArrivalLog()}
	wg.Add(1)
	go func() {
		defer wg.Done()
		readGossipsub(ctx, sub, p.l.arrive)
	}()
	return p
}

func (p *gossipsubPeer) addr() string {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: p.h.ID(), Addrs: p.h.Addrs()})
	if err != nil || len(addrs) == 0 {
		return ""
	}
	return addrs[0].String()
}
func (p *gossipsubPeer) connect(ctx context.Context, addr string) error {
	ai, err := peer.AddrInfoFromString(addr)
	if err != nil {
		return err
	}
	return p.h.Connect(ctx, *ai)
}
func (p *gossipsubPeer) ready() bool { return len(p.topic.ListPeers()) > 0 }
func (p *gossipsubPeer) publish(ctx context.Context, seq uint64) error {
	return p.topic.Publish(ctx, payloadFor(seq))
}
func (p *gossipsubPeer) log() *arrivalLog { return p.l }

// peerProc is one peer process of BenchmarkPeerProcesses, seen from the
// benchmark: its input, and its output a line at a time.
type peerProc struct {
	i     int
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	addr  string
}

// startPeerProc starts peer i of impl; its standard error goes to a file
// in logs. The benchmark stops it.
func startPeerProc(b *testing.B, impl string, i int, logs string) *peerProc {
	cmd := exec.Command(os.Args[0], "-test.run=^TestMeshPeer$", "-test.timeout=30m")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s/%d", peerEnv, impl, i))
	stderr, err := os.Create(filepath.Join(logs, fmt.Sprintf("peer-%d.log", i)))
	if err != nil {
		b.Fatal(err)
	}
	defer stderr.Close() // the child has its own copy
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start peer %d: %v", i, err)
	}
	p := &peerProc{i: i, cmd: cmd, in: in, lines: make(chan string, 64)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	b.Cleanup(p.stop)
	return p
}

// stop closes the peer's input, which ends it, and kills it if it has
// not ended within 15 s.
func (p *peerProc) stop() {
	p.in.Close()
	go func() {
		for range p.lines { // what it still says, so that it can end
		}
	}()
	done := make(chan struct{})
	go func() {
		p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

func (p *peerProc) send(format string, args ...any) error {
	_, err := fmt.Fprintf(p.in, format+"\n", args...)
	return err
}

// expect returns the rest of the peer's next line that begins with
// prefix, skipping others (the test framework's); an error line, an
// ended peer or a minute of silence fails the benchmark.
func (p *peerProc) expect(b *testing.B, prefix string) string {
	timeout := time.After(patience)
	for {
		select {
		case line, ok := <-p.lines:
			switch {
			case !ok:
				b.Fatalf("peer %d ended (its log is in the benchmark's temporary folder)", p.i)
			case strings.HasPrefix(line, "error "):
				b.Fatalf("peer %d: %s", p.i, line)
			case strings.HasPrefix(line, prefix):
				return strings.TrimPrefix(line, prefix)
			}
		case <-timeout:
			b.Fatalf("peer %d: no %q after %v", p.i, prefix, patience)
		}
	}
}

// procNet starts n peer processes of impl, connects them as the
// in-process benchmarks do, and waits for the room's mesh.
func procNet(b *testing.B, impl string, n int) *benchNet {
	bn := newBenchNet(n)
	logs := b.TempDir()
	procs := make([]*peerProc, n)
	for i := range procs {
		procs[i] = startPeerProc(b, impl, i, logs)
	}
	for _, p := range procs {
		p.addr = p.expect(b, "addr ")
	}
	connectAll(b, n, func(i, j int) {
		if err := procs[i].send("connect %s", procs[j].addr); err != nil {
			b.Fatal(err)
		}
		procs[i].expect(b, "ok")
	})
	for _, p := range procs {
		if err := p.send("ready"); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range procs {
		p.expect(b, "ready")
	}
	time.Sleep(3 * time.Second) // a few heartbeats, as gossipsubNet
	bn.publish = func(_ context.Context, seq uint64) error { return procs[0].send("pub %d", seq) }
	bn.finish = func(count int) []time.Time { return collect(b, bn, procs, count) }
	bn.used = func() usage {
		var u usage
		for _, p := range procs {
			if err := p.send("cpu"); err != nil {
				b.Fatal(err)
			}
			ns, err := strconv.ParseInt(p.expect(b, "cpu "), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			u.cpu += time.Duration(ns)
		}
		return u
	}
	bn.extra = func() map[string]float64 { return nil }
	return bn
}

// collect asks every peer for its arrivals (waiting for count at most),
// notes them in bn, and returns when each message was published.
func collect(b *testing.B, bn *benchNet, procs []*peerProc, count int) []time.Time {
	for i, p := range procs {
		want := count
		if i == 0 {
			want = 0 // the publisher: its sends only
		}
		if err := p.send("wait %d", want); err != nil {
			b.Fatal(err)
		}
	}
	sent := make([]time.Time, count)
	bn.mu.Lock()
	defer bn.mu.Unlock()
	for i, p := range procs {
		for {
			line := p.expect(b, "")
			if line == "end" {
				break
			}
			var (
				what    string
				seq, ns int64
			)
			if _, err := fmt.Sscanf(line, "%s %d %d", &what, &seq, &ns); err != nil || seq < 0 || seq >= int64(count) {
				continue
			}
			switch {
			case what == "sent" && i == 0:
				sent[seq] = time.Unix(0, ns)
			case what == "got" && i > 0:
				bn.arrivals[i][uint64(seq)] = time.Unix(0, ns)
				bn.received[i].Add(1)
			}
		}
	}
	return sent
}

// fakePeer is a benchPeer that delivers what it publishes to itself.
type fakePeer struct {
	l         *arrivalLog
	connected []string
}

func (p *fakePeer) addr() string { return "/fake" }
func (p *fakePeer) connect(_ context.Context, addr string) error {
	if addr == "bad" {
		return fmt.Errorf("no route to %s", addr)
	}
	p.connected = append(p.connected, addr)
	return nil
}
func (p *fakePeer) ready() bool { return len(p.connected) > 0 }
func (p *fakePeer) publish(_ context.Context, seq uint64) error {
	p.l.arrive(seq)
	return nil
}
func (p *fakePeer) log() *arrivalLog { return p.l }

// TestServePeer drives a peer process's command loop as the benchmark
// does, and checks each answer.
func TestServePeer(t *testing.T) {
	p := &fakePeer{l: newArrivalLog()}
	in := strings.NewReader("connect bad\nconnect /a\nready\npub 0\npub 1\nwait 2\ncpu\n")
	var out strings.Builder
	if err := servePeer(p, in, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	counts := map[string]int{}
	for _, line := range lines {
		word, _, _ := strings.Cut(line, " ")
		counts[word]++
	}
	want := map[string]int{"addr": 1, "error": 1, "ok": 1, "ready": 1, "got": 2, "sent": 2, "end": 1, "cpu": 1}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("answers by first word = %v, want %v\n%s", counts, want, out.String())
	}
	if lines[0] != "addr /fake" || lines[1] != "error no route to bad" || lines[2] != "ok" {
		t.Errorf("first answers = %q", lines[:3])
	}
	if err := servePeer(p, strings.NewReader("fly\n"), io.Discard); err == nil {
		t.Error("an unknown command was taken")
	}
}

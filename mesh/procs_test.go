package mesh

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/internal/cputime"
	"github.com/parleychat/parley/internal/testkit"
)

// One process for every peer, or for every ten
//
// BenchmarkMesh runs all its peers in one process: one heap, one garbage
// collector, one scheduler for 100 nodes. Each collection there marks
// every node's memory at once and stalls every node at once, which no
// real mesh does: each peer is a process on a machine of its own.
// BenchmarkPeerProcesses runs the peers in processes of their own (this
// test binary again, as TestMeshPeer), on the same loopback and the same
// topology, so that what a node keeps in memory costs its own process's
// collector only. The machine's cores are still shared, so the CPU a
// delivery takes still counts:
//
//	go test -c -o /tmp/mesh.test ./mesh
//	cd mesh && /tmp/mesh.test -test.run '^$' -test.bench 'PeerProcesses/peers=100-in-10/' -test.benchtime 1x
//
// The latency and CPU figures are those of BenchmarkMesh: publish to the
// last receiver of each message (the clock is the machine's, shared by
// the processes), and the CPU time of every peer process during the
// measured phase. With a process a peer, a delivery costs four to five
// times the CPU it does in one process (each process has its own
// runtime, and the kernel switches between 60 or 100 of them, most of the
// time in system calls), so the rates are 20 and 10 a second, and on two
// cores 100 peers are past their knee even at 10 (docs/performance.md).
// "peers=100-in-10" puts ten peers in each of ten processes: each
// collection marks a tenth of the mesh's memory and stalls a tenth of
// its nodes, on ten runtimes rather than 100. MESH_BENCH_WARMUP applies
// as in BenchmarkMesh. MESH_BENCH_PROFILE=<folder> makes every process
// write a CPU profile of its whole life there.
func BenchmarkPeerProcesses(b *testing.B) {
	shapes := []struct {
		name         string
		peers, procs int
		rates        []int
	}{
		{"peers=60", 60, 60, []int{20, 10}},
		{"peers=100", 100, 100, []int{20, 10}},
		// Ten peers a process: ten runtimes on two cores rather than 100,
		// and each collection marks and stalls a tenth of the mesh.
		{"peers=100-in-10", 100, 10, []int{50, 20, 10}},
	}
	for _, shape := range shapes {
		for _, impl := range []string{"parley", "gossipsub-default"} {
			for _, rate := range shape.rates {
				b.Run(fmt.Sprintf("%s/%s/latency-%dps", shape.name, impl, rate), func(b *testing.B) {
					procNet(b, impl, shape.peers, shape.procs).latency(b, rate)
				})
			}
		}
	}
}

// peerEnv names the peers a process of this binary is to be:
// "implementation/first/count", peers first to first+count-1 of the mesh.
const peerEnv = "MESH_BENCH_PEER"

// TestMeshPeer is one process of BenchmarkPeerProcesses, when the benchmark
// runs this binary as one; run otherwise, it skips. It reads commands on
// its standard input, one a line, and answers on its standard output
// (peerProc has both ends), until its input closes.
func TestMeshPeer(t *testing.T) {
	spec := os.Getenv(peerEnv)
	if spec == "" {
		t.Skip("a peer process of BenchmarkPeerProcesses")
	}
	impl, first, count, err := parsePeerSpec(spec)
	if err != nil {
		t.Fatalf("%s: %v", peerEnv, err)
	}
	if dir := os.Getenv("MESH_BENCH_PROFILE"); dir != "" {
		// The whole life of the process, its start too: go tool pprof
		// merges the processes' files.
		stop := recordPhase(t, filepath.Join(dir, fmt.Sprintf("peer-%s-%d.cpu", impl, first)), pprof.StartCPUProfile, pprof.StopCPUProfile)
		defer stop()
	}
	peers := make([]benchPeer, count)
	for j := range peers {
		switch impl {
		case "parley":
			peers[j] = newParleyPeer(t, first+j)
		case "gossipsub-default":
			peers[j] = newGossipsubPeer(t, first+j)
		}
	}
	if err := servePeers(peers, os.Stdin, os.Stdout); err != nil {
		t.Fatal(err)
	}
}

// parsePeerSpec reads peerEnv's value.
func parsePeerSpec(spec string) (impl string, first, count int, err error) {
	parts := strings.Split(spec, "/")
	if len(parts) != 3 {
		return "", 0, 0, fmt.Errorf("%q: want implementation/first/count", spec)
	}
	impl = parts[0]
	if impl != "parley" && impl != "gossipsub-default" {
		return "", 0, 0, fmt.Errorf("%q: no implementation %q", spec, impl)
	}
	first, err = strconv.Atoi(parts[1])
	if err == nil {
		count, err = strconv.Atoi(parts[2])
	}
	if err != nil || first < 0 || count < 1 {
		return "", 0, 0, fmt.Errorf("%q: want a first peer from 0 and a count from 1", spec)
	}
	return impl, first, count, nil
}

// benchPeer is one peer of either implementation, in a peer process.
type benchPeer interface {
	addr() string
	connect(ctx context.Context, addr string) error
	ready() bool
	publish(ctx context.Context, seq uint64) error
	log() *arrivalLog
}

// arrivalLog is when a peer got each message, and when it published; not
// the warm-up's messages (numbered from warmBase), which are not measured.
type arrivalLog struct {
	mu   sync.Mutex
	got  map[uint64]time.Time
	sent map[uint64]time.Time
}

func newArrivalLog() *arrivalLog {
	return &arrivalLog{got: map[uint64]time.Time{}, sent: map[uint64]time.Time{}}
}

func (l *arrivalLog) arrive(seq uint64) {
	if seq >= warmBase {
		return
	}
	now := time.Now()
	l.mu.Lock()
	if _, dup := l.got[seq]; !dup {
		l.got[seq] = now
	}
	l.mu.Unlock()
}

func (l *arrivalLog) markSent(seq uint64) {
	if seq >= warmBase {
		return
	}
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

// servePeers serves several peers of one process over one input and one
// output, each with servePeer, at once: a command line begins with the
// index in peers of the peer it is for, and each answer line with the
// index of the peer that gives it ("3 connect ADDR", "3 ok"). It returns
// when the input ends and every peer has ended.
func servePeers(peers []benchPeer, in io.Reader, out io.Writer) error {
	var outMu sync.Mutex // whole lines, from any peer
	inputs := make([]*io.PipeWriter, len(peers))
	ended := make(chan error, len(peers))
	for j, p := range peers {
		r, w := io.Pipe()
		inputs[j] = w
		answers := &prefixedLines{prefix: strconv.Itoa(j) + " ", mu: &outMu, out: out}
		go func() {
			err := servePeer(p, r, answers)
			r.CloseWithError(fmt.Errorf("peer %d has ended", j)) // no more commands for it
			if err != nil {
				err = fmt.Errorf("peer %d: %w", j, err)
			}
			ended <- err
		}()
	}
	err := routeCommands(in, inputs)
	for _, w := range inputs {
		w.Close()
	}
	for range peers {
		if perr := <-ended; perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// routeCommands hands each line of in, without its index, to the input of
// the peer it names.
func routeCommands(in io.Reader, inputs []*io.PipeWriter) error {
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		index, cmd, _ := strings.Cut(lines.Text(), " ")
		j, err := strconv.Atoi(index)
		if err != nil || j < 0 || j >= len(inputs) {
			return fmt.Errorf("command %q: no peer %q here", lines.Text(), index)
		}
		if _, err := io.WriteString(inputs[j], cmd+"\n"); err != nil {
			return fmt.Errorf("command %q: %w", lines.Text(), err)
		}
	}
	return lines.Err()
}

// prefixedLines writes each whole line written to it to out, after prefix,
// holding mu, so that lines from several writers never mix.
type prefixedLines struct {
	prefix string
	mu     *sync.Mutex
	out    io.Writer
	part   []byte // a line begun and not yet ended
}

func (w *prefixedLines) Write(p []byte) (int, error) {
	w.part = append(w.part, p...)
	end := bytes.LastIndexByte(w.part, '\n')
	if end < 0 {
		return len(p), nil
	}
	var whole []byte
	for line := range bytes.Lines(w.part[:end+1]) {
		whole = append(whole, w.prefix...)
		whole = append(whole, line...)
	}
	w.part = append(w.part[:0], w.part[end+1:]...)
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.out.Write(whole); err != nil {
		return 0, err
	}
	return len(p), nil
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
			d, cerr := cputime.Self()
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

// peerProc is one process of BenchmarkPeerProcesses, seen from the
// benchmark: its input, and the lines each of its peers answers.
type peerProc struct {
	first int // the mesh's index of its peer 0
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines []*lineQueue // what each of its peers answers, by its index
}

// lineQueue is what a peer has answered and the benchmark not yet read.
// It has no bound: the peers of one process answer on one stream, which
// must not wait for the benchmark to read one peer's lines before
// another's.
type lineQueue struct {
	mu     sync.Mutex
	lines  []string
	ended  bool
	update chan struct{} // a line or the end is there
}

func newLineQueue() *lineQueue { return &lineQueue{update: make(chan struct{}, 1)} }

func (q *lineQueue) push(line string) {
	q.mu.Lock()
	q.lines = append(q.lines, line)
	q.mu.Unlock()
	q.signal()
}

func (q *lineQueue) end() {
	q.mu.Lock()
	q.ended = true
	q.mu.Unlock()
	q.signal()
}

func (q *lineQueue) signal() {
	select {
	case q.update <- struct{}{}:
	default:
	}
}

// pop returns the first line, if there is one, and whether more can come.
func (q *lineQueue) pop() (line string, ok, more bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.lines) == 0 {
		return "", false, !q.ended
	}
	line, q.lines = q.lines[0], q.lines[1:]
	return line, true, true
}

// startPeerProc starts a process of count peers of impl, from peer first;
// its standard error goes to a file in logs. The benchmark stops it.
func startPeerProc(b *testing.B, impl string, first, count int, logs string) *peerProc {
	cmd := exec.Command(os.Args[0], "-test.run=^TestMeshPeer$", "-test.timeout=30m")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s/%d/%d", peerEnv, impl, first, count))
	stderr, err := os.Create(filepath.Join(logs, fmt.Sprintf("peers-%d.log", first)))
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
		b.Fatalf("start peers %d to %d: %v", first, first+count-1, err)
	}
	p := &peerProc{first: first, cmd: cmd, in: in, lines: make([]*lineQueue, count)}
	for j := range p.lines {
		p.lines[j] = newLineQueue()
	}
	go p.sortLines(out)
	b.Cleanup(p.stop)
	return p
}

// sortLines hands each line of out to the peer whose index begins it, and
// drops the others (the test framework's), until out ends.
func (p *peerProc) sortLines(out io.Reader) {
	defer func() {
		for _, q := range p.lines {
			q.end()
		}
	}()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		index, rest, _ := strings.Cut(sc.Text(), " ")
		if j, err := strconv.Atoi(index); err == nil && j >= 0 && j < len(p.lines) {
			p.lines[j].push(rest)
		}
	}
}

// stop closes the process's input, which ends it, and kills it if it has
// not ended within 15 s.
func (p *peerProc) stop() {
	p.in.Close()
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

// procPeer is one peer of a peer process, seen from the benchmark.
type procPeer struct {
	proc *peerProc
	j    int // its index in the process
	addr string
}

func (p *procPeer) send(format string, args ...any) error {
	_, err := fmt.Fprintf(p.proc.in, "%d "+format+"\n", append([]any{p.j}, args...)...)
	return err
}

// expect returns the rest of the peer's next line that begins with
// prefix, skipping others; an error line, an ended process or a minute
// of silence fails the benchmark.
func (p *procPeer) expect(b *testing.B, prefix string) string {
	i, q := p.proc.first+p.j, p.proc.lines[p.j]
	timeout := time.After(patience)
	for {
		line, ok, more := q.pop()
		switch {
		case ok && strings.HasPrefix(line, "error "):
			b.Fatalf("peer %d: %s", i, line)
		case ok && strings.HasPrefix(line, prefix):
			return strings.TrimPrefix(line, prefix)
		case ok:
			continue
		case !more:
			b.Fatalf("peer %d ended (its process's log is in the benchmark's temporary folder)", i)
		}
		select {
		case <-q.update:
		case <-timeout:
			b.Fatalf("peer %d: no %q after %v", i, prefix, patience)
		}
	}
}

// procNet starts n peers of impl in procs processes (n/procs in each, the
// first ones one more where it does not divide), connects them as the
// in-process benchmarks do, and waits for the room's mesh.
func procNet(b *testing.B, impl string, n, procs int) *benchNet {
	bn := newBenchNet(n)
	logs := b.TempDir()
	started := make([]*peerProc, 0, procs)
	peers := make([]*procPeer, 0, n)
	for k := range procs {
		count := n/procs + min(1, max(0, n%procs-k))
		p := startPeerProc(b, impl, len(peers), count, logs)
		started = append(started, p)
		for j := range count {
			peers = append(peers, &procPeer{proc: p, j: j})
		}
	}
	for _, p := range peers {
		p.addr = p.expect(b, "addr ")
	}
	connectAll(b, n, func(i, j int) {
		if err := peers[i].send("connect %s", peers[j].addr); err != nil {
			b.Fatal(err)
		}
		peers[i].expect(b, "ok")
	})
	for _, p := range peers {
		if err := p.send("ready"); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range peers {
		p.expect(b, "ready")
	}
	time.Sleep(3 * time.Second) // a few heartbeats, as gossipsubNet
	bn.publish = func(_ context.Context, seq uint64) error { return peers[0].send("pub %d", seq) }
	bn.finish = func(count int) []time.Time { return collect(b, bn, peers, count) }
	bn.used = func() usage {
		var u usage
		for _, proc := range started {
			p := peers[proc.first] // CPU is the process's: asked of one of its peers
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
func collect(b *testing.B, bn *benchNet, peers []*procPeer, count int) []time.Time {
	for i, p := range peers {
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
	for i, p := range peers {
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

// TestServePeers drives two peers of one process over one input, as the
// benchmark does, and reads their answers back as the benchmark sorts
// them: each peer gets its own commands, and no answer is lost or mixed.
func TestServePeers(t *testing.T) {
	a, b := &fakePeer{l: newArrivalLog()}, &fakePeer{l: newArrivalLog()}
	in := strings.NewReader("0 connect /b\n1 connect bad\n1 pub 7\n0 pub 3\n0 pub 4\n1 wait 1\n0 wait 2\n")
	r, w := io.Pipe()
	proc := &peerProc{lines: []*lineQueue{newLineQueue(), newLineQueue()}}
	sorted := make(chan struct{})
	go func() {
		proc.sortLines(r)
		close(sorted)
	}()
	err := servePeers([]benchPeer{a, b}, in, w)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	<-sorted
	want := map[int][]string{
		0: {"addr /fake", "ok", "got 3", "got 4", "sent 3", "sent 4", "end"},
		1: {"addr /fake", "error no route to bad", "got 7", "sent 7", "end"},
	}
	for j, q := range proc.lines {
		var got []string
		for {
			line, ok, _ := q.pop()
			if !ok {
				break
			}
			if word, rest, _ := strings.Cut(line, " "); word == "got" || word == "sent" {
				seq, _, _ := strings.Cut(rest, " ") // not the time
				line = word + " " + seq
			}
			got = append(got, line)
		}
		slices.Sort(got)
		slices.Sort(want[j])
		if !slices.Equal(got, want[j]) {
			t.Errorf("peer %d answered %q, want %q", j, got, want[j])
		}
	}
	if fmt.Sprint(a.connected, b.connected) != "[/b] []" {
		t.Errorf("connected: peer 0 %q, peer 1 %q", a.connected, b.connected)
	}
	if err := servePeers([]benchPeer{a}, strings.NewReader("2 cpu\n"), io.Discard); err == nil {
		t.Error("a command for a peer the process does not have was taken")
	}
}

// TestPrefixedLines writes lines in pieces and checks that each comes out
// whole, after its prefix.
func TestPrefixedLines(t *testing.T) {
	var mu sync.Mutex
	var out strings.Builder
	w := &prefixedLines{prefix: "4 ", mu: &mu, out: &out}
	for _, piece := range []string{"got 1", " 2\nsent", " 3 4\nend\n", "half"} {
		if _, err := io.WriteString(w, piece); err != nil {
			t.Fatal(err)
		}
	}
	if want := "4 got 1 2\n4 sent 3 4\n4 end\n"; out.String() != want {
		t.Errorf("wrote %q, want %q", out.String(), want)
	}
}

func TestParsePeerSpec(t *testing.T) {
	impl, first, count, err := parsePeerSpec("parley/10/10")
	if err != nil || impl != "parley" || first != 10 || count != 10 {
		t.Errorf("parley/10/10: %q %d %d %v", impl, first, count, err)
	}
	for _, bad := range []string{"parley/3", "parley/-1/2", "parley/0/0", "nats/0/1", "parley/x/1"} {
		if _, _, _, err := parsePeerSpec(bad); err == nil {
			t.Errorf("%q was taken", bad)
		}
	}
}

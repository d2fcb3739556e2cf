// Command loadgen measures a Parley relay beside nats-server on the same
// machine in the same run: durable publish throughput, fan-out from one
// publisher to 1, 10 and 100 subscribers, publish-to-delivery latency at a
// fixed rate, memory per idle authenticated client, and new authenticated
// connections per second. The relay is measured over each of its
// transports, QUIC and TCP with TLS, each beside a floor forwarder over
// the same transport (floor.go). It builds and starts the servers itself,
// on loopback, and stops them at the end.
//
//	cd loadgen && go run . [-only publish,audit,fanout,latency,idle,connect]
//	cd loadgen && go run . -only grow -grow 1000000 [-grow-dir DIR] [-grow-runs 3] [-grow-store cache=256MiB,mmap=1GiB ...] [-grow-warm]
//
// The growing-store scenario (grow.go, not run by default) compares a
// fresh relay's publish rate with that of a relay restarted on a store
// filled to -grow envelopes; each -grow-store setting of the relay's
// store ([store] in its config) is measured beside the current one.
//
// It is a module of its own so that the NATS client it compares against
// is no dependency of Parley.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parleychat/parley/relay"
)

func main() {
	only := flag.String("only", "publish,audit,fanout,latency,idle,connect", "scenarios to run, comma-separated")
	idle := flag.Int("idle", 1000, "idle clients for the memory scenario")
	natsBin := flag.String("nats", "nats-server", "nats-server binary")
	external := flag.String("relay", "", "load this running relay (FINGERPRINT@HOST:PORT) with the publish scenario, repeated (or latency at 1,000/s if -only is latency, fan-out to 100 if fanout, connections if connect, -idle clients held for 30 s if idle), and nothing else: for profiling")
	viaName := flag.String("via", "quic", "with -relay: the transport its clients use, quic or tcp")
	growSize := flag.Int("grow", 1_000_000, "the grow scenario: envelopes in the filled relay's store")
	growRuns := flag.Int("grow-runs", 3, "the grow scenario: runs of each relay, alternating")
	growDir := flag.String("grow-dir", "", "the grow scenario: keep the filled relay's data folder here, and top it up on later runs (default: a temporary folder)")
	var growStore []storeSetting
	flag.Func("grow-store", "the grow scenario: also measure both relays with this store setting, as cache=SIZE,mmap=SIZE,checkpoint=PAGES (sizes in bytes or with KiB, MiB, GiB; unset keys at the relay's defaults); repeat for several", func(v string) error {
		set, err := parseStoreSetting(v)
		growStore = append(growStore, set)
		return err
	})
	growWarm := flag.Bool("grow-warm", false, "the grow scenario: each relay takes one unmeasured load before the measured one, to measure it with its caches filled")
	floorListen := flag.String("floor", "", "serve as the floor forwarder over QUIC on this UDP address and over TCP on the same port number (the load generator starts it so)")
	flag.Parse()
	if *floorListen != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := serveFloor(ctx, *floorListen, func(a relay.Addr) { fmt.Printf("serving %s\n", a) })
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen floor:", err)
			os.Exit(1)
		}
		return
	}
	if *external != "" {
		if path := os.Getenv("PARLEY_LOADGEN_CPUPROFILE"); path != "" {
			f, err := os.Create(path)
			if err == nil {
				pprof.StartCPUProfile(f)
				defer pprof.StopCPUProfile()
			}
		}
		via, err := relay.ParseVia(*viaName)
		if err == nil && via == relay.ViaAuto {
			err = errors.New("-via: quic or tcp")
		}
		if err == nil {
			err = profileLoad(*external, *only, *idle, via)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			pprof.StopCPUProfile()
			os.Exit(1)
		}
		return
	}
	if err := run(*only, *idle, *natsBin, growOptions{size: *growSize, runs: *growRuns, dir: *growDir, settings: growStore, warm: *growWarm}); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(only string, idle int, natsBin string, grow growOptions) error {
	work, err := os.MkdirTemp("", "loadgen")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	b := &bench{ctx: context.Background(), work: work, natsBin: natsBin}
	defer b.stop()
	want := map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		want[strings.TrimSpace(s)] = true
	}
	if len(want) == 1 && want["grow"] {
		// The grow scenario alone starts no floor and no nats-server.
		fmt.Printf("relays on loopback, %s\n\n", time.Now().UTC().Format(time.RFC3339))
	} else {
		if err := b.fresh(); err != nil {
			return err
		}
		fmt.Printf("relay and floor (over QUIC and over TCP with TLS) and nats-server (plain and with TLS) on loopback, %s\n\n", time.Now().UTC().Format(time.RFC3339))
	}
	scenarios := []struct {
		name string
		run  func() error
	}{
		{"publish", b.publish},
		{"audit", b.auditCost},
		{"fanout", b.fanout},
		{"latency", b.latency},
		{"idle", func() error { return b.idle(idle) }},
		{"connect", b.connect},
		{"grow", func() error { return b.grow(grow) }},
	}
	for _, s := range scenarios {
		if !want[s.name] {
			continue
		}
		if err := s.run(); err != nil {
			return err
		}
	}
	return nil
}

// bench runs the scenarios and prints their tables. Each scenario gets
// servers of its own, started fresh, so that what one leaves behind
// (memory, cached pages) does not count in the next. Two nats-servers:
// plain, as issue 4's targets compare with, and with TLS, which encrypts
// as the relay must.
type bench struct {
	ctx      context.Context
	work     string
	natsBin  string
	r, floor *relayProc
	nats     []*natsProc
}

// stop stops the servers that are running.
func (b *bench) stop() {
	if b.r != nil {
		b.r.stop()
		b.r = nil
	}
	if b.floor != nil {
		b.floor.stop()
		b.floor = nil
	}
	for _, n := range b.nats {
		n.stop()
	}
	b.nats = nil
}

// fresh stops the servers that are running and starts new ones: the
// relay and the floor forwarder, each serving both transports, and both
// nats-servers.
func (b *bench) fresh() error {
	b.stop()
	var err error
	if b.r, err = startRelay(b.work); err != nil {
		return err
	}
	if b.floor, err = startFloor(); err != nil {
		b.stop()
		return err
	}
	for _, secure := range []bool{false, true} {
		n, err := startNATS(b.work, b.natsBin, secure)
		if err != nil {
			b.stop()
			return err
		}
		b.nats = append(b.nats, n)
	}
	return nil
}

// endpoints are the relay and the floor forwarder over each transport,
// in the tables' order: over QUIC, then over TCP.
func (b *bench) endpoints() []endpoint {
	return []endpoint{b.r.over(relay.ViaQUIC), b.floor.over(relay.ViaQUIC), b.r.over(relay.ViaTCP), b.floor.over(relay.ViaTCP)}
}

// publishRounds is how many times the publish scenario measures the relay
// over each transport, alternating, on a fresh relay each time.
const publishRounds = 3

func (b *bench) publish() error {
	if err := b.fresh(); err != nil {
		return err
	}
	fmt.Printf("## publish: 4 clients, 256-byte payloads, 256 outstanding each; the relay %d times over each transport, alternating, a fresh relay each\n", publishRounds)
	fmt.Println("| system | messages | msgs/s (median) | runs | note |")
	fmt.Println("|---|---|---|---|---|")
	vias := []relay.Via{relay.ViaQUIC, relay.ViaTCP}
	rates := map[relay.Via][]float64{}
	var n int
	for range publishRounds {
		for _, via := range vias {
			rp, err := startRelay(b.work)
			if err != nil {
				return err
			}
			res, err := relayPublish(b.ctx, rp.over(via), 4, 10000)
			rp.stop()
			if err != nil {
				return fmt.Errorf("relay publish over %s: %w", via, err)
			}
			rates[via] = append(rates[via], res.rate)
			n = res.n
		}
	}
	for _, via := range vias {
		fmt.Printf("| %s | %d | %.0f | %s | each acknowledged after a durable commit (synchronous=FULL), signature verified, audit log on |\n", b.r.over(via), n, median(rates[via]), joinRates(rates[via]))
	}
	for _, nt := range b.nats {
		nr, err := natsPublish(nt, 4, 10000)
		if err != nil {
			return fmt.Errorf("%s publish: %w", nt.name, err)
		}
		fmt.Printf("| %s | %d | %.0f | 1 | core NATS: nothing stored, no acknowledgement (one flush at the end) |\n", nt.name, nr.n, nr.rate)
	}
	fmt.Println()
	return nil
}

func joinRates(rates []float64) string {
	each := make([]string, len(rates))
	for i, r := range rates {
		each[i] = fmt.Sprintf("%.0f", r)
	}
	return strings.Join(each, ", ")
}

// auditCost compares durable publishes with the relay's audit log on and
// off, on relays of their own.
func (b *bench) auditCost() error {
	fmt.Println("## durable publish with the audit log on and off, over QUIC: 4 clients, 5 runs each, alternating, a fresh relay each")
	fmt.Println("| audit log | runs (msgs/s) | median msgs/s | relay CPU per publish | clients' CPU per publish |")
	fmt.Println("|---|---|---|---|---|")
	const runs = 5
	rates := map[bool][]float64{}
	cpus := map[bool][]float64{}
	clients := map[bool][]float64{}
	for range runs {
		for _, on := range []bool{true, false} {
			res, relayCPU, err := b.publishAudited(on)
			if err != nil {
				return err
			}
			rates[on] = append(rates[on], res.rate)
			cpus[on] = append(cpus[on], float64(relayCPU.Microseconds())/float64(res.n))
			clients[on] = append(clients[on], float64(res.cpu.Microseconds())/float64(res.n))
		}
	}
	for _, on := range []bool{true, false} {
		fmt.Printf("| %v | %s | %.0f | %.1f µs | %.1f µs |\n", map[bool]string{true: "on", false: "off"}[on], joinRates(rates[on]), median(rates[on]), median(cpus[on]), median(clients[on]))
	}
	fmt.Printf("\ncost of the audit log: %.1f%% of durable throughput (medians)\n\n", 100*(1-median(rates[true])/median(rates[false])))
	return nil
}

// publishAudited measures publishes on a relay of its own with its audit
// log on or off, and the relay's CPU time over them.
func (b *bench) publishAudited(on bool) (result, time.Duration, error) {
	rp, err := startRelayAudit(b.work, on)
	if err != nil {
		return result{}, 0, err
	}
	cpu0, err := cpuTime(rp.cmd.Process.Pid)
	if err != nil {
		rp.stop()
		return result{}, 0, err
	}
	res, err := relayPublish(b.ctx, rp.over(relay.ViaQUIC), 4, 10000)
	cpu1, cerr := cpuTime(rp.cmd.Process.Pid)
	rp.stop()
	if err != nil {
		return result{}, 0, fmt.Errorf("relay publish (audit %v): %w", on, err)
	}
	if cerr != nil {
		return result{}, 0, cerr
	}
	return res, cpu1 - cpu0, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func (b *bench) fanout() error {
	if err := b.fresh(); err != nil {
		return err
	}
	fmt.Println("## fan-out: 1 publisher, 256-byte payloads")
	fmt.Println("| system | subscribers | messages | deliveries/s | p50 | p99 | lost |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, c := range []struct{ subs, msgs int }{{1, 20000}, {10, 5000}, {100, 1000}} {
		for _, e := range b.endpoints() {
			r, err := relayFanout(b.ctx, e, c.subs, c.msgs)
			if err != nil {
				return fmt.Errorf("%s fan-out to %d: %w", e, c.subs, err)
			}
			fmt.Printf("| %s | %d | %d | %.0f | %s | %s | %d |\n", e, c.subs, c.msgs, r.rate, ms(r.p50), ms(r.p99), r.lost)
		}
		for _, n := range b.nats {
			nr, err := natsFanout(n, c.subs, c.msgs)
			if err != nil {
				return fmt.Errorf("%s fan-out to %d: %w", n.name, c.subs, err)
			}
			fmt.Printf("| %s | %d | %d | %.0f | %s | %s | %d |\n", n.name, c.subs, c.msgs, nr.rate, ms(nr.p50), ms(nr.p99), nr.lost)
		}
	}
	fmt.Println()
	return nil
}

func (b *bench) latency() error {
	if err := b.fresh(); err != nil {
		return err
	}
	fmt.Println("## latency: 1 publisher, 1 subscriber, 1,000 messages/s for 5 s")
	fmt.Println("| system | p50 | p99 | lost |")
	fmt.Println("|---|---|---|---|")
	for _, e := range b.endpoints() {
		r, err := relayLatency(b.ctx, e, 1000, 5000)
		if err != nil {
			return fmt.Errorf("%s latency: %w", e, err)
		}
		fmt.Printf("| %s | %s | %s | %d |\n", e, ms(r.p50), ms(r.p99), r.lost)
	}
	for _, n := range b.nats {
		nr, err := natsLatency(n, 1000, 5000)
		if err != nil {
			return fmt.Errorf("%s latency: %w", n.name, err)
		}
		fmt.Printf("| %s | %s | %s | %d |\n", n.name, ms(nr.p50), ms(nr.p99), nr.lost)
	}
	fmt.Println()
	return nil
}

// idle measures each server's memory per client with idle clients held.
// Each row has a server process of its own: memory a process took for
// one row's clients would serve the next row's.
func (b *bench) idle(idle int) error {
	if err := b.fresh(); err != nil {
		return err
	}
	// The fresh relay and floor serve the QUIC rows; these the TCP rows.
	tcpRelay, err := startRelay(b.work)
	if err != nil {
		return err
	}
	defer tcpRelay.stop()
	tcpFloor, err := startFloor()
	if err != nil {
		return err
	}
	defer tcpFloor.stop()
	fmt.Printf("## idle clients: %d, each authenticated and subscribed to a room\n", idle)
	fmt.Println("| system | server RSS before | after | per client |")
	fmt.Println("|---|---|---|---|")
	endpoints := []endpoint{b.r.over(relay.ViaQUIC), b.floor.over(relay.ViaQUIC), tcpRelay.over(relay.ViaTCP), tcpFloor.over(relay.ViaTCP)}
	for _, e := range endpoints {
		before, after, err := relayIdle(b.ctx, e, idle)
		if err != nil {
			return fmt.Errorf("%s idle: %w", e, err)
		}
		fmt.Printf("| %s | %s | %s | %.1f KB |\n", e, mb(before), mb(after), float64(after-before)/float64(idle)/1024)
	}
	for _, n := range b.nats {
		before, after, err := natsIdle(n, idle)
		if err != nil {
			return fmt.Errorf("%s idle: %w", n.name, err)
		}
		fmt.Printf("| %s | %s | %s | %.1f KB |\n", n.name, mb(before), mb(after), float64(after-before)/float64(idle)/1024)
	}
	fmt.Println()
	return nil
}

func (b *bench) connect() error {
	if err := b.fresh(); err != nil {
		return err
	}
	fmt.Println("## new connections: 16 at a time for 5 s, each authenticated, one request, closed")
	fmt.Println("| system | connections | per second |")
	fmt.Println("|---|---|---|")
	for _, e := range b.endpoints() {
		cnt, rate, err := relayConnect(b.ctx, e, 16, 5*time.Second)
		if err != nil {
			return fmt.Errorf("%s connect: %w", e, err)
		}
		fmt.Printf("| %s | %d | %.0f |\n", e, cnt, rate)
	}
	for _, n := range b.nats {
		cnt, rate, err := natsConnect(n, 16, 5*time.Second)
		if err != nil {
			return fmt.Errorf("%s connect: %w", n.name, err)
		}
		fmt.Printf("| %s | %d | %.0f |\n", n.name, cnt, rate)
	}
	fmt.Println()
	return nil
}

// result is one measurement.
type result struct {
	n        int
	rate     float64
	cpu      time.Duration // the load generator's own CPU time, where measured
	p50, p99 time.Duration
	lost     int
}

func percentiles(lat []time.Duration) (time.Duration, time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
func mb(b int64) string         { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

// cpuTime is the user and system CPU time process pid has used, from
// /proc (clock ticks of 10 ms on Linux).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad /proc stat")
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// rss is the resident memory of process pid, from /proc.
func rss(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// proc is a server process the load generator started.
type proc struct{ cmd *exec.Cmd }

func (p *proc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

func goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

// profileLoad loads a relay started by hand with one scenario, repeated,
// so that a profile of the relay can be taken meanwhile; its clients
// connect over via.
func profileLoad(addr, only string, idle int, via relay.Via) error {
	a, err := relay.ParseAddr(addr)
	if err != nil {
		return err
	}
	e := (&relayProc{addr: a}).over(via)
	ctx := context.Background()
	// repeat runs a scenario n times and prints each result.
	repeat := func(n int, run func() (result, error), show func(result)) error {
		for range n {
			res, err := run()
			if err != nil {
				return err
			}
			show(res)
		}
		return nil
	}
	switch only {
	case "connect":
		n, rate, err := relayConnect(ctx, e, 16, 10*time.Second)
		fmt.Printf("%d connections, %.0f/s\n", n, rate)
		return err
	case "latency":
		return repeat(3, func() (result, error) { return relayLatency(ctx, e, 1000, 5000) },
			func(res result) { fmt.Printf("latency at 1,000/s: p50 %s, p99 %s\n", ms(res.p50), ms(res.p99)) })
	case "fanout":
		return repeat(5, func() (result, error) { return relayFanout(ctx, e, 100, 1000) },
			func(res result) { fmt.Printf("1 to 100: %.0f deliveries/s, p50 %s\n", res.rate, ms(res.p50)) })
	case "idle":
		f, err := newFleet(via)
		if err != nil {
			return err
		}
		defer f.close()
		if err := f.dial(ctx, a, idle, 32); err != nil {
			return err
		}
		if err := f.subscribeAll(ctx); err != nil {
			return err
		}
		fmt.Printf("%d idle clients connected and subscribed; holding them 30 s\n", idle)
		time.Sleep(30 * time.Second)
		return nil
	}
	return repeat(5, func() (result, error) { return relayPublish(ctx, e, 4, 10000) },
		func(res result) { fmt.Printf("%d publishes, %.0f/s\n", res.n, res.rate) })
}

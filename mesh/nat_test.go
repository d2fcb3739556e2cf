//go:build linux

package mesh

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
)

// The NAT traversal test builds a small internet out of network
// namespaces, and runs one mesh node in each of three of them:
//
//	peer a 10.1.0.2 -- 10.1.0.1 NAT a 7.0.1.2 --+
//	                                             7.0.1.1 internet 7.0.2.1: the relay
//	peer b 10.2.0.2 -- 10.2.0.1 NAT b 7.0.2.2 --+
//
// The NATs masquerade (keeping source ports where they can, as home
// routers do, or with random ports per connection: symmetric NATs) and
// drop what arrives for them unasked. The internet's addresses must be
// public to libp2p (manet.IsPublicAddr), since hole punching exchanges
// only public addresses; nothing leaves the namespaces, which have no
// link out.
//
// Goroutines change threads, and threads namespaces: each node is a
// process of its own (mesh/internal/natpeer), started with ip netns exec
// and driven through stdin and stdout.

const (
	natRoom     = "nat"
	natListen   = "/ip4/0.0.0.0/udp/4001/quic-v1,/ip4/0.0.0.0/tcp/4001"
	natPatience = 60 * time.Second // for each awaited event; a healthy run needs seconds
)

func TestNATTraversal(t *testing.T) {
	if testing.Short() {
		t.Skip("short: the NAT traversal test builds networks of namespaces")
	}
	fw := natPrereqs(t)
	bin := buildNatpeer(t)
	t.Run("cone", func(t *testing.T) { testConeNAT(t, newNatNet(t, fw, "c", false), bin) })
	t.Run("symmetric", func(t *testing.T) { testSymmetricNAT(t, newNatNet(t, fw, "s", true), bin) })
}

// testConeNAT: the peers meet through the relay and talk through the
// circuit while the internet drops everything between their NATs; once
// it carries it again, hole punching connects them directly.
func testConeNAT(t *testing.T, n *natNet, bin string) {
	_, a, b := n.startAll(bin)

	// While the NATs cannot reach each other, hole punching cannot
	// succeed: whatever a and b say goes through the relay.
	n.blockNATs()
	b.do("connect " + n.lanAddr(0, a.id))
	talkOverCircuit(t, a, b, "a, through the relay")
	talkOverCircuit(t, b, a, "b, through the relay")

	// Now the NATs reach each other. b closes the circuit, and a dials
	// b through the relay again: b, reached through a circuit, starts
	// hole punching (its first attempt, where a's own attempts met the
	// block).
	n.unblockNATs()
	am, bm := a.mark(), b.mark()
	b.do("disconnect " + a.id)
	a.do("connect " + n.lanAddr(1, b.id))
	who, punch := awaitEither(t, a, am, b, bm, "a hole punch that succeeds", func(l natLine) bool { return l.Ev == "punch" && l.OK })
	other := map[*natProc]*natProc{a: b, b: a}[who]
	t.Logf("hole-punched: %s reports hole punching with %s succeeded", who.name, other.name)
	var punched bool
	for _, p := range []*natProc{a, b} {
		for _, path := range p.paths(map[*natProc]*natProc{a: b, b: a}[p].id) {
			t.Logf("%s: %s's path: %s over %s, %s", path.Kind, p.name, path.Kind, path.Transport, path.Remote)
			punched = punched || path.Kind == string(PathHolePunched)
		}
	}
	if !punched || punch.Peer != other.id {
		t.Fatalf("hole punching reported success with %s, but no path is hole-punched", punch.Peer)
	}

	// Gossipsub takes the direct connection: a message goes over it.
	a.await("gossipsub to see b in the room", am, func(l natLine) bool { return l.Ev == "room-peer" && l.Peer == b.id && l.OK })
	bm = b.mark()
	a.do("say " + natRoom + " a, directly")
	m := b.await("a's message over the direct connection", bm, func(l natLine) bool { return l.Ev == "msg" && l.Text == "a, directly" })
	if !slices.ContainsFunc(m.Paths, func(p natPath) bool { return p.Kind != string(PathCircuit) }) {
		t.Fatalf("b got a's message with no direct path to a: %+v", m.Paths)
	}
	t.Logf("direct: b got %q via %s; its paths to a then: %s", m.Text, m.Via, pathKinds(m.Paths))
}

// testSymmetricNAT: behind NATs that pick a new port for every
// connection, hole punching cannot succeed; the peers stay on the circuit
// and every message arrives.
func testSymmetricNAT(t *testing.T, n *natNet, bin string) {
	_, a, b := n.startAll(bin)
	am, bm := a.mark(), b.mark()
	b.do("connect " + n.lanAddr(0, a.id))
	talkOverCircuit(t, a, b, "a, through the relay")

	who, punch := awaitEither(t, a, am, b, bm, "a hole punch to fail", func(l natLine) bool { return l.Ev == "punch" })
	if punch.OK {
		t.Fatalf("%s punched a hole through symmetric NATs", who.name)
	}
	t.Logf("circuit: %s reports hole punching failed, as it must behind symmetric NATs: %s", who.name, punch.Err)
	for _, p := range [][2]*natProc{{a, b}, {b, a}} {
		for _, path := range p[0].paths(p[1].id) {
			if path.Kind != string(PathCircuit) {
				t.Fatalf("%s has a %s path to %s behind symmetric NATs: %+v", p[0].name, path.Kind, p[1].name, path)
			}
		}
	}
	const each = 5
	marks := map[*natProc]int{a: a.mark(), b: b.mark()}
	for i := range each {
		a.do(fmt.Sprintf("say %s a %d", natRoom, i))
		b.do(fmt.Sprintf("say %s b %d", natRoom, i))
	}
	for _, p := range [][2]*natProc{{a, b}, {b, a}} {
		from, to := p[0], p[1]
		for i := range each {
			text := fmt.Sprintf("%s %d", from.name, i)
			m := to.await(fmt.Sprintf("%q at %s", text, to.name), marks[to], func(l natLine) bool { return l.Ev == "msg" && l.Text == text })
			checkCircuitOnly(t, to, m)
		}
	}
	t.Logf("circuit: all %d messages arrived over the circuit; no path but the circuit between a and b", 2*each)
}

// talkOverCircuit has from say text, and checks that to gets it through
// the circuit, reaching from by nothing else when it arrives.
func talkOverCircuit(t *testing.T, from, to *natProc, text string) {
	t.Helper()
	mark := to.mark()
	from.do("say " + natRoom + " " + text)
	m := to.await(fmt.Sprintf("%q at %s", text, to.name), mark, func(l natLine) bool { return l.Ev == "msg" && l.Text == text })
	checkCircuitOnly(t, to, m)
	t.Logf("circuit: %s got %q from %s via %s; its paths to %s then: %s", to.name, m.Text, from.name, m.Via, from.name, pathKinds(m.Paths))
}

// checkCircuitOnly fails unless message m came by the feed or by sync,
// while its receiver reached the sender only through a circuit.
func checkCircuitOnly(t *testing.T, to *natProc, m natLine) {
	t.Helper()
	if m.Via != ViaCircuit && m.Via != "sync" {
		t.Fatalf("%s got %q via %s, want the circuit feed or sync over it", to.name, m.Text, m.Via)
	}
	if len(m.Paths) == 0 || slices.ContainsFunc(m.Paths, func(p natPath) bool { return p.Kind != string(PathCircuit) }) {
		t.Fatalf("%s got %q with paths to its sender %+v, want circuits only", to.name, m.Text, m.Paths)
	}
}

func pathKinds(paths []natPath) string {
	var s []string
	for _, p := range paths {
		s = append(s, p.Kind+" over "+p.Transport)
	}
	return strings.Join(s, ", ")
}

// natPrereqs skips the test unless this process may make network
// namespaces and masquerade in them; it returns the firewall that can.
func natPrereqs(t *testing.T) firewall {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the NAT traversal test needs root, to make network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the NAT traversal test needs the ip command (iproute2)")
	}
	probe := fmt.Sprintf("plprobe%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("cannot make a network namespace: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", probe).Run()
	var errs []error
	for _, fw := range []firewall{iptables{}, nftables{}} {
		if _, err := exec.LookPath(fw.command()); err != nil {
			errs = append(errs, err)
			continue
		}
		err := fw.masquerade(probe, "lo", true)
		if err == nil {
			return fw
		}
		errs = append(errs, err)
	}
	t.Skipf("cannot masquerade with iptables or nft (install iptables): %v", errors.Join(errs...))
	return nil
}

// buildNatpeer builds the helper, under the race detector when the test
// runs under it (sharing the build cache with the test).
func buildNatpeer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "natpeer")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(runtime.GOROOT(), "bin", "go"), append(args, "./internal/natpeer")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./internal/natpeer: %v\n%s", err, out)
	}
	return bin
}

// natNet is the namespaces of one run: the internet, and on each side a
// NAT router and a host behind it.
type natNet struct {
	t     *testing.T
	fw    firewall
	inet  string
	sides [2]natSide
}

type natSide struct {
	router, host string // namespaces
	net, lan     string // the internet's /24 towards the router, the LAN's /24
}

// The internet's side of link i is net.1, the router's net.2; the
// router's LAN side lan.1, the host lan.2.
func (s natSide) wanIP() string   { return s.net + ".2" }
func (s natSide) gateway() string { return s.net + ".1" }

func newNatNet(t *testing.T, fw firewall, tag string, symmetric bool) *natNet {
	t.Helper()
	// Unique per process and run, so that parallel runs do not collide.
	prefix := fmt.Sprintf("pl%d%s", os.Getpid(), tag)
	n := &natNet{t: t, fw: fw, inet: prefix + "-inet"}
	for i := range n.sides {
		n.sides[i] = natSide{
			router: fmt.Sprintf("%s-nat%d", prefix, i),
			host:   fmt.Sprintf("%s-host%d", prefix, i),
			net:    fmt.Sprintf("7.0.%d", i+1),
			lan:    fmt.Sprintf("10.%d.0", i+1),
		}
	}
	for _, ns := range []string{n.inet, n.sides[0].router, n.sides[0].host, n.sides[1].router, n.sides[1].host} {
		n.run("ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("remove namespace %s: %v: %s", ns, err, out)
			}
		})
		n.in(ns, "ip", "link", "set", "lo", "up")
	}
	n.in(n.inet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for i, s := range n.sides {
		up := fmt.Sprintf("up%d", i)
		// Each veth is made with its ends in their namespaces: nothing
		// appears in this one, and removing a namespace removes them.
		n.run("ip", "link", "add", up, "netns", n.inet, "type", "veth", "peer", "name", "wan", "netns", s.router)
		n.run("ip", "link", "add", "lan", "netns", s.router, "type", "veth", "peer", "name", "eth0", "netns", s.host)
		n.in(n.inet, "ip", "addr", "add", s.gateway()+"/24", "dev", up)
		n.in(n.inet, "ip", "link", "set", up, "up")
		n.in(s.router, "ip", "addr", "add", s.wanIP()+"/24", "dev", "wan")
		n.in(s.router, "ip", "addr", "add", s.lan+".1/24", "dev", "lan")
		n.in(s.router, "ip", "link", "set", "wan", "up")
		n.in(s.router, "ip", "link", "set", "lan", "up")
		n.in(s.router, "ip", "route", "add", "default", "via", s.gateway())
		n.in(s.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		n.in(s.host, "ip", "addr", "add", s.lan+".2/24", "dev", "eth0")
		n.in(s.host, "ip", "link", "set", "eth0", "up")
		n.in(s.host, "ip", "route", "add", "default", "via", s.lan+".1")
		if err := fw.masquerade(s.router, "wan", symmetric); err != nil {
			t.Fatal(err)
		}
		if err := fw.dropUnsolicited(s.router, "wan"); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func (n *natNet) run(args ...string) {
	n.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		n.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// in runs a command in namespace ns.
func (n *natNet) in(ns string, args ...string) {
	n.t.Helper()
	n.run(append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// lanAddr is the QUIC address of the host on side i, which no one
// outside its NAT can reach: Connect falls back to the relays.
func (n *natNet) lanAddr(i int, id string) string {
	return fmt.Sprintf("/ip4/%s.2/udp/4001/quic-v1/p2p/%s", n.sides[i].lan, id)
}

// blockNATs makes the internet drop everything between the two NATs.
func (n *natNet) blockNATs() {
	n.t.Helper()
	if err := n.fw.block(n.inet, n.sides[0].wanIP(), n.sides[1].wanIP()); err != nil {
		n.t.Fatal(err)
	}
}

func (n *natNet) unblockNATs() {
	n.t.Helper()
	if err := n.fw.unblock(n.inet, n.sides[0].wanIP(), n.sides[1].wanIP()); err != nil {
		n.t.Fatal(err)
	}
}

// startAll starts the relay on the internet and a peer behind each NAT,
// and waits until each peer holds a slot on the relay, can hole punch
// (it knows its public address), and has joined the room.
func (n *natNet) startAll(bin string) (relay, a, b *natProc) {
	n.t.Helper()
	relay = n.start(bin, "relay", n.inet, "-circuit", "-listen", natListen)
	rid := relay.await("the relay to start", 0, func(l natLine) bool { return l.Ev == "ready" }).ID
	peers := make([]*natProc, 2)
	for i, s := range n.sides {
		relays := fmt.Sprintf("/ip4/%[1]s/udp/4001/quic-v1/p2p/%[2]s,/ip4/%[1]s/tcp/4001/p2p/%[2]s", s.gateway(), rid)
		peers[i] = n.start(bin, string(rune('a'+i)), s.host, "-autorelay", "-listen", natListen, "-relays", relays)
	}
	for _, p := range peers {
		p.await(p.name+"'s slot on the relay", 0, func(l natLine) bool {
			return (l.Ev == "ready" || l.Ev == "addrs") && slices.ContainsFunc(l.Addrs, func(a string) bool { return strings.Contains(a, "/p2p-circuit") })
		})
		p.await(p.name+" to know its public address", 0, func(l natLine) bool { return l.Ev == "punch-ready" })
		p.do("join " + natRoom)
	}
	return relay, peers[0], peers[1]
}

// natLine is one line of natpeer's output.
type natLine struct {
	Ev    string    `json:"ev"`
	Cmd   string    `json:"cmd"`
	Err   string    `json:"err"`
	ID    string    `json:"id"`
	Addrs []string  `json:"addrs"`
	Room  string    `json:"room"`
	Text  string    `json:"text"`
	Via   string    `json:"via"`
	From  string    `json:"from"`
	Peer  string    `json:"peer"`
	OK    bool      `json:"ok"`
	Paths []natPath `json:"paths"`
}

type natPath struct {
	Peer      string `json:"peer"`
	Kind      string `json:"kind"`
	Transport string `json:"transport"`
	Remote    string `json:"remote"`
	Relay     string `json:"relay"`
	Inbound   bool   `json:"inbound"`
}

// natProc is a running natpeer.
type natProc struct {
	t      *testing.T
	name   string
	id     string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr testkit.LogBuffer
	eof    chan struct{} // stdout ended

	mu    sync.Mutex
	lines []natLine
	grew  chan struct{} // closed, and replaced, at each line
}

// start starts natpeer in namespace ns; the test stops it.
func (n *natNet) start(bin, name, ns string, args ...string) *natProc {
	n.t.Helper()
	p := &natProc{t: n.t, name: name, eof: make(chan struct{}), grew: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, bin, "-dir", n.t.TempDir()}, args...)...)
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		n.t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		n.t.Fatalf("start %s: %v", name, err)
	}
	go p.read(stdout)
	n.t.Cleanup(p.stop)
	p.id = p.await(name+" to start", 0, func(l natLine) bool { return l.Ev == "ready" }).ID
	return p
}

func (p *natProc) read(stdout io.Reader) {
	defer close(p.eof)
	in := bufio.NewScanner(stdout)
	in.Buffer(nil, 1<<20)
	for in.Scan() {
		var l natLine
		if err := json.Unmarshal(in.Bytes(), &l); err != nil {
			continue // not ours: the race detector's report goes to stderr
		}
		p.mu.Lock()
		p.lines = append(p.lines, l)
		close(p.grew)
		p.grew = make(chan struct{})
		p.mu.Unlock()
	}
}

// stop ends the process: quietly when it quits on the end of its input,
// killed after a while if not. It reports a race the process found.
func (p *natProc) stop() {
	p.stdin.Close()
	select {
	case <-p.eof:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.eof
	}
	err := p.cmd.Wait()
	if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
		p.t.Errorf("%s found a data race:\n%s", p.name, p.stderr.String())
	} else if p.t.Failed() || err != nil {
		p.t.Logf("%s exited (%v); its standard error:\n%s", p.name, err, p.stderr.String())
	}
}

// mark is where the next line will be: what await looks at from.
func (p *natProc) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// next returns the first line from index from on that match holds for,
// or a channel closed when there are more lines to look at.
func (p *natProc) next(from int, match func(natLine) bool) (natLine, int, bool, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := from; i < len(p.lines); i++ {
		if match(p.lines[i]) {
			return p.lines[i], i, true, nil
		}
	}
	return natLine{}, len(p.lines), false, p.grew
}

// await waits, at most natPatience, for a line from index from on that
// match holds for.
func (p *natProc) await(what string, from int, match func(natLine) bool) natLine {
	p.t.Helper()
	l, _, err := awaitLine(p, from, match, time.After(natPatience))
	if err != nil {
		p.t.Fatalf("waiting for %s: %v", what, err)
	}
	return l
}

func awaitLine(p *natProc, from int, match func(natLine) bool, timeout <-chan time.Time) (natLine, int, error) {
	for {
		l, at, ok, grew := p.next(from, match)
		if ok {
			return l, at, nil
		}
		from = at
		select {
		case <-grew:
		case <-p.eof:
			if l, at, ok, _ := p.next(from, match); ok {
				return l, at, nil
			}
			return natLine{}, 0, fmt.Errorf("%s ended", p.name)
		case <-timeout:
			return natLine{}, 0, fmt.Errorf("%s: nothing after %v", p.name, natPatience)
		}
	}
}

// awaitEither waits for a matching line of a (from am) or b (from bm),
// whichever comes, and says whose it is.
func awaitEither(t *testing.T, a *natProc, am int, b *natProc, bm int, what string, match func(natLine) bool) (*natProc, natLine) {
	t.Helper()
	deadline := time.Now().Add(natPatience)
	for time.Now().Before(deadline) {
		la, _, oka, ga := a.next(am, match)
		if oka {
			return a, la
		}
		lb, _, okb, gb := b.next(bm, match)
		if okb {
			return b, lb
		}
		select {
		case <-ga:
		case <-gb:
		case <-a.eof:
			t.Fatalf("waiting for %s: %s ended", what, a.name)
		case <-b.eof:
			t.Fatalf("waiting for %s: %s ended", what, b.name)
		case <-time.After(time.Until(deadline)):
		}
	}
	t.Fatalf("waiting for %s: nothing after %v", what, natPatience)
	return nil, natLine{}
}

// do sends a command and waits until it is done; it fails the test if
// the command failed.
func (p *natProc) do(command string) {
	p.t.Helper()
	mark := p.mark()
	if _, err := io.WriteString(p.stdin, command+"\n"); err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, command, err)
	}
	verb, _, _ := strings.Cut(command, " ")
	l := p.await(fmt.Sprintf("%s to do %q", p.name, command), mark, func(l natLine) bool { return l.Ev == "done" && l.Cmd == verb })
	if l.Err != "" {
		p.t.Fatalf("%s: %s: %s", p.name, command, l.Err)
	}
}

// paths returns the process's paths to peer id.
func (p *natProc) paths(id string) []natPath {
	p.t.Helper()
	mark := p.mark()
	p.do("paths")
	l := p.await(p.name+"'s paths", mark, func(l natLine) bool { return l.Ev == "paths" })
	var out []natPath
	for _, path := range l.Paths {
		if path.Peer == id {
			out = append(out, path)
		}
	}
	return out
}

// A firewall sets up the NATs' rules, with iptables or nft.
type firewall interface {
	command() string
	// masquerade makes ns a NAT out of interface out: keeping source
	// ports where it can, or, symmetric, a random port per connection.
	masquerade(ns, out string, symmetric bool) error
	// dropUnsolicited drops what arrives on interface in for ns itself
	// and belongs to no connection, as home routers do.
	dropUnsolicited(ns, in string) error
	// block drops what ns forwards between a and b, both ways; unblock
	// forwards it again.
	block(ns, a, b string) error
	unblock(ns, a, b string) error
}

func inNS(ns string, args ...string) error {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, out)
	}
	return nil
}

type iptables struct{}

func (iptables) command() string { return "iptables" }

func (iptables) masquerade(ns, out string, symmetric bool) error {
	args := []string{"iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out, "-j", "MASQUERADE"}
	if symmetric {
		args = append(args, "--random-fully")
	}
	return inNS(ns, args...)
}

func (iptables) dropUnsolicited(ns, in string) error {
	return inNS(ns, "iptables", "-A", "INPUT", "-i", in, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")
}

func (iptables) block(ns, a, b string) error {
	return errors.Join(
		inNS(ns, "iptables", "-I", "FORWARD", "-s", a, "-d", b, "-j", "DROP"),
		inNS(ns, "iptables", "-I", "FORWARD", "-s", b, "-d", a, "-j", "DROP"))
}

func (iptables) unblock(ns, a, b string) error {
	return errors.Join(
		inNS(ns, "iptables", "-D", "FORWARD", "-s", a, "-d", b, "-j", "DROP"),
		inNS(ns, "iptables", "-D", "FORWARD", "-s", b, "-d", a, "-j", "DROP"))
}

type nftables struct{}

func (nftables) command() string { return "nft" }

// chain adds table ip parley and a base chain in it, if not there yet.
func (nftables) chain(ns, name, kind, hook string) error {
	return errors.Join(
		inNS(ns, "nft", "add", "table", "ip", "parley"),
		inNS(ns, "nft", "add", "chain", "ip", "parley", name, "{", "type", kind, "hook", hook, "priority", "100", ";", "}"))
}

func (f nftables) masquerade(ns, out string, symmetric bool) error {
	if err := f.chain(ns, "post", "nat", "postrouting"); err != nil {
		return err
	}
	rule := []string{"nft", "add", "rule", "ip", "parley", "post", "oifname", out, "masquerade"}
	if symmetric {
		rule = append(rule, "fully-random")
	}
	return inNS(ns, rule...)
}

func (f nftables) dropUnsolicited(ns, in string) error {
	if err := f.chain(ns, "in", "filter", "input"); err != nil {
		return err
	}
	return inNS(ns, "nft", "add", "rule", "ip", "parley", "in", "iifname", in, "ct", "state", "new", "drop")
}

func (f nftables) block(ns, a, b string) error {
	if err := f.chain(ns, "blocked", "filter", "forward"); err != nil {
		return err
	}
	return errors.Join(
		inNS(ns, "nft", "add", "rule", "ip", "parley", "blocked", "ip", "saddr", a, "ip", "daddr", b, "drop"),
		inNS(ns, "nft", "add", "rule", "ip", "parley", "blocked", "ip", "saddr", b, "ip", "daddr", a, "drop"))
}

func (nftables) unblock(ns, _, _ string) error {
	return inNS(ns, "nft", "flush", "chain", "ip", "parley", "blocked")
}

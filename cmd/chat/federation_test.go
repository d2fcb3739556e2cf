package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fedRelay is one relay of a federation run by TestThreeRelays: its
// data folder and the addresses it keeps across a restart.
type fedRelay struct {
	dir, hostPort, p2p string
	addr, mesh         string
	p                  *proc
}

// newFedRelays makes n relays' data folders, each with fixed addresses
// and the others as its federation, carrying room.
func newFedRelays(t *testing.T, n int, room string) []*fedRelay {
	t.Helper()
	rs := make([]*fedRelay, n)
	for i := range rs {
		r := &fedRelay{hostPort: freeUDP(t)}
		r.p2p = "/ip4/127.0.0.1/udp/" + strings.Split(freeUDP(t), ":")[1] + "/quic-v1"
		r.dir = initRelay(t, fmt.Sprintf("p2p_listen = [%q]", r.p2p))
		out, err := exec.Command(buildRelay(t), "--data", r.dir, "addr", "--mesh").Output()
		if err != nil {
			t.Fatalf("relay addr --mesh: %v", err)
		}
		r.mesh = strings.TrimSpace(string(out))
		r.addr = relayAddrOf(t, r.dir, r.hostPort)
		rs[i] = r
	}
	for i, r := range rs {
		var others []string
		for j, o := range rs {
			if j != i {
				others = append(others, fmt.Sprintf("%q", o.mesh))
			}
		}
		fed := fmt.Sprintf("\n[federation]\nrelays = [%s]\nrooms = [%q]\n", strings.Join(others, ", "), room)
		f, err := os.OpenFile(filepath.Join(r.dir, "config.toml"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(fed); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return rs
}

func (r *fedRelay) serve(t *testing.T) {
	t.Helper()
	r.p, _, _ = serveRelayMesh(t, r.dir, r.hostPort, r.p2p)
}

// TestThreeRelays: three relays federated through the mesh, and people
// configured with two relays each. One relay is killed with -9 in the
// middle of the conversation and restarted on its folder: the people on
// it go on through their other relay; every listener shows every message
// once; and the restarted relay, caught up from the others, holds all of
// them, those said while it was down included.
func TestThreeRelays(t *testing.T) {
	const room, perPhase = "fed", 2
	rs := newFedRelays(t, 3, room)
	for _, r := range rs {
		r.serve(t)
	}
	pair := func(i int) string { return rs[i%3].addr + "," + rs[(i+1)%3].addr }
	var senders, listeners []*peer
	var listening []*proc
	total := 3 * 3 * perPhase
	for i := range 3 {
		senders = append(senders, newPeer(t, fmt.Sprintf("sender%d", i), "--mode", "relay", "--relay", pair(i)))
		l := newPeer(t, fmt.Sprintf("listener%d", i), "--mode", "relay", "--relay", pair(i))
		listeners = append(listeners, l)
		listening = append(listening, l.start(t, "listen", "--room", room, "--json", "--count", fmt.Sprint(total), "--timeout", "170s"))
	}
	var said []string
	phase := func(name string) {
		for i, s := range senders {
			for k := range perPhase {
				text := fmt.Sprintf("%s: sender%d says %d", name, i, k)
				if out, code := s.run(t, "send", "--room", room, "--timeout", "60s", text); code != 0 {
					t.Fatalf("%s: exit %d: %s", text, code, out)
				}
				said = append(said, text)
			}
		}
	}
	phase("before")
	rs[1].p.cmd.Process.Kill() // kill -9: senders 0 and 1 lose one of their relays
	<-rs[1].p.exited
	phase("during")
	rs[1].serve(t)
	phase("after")

	for i, l := range listening {
		got := collect(t, l, total)
		assertSameTexts(t, fmt.Sprintf("listener%d", i), got, said)
		if code := l.wait(t); code != 0 {
			t.Fatalf("listener%d: exit %d\n%s", i, code, l.log())
		}
	}
	// The restarted relay holds everything, what it missed included: a
	// newcomer on it alone gets all of it from its history.
	newcomer := newPeer(t, "newcomer", "--mode", "relay", "--relay", rs[1].addr)
	out, code := newcomer.run(t, "listen", "--room", room, "--json", "--count", fmt.Sprint(total), "--timeout", "120s")
	if code != 0 {
		t.Fatalf("newcomer on the restarted relay: exit %d:\n%s", code, out)
	}
	for _, text := range said {
		if !strings.Contains(out, fmt.Sprintf("%q", text)) {
			t.Errorf("the restarted relay does not hold %q", text)
		}
	}
	for _, r := range rs {
		r.p.stop(t)
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/parleychat/parley/internal/testkit"
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
		r := &fedRelay{hostPort: testkit.FreeAddr(t)}
		r.p2p = "/ip4/127.0.0.1/udp/" + strings.Split(testkit.FreeAddr(t), ":")[1] + "/quic-v1"
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
// them, those said while it was down included. Sender 0 asks for every
// relay's acknowledgement (relay_ack = "all"): while one of its relays is
// down its message is not delivered (exit 5) but kept, and it goes out
// with its next one; each of its messages has each relay's receipt.
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
		if i == 0 {
			appendConfig(t, senders[0], `relay_ack = "all"`)
		}
		l := newPeer(t, fmt.Sprintf("listener%d", i), "--mode", "relay", "--relay", pair(i))
		listeners = append(listeners, l)
		listening = append(listening, l.start(t, "listen", "--room", room, "--json", "--count", fmt.Sprint(total), "--timeout", "170s"))
	}
	var said []string
	phase := func(name string) {
		for i, s := range senders {
			for k := range perPhase {
				text := fmt.Sprintf("%s: sender%d says %d", name, i, k)
				said = append(said, text)
				if i == 0 && name == "during" {
					// One of its two relays is down: not delivered under
					// relay_ack all (exit 5: that relay cannot be
					// reached), and kept in the outbox.
					if out, code := s.run(t, "send", "--room", room, "--timeout", "10s", text); code != exitRelayDown {
						t.Fatalf("%s with relay_ack all and a relay down: exit %d, want %d: %s", text, code, exitRelayDown, out)
					}
					continue
				}
				if out, code := s.run(t, "send", "--room", room, "--timeout", "60s", text); code != 0 {
					t.Fatalf("%s: exit %d: %s", text, code, out)
				}
			}
		}
	}
	phase("before")
	rs[1].p.Cmd.Process.Kill() // kill -9: senders 0 and 1 lose one of their relays
	<-rs[1].p.Exited
	phase("during")
	rs[1].serve(t)
	phase("after")

	for i, l := range listening {
		got := collect(t, l, total)
		assertSameTexts(t, fmt.Sprintf("listener%d", i), got, said)
		if code := l.Wait(t); code != 0 {
			t.Fatalf("listener%d: exit %d\n%s", i, code, l.Log())
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
	checkReceipts(t, senders[0], room, rs[0].addr, rs[1].addr)
	for _, r := range rs {
		r.p.Stop(t)
	}
}

// appendConfig adds line to the peer's config.toml.
func appendConfig(t *testing.T, p *peer, line string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(p.home, "config.toml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + line + "\n"); err != nil {
		t.Fatal(err)
	}
}

// checkReceipts checks that each of p's messages in room has an audit
// receipt of each of the relays given, and of no other. (A relay that
// stored the message from the mesh before p's own publish reached it
// records that publish all the same, and its acknowledgement carries the
// receipt: docs/client.md.)
func checkReceipts(t *testing.T, p *peer, room string, relays ...string) {
	t.Helper()
	out, code := p.run(t, "history", "--room", room, "--json", "--limit", "1000")
	if code != 0 {
		t.Fatalf("history: exit %d: %s", code, out)
	}
	var fps []string
	for _, a := range relays {
		fp, _, _ := strings.Cut(a, "@")
		fps = append(fps, fp)
	}
	own := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m struct {
			Text     string `json:"text"`
			Trust    string `json:"trust"`
			Receipts []struct {
				Relay string `json:"relay"`
			} `json:"receipts"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || m.Trust != "self" {
			continue
		}
		own++
		var have []string
		for _, r := range m.Receipts {
			if !slices.Contains(fps, r.Relay) {
				t.Errorf("%q has a receipt of relay %s, not one of its relays %q", m.Text, r.Relay, fps)
			}
			have = append(have, r.Relay)
		}
		for _, fp := range fps {
			if !slices.Contains(have, fp) {
				t.Errorf("%q has no receipt of relay %s (it has %q)", m.Text, fp, have)
			}
		}
	}
	if own == 0 {
		t.Fatalf("%s's history shows none of its messages:\n%s", p.name, out)
	}
}

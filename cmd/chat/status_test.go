package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestChatOverTCP: two people whose networks let only TCP through talk
// through the relay (--relay-transport tcp), with the real binaries.
func TestChatOverTCP(t *testing.T) {
	_, raddr, _ := startRelay(t)
	alice := newPeer(t, "alice", "--mode", "relay", "--relay", raddr, "--relay-transport", "tcp")
	bob := newPeer(t, "bob", "--mode", "relay", "--relay", raddr, "--relay-transport", "tcp")
	listener := bob.start(t, "listen", "--room", "lobby", "--json", "--verbose")
	waitLog(t, listener, "connected over tcp")
	if out, code := alice.run(t, "send", "--room", "lobby", "over tcp"); code != 0 {
		t.Fatalf("send over TCP: exit %d: %s", code, out)
	}
	got := collect(t, listener, 1)
	if got[0].Text != "over tcp" || got[0].Via != "relay" {
		t.Fatalf("bob got %+v", got[0])
	}
}

// TestStatus: chat status says which transport the relay connection uses
// and how each mesh peer is reached.
func TestStatus(t *testing.T) {
	_, raddr, _ := startRelay(t)
	alice := newPeer(t, "alice", "--relay", raddr)
	alice.listenOn(t)
	listener := alice.start(t, "listen", "--room", "lobby", "--json")
	defer listener.Stop(t)
	bob := newPeer(t, "bob", "--relay", raddr, "--peer", alice.listen, "--listen", "/ip4/127.0.0.1/udp/0/quic-v1")
	// With auto (no flag), the transport that reached the relay last
	// time is tried first. Which one connects is a race (the other starts
	// 300 ms later, and a handshake on a busy machine can take longer), so
	// for auto the test checks the order, which --verbose logs, and that
	// it connected.
	for _, c := range []struct{ via, first string }{{"tcp", "tcp"}, {"", "tcp"}, {"quic", "quic"}, {"", "quic"}} {
		if c.via == "" {
			out, code := bob.run(t, "--verbose", "status")
			if code != 0 || !strings.Contains(out, "connected over ") || !strings.Contains(out, "first="+c.first+" ") {
				t.Fatalf("auto after %s: exit %d, want connected, %s tried first:\n%s", c.first, code, c.first, out)
			}
			continue
		}
		out, code := bob.run(t, "--relay-transport", c.via, "status", "--json")
		if code != 0 {
			t.Fatalf("status: exit %d: %s", code, out)
		}
		var st statusJSON
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v: %s", err, out)
		}
		if st.Relay == nil || st.Relay.Status != "connected" || st.Relay.Transport != c.via {
			t.Fatalf("--relay-transport %s: relay %+v, want connected over it", c.via, st.Relay)
		}
		if st.Mesh == nil || !hasPath(st.Mesh.Peers, alice.id.PeerID, "direct") {
			t.Fatalf("mesh: %+v, want a direct connection to alice (%s)", st.Mesh, alice.id.PeerID)
		}
	}
	out, code := bob.run(t, "--relay-transport", "quic", "status")
	if code != 0 || !strings.Contains(out, "connected over quic") || !strings.Contains(out, alice.id.PeerID+"  direct over quic") {
		t.Fatalf("status: exit %d:\n%s", code, out)
	}
	t.Logf("chat status:\n%s", out)
}

func hasPath(paths []pathJSON, peer, kind string) bool {
	for _, p := range paths {
		if p.Peer == peer && p.Path == kind {
			return true
		}
	}
	return false
}

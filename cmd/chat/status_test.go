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
	// time is tried first, and wins on loopback.
	for _, c := range []struct{ via, want string }{{"tcp", "tcp"}, {"", "tcp"}, {"quic", "quic"}, {"", "quic"}} {
		args := []string{"status", "--json"}
		if c.via != "" {
			args = append([]string{"--relay-transport", c.via}, args...)
		}
		out, code := bob.run(t, args...)
		if code != 0 {
			t.Fatalf("status: exit %d: %s", code, out)
		}
		var st statusJSON
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v: %s", err, out)
		}
		if st.Relay == nil || st.Relay.Status != "connected" || st.Relay.Transport != c.want {
			t.Fatalf("--relay-transport %q: relay %+v, want connected over %s", c.via, st.Relay, c.want)
		}
		if st.Mesh == nil || !hasPath(st.Mesh.Peers, alice.id.PeerID, "direct") {
			t.Fatalf("mesh: %+v, want a direct connection to alice (%s)", st.Mesh, alice.id.PeerID)
		}
	}
	out, code := bob.run(t, "status")
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

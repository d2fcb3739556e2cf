package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// The end-to-end stories of private rooms: the real chat and relay
// binaries, each person a home folder, on loopback.

// createRoom runs chat room create and returns the room's ID.
func createRoom(t *testing.T, p *peer, name string) string {
	t.Helper()
	out, code := p.run(t, "room", "create", name)
	if code != 0 {
		t.Fatalf("%s: room create: exit %d: %s", p.name, code, out)
	}
	id, got, ok := strings.Cut(strings.TrimSpace(out), "\t")
	if !ok || got != name || !strings.HasPrefix(id, "p:") {
		t.Fatalf("%s: room create printed %q", p.name, out)
	}
	return id
}

// inviteCode runs chat room invite and returns the code.
func inviteCode(t *testing.T, p *peer, room string, args ...string) string {
	t.Helper()
	out, code := p.run(t, append([]string{"room", "invite", room}, args...)...)
	if code != 0 || !strings.HasPrefix(out, "invite-") {
		t.Fatalf("%s: room invite: exit %d: %s", p.name, code, out)
	}
	return strings.TrimSpace(out)
}

// memberList is chat room members --json: fingerprint to admin.
func memberList(t *testing.T, p *peer, room string) map[string]bool {
	t.Helper()
	out, code := p.run(t, "room", "members", room, "--json")
	if code != 0 {
		t.Fatalf("%s: room members: exit %d: %s", p.name, code, out)
	}
	got := make(map[string]bool)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m struct {
			Fingerprint string `json:"fingerprint"`
			Admin       bool   `json:"admin"`
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s: room members printed %q: %v", p.name, line, err)
		}
		got[m.Fingerprint] = m.Admin
	}
	return got
}

// TestPrivateRoomThroughRelay: Alice makes a private room and an invite
// for one, and goes offline. Bob joins with the code through the relay
// alone, and posts; Carol's try with the used-up code is refused at once,
// and so are her posts, her history and her subscription: the relay hands
// a non-member nothing. Alice comes back, sees Bob's post, and removes
// him: the relay refuses his next post, even from a client that has not
// heard of the removal.
func TestPrivateRoomThroughRelay(t *testing.T) {
	relayP, raddr, _ := startRelay(t)
	defer relayP.Stop(t)
	alice := newPeer(t, "alice", "--mode", "relay", "--relay", raddr)
	bob := newPeer(t, "bob", "--mode", "relay", "--relay", raddr)
	carol := newPeer(t, "carol", "--mode", "relay", "--relay", raddr)

	room := createRoom(t, alice, "Plans 2027")
	code := inviteCode(t, alice, "Plans 2027", "--uses", "1")

	// Every admin offline: the relay has the list, the code the rest.
	out, rc := bob.run(t, "join", code)
	if rc != 0 || !strings.HasPrefix(out, room+"\tPlans 2027") {
		t.Fatalf("bob: join: exit %d: %s", rc, out)
	}
	if out, rc := bob.run(t, "send", "--room", "Plans 2027", "hello, private"); rc != 0 {
		t.Fatalf("bob: send: exit %d: %s", rc, out)
	}
	if got := memberList(t, bob, room); len(got) != 2 || !got[alice.id.Fingerprint] || got[bob.id.Fingerprint] {
		t.Errorf("bob's member list: %v, want alice (admin) and bob", got)
	}

	// The code let in one person; Carol gets a clear refusal.
	out, rc = carol.run(t, "join", code, "--timeout", "20s")
	if rc != exitRefused || !strings.Contains(out, "used up") {
		t.Errorf("carol: join with a used-up code: exit %d, want %d saying used up: %s", rc, exitRefused, out)
	}
	// A second code, revoked before anyone uses it: refused, saying so.
	code2 := inviteCode(t, alice, room, "--uses", "5")
	out, rc = alice.run(t, "room", "invites", room, "--json")
	var open []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var inv struct{ Invite, State string }
		if err := json.Unmarshal([]byte(line), &inv); err != nil {
			t.Fatalf("room invites: exit %d: %q: %v", rc, line, err)
		}
		if inv.State == "open" {
			open = append(open, inv.Invite)
		}
	}
	if len(open) != 1 {
		t.Fatalf("room invites: want one open (the first is used up): %s", out)
	}
	if out, rc := alice.run(t, "room", "revoke", room, open[0][:20]); rc != 0 {
		t.Fatalf("alice: room revoke: exit %d: %s", rc, out)
	}
	out, rc = carol.run(t, "join", code2, "--timeout", "20s")
	if rc != exitRefused || !strings.Contains(out, "revoked") {
		t.Errorf("carol: join with a revoked code: exit %d, want %d saying revoked: %s", rc, exitRefused, out)
	}

	// An outsider who knows the room's ID gets nothing of it.
	out, rc = carol.run(t, "send", "--room", room, "let me in")
	if rc != exitRefused {
		t.Errorf("carol: send to the private room: exit %d, want %d: %s", rc, exitRefused, out)
	}
	out, rc = carol.run(t, "listen", "--room", room, "--count", "1", "--timeout", "5s", "--json")
	if rc == 0 || strings.Contains(out, "hello, private") {
		t.Errorf("carol: listen to the private room: exit %d: %s", rc, out)
	}

	// Alice is back: she has Bob's post, and removes him.
	out, rc = alice.run(t, "listen", "--room", "Plans 2027", "--count", "1", "--timeout", "60s", "--json")
	if rc != 0 || !strings.Contains(out, `"text":"hello, private"`) {
		t.Fatalf("alice: listen: exit %d: %s", rc, out)
	}
	if out, rc := alice.run(t, "room", "remove", "Plans 2027", bob.id.Fingerprint); rc != 0 {
		t.Fatalf("alice: room remove: exit %d: %s", rc, out)
	}
	if got := memberList(t, alice, room); len(got) != 1 || !got[alice.id.Fingerprint] {
		t.Errorf("alice's member list after the removal: %v", got)
	}
	// Bob's client has not heard of it; the relay has.
	out, rc = bob.run(t, "send", "--room", room, "am I still in?")
	if rc != exitRefused || !strings.Contains(out, "not a member") {
		t.Errorf("bob: send after his removal: exit %d, want %d (not a member): %s", rc, exitRefused, out)
	}
	out, rc = alice.run(t, "history", "--room", room, "--json")
	if rc != 0 || strings.Contains(out, "am I still in?") || !strings.Contains(out, "hello, private") {
		t.Errorf("alice: history: exit %d: %s", rc, out)
	}
}

// TestPrivateRoomPeerToPeer: the same story on the mesh alone. Alice
// stays online (a peer must have the room for a newcomer to reach it);
// Bob joins with a code through her, they talk, Alice removes Bob, and
// his client, told by the mesh, refuses to post.
func TestPrivateRoomPeerToPeer(t *testing.T) {
	alice := newPeer(t, "alice", "--mode", "p2p")
	aliceAddr := alice.listenOn(t)
	bob := newPeer(t, "bob", "--mode", "p2p", "--peer", aliceAddr)

	room := createRoom(t, alice, "garden")
	code := inviteCode(t, alice, "garden", "--uses", "2")
	listen := alice.start(t, "listen", "--room", "garden", "--json", "--timeout", "90s")
	defer listen.Stop(t)

	out, rc := bob.run(t, "join", code)
	if rc != 0 || !strings.HasPrefix(out, room+"\tgarden") {
		t.Fatalf("bob: join through alice: exit %d: %s", rc, out)
	}
	if out, rc := bob.run(t, "send", "--room", "garden", "hi alice"); rc != 0 {
		t.Fatalf("bob: send: exit %d: %s", rc, out)
	}
	got := collect(t, listen, 1)
	if got[0].Text != "hi alice" || got[0].Room != room {
		t.Errorf("alice got %+v", got[0])
	}
	listen.Stop(t)
	bobListen := bob.start(t, "listen", "--room", "garden", "--json", "--timeout", "90s")
	if out, rc := alice.run(t, "room", "remove", "garden", bob.id.Fingerprint[:20]); rc != 0 {
		t.Fatalf("alice: room remove: exit %d: %s", rc, out)
	}
	bobListen.Stop(t)
	out, rc = bob.run(t, "send", "--room", room, "still here?")
	if rc != exitRefused || !strings.Contains(out, "not a member") {
		t.Errorf("bob: send after his removal: exit %d, want %d: %s", rc, exitRefused, out)
	}
}

package upgrade

import (
	"strings"
	"testing"

	"github.com/parleychat/parley/internal/testkit"
)

// TestRelayUpgrade: a relay of the previous release serves a person on
// the previous release and one on this code; the operator stops it and
// starts this code's relay on the same data folder at the same address.
// Both people talk both ways before and after (an old client against a
// new relay, a new one against an old relay), the relay keeps every
// message across the upgrade, its audit log verifies across it, and the
// old person's home folder opens in this code's chat with its history;
// the previous release then refuses the upgraded stores, the relay's and
// the chat's.
func TestRelayUpgrade(t *testing.T) {
	oldChat, newChat := old(t, "chat"), current(t, "chat")
	oldRelay, newRelayBin := old(t, "relay"), current(t, "relay")

	r := newRelay(t, oldRelay)
	r.serve(t, "old relay", oldRelay)
	alice := newPerson(t, "alice", "--mode", "relay", "--relay", r.addr) // this code
	bob := newPerson(t, "bob", "--mode", "relay", "--relay", r.addr)     // the previous release
	talkBoth(t, alice, newChat, bob, oldChat, "before")
	// This code's audit command on the old relay's folder while that
	// relay runs leaves its schema alone (it would break the old relay's
	// inserts) and says to restart the relay.
	out, err := run("", newRelayBin, "--data", r.dir, "audit", "verify")
	if err == nil || !strings.Contains(out, "restart it with this one first") {
		t.Fatalf("this code's audit verify beside the running old relay: %v\n%s", err, out)
	}
	talkBoth(t, alice, newChat, bob, oldChat, "still")
	exited0(t, r.p, r.p.Stop(t))

	r.serve(t, "new relay", newRelayBin)
	talkBoth(t, alice, newChat, bob, oldChat, "after")

	// Bob upgrades: his home folder, made by the previous release, opens
	// in this code's chat with everything in it, and he goes on.
	all := []string{"alice before", "bob before", "alice still", "bob still", "alice after", "bob after"}
	assertHistory(t, bob, newChat, all...)
	bob.chat(t, newChat, "send", "--room", "lobby", "bob upgraded")
	// A newcomer on this code gets the whole history from the relay,
	// what the old relay stored included.
	carol := newPerson(t, "carol", "--mode", "relay", "--relay", r.addr)
	c := carol.talk(t, newChat, "lobby")
	expect(t, c, append(all, "bob upgraded")...)
	done(t, c)

	exited0(t, r.p, r.p.Stop(t))
	out, err = run("", newRelayBin, "--data", r.dir, "audit", "verify")
	if err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("relay audit verify after the upgrade: %v\n%s", err, out)
	}
	t.Logf("relay audit verify: %s", strings.TrimSpace(out))

	// Going back: the new relay dropped the index on envelope IDs, which
	// the previous release inserts with, so that release refuses the
	// store with a clear error rather than fail on its first publish.
	out, err = run("", oldRelay, "--data", r.dir, "audit", "verify")
	if err == nil || !strings.Contains(out, "schema version 1001 is newer than this program") {
		t.Fatalf("the previous release on the upgraded data folder: %v\n%s", err, out)
	}
	// So did Bob's chat store, and the previous chat refuses it alike.
	out, err = runEnv("", nil, oldChat, bob.args("history", "--room", "lobby")...)
	if err == nil || !strings.Contains(out, "schema version 1001 is newer than this program") {
		t.Fatalf("the previous chat on the upgraded home folder: %v\n%s", err, out)
	}
}

// TestNewClientOldRelay: a relay of the previous release and only this
// code's clients, the case of people who upgrade before their relay.
func TestNewClientOldRelay(t *testing.T) {
	oldRelay, newChat := old(t, "relay"), current(t, "chat")
	r := newRelay(t, oldRelay)
	r.serve(t, "old relay", oldRelay)
	alice := newPerson(t, "alice", "--mode", "relay", "--relay", r.addr)
	bob := newPerson(t, "bob", "--mode", "relay", "--relay", r.addr)
	talkBoth(t, alice, newChat, bob, newChat, "on an old relay")
	exited0(t, r.p, r.p.Stop(t))
}

// TestMixedMesh: a peer of the previous release and one of this code in
// one room on the mesh, no relay: messages flow both ways, each shown
// once.
func TestMixedMesh(t *testing.T) {
	oldChat, newChat := old(t, "chat"), current(t, "chat")
	alice := newPerson(t, "alice", "--mode", "p2p")
	bob := newPerson(t, "bob", "--mode", "p2p")
	aliceAddr := listenOn(t, alice, newChat)
	bobAddr := listenOn(t, bob, oldChat)
	alice.flags = append(alice.flags, "--peer", bobAddr)
	bob.flags = append(bob.flags, "--peer", aliceAddr)
	talkBoth(t, alice, newChat, bob, oldChat, "on the mesh")
}

// talkBoth has a (running aBin) and b (running bBin) talk in the room
// lobby: each says one line, tagged, and sees the other's once.
func talkBoth(t *testing.T, a *person, aBin string, b *person, bBin string, tag string) {
	t.Helper()
	ap, bp := a.talk(t, aBin, "lobby"), b.talk(t, bBin, "lobby")
	say(t, ap, a.name+" "+tag)
	say(t, bp, b.name+" "+tag)
	expect(t, bp, a.name+" "+tag)
	expect(t, ap, b.name+" "+tag)
	// Each waits for its line's confirmation before leaving: one who
	// left first could not give the other's.
	waitLog(t, ap, "sent ")
	waitLog(t, bp, "sent ")
	done(t, ap, bp)
}

// assertHistory checks that p's history, as bin shows it, has want.
func assertHistory(t *testing.T, p *person, bin string, want ...string) {
	t.Helper()
	got := texts(t, p.name, p.chat(t, bin, "history", "--room", "lobby", "--json", "--limit", "100"))
	for _, w := range want {
		if !got[w] {
			t.Errorf("%s's history (chat of %s) lacks %q: %v", p.name, bin, w, keys(got))
		}
	}
}

// listenOn makes p's identity with bin and gives p a fixed mesh address
// on loopback; it returns the address with p's peer ID.
func listenOn(t *testing.T, p *person, bin string) string {
	t.Helper()
	var id struct {
		PeerID string `json:"peer_id"`
	}
	out := p.chat(t, bin, "id", "--json")
	if err := jsonUnmarshal(out, &id); err != nil || id.PeerID == "" {
		t.Fatalf("chat id --json: %v: %s", err, out)
	}
	_, port, _ := strings.Cut(testkit.FreeAddr(t), ":")
	ma := "/ip4/127.0.0.1/udp/" + port + "/quic-v1"
	p.flags = append(p.flags, "--listen", ma)
	return ma + "/p2p/" + id.PeerID
}

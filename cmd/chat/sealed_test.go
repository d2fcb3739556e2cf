package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The end-to-end stories of encryption: the real binaries, on loopback.

// marker returns a random string that can only be in a file if a message
// that holds it was written there in the clear.
func marker(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	rand.Read(b)
	return "marker-" + hex.EncodeToString(b)
}

// assertNoMarker fails t if any file under dir holds one of the markers.
func assertNoMarker(t *testing.T, what, dir string, markers ...string) {
	t.Helper()
	for _, m := range markers {
		if path := findMarker(t, dir, m); path != "" {
			t.Errorf("%s: %s holds the plaintext %q", what, path, m)
		}
	}
}

// findMarker returns a file under dir that holds m, or "".
func findMarker(t *testing.T, dir, m string) string {
	t.Helper()
	found := ""
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != "" {
			return err
		}
		b, err := os.ReadFile(path)
		if bytes.Contains(b, []byte(m)) {
			found = path
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestDirectMessagesThroughRelay: Bob has used the relay once (it keeps
// his key package) and is offline. Alice writes to him by his key: the
// direct room starts, her message is sealed to him. Bob comes back and
// reads it by her key, and answers by hers. The relay's data folder and
// its audit export hold neither message in the clear.
func TestDirectMessagesThroughRelay(t *testing.T) {
	dir := initRelay(t)
	relayP, raddr, _ := serveRelay(t, dir, "127.0.0.1:0")
	alice := newPeer(t, "alice", "--mode", "relay", "--relay", raddr)
	bob := newPeer(t, "bob", "--mode", "relay", "--relay", raddr)
	toBob, toAlice, public := marker(t), marker(t), marker(t)

	// Bob's first session hands the relay his key package.
	if out, rc := bob.run(t, "send", "--room", "lobby", "hello all "+public); rc != 0 {
		t.Fatalf("bob: send: exit %d: %s", rc, out)
	}
	if out, rc := alice.run(t, "msg", bob.id.PublicKey, "hi bob "+toBob); rc != 0 {
		t.Fatalf("alice: msg: exit %d: %s", rc, out)
	}
	out, rc := bob.run(t, "listen", "--room", "@"+alice.id.PublicKey, "--count", "1", "--timeout", "60s", "--json")
	if rc != 0 || !strings.Contains(out, `"text":"hi bob `+toBob+`"`) || !strings.Contains(out, `"sealed":true`) {
		t.Fatalf("bob: listen to the direct room: exit %d: %s", rc, out)
	}
	if out, rc := bob.run(t, "msg", alice.id.PublicKey, "hi alice "+toAlice); rc != 0 {
		t.Fatalf("bob: msg: exit %d: %s", rc, out)
	}
	out, rc = alice.run(t, "listen", "--room", "@"+bob.id.PublicKey, "--count", "1", "--timeout", "60s", "--json")
	if rc != 0 || !strings.Contains(out, `"text":"hi alice `+toAlice+`"`) {
		t.Fatalf("alice: listen to the direct room: exit %d: %s", rc, out)
	}
	out, rc = alice.run(t, "history", "--room", "@"+bob.id.PublicKey, "--json")
	if rc != 0 || !strings.Contains(out, toBob) || !strings.Contains(out, toAlice) {
		t.Errorf("alice: history of the direct room: exit %d: %s", rc, out)
	}

	relayP.Stop(t)
	// The search sees a public room's message, which is not sealed: it
	// would see a private one.
	if findMarker(t, dir, public) == "" {
		t.Fatal("the public message is nowhere in the relay's data folder: the search cannot see plaintext")
	}
	assertNoMarker(t, "relay data folder", dir, toBob, toAlice)
	export := filepath.Join(t.TempDir(), "export")
	if out, err := exec.Command(buildRelay(t), "--data", dir, "audit", "export", "--out", export).CombinedOutput(); err != nil {
		t.Fatalf("relay audit export: %v\n%s", err, out)
	}
	assertNoMarker(t, "audit export", filepath.Dir(export), toBob, toAlice)
}

// TestPrivateRoomRemovalThroughRelay: three members of a private room
// talk through the relay; Alice removes Carol and the others go on
// talking, readable to each other, while the relay's store holds no
// message in the clear.
func TestPrivateRoomRemovalThroughRelay(t *testing.T) {
	dir := initRelay(t)
	relayP, raddr, _ := serveRelay(t, dir, "127.0.0.1:0")
	alice := newPeer(t, "alice", "--mode", "relay", "--relay", raddr)
	bob := newPeer(t, "bob", "--mode", "relay", "--relay", raddr)
	carol := newPeer(t, "carol", "--mode", "relay", "--relay", raddr)
	before, after := marker(t), marker(t)

	room := createRoom(t, alice, "three")
	code := inviteCode(t, alice, room, "--uses", "2")
	for _, p := range []*peer{bob, carol} {
		if out, rc := p.run(t, "join", code); rc != 0 {
			t.Fatalf("%s: join: exit %d: %s", p.name, rc, out)
		}
	}
	if out, rc := alice.run(t, "send", "--room", room, "all three "+before); rc != 0 {
		t.Fatalf("alice: send: exit %d: %s", rc, out)
	}
	for _, p := range []*peer{bob, carol} {
		out, rc := p.run(t, "listen", "--room", room, "--count", "1", "--timeout", "60s", "--json")
		if rc != 0 || !strings.Contains(out, before) {
			t.Fatalf("%s: listen: exit %d: %s", p.name, rc, out)
		}
	}
	if out, rc := alice.run(t, "room", "remove", room, carol.id.Fingerprint); rc != 0 {
		t.Fatalf("alice: room remove: exit %d: %s", rc, out)
	}
	if out, rc := bob.run(t, "send", "--room", room, "two of us "+after); rc != 0 {
		t.Fatalf("bob: send after the removal: exit %d: %s", rc, out)
	}
	out, rc := alice.run(t, "listen", "--room", room, "--count", "1", "--timeout", "60s", "--json")
	if rc != 0 || !strings.Contains(out, after) {
		t.Fatalf("alice: listen after the removal: exit %d: %s", rc, out)
	}
	out, _ = carol.run(t, "history", "--room", room, "--json")
	if strings.Contains(out, after) {
		t.Errorf("carol, removed, reads a later message: %s", out)
	}
	relayP.Stop(t)
	assertNoMarker(t, "relay data folder", dir, before, after)
}

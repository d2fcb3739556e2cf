package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The chat screen end to end: real chat processes (this test binary as
// chat) in a tmux server of the test's own, typed into with send-keys and
// read back with capture-pane, as a person at two terminals would.

// tmuxServer is a tmux server of one test: its own socket in the test's
// temporary folder, no config file, killed (with every process in it)
// when the test ends.
type tmuxServer struct {
	t    *testing.T
	sock string
}

func newTmux(t *testing.T) *tmuxServer {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (.ci/run installs it): the chat screen's end-to-end tests need it")
	}
	s := &tmuxServer{t: t, sock: filepath.Join(t.TempDir(), "tmux")}
	t.Cleanup(func() { exec.Command("tmux", "-S", s.sock, "kill-server").Run() })
	return s
}

func (s *tmuxServer) run(args ...string) (string, error) {
	out, err := exec.Command("tmux", append([]string{"-S", s.sock, "-f", "/dev/null"}, args...)...).CombinedOutput()
	return string(out), err
}

func (s *tmuxServer) must(args ...string) string {
	s.t.Helper()
	out, err := s.run(args...)
	if err != nil {
		s.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return out
}

// termScreen is one person's chat termScreen: a tmux session running chat.
type termScreen struct {
	s      *tmuxServer
	name   string
	status string // the file chat's exit status is written to
}

// open starts p's chat termScreen with args, in a window of 110x30.
func (s *tmuxServer) open(p *peer, args ...string) *termScreen {
	s.t.Helper()
	cmd := []string{"env", asChat + "=1", os.Args[0]}
	cmd = append(append(cmd, p.flags...), args...)
	for i, a := range cmd {
		cmd[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	sc := &termScreen{s: s, name: p.name, status: filepath.Join(s.t.TempDir(), "status")}
	s.must("new-session", "-d", "-s", sc.name, "-x", "110", "-y", "30",
		strings.Join(cmd, " ")+"; echo $? > '"+sc.status+"'")
	return sc
}

func (sc *termScreen) capture() string {
	out, _ := sc.s.run("capture-pane", "-p", "-t", sc.name)
	return out
}

// waitFor waits until the termScreen shows every one of want.
func (sc *termScreen) waitFor(want ...string) {
	sc.s.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := sc.capture()
		if containsAll(got, want) {
			return
		}
		if time.Now().After(deadline) {
			sc.s.t.Fatalf("%s's termScreen did not show %q in 90 s:\n%s", sc.name, want, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsAll(s string, want []string) bool {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// typeLine types text and Enter.
func (sc *termScreen) typeLine(text string) {
	sc.s.t.Helper()
	sc.s.must("send-keys", "-t", sc.name, "-l", text)
	sc.s.must("send-keys", "-t", sc.name, "Enter")
}

func (sc *termScreen) keys(keys ...string) {
	sc.s.t.Helper()
	sc.s.must(append([]string{"send-keys", "-t", sc.name}, keys...)...)
}

// quit types /quit and waits for chat to exit 0.
func (sc *termScreen) quit() {
	sc.s.t.Helper()
	sc.typeLine("/quit")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(sc.status); err == nil && strings.HasSuffix(string(b), "\n") {
			if code := strings.TrimSpace(string(b)); code != "0" {
				sc.s.t.Fatalf("%s's chat exited with %s", sc.name, code)
			}
			return
		}
		if time.Now().After(deadline) {
			sc.s.t.Fatalf("%s's chat did not exit in 60 s after /quit:\n%s", sc.name, sc.capture())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestScreenPeerToPeer: two people at their chat screens, peer to peer
// on loopback, talk in one room, then join a second and talk there, and
// switch back to the first.
func TestScreenPeerToPeer(t *testing.T) {
	tm := newTmux(t)
	alice := newPeer(t, "alice", "--mode", "p2p")
	aliceAddr := alice.listenOn(t)
	bob := newPeer(t, "bob", "--mode", "p2p", "--peer", aliceAddr)
	bob.flags = append(bob.flags, "--peer", bob.listenOn(t))
	alice.flags = append(alice.flags, "--peer", bob.listen)
	a, b := tm.open(alice, "--room", "den"), tm.open(bob, "--room", "den")
	a.waitFor("#den>", "#den 1 mesh peer")
	b.waitFor("#den>", "#den 1 mesh peer")

	a.typeLine("hello from alice")
	b.waitFor("+alice (new) hello from alice")
	a.waitFor("⋯ stored by 1 mesh peer")
	b.typeLine("hi alice")
	a.waitFor("+bob (new) hi alice")

	a.typeLine("/join side")
	b.typeLine("/join side")
	a.waitFor("#side>", "#side 1 mesh peer")
	b.waitFor("#side>", "#side 1 mesh peer")
	a.typeLine("over here")
	b.waitFor("alice over here")
	b.keys("C-p")
	b.waitFor("#den>", "+alice (new) hello from alice")

	a.quit()
	b.quit()
}

// TestScreenThroughRelay: two people whose networks allow only the relay
// talk through it; each sees the other's message, and the sender's line
// says the relay took it with its audit receipt checked.
func TestScreenThroughRelay(t *testing.T) {
	tm := newTmux(t)
	relayP, raddr, _ := startRelay(t)
	alice := newPeer(t, "alice", "--mode", "relay", "--relay", raddr)
	bob := newPeer(t, "bob", "--mode", "relay", "--relay", raddr)
	a, b := tm.open(alice, "--room", "den"), tm.open(bob, "--room", "den")
	a.waitFor("#den>", "relay connected")
	b.waitFor("#den>", "relay connected")

	a.typeLine("through the relay")
	b.waitFor("+alice (new) through the relay")
	a.waitFor("⋯ relayed, receipt checked")
	b.typeLine("got it")
	a.waitFor("+bob (new) got it")

	a.quit()
	b.quit()
	relayP.Stop(t)
}

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRedeemInvite: a newcomer to a relay in invite mode is told to
// redeem an invite, and does, with chat redeem TOKEN or --invite TOKEN; a
// used token is refused (exit 7).
func TestRedeemInvite(t *testing.T) {
	addr, tokens := startInviteRelay(t, 2)
	carol := newPeer(t, "carol", "--mode", "relay", "--relay", addr)
	out, code := carol.run(t, "send", "--room", "lobby", "--timeout", "30s", "hi")
	if code != exitRefused || !strings.Contains(out, "redeem an invite to join") ||
		!strings.HasSuffix(out, " (with a token from the relay's operator: chat redeem TOKEN)\n") {
		t.Fatalf("send before redeeming: exit %d, want %d saying how to redeem:\n%s", code, exitRefused, out)
	}
	out, code = carol.run(t, "redeem", tokens[0])
	if code != exitOK || !strings.HasPrefix(out, "Invite redeemed: the relay "+addr+" has you ("+carol.id.Fingerprint+") on its allow list.\n") {
		t.Fatalf("chat redeem: exit %d:\n%s", code, out)
	}
	if out, code = carol.run(t, "send", "--room", "lobby", "--timeout", "30s", "hi"); code != exitOK {
		t.Fatalf("send after redeeming: exit %d:\n%s", code, out)
	}
	dave := newPeer(t, "dave", "--mode", "relay", "--relay", addr)
	out, code = dave.run(t, "redeem", tokens[0])
	if code != exitRefused || !strings.Contains(out, "used up") {
		t.Fatalf("a used token: exit %d, want %d:\n%s", code, exitRefused, out)
	}
	out, code = dave.run(t, "--invite", tokens[1], "send", "--room", "lobby", "--timeout", "30s", "hello")
	if code != exitOK || !strings.Contains(out, "chat: invite redeemed: the relay "+addr) {
		t.Fatalf("send --invite: exit %d:\n%s", code, out)
	}
}

// startInviteRelay starts a relay in invite mode on loopback with n invite
// tokens, and returns its address and the tokens.
func startInviteRelay(t *testing.T, n int) (string, []string) {
	t.Helper()
	bin := buildRelay(t)
	dir := filepath.Join(t.TempDir(), "relay")
	relayCmd(t, bin, "--data", dir, "init", "--policy", "invite")
	cfg := "admin = \"\"\nmdns = false\n[policy]\nmode = \"invite\"\n"
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	token := regexp.MustCompile(`(?m)^parley-invite-\S+$`)
	var tokens []string
	for range n {
		out := relayCmd(t, bin, "--data", dir, "invite")
		tok := token.FindString(out)
		if tok == "" {
			t.Fatalf("relay invite printed no token:\n%s", out)
		}
		tokens = append(tokens, tok)
	}
	p := start(t, "relay", bin, nil, "--data", dir, "serve", "--listen", "127.0.0.1:0", "--p2p-listen", "none")
	deadline := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-p.Lines:
			if !ok {
				t.Fatalf("relay exited before serving: %v\n%s", p.Err, p.Log())
			}
			if a, ok := strings.CutPrefix(line, "serving "); ok {
				return a, tokens
			}
		case <-deadline:
			t.Fatalf("relay not serving after 60 s\n%s", p.Log())
		}
	}
}

func relayCmd(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("relay %v: %v\n%s", args, err, out)
	}
	return string(out)
}

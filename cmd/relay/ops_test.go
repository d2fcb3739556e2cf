package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/server"
	"github.com/parleychat/parley/relay/wire"
)

// TestServeRefusesTamperedAuditLog: the relay checks its audit log against
// the newest signed checkpoint when it starts, and refuses to serve on a
// log that does not check out, naming the first bad record: here a byte
// changed in a middle record whose stored hashes were left alone.
func TestServeRefusesTamperedAuditLog(t *testing.T) {
	dir := initRelay(t, "open", "")
	p := startRelay(t, dir, "127.0.0.1:0")
	ctx := timeout(t, time.Minute)
	k := testkit.Key(t)
	c := dial(t, p.addr, k)
	a := &testkit.Author{Key: k, Room: "audited"}
	for range 10 {
		raw, _ := a.Next(t, "hello")
		if _, err := c.Publish(ctx, raw); err != nil {
			t.Fatal(err)
		}
	}
	p.stop(t)
	// An untouched log: the relay starts again.
	p = startRelay(t, dir, "127.0.0.1:0")
	if !strings.Contains(p.log(), "audit log checked") {
		t.Errorf("no line of the start-up check in the log:\n%s", p.log())
	}
	p.stop(t)

	db, err := sql.Open("sqlite", filepath.Join(dir, server.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	oneRecordARow(t, dir, db)
	if _, err := db.Exec(changeByte(7, 21)); err != nil {
		t.Fatal(err)
	}
	out, code := relayCmd(t, "--data", dir, "serve", "--listen", "127.0.0.1:0", "--p2p-listen", "none")
	if code != exitAudit || !strings.Contains(out, "record 7: changed") || strings.Contains(out, "serving ") {
		t.Fatalf("serve on a tampered log: exit %d, want %d naming record 7:\n%s", code, exitAudit, out)
	}
	t.Logf("serve on a tampered log: %s", out)
}

// TestReloadStory: the running relay reads config.toml again on SIGHUP and
// on relay reload, applies its policy at once, and records each reload in
// the audit log. Its log is JSON with --log-format json.
func TestReloadStory(t *testing.T) {
	dir := initRelay(t, "allowlist", "")
	p := startRelay(t, dir, "127.0.0.1:0", "--log-format", "json")
	ctx := timeout(t, time.Minute)
	alice := testkit.Key(t)
	if _, err := relay.Dial(ctx, p.addr, alice, relay.ClientOptions{}); !errors.Is(err, &wire.RelayError{Code: wire.CodeNotAllowed}) {
		t.Fatalf("a stranger on an allowlist relay: %v", err)
	}

	// The policy becomes open: SIGHUP.
	cfg := "admin = \"\"\nmdns = false\n[policy]\nmode = \"open\"\n"
	if err := os.WriteFile(filepath.Join(dir, server.ConfigFile), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.log(), "config reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload after SIGHUP:\n%s", p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	dial(t, p.addr, alice) // admitted now

	// relay reload, with nothing changed; with new limits; and with a
	// broken config, which changes nothing.
	out, code := relayCmd(t, "--data", dir, "reload")
	if code != 0 || !strings.Contains(out, "reloaded: nothing changed") || !strings.Contains(out, "running relay") {
		t.Fatalf("relay reload: exit %d: %s", code, out)
	}
	cfg += "[limits]\nmax_envelope = 600\n"
	if err := os.WriteFile(filepath.Join(dir, server.ConfigFile), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = relayCmd(t, "--data", dir, "reload")
	if code != 0 || !strings.Contains(out, "reloaded: the limits changed") {
		t.Fatalf("relay reload with a new max_envelope: exit %d: %s", code, out)
	}
	if info, err := dial(t, p.addr, alice).Info(ctx); err != nil || info.MaxEnvelope != 600 {
		t.Fatalf("max_envelope after the reload: %+v, %v", info, err)
	}
	if err := os.WriteFile(filepath.Join(dir, server.ConfigFile), []byte(cfg+"bogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := relayCmd(t, "--data", dir, "reload"); code == 0 || !strings.Contains(out, "nothing changed") {
		t.Fatalf("relay reload of a bad config: exit %d: %s", code, out)
	}
	dial(t, p.addr, testkit.Key(t)) // still open
	p.stop(t)

	// Every line of the log is a JSON object.
	for _, line := range strings.Split(strings.TrimSpace(p.log()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["msg"] == nil {
			t.Fatalf("--log-format json: a line that is not a JSON log record: %q", line)
		}
	}
	out, code = relayCmd(t, "--data", dir, "audit", "show", "--kind", "admin")
	if code != 0 || !strings.Contains(out, "reload (SIGHUP): the policy changed") || !strings.Contains(out, "reload (relay reload): nothing changed") ||
		!strings.Contains(out, "reload (relay reload): the limits changed") ||
		!strings.Contains(out, "config: the policy in the config file changed") {
		t.Fatalf("audit show --kind admin: exit %d:\n%s", code, out)
	}
	// On a stopped relay there is nothing to reload.
	if out, code := relayCmd(t, "--data", dir, "reload"); code == 0 || !strings.Contains(out, "no relay runs") {
		t.Fatalf("reload on a stopped relay: exit %d: %s", code, out)
	}
}

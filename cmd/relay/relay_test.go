package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/server"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
	"github.com/quic-go/quic-go"
	"github.com/rogpeppe/go-internal/testscript"
)

// The test binary doubles as the relay command: with this variable set it
// runs main, so the end-to-end tests drive the real command in processes
// of its own, and testscript stories call it as "relay".
const asRelay = "PARLEY_TEST_RUN_RELAY"

func TestMain(m *testing.M) {
	if os.Getenv(asRelay) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	testscript.Main(m, map[string]func(){
		"relay": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the command-line stories in testdata/script.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}

// relayCmd runs the relay command to completion and returns its output.
func relayCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), asRelay+"=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("relay %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// relayProc is a running relay process, with the addresses it printed.
type relayProc struct {
	*testkit.Proc
	addr relay.Addr
	mesh []string
}

func (p *relayProc) log() string { return p.Log() }

// initRelay makes a relay data folder with the given config file body
// (appended to a minimal one for tests: loopback, no admin listener).
func initRelay(t *testing.T, policy, extra string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "relay")
	if out, code := relayCmd(t, "--data", dir, "init", "--policy", policy); code != 0 {
		t.Fatalf("relay init: exit %d: %s", code, out)
	}
	cfg := fmt.Sprintf("admin = \"\"\nmdns = false\n%s\n[policy]\nmode = %q\n", extra, policy)
	if err := os.WriteFile(filepath.Join(dir, server.ConfigFile), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startRelay starts "relay serve" on listen and waits until it serves.
// The test's cleanup kills it if it still runs.
func startRelay(t *testing.T, dir, listen string, args ...string) *relayProc {
	t.Helper()
	args = append([]string{"--data", dir, "serve", "--listen", listen}, args...)
	if !strings.Contains(strings.Join(args, " "), "--p2p-listen") {
		args = append(args, "--p2p-listen", "none")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asRelay+"=1")
	p := &relayProc{Proc: testkit.Start(t, "relay", cmd, 64)}
	ready := make(chan struct{})
	go func() {
		// Read to the end: the relay must never wait on its output.
		for line := range p.Lines {
			if a, ok := strings.CutPrefix(line, "serving "); ok {
				p.addr, _ = relay.ParseAddr(a)
			}
			if m, ok := strings.CutPrefix(line, "mesh "); ok {
				p.mesh = append(p.mesh, m)
			}
			if p.addr.HostPort != "" && (len(p.mesh) > 0 || !strings.Contains(strings.Join(args, " "), "/p2p") && !hasMesh(args)) {
				select {
				case <-ready:
				default:
					close(ready)
				}
			}
		}
	}()
	select {
	case <-ready:
	case <-p.Exited:
		t.Fatalf("relay exited before serving: %v\n%s", p.Err, p.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("relay not serving after 30 s\n%s", p.log())
	}
	return p
}

func hasMesh(args []string) bool {
	for i, a := range args {
		if a == "--p2p-listen" && i+1 < len(args) && args[i+1] != "none" {
			return true
		}
	}
	return false
}

// stop sends SIGTERM and expects a clean exit.
func (p *relayProc) stop(t *testing.T) {
	t.Helper()
	if code := p.Stop(t); code != 0 {
		t.Fatalf("relay exited with %d after SIGTERM\n%s", code, p.log())
	}
}

// kill9 kills the relay with SIGKILL: no shutdown at all.
func (p *relayProc) kill9(t *testing.T) {
	t.Helper()
	p.Cmd.Process.Signal(syscall.SIGKILL)
	p.Wait(t)
}

func dial(t *testing.T, addr relay.Addr, key identity.PrivateKey) *relay.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := relay.Dial(ctx, addr, key, relay.ClientOptions{KeepAlive: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// receive takes n deliveries from sub, failing after 30 s.
func receive(t *testing.T, sub *relay.Subscription, n int) []relay.Delivery {
	t.Helper()
	var out []relay.Delivery
	deadline := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case d, ok := <-sub.C:
			if !ok {
				t.Fatalf("subscription ended after %d of %d: %v", len(out), n, sub.Err())
			}
			if !d.Committed {
				out = append(out, d)
			}
		case <-deadline:
			t.Fatalf("received %d of %d in 30 s", len(out), n)
		}
	}
	return out
}

// TestAllowListStory: a stranger is refused with a clear error; once the
// operator allows it on the running relay, it publishes and a second
// client receives.
func TestAllowListStory(t *testing.T) {
	dir := initRelay(t, "allowlist", "")
	alice, bob := testkit.Key(t), testkit.Key(t)
	for _, k := range []identity.PrivateKey{bob} {
		if out, code := relayCmd(t, "--data", dir, "allow", k.Public().String(), "--note", "bob"); code != 0 {
			t.Fatalf("allow while stopped: %d %s", code, out)
		}
	}
	p := startRelay(t, dir, "127.0.0.1:0")
	ctx := timeout(t, time.Minute)

	_, err := relay.Dial(ctx, p.addr, alice, relay.ClientOptions{})
	if !errors.Is(err, &wire.RelayError{Code: wire.CodeNotAllowed}) || !strings.Contains(err.Error(), "not on this relay's allow list") {
		t.Fatalf("stranger: %v", err)
	}
	out, code := relayCmd(t, "--data", dir, "allow", alice.Public().String())
	if code != 0 || !strings.Contains(out, "running relay") {
		t.Fatalf("allow on the running relay: exit %d: %s", code, out)
	}
	ca, cb := dial(t, p.addr, alice), dial(t, p.addr, bob)
	sub, err := cb.Subscribe(ctx, "lobby", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	<-sub.Live
	a := &testkit.Author{Key: alice, Room: "lobby"}
	raw, id := a.Next(t, "hello bob")
	ack, err := ca.Publish(ctx, raw)
	if err != nil || ack.ID != id {
		t.Fatalf("publish: %v %+v", err, ack)
	}
	if got := receive(t, sub, 1); got[0].ID != id {
		t.Fatalf("bob got %s, want %s", got[0].ID, id)
	}
	// Banned on the running relay: refused on the next connection.
	if out, code := relayCmd(t, "--data", dir, "ban", alice.Public().String()); code != 0 {
		t.Fatalf("ban: %d %s", code, out)
	}
	if _, err := relay.Dial(ctx, p.addr, alice, relay.ClientOptions{}); !errors.Is(err, &wire.RelayError{Code: wire.CodeBanned}) {
		t.Fatalf("banned identity: %v", err)
	}
	p.stop(t)
}

// TestWrongKeyStory: an address with another key is refused, saying so.
func TestWrongKeyStory(t *testing.T) {
	dir := initRelay(t, "open", "")
	p := startRelay(t, dir, "127.0.0.1:0")
	wrong := relay.AddrOf(testkit.Key(t).Public(), p.addr.HostPort)
	_, err := relay.Dial(timeout(t, time.Minute), wrong, testkit.Key(t), relay.ClientOptions{})
	if err == nil || !strings.Contains(err.Error(), "not the one in its address") {
		t.Fatalf("dial with the wrong key: %v", err)
	}
	p.stop(t)
}

// TestKill9 kills the relay with SIGKILL during a publish load, 20 times,
// and restarts it: every acknowledged envelope is there, and a subscriber
// that resumes from its cursor gets every envelope exactly once, in order.
func TestKill9(t *testing.T) {
	const rounds = 20
	dir := initRelay(t, "open", "")
	listen := testkit.FreeAddr(t)
	p := startRelay(t, dir, listen)
	ctx := timeout(t, 10*time.Minute)

	sender, reader := testkit.Key(t), testkit.Key(t)
	pub, sc := dial(t, p.addr, sender), dial(t, p.addr, reader)
	sub, err := sc.Subscribe(ctx, "load", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	load := &publishLoad{client: pub, author: &testkit.Author{Key: sender, Room: "load"}, timeout: 5 * time.Second}
	for round := range rounds {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { load.run(ctx, t, 4, stop); close(done) }()
		time.Sleep(time.Duration(100+round*10) * time.Millisecond)
		p.kill9(t)
		time.Sleep(50 * time.Millisecond)
		p = startRelay(t, dir, listen)
		time.Sleep(100 * time.Millisecond)
		close(stop)
		<-done
	}
	want := load.acknowledged()
	if len(want) < rounds {
		t.Fatalf("only %d publishes acknowledged in %d rounds", len(want), rounds)
	}
	assertStored(ctx, t, sc, want)
	// The subscriber got everything the relay stored, once each. Live
	// envelopes go out before their commit, so it may also have got a few
	// that a kill -9 lost before they were committed: never ones that
	// were acknowledged, since those are all stored.
	stored, err := sc.FetchRange(ctx, "load", 0, time.Now().Add(time.Hour).UnixMilli(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	isStored := map[protocol.ID]bool{}
	for _, e := range stored {
		isStored[e.ID] = true
	}
	seen := map[protocol.ID]bool{}
	lost := 0
	for missing := len(stored); missing > 0; {
		var d relay.Delivery
		select {
		case d = <-sub.C:
		case <-time.After(30 * time.Second):
			t.Fatalf("%d stored envelopes never delivered in 30 s", missing)
		}
		if d.Committed {
			continue
		}
		if seen[d.ID] {
			t.Fatalf("envelope %s delivered twice", d.ID)
		}
		seen[d.ID] = true
		if isStored[d.ID] {
			missing--
		} else {
			lost++
		}
	}
	if d, ok := nextEnvelope(sub, 200*time.Millisecond); ok {
		if seen[d.ID] || isStored[d.ID] {
			t.Fatalf("envelope %s delivered twice", d.ID)
		}
		lost++
	}
	for _, id := range want {
		if !seen[id] {
			t.Fatalf("acknowledged envelope %s never delivered", id)
		}
	}
	t.Logf("delivered before a commit that a kill -9 then lost (never acknowledged): %d", lost)
	t.Logf("%d rounds: %d acknowledged, %d stored, all delivered once", rounds, len(want), len(stored))
	p.stop(t)

	// The audit log verifies, and every acknowledged publish has its record.
	if out, code := relayCmd(t, "--data", dir, "audit", "verify"); code != 0 {
		t.Fatalf("audit verify after %d kill -9 rounds: exit %d: %s", rounds, code, out)
	}
	out, code := relayCmd(t, "--data", dir, "audit", "show", "--kind", "publish", "--json")
	if code != 0 {
		t.Fatalf("audit show: exit %d: %s", code, out)
	}
	recorded := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v struct{ Message string }
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("audit show line %q: %v", line, err)
		}
		recorded[v.Message] = true
	}
	for _, id := range want {
		if !recorded[id.String()] {
			t.Fatalf("acknowledged publish %s has no audit record", id)
		}
	}
	t.Logf("audit log verifies; %d publish records cover all %d acknowledged", len(recorded), len(want))
}

// TestAuditTamperStory: the operator's own tools find a changed, deleted or
// reordered audit record, and an export checked elsewhere with another
// key fails.
func TestAuditTamperStory(t *testing.T) {
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
	// Works while the relay runs.
	if out, code := relayCmd(t, "--data", dir, "audit", "verify"); code != 0 {
		t.Fatalf("audit verify on a running relay: %d %s", code, out)
	}
	export := filepath.Join(t.TempDir(), "audit.json")
	out, code := relayCmd(t, "--data", dir, "audit", "export", "--out", export)
	if code != 0 {
		t.Fatalf("export: %d %s", code, out)
	}
	p.stop(t)
	relayKey := strings.TrimSpace(out[strings.LastIndex(out, "--key ")+len("--key "):])
	if out, code := relayCmd(t, "audit", "verify", "--file", export, "--key", relayKey); code != 0 {
		t.Fatalf("verify the export: %d %s", code, out)
	}
	if out, code := relayCmd(t, "audit", "verify", "--file", export, "--key", testkit.Key(t).Public().String()); code != exitAudit {
		t.Fatalf("verify the export with another key: exit %d, want %d: %s", code, exitAudit, out)
	}

	db, err := sql.Open("sqlite", filepath.Join(dir, server.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tamper := func(what, query string, wantIndex int) {
		t.Helper()
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(query); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		out, code := relayCmd(t, "--data", dir, "audit", "verify")
		if code != exitAudit || !strings.Contains(out, fmt.Sprintf("record %d:", wantIndex)) {
			t.Fatalf("%s: exit %d: %s; want record %d named", what, code, out, wantIndex)
		}
		t.Logf("%s: %s", what, strings.TrimSpace(out))
	}
	// The relay writes a commit's records in one row. Split them into one
	// row each, as relays wrote them before: the log still checks out,
	// and each change below hits one record.
	oneRecordARow(t, dir, db)
	if out, code := relayCmd(t, "--data", dir, "audit", "verify"); code != 0 {
		t.Fatalf("audit verify, one record a row: %d %s", code, out)
	}
	// Each change is earlier in the log than the one before, so it is the
	// first bad record.
	tamper("a byte added", `UPDATE audit_records SET data = data || x'00' WHERE idx = 9`, 9)
	tamper("a byte changed", changeByte(7, 21), 7)
	tamper("a record deleted", `DELETE FROM audit_records WHERE idx = 5`, 5)
	tamper("two records swapped", `UPDATE audit_records SET data = (SELECT data FROM audit_records r WHERE r.idx = 5 - audit_records.idx)
		WHERE idx IN (2, 3)`, 2)
	// Record 1 completes the first subtree of two: its row holds that
	// inner hash too.
	tamper("an inner tree hash changed", `UPDATE audit_records SET hashes = substr(hashes, 1, 32) || zeroblob(32) WHERE idx = 1`, 1)
}

// changeByte is an UPDATE that changes byte at (counted from 1, as
// SQLite's substr counts) of audit record idx's data: to 0x5a, or to 0xa5
// where it was 0x5a already. A fixed 0x5a changed nothing in the one run
// in 256 whose client key held it there, and the tamper went unseen.
func changeByte(idx, at int) string {
	return fmt.Sprintf(`UPDATE audit_records SET data = substr(data, 1, %[2]d)
		|| iif(substr(data, %[3]d, 1) = x'5a', x'a5', x'5a') || substr(data, %[4]d) WHERE idx = %[1]d`, idx, at-1, at, at+1)
}

// oneRecordARow rewrites the audit log of the stopped relay's database
// db with one record in each row, as the store reads them.
func oneRecordARow(t *testing.T, dir string, db *sql.DB) {
	t.Helper()
	st, err := store.Open(filepath.Join(dir, server.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := st.AuditEntries(context.Background(), 0, 1_000_000)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`DELETE FROM audit_records`); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var hashes []byte
		for _, h := range e.Stored {
			hashes = append(hashes, h[:]...)
		}
		if _, err := tx.Exec(`INSERT INTO audit_records (idx, n, data, hashes) VALUES (?, 1, ?, ?)`, e.Index, e.Data, hashes); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestAbuse: garbage datagrams, malformed frames, oversized envelopes, a
// client that never reads and one over its rate each get their error,
// while a well-behaved client served at the same time loses nothing.
func TestAbuse(t *testing.T) {
	dir := initRelay(t, "open", "[limits]\npublish_rate = 20.0\npublish_burst = 20\nwrite_timeout = \"1s\"\n")
	p := startRelay(t, dir, "127.0.0.1:0")
	ctx := timeout(t, 5*time.Minute)

	// The well-behaved pair, running through everything below.
	alice, bob := testkit.Key(t), testkit.Key(t)
	ca, cb := dial(t, p.addr, alice), dial(t, p.addr, bob)
	sub, err := cb.Subscribe(ctx, "calm", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	<-sub.Live
	const calm = 30
	calmDone := make(chan []protocol.ID)
	go func() {
		a := &testkit.Author{Key: alice, Room: "calm"}
		var ids []protocol.ID
		for range calm {
			raw, id := a.Next(t, "calm")
			if _, err := ca.Publish(ctx, raw); err != nil {
				t.Errorf("well-behaved publish: %v", err)
			}
			ids = append(ids, id)
			time.Sleep(100 * time.Millisecond) // 10/s, under the limit of 20
		}
		calmDone <- ids
	}()

	t.Run("garbage datagrams", func(t *testing.T) {
		c, err := net.Dial("udp", p.addr.HostPort)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 1200)
		for i := range 2000 {
			rand.Read(buf)
			if i%2 == 0 {
				buf[0] |= 0xc0 // looks like a long-header (Initial) packet
			}
			c.Write(buf[:64+i%1100])
		}
	})

	raw := func(t *testing.T, key identity.PrivateKey, frames ...[]byte) (*bufio.Reader, error) {
		conn, err := relay.DialQUIC(ctx, p.addr, key)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseWithError(0, "") })
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			if _, err := str.Write(f); err != nil {
				return nil, err
			}
		}
		str.Close()
		return bufio.NewReader(str), nil
	}
	expectError := func(t *testing.T, r *bufio.Reader, code wire.ErrorCode) {
		t.Helper()
		var h [wire.FrameHeaderSize]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			t.Fatalf("no answer: %v", err)
		}
		ft, n, err := wire.ParseFrameHeader(h)
		if err != nil || ft != wire.FrameError {
			t.Fatalf("answer %s, %v; want an error frame", ft, err)
		}
		body := make([]byte, n)
		io.ReadFull(r, body)
		e, err := wire.ParseErrorFrame(body)
		if err != nil || e.Code != code {
			t.Fatalf("error %v (%v), want %s", e, err, code)
		}
		t.Logf("relay said: %v", e)
	}
	mallory := testkit.Key(t)

	t.Run("unknown frame type", func(t *testing.T) {
		r, _ := raw(t, mallory, []byte{99, 0, 0, 0, 0})
		expectError(t, r, wire.CodeBadFrame)
	})
	t.Run("frame over the size limit", func(t *testing.T) {
		r, _ := raw(t, mallory, []byte{byte(wire.FramePublish), 0x7f, 0, 0, 0})
		expectError(t, r, wire.CodeTooLarge)
	})
	t.Run("truncated frame", func(t *testing.T) {
		r, _ := raw(t, mallory, []byte{byte(wire.FrameSubscribe), 0, 0, 0, 40, 1, 2})
		expectError(t, r, wire.CodeBadFrame)
	})
	t.Run("malformed subscribe", func(t *testing.T) {
		r, _ := raw(t, mallory, wire.AppendFrame(nil, wire.FrameSubscribe, []byte{3, 'A', 'B', 'C'}))
		expectError(t, r, wire.CodeBadFrame)
	})
	t.Run("oversized envelope", func(t *testing.T) {
		cm := dial(t, p.addr, mallory)
		big := make([]byte, protocol.MaxEnvelopeSize+1)
		big[0] = protocol.Version
		if _, err := cm.Publish(ctx, big); !errors.Is(err, &wire.RelayError{Code: wire.CodeTooLarge}) {
			t.Fatalf("oversized envelope: %v", err)
		}
	})
	t.Run("over the rate", func(t *testing.T) {
		cm := dial(t, p.addr, mallory)
		m := &testkit.Author{Key: mallory, Room: "flood"}
		limited := 0
		for range 100 {
			raw, _ := m.Next(t, "flood")
			if _, err := cm.Publish(ctx, raw); errors.Is(err, &wire.RelayError{Code: wire.CodeRateLimited}) {
				limited++
			}
		}
		if limited == 0 {
			t.Fatal("100 publishes at once were never rate-limited (limit 20/s, burst 20)")
		}
		t.Logf("%d of 100 refused as over the rate", limited)
	})
	t.Run("client that never reads", func(t *testing.T) {
		body, _ := (&wire.Subscribe{Room: "firehose"}).MarshalBinary()
		conn, err := relay.DialQUIC(ctx, p.addr, testkit.Key(t))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		str.Write(wire.AppendFrame(nil, wire.FrameSubscribe, body))
		// Fill the room with more than the stream's window holds.
		writer := testkit.Key(t)
		cw := dial(t, p.addr, writer)
		w := &testkit.Author{Key: writer, Room: "firehose"}
		text := strings.Repeat("x", 4000)
		for i := range 40 {
			raw, _ := w.Next(t, text)
			if _, err := cw.Publish(ctx, raw); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
			time.Sleep(50 * time.Millisecond) // under the rate limit
		}
		time.Sleep(3 * time.Second) // the relay's write timeout is 1 s
		_, err = io.Copy(io.Discard, str)
		var se *quic.StreamError
		if !errors.As(err, &se) || wire.ErrorCode(se.ErrorCode) != wire.CodeSlowConsumer {
			t.Fatalf("the never-reading subscription ended with %v, want a reset with code %d (slow consumer)", err, wire.CodeSlowConsumer)
		}
		t.Logf("never-reading client: %v", err)
	})

	ids := <-calmDone
	got := receive(t, sub, calm)
	for i := range ids {
		if got[i].ID != ids[i] {
			t.Fatalf("well-behaved delivery %d is %s, want %s", i, got[i].ID, ids[i])
		}
	}
	if strings.Contains(p.log(), "panic") {
		t.Fatalf("relay log shows a panic:\n%s", p.log())
	}
	p.stop(t)
}

// TestBridgeStory: a client that reaches only the relay and a peer that is
// only on the mesh talk both ways, through the relay's bridge.
func TestBridgeStory(t *testing.T) {
	dir := initRelay(t, "open", "")
	p := startRelay(t, dir, "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/udp/0/quic-v1")
	ctx := timeout(t, 2*time.Minute)

	// The mesh-only peer.
	peerKey := testkit.Key(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "peer.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	node, err := mesh.New(ctx, mesh.Config{Key: peerKey, Store: st, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	room, err := node.Join("bridge")
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Connect(ctx, p.mesh[0]); err != nil {
		t.Fatal(err)
	}

	// The relay-only client; subscribing makes the relay join the room.
	client := testkit.Key(t)
	cc := dial(t, p.addr, client)
	sub, err := cc.Subscribe(ctx, "bridge", protocol.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	<-sub.Live
	for deadline := time.Now().Add(60 * time.Second); room.MeshSize() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the peer and the relay formed no mesh in 60 s")
		}
	}

	// Mesh to relay.
	mraw, id := (&testkit.Author{Key: peerKey, Room: "bridge"}).Next(t, "hello from the mesh")
	if err := room.Publish(ctx, mraw); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, sub, 1); got[0].ID != id {
		t.Fatalf("relay client got %s, want %s", got[0].ID, id)
	}
	// Relay to mesh, unchanged.
	a := &testkit.Author{Key: client, Room: "bridge"}
	raw, rid := a.Next(t, "hello from behind the relay")
	if _, err := cc.Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-room.Messages():
		if m.ID != rid {
			t.Fatalf("mesh peer got %s, want %s", m.ID, rid)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the mesh peer did not get the relay client's message in 30 s")
	}
	// The relay client's own envelope comes back to it once (it is in the
	// room), the peer's is not delivered twice.
	if got := receive(t, sub, 1); got[0].ID != rid {
		t.Fatalf("relay client got %s, want its own %s", got[0].ID, rid)
	}
	if d, ok := nextEnvelope(sub, 500*time.Millisecond); ok {
		t.Fatalf("extra delivery %s", d.ID)
	}
	// The relay hands out the room's peers: its own node first.
	peers, err := cc.Peers(ctx, "bridge")
	if err != nil || len(peers) < 2 || peers[0] != p.mesh[0] || !strings.HasSuffix(peers[1], "/p2p/"+node.ID().String()) {
		t.Fatalf("peers: %v %v", peers, err)
	}
	p.stop(t)
}

// TestSigtermDrains: SIGTERM during a publish load stops the relay with
// exit status 0, and every publish it acknowledged is stored.
func TestSigtermDrains(t *testing.T) {
	dir := initRelay(t, "open", "")
	listen := testkit.FreeAddr(t)
	p := startRelay(t, dir, listen)
	ctx := timeout(t, 2*time.Minute)
	key := testkit.Key(t)
	c := dial(t, p.addr, key)
	load := &publishLoad{client: c, author: &testkit.Author{Key: key, Room: "drain"}, timeout: time.Second}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { load.run(ctx, t, 8, stop); close(done) }()
	time.Sleep(300 * time.Millisecond)
	p.stop(t) // SIGTERM, and exit status 0
	close(stop)
	<-done
	if !strings.Contains(p.log(), "relay stopped") {
		t.Fatalf("no clean stop in the log:\n%s", p.log())
	}
	p = startRelay(t, dir, listen)
	c2 := dial(t, p.addr, testkit.Key(t))
	want := load.acknowledged()
	if len(want) == 0 {
		t.Fatal("nothing was acknowledged before SIGTERM")
	}
	assertStored(ctx, t, c2, want)
	t.Logf("%d acknowledged before SIGTERM, all stored", len(want))
	p.stop(t)
}

// publishLoad publishes one author's envelopes from several goroutines
// and remembers which were acknowledged. A publish that fails (the relay
// is down or stopping) is simply not acknowledged: the tests check only
// what was.
type publishLoad struct {
	client  *relay.Client
	author  *testkit.Author
	timeout time.Duration // per publish

	mu    sync.Mutex // guards author and acked
	acked []protocol.ID
}

// run publishes from workers goroutines until stop is closed.
func (l *publishLoad) run(ctx context.Context, t *testing.T, workers int, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				l.mu.Lock()
				raw, id := l.author.Next(t, "load")
				l.mu.Unlock()
				pctx, cancel := context.WithTimeout(ctx, l.timeout)
				ack, err := l.client.Publish(pctx, raw)
				cancel()
				if err != nil {
					continue
				}
				if ack.ID != id {
					t.Errorf("ack for %s names %s", id, ack.ID)
				}
				l.mu.Lock()
				l.acked = append(l.acked, id)
				l.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func (l *publishLoad) acknowledged() []protocol.ID {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]protocol.ID(nil), l.acked...)
}

// assertStored fails t unless the relay has every envelope of ids.
func assertStored(ctx context.Context, t *testing.T, c *relay.Client, ids []protocol.ID) {
	t.Helper()
	for i := 0; i < len(ids); i += wire.MaxFetchIDs {
		batch := ids[i:min(i+wire.MaxFetchIDs, len(ids))]
		got, err := c.FetchIDs(ctx, batch...)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(batch) {
			t.Fatalf("%d of %d acknowledged envelopes are stored", len(got), len(batch))
		}
	}
}

// nextEnvelope returns the next envelope (not a Committed mark) that sub
// delivers within wait, if one comes.
func nextEnvelope(sub *relay.Subscription, wait time.Duration) (relay.Delivery, bool) {
	deadline := time.After(wait)
	for {
		select {
		case d, ok := <-sub.C:
			if !ok {
				return d, false
			}
			if !d.Committed {
				return d, true
			}
		case <-deadline:
			return relay.Delivery{}, false
		}
	}
}

// TestKill9IdleListener kills the relay with SIGKILL while a subscriber
// listens, idle, and starts it again on the same port: what is published
// after the restart reaches the subscriber within a few seconds, not after
// the QUIC idle timeout (60 s). The restarted relay does not answer the
// subscriber's small keep-alive packets, so the client must notice the
// silence itself. Both a client made by Dial and one made by Start.
func TestKill9IdleListener(t *testing.T) {
	dir := initRelay(t, "open", "")
	listen := testkit.FreeAddr(t)
	p := startRelay(t, dir, listen)
	ctx := timeout(t, 5*time.Minute)
	sender := testkit.Key(t)
	// A keep-alive of 1 s: a client without its own check for silence
	// waits for the idle timeout however often it pings.
	lazy, err := relay.Dial(ctx, p.addr, testkit.Key(t), relay.ClientOptions{KeepAlive: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer lazy.Close()
	bg, err := relay.Start(p.addr, testkit.Key(t), relay.ClientOptions{KeepAlive: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bg.Close()
	if err := bg.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	author := &testkit.Author{Key: sender, Room: "idle"}
	var subs []*relay.Subscription
	for _, c := range []*relay.Client{lazy, bg} {
		sub, err := c.Subscribe(ctx, "idle", protocol.ID{})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs = append(subs, sub)
	}
	raw, id := author.Next(t, "before")
	if _, err := dial(t, p.addr, sender).Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	for _, sub := range subs {
		if d := receive(t, sub, 1); d[0].ID != id {
			t.Fatalf("got %s, want %s", d[0].ID, id)
		}
	}
	p.kill9(t)
	p = startRelay(t, dir, listen)
	restarted := time.Now()
	raw, id = author.Next(t, "after")
	if _, err := dial(t, p.addr, sender).Publish(ctx, raw); err != nil {
		t.Fatal(err)
	}
	// A keep-alive interval and the 5 s of silence the client allows,
	// and ample time to reconnect: far below the 60 s idle timeout.
	const bound = 16 * time.Second
	for i, sub := range subs {
		d, ok := nextEnvelope(sub, bound)
		if !ok || d.ID != id {
			t.Fatalf("subscriber %d: nothing within %s of the restart (%v)", i, bound, sub.Err())
		}
		t.Logf("subscriber %d: delivered %s after the restart", i, time.Since(restarted).Round(time.Millisecond))
	}
}

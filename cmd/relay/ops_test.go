package main

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay/server"
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
	if _, err := db.Exec(`UPDATE audit_records SET data = substr(data, 1, 20) || x'5a' || substr(data, 22) WHERE idx = 7`); err != nil {
		t.Fatal(err)
	}
	out, code := relayCmd(t, "--data", dir, "serve", "--listen", "127.0.0.1:0", "--p2p-listen", "none")
	if code != exitAudit || !strings.Contains(out, "record 7: changed") || strings.Contains(out, "serving ") {
		t.Fatalf("serve on a tampered log: exit %d, want %d naming record 7:\n%s", code, exitAudit, out)
	}
	t.Logf("serve on a tampered log: %s", out)
}

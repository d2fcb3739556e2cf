package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/lockfile"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/server"
	"github.com/parleychat/parley/store"
)

// The audit-tampering suite: random offline tamperings of a relay's
// database, each on a fresh copy, must each be detected by relay audit
// verify, by the check the relay makes when it starts, or by a returning
// client that kept a checkpoint from before; an untouched copy must pass
// all three.
//
// PARLEY_TAMPER_N sets the number of tamperings (default
// defaultTamperings), PARLEY_TAMPER_SEED the seed of their choice (default:
// a new one, printed). The relay's log itself is made afresh by each run,
// so a seed replays the choice of kinds and positions, not the bytes.

const (
	tamperNEnv        = "PARLEY_TAMPER_N"
	tamperSeedEnv     = "PARLEY_TAMPER_SEED"
	defaultTamperings = 200
)

// TestAuditTampering runs the suite.
func TestAuditTampering(t *testing.T) {
	n, seed := tamperSettings(t)
	t.Logf("audit tampering: %d tamperings, seed %d (replay with %s=%d %s=%d)", n, seed, tamperSeedEnv, seed, tamperNEnv, n)
	fx := buildTamperFixture(t)
	t.Logf("the untouched log: %d records, %d checkpoints, %d older copies of relay.db (sizes %v)",
		fx.size, len(fx.cps), len(fx.snapshots), fx.snapshotSizes)
	ctx := timeout(t, 30*time.Minute)
	rng := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	work := t.TempDir()

	// No false alarm: the untouched copy passes every path.
	dir := fx.copyTo(t, filepath.Join(work, "untouched"))
	if d := fx.detect(ctx, t, dir, fx.size-1, rng); d.any() {
		t.Fatalf("an untouched log raised an alarm: %s", d)
	}
	if out, code := relayCmd(t, "--data", dir, "audit", "verify"); code != 0 {
		t.Fatalf("relay audit verify on the untouched log: exit %d: %s", code, out)
	}

	kinds := tamperKinds()
	counts := map[string]*tamperCount{}
	start := time.Now()
	var commands time.Duration // in the relay command's runs
	for i := range n {
		kind := kinds[rng.IntN(len(kinds))]
		c := counts[kind.name]
		if c == nil {
			c = &tamperCount{}
			counts[kind.name] = c
		}
		dir := filepath.Join(work, "case")
		os.RemoveAll(dir)
		what, from, d := fx.runCase(ctx, t, dir, kind, rng, c)
		c.add(d)
		if !d.any() {
			t.Errorf("tampering %d (seed %d), %s: %s: NOT detected by any path", i, seed, kind.name, what)
		}
		if c.tried == 1 {
			at := time.Now()
			fx.crossCheck(t, dir, kind.name, what, from, d)
			commands += time.Since(at)
		}
	}
	if fx.log.digest() != fx.digest {
		t.Fatal("the tamperings changed the untouched log's copy in memory")
	}
	fx.realClients(t, work)
	t.Logf("%d tamperings in %s, of which %s in runs of the relay command (seed %d):\n%s",
		n, time.Since(start).Round(time.Second), commands.Round(time.Second), seed, countTable(counts))
}

// tamperSettings reads the number of tamperings and the seed.
func tamperSettings(t *testing.T) (int, uint64) {
	t.Helper()
	n := defaultTamperings
	if s := os.Getenv(tamperNEnv); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("%s=%q: want a positive number", tamperNEnv, s)
		}
		n = v
	}
	var seed uint64
	if s := os.Getenv(tamperSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want a number", tamperSeedEnv, s)
		}
		seed = v
	} else {
		seed = mrand.Uint64() // randomly seeded
	}
	return n, seed
}

// detection says which paths found a tampering.
type detection struct {
	verify, start, client bool
	clientRan             bool // the relay would start, so a client could check it
	why                   []string
}

func (d detection) any() bool { return d.verify || d.start || d.client }

func (d detection) String() string { return strings.Join(d.why, "; ") }

// tamperCount counts one kind's tamperings and their detections.
type tamperCount struct {
	tried, noops, verify, start, client, clientRan, missed int
}

func (c *tamperCount) add(d detection) {
	c.tried++
	for _, p := range []struct {
		hit bool
		n   *int
	}{{d.verify, &c.verify}, {d.start, &c.start}, {d.client, &c.client}, {d.clientRan, &c.clientRan}, {!d.any(), &c.missed}} {
		if p.hit {
			*p.n++
		}
	}
}

func countTable(counts map[string]*tamperCount) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-48s %6s %6s %7s %6s %13s %7s\n", "kind", "tried", "no-op", "verify", "start", "client (ran)", "MISSED")
	var total tamperCount
	for _, k := range tamperKinds() {
		c := counts[k.name]
		if c == nil {
			continue
		}
		fmt.Fprintf(&b, "%-48s %6d %6d %7d %6d %6d (%4d) %7d\n", k.name, c.tried, c.noops, c.verify, c.start, c.client, c.clientRan, c.missed)
		total.tried += c.tried
		total.noops += c.noops
		total.verify += c.verify
		total.start += c.start
		total.client += c.client
		total.clientRan += c.clientRan
		total.missed += c.missed
	}
	fmt.Fprintf(&b, "%-48s %6d %6d %7d %6d %6d (%4d) %7d", "total", total.tried, total.noops, total.verify, total.start, total.client, total.clientRan, total.missed)
	return b.String()
}

// runCase applies one tampering of kind to a fresh copy in dir, and runs
// every detection. A tampering that changes nothing in the audit tables
// is drawn again (and counted as a no-op). It returns what was done, the
// first record index it touched, and what detected it.
func (fx *tamperFixture) runCase(ctx context.Context, t *testing.T, dir string, kind tamperKind, rng *mrand.Rand, c *tamperCount) (string, int64, detection) {
	t.Helper()
	for range 100 {
		l := fx.log.clone()
		what, from, err := kind.apply(fx, l, rng)
		if err != nil {
			t.Fatalf("%s: %v", kind.name, err)
		}
		if l.file == nil && l.digest() == fx.digest {
			c.noops++
			continue
		}
		os.RemoveAll(dir)
		fx.copyTo(t, dir)
		path := filepath.Join(dir, server.DBFile)
		if l.file != nil {
			err = os.WriteFile(path, l.file, 0o600)
		} else {
			err = l.writeChanges(path, fx.log)
		}
		if err != nil {
			t.Fatalf("%s: %s: %v", kind.name, what, err)
		}
		d := fx.detect(ctx, t, dir, from, rng)
		if kind.name == appendKind {
			checkAppendWhileRunning(ctx, t, dir, d)
		}
		return what, from, d
	}
	t.Fatalf("%s: 100 no-op tamperings in a row", kind.name)
	return "", 0, detection{}
}

const appendKind = "add a record after the newest checkpoint"

// checkAppendWhileRunning: a record beyond the newest checkpoint is a
// problem for audit verify on a stopped relay (its commits write both),
// and left for the next run while a relay holds the data folder's lock
// (it appends all the time).
func checkAppendWhileRunning(ctx context.Context, t *testing.T, dir string, d detection) {
	t.Helper()
	if !d.verify {
		t.Errorf("%s: audit verify on a stopped relay's folder passed it", appendKind)
	}
	lock, err := lockfile.Acquire(filepath.Join(dir, server.LockFile))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	if _, err := server.AuditVerify(ctx, dir); err != nil {
		t.Errorf("%s: audit verify while a relay holds the folder: %v", appendKind, err)
	}
}

// tamperFixture is a relay data folder with a real audit log, made once.
type tamperFixture struct {
	dir           string              // identity, config.toml, relay.db (one file, no WAL)
	db            []byte              // relay.db's bytes
	key           identity.PrivateKey // the relay's
	size          int64               // records
	cps           []keptCheckpoint    // every checkpoint, smallest first
	snapshots     [][]byte            // older copies of relay.db, oldest first
	snapshotSizes []int64
	log           *tamperLog // the untouched log, as stored
	digest        [32]byte   // of log
	alice         identity.PrivateKey
}

type keptCheckpoint struct {
	audit.Checkpoint
	note []byte
}

// copyTo makes a fresh copy of the data folder in dir.
func (fx *tamperFixture) copyTo(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{server.KeyFile, server.ConfigFile} {
		b, err := os.ReadFile(filepath.Join(fx.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, server.DBFile), fx.db, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// detect runs the three detections on the data folder dir: relay audit
// verify's check (server.AuditVerify), the relay's checks at start
// (server.CheckAuditLog, then server.OpenAudit, as serve runs them), and,
// when the relay would start, a returning client that kept a checkpoint
// of the untouched log larger than from (the first record the tampering
// touched), as audit.Witness checks it against the relay's answers.
func (fx *tamperFixture) detect(ctx context.Context, t *testing.T, dir string, from int64, rng *mrand.Rand) detection {
	t.Helper()
	var d detection
	if _, err := server.AuditVerify(ctx, dir); err != nil {
		if p := (*audit.Problem)(nil); !errors.As(err, &p) {
			t.Errorf("relay audit verify failed without naming a problem of the log: %v", err)
		}
		d.verify = true
		d.why = append(d.why, "verify: "+err.Error())
	}
	// The relay started on it appends: on a copy, so that dir stays as
	// the tampering left it.
	db, err := os.ReadFile(filepath.Join(dir, server.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	served := filepath.Join(dir, "served.db")
	if err := os.WriteFile(served, db, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(served, store.Relay())
	if err != nil {
		t.Fatalf("open the tampered store: %v", err)
	}
	defer st.Close()
	_, err = server.CheckAuditLog(ctx, st, fx.key.Public(), slog.New(slog.DiscardHandler))
	var lg *audit.Log
	if err == nil {
		lg, err = server.OpenAudit(ctx, fx.key, st)
	}
	if err != nil {
		d.start = true
		d.why = append(d.why, "start: "+err.Error())
		return d
	}
	d.clientRan = true
	if err := fx.returningClient(ctx, st, lg, from, rng); err != nil {
		if !errors.Is(err, audit.ErrSecurity) {
			t.Fatalf("returning client: not a security error: %v", err)
		}
		d.client = true
		d.why = append(d.why, "client: "+err.Error())
	}
	return d
}

// returningClient plays the relay started on the tampered log and a client
// coming back to it: the relay appends 1 to 2n records in one commit and
// seals their checkpoint (its start record, the client's publishes), the
// client sees that checkpoint in a receipt and checks it against the one
// it kept, asking the relay for consistency proofs as server.proveTree
// answers them. The client kept a checkpoint of the untouched log,
// chosen at random among those that cover record from.
func (fx *tamperFixture) returningClient(ctx context.Context, st *store.Store, lg *audit.Log, from int64, rng *mrand.Rand) error {
	var kept []keptCheckpoint
	for _, c := range fx.cps {
		if c.Size > from {
			kept = append(kept, c)
		}
	}
	k := fx.cps[len(fx.cps)-1]
	if len(kept) > 0 {
		k = kept[rng.IntN(len(kept))]
	}
	// Sometimes fewer records than the client kept, sometimes more.
	recs := make([]*audit.Record, 1+rng.IntN(int(max(fx.size-lg.Size(), 0))+3))
	now := time.Now().UnixMilli()
	for i := range recs {
		recs[i] = &audit.Record{Kind: audit.KindStart, Time: now + int64(i), Detail: "listening on 127.0.0.1:1, policy allowlist"}
	}
	b, err := st.Begin(ctx)
	if err != nil {
		return fmt.Errorf("append: %w", err)
	}
	defer b.Rollback()
	if _, err := lg.Append(b, recs); err != nil {
		return fmt.Errorf("append: %w", err)
	}
	signed, err := lg.Seal(b)
	if err != nil {
		lg.Abort()
		return fmt.Errorf("seal: %w", err)
	}
	if err := b.Commit(); err != nil {
		lg.Abort()
		return fmt.Errorf("commit: %w", err)
	}
	lg.Commit()
	seen, err := audit.Open(signed, fx.key.Public())
	if err != nil {
		return fmt.Errorf("open the new checkpoint: %w", err)
	}
	w := audit.NewWitness(k.note)
	if err := w.SetRelay(fx.key.Public()); err != nil {
		return err
	}
	w.Queue(audit.Seen{Checkpoint: seen, Note: signed})
	return w.Check(w.Take(), func(newSize int64, olds []int64) ([]tlog.TreeProof, error) {
		// As server.proveTree answers, and relay.Client takes its
		// Error frames: a size the relay does not have is a refusal
		// to prove what it signed.
		if size := lg.Size(); newSize > size {
			return nil, fmt.Errorf("%w: the relay will not prove its log of %d records: the audit log has %d records, not %d", audit.ErrSecurity, newSize, size, newSize)
		}
		out := make([]tlog.TreeProof, len(olds))
		for i, old := range olds {
			p, err := lg.ProveTree(newSize, old, st)
			if err != nil {
				return nil, fmt.Errorf("%w: the relay will not prove its log of %d records: %w", audit.ErrSecurity, newSize, err)
			}
			out[i] = p
		}
		return out, nil
	})
}

// crossCheck runs the relay command itself on the first case of each
// kind: relay audit verify must agree with AuditVerify, and relay serve
// must refuse to start where the start checks refused.
func (fx *tamperFixture) crossCheck(t *testing.T, dir, kind, what string, from int64, d detection) {
	t.Helper()
	out, code := relayCmd(t, "--data", dir, "audit", "verify")
	if (code != 0) != d.verify || (d.verify && code != exitAudit) {
		t.Errorf("%s (%s): relay audit verify exit %d, but the in-process check said detected=%v: %s", kind, what, code, d.verify, out)
	}
	t.Logf("%s (%s), from record %d: relay audit verify: exit %d: %s", kind, what, from, code, strings.TrimSpace(out))
	if !d.start {
		return
	}
	out, code = relayCmd(t, "--data", dir, "serve", "--listen", "127.0.0.1:0", "--p2p-listen", "none")
	if code == 0 || strings.Contains(out, "serving ") {
		t.Errorf("%s (%s): relay serve started on a log its start checks refuse: exit %d: %s", kind, what, code, out)
	}
	t.Logf("%s: relay serve: exit %d: %s", kind, code, lastLine(out))
}

// realClients runs the relay command on copies of the data folder and
// brings a real client back to each, holding the newest checkpoint of
// the untouched log (relay.ClientOptions.Checkpoint): it publishes once
// and settles. On the untouched copy that passes; on a copy rolled back
// to the oldest snapshot, and on one whose records and checkpoints were
// cut to that size (both verify, and the relay starts on them), the
// client raises relay.ErrAuditLog.
func (fx *tamperFixture) realClients(t *testing.T, work string) {
	t.Helper()
	k := fx.snapshotSizes[0]
	cut := fx.log.clone()
	cut.cps = slices.DeleteFunc(cut.cps, func(c tamperCP) bool { return c.size > k })
	cut.cut(k)
	cases := []struct {
		name  string
		l     *tamperLog
		alarm bool
	}{
		{"untouched", fx.log.clone(), false},
		{fmt.Sprintf("rolled back to the copy of %d records", k), &tamperLog{file: fx.snapshots[0]}, true},
		{fmt.Sprintf("records and checkpoints cut to %d", k), cut, true},
	}
	kept := fx.cps[len(fx.cps)-1].note
	for i, c := range cases {
		dir := fx.copyTo(t, filepath.Join(work, fmt.Sprintf("client-%d", i)))
		path := filepath.Join(dir, server.DBFile)
		var err error
		if c.l.file != nil {
			err = os.WriteFile(path, c.l.file, 0o600)
		} else {
			err = c.l.writeChanges(path, fx.log)
		}
		if err != nil {
			t.Fatal(err)
		}
		if out, code := relayCmd(t, "--data", dir, "audit", "verify"); code != 0 {
			t.Fatalf("%s: relay audit verify: exit %d: %s", c.name, code, out)
		}
		perr, serr := fx.returnTo(t, dir, kept)
		alarm := errors.Is(perr, relay.ErrAuditLog) || errors.Is(serr, relay.ErrAuditLog)
		if alarm != c.alarm || (perr != nil && !errors.Is(perr, relay.ErrAuditLog)) {
			t.Errorf("%s: a returning client: publish %v, settle %v; want an audit alarm: %v", c.name, perr, serr, c.alarm)
		}
		t.Logf("%s: relay audit verify ok, relay serve started; a returning client: publish: %v; settle: %v", c.name, perr, serr)
	}
}

// returnTo starts the relay on dir and brings alice back to it with the
// kept checkpoint: one publish, then Settle.
func (fx *tamperFixture) returnTo(t *testing.T, dir string, kept []byte) (publish, settle error) {
	t.Helper()
	p := startRelay(t, dir, "127.0.0.1:0")
	defer p.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := relay.Dial(ctx, p.addr, fx.alice, relay.ClientOptions{Checkpoint: kept})
	if err != nil {
		t.Fatalf("dial the relay: %v", err)
	}
	defer c.Close()
	_, publish = c.Publish(ctx, mustNext(t, &testkit.Author{Key: fx.alice, Room: "returning"}))
	return publish, c.Settle(ctx)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// buildTamperFixture runs a real relay (allowlist, a room with a post
// list) and drives it: allowed publishes from several streams at once, so
// that commits hold several records, refused publishes, refused
// connections and admin changes, with copies of relay.db taken on the way
// for the rollbacks.
func buildTamperFixture(t *testing.T) *tamperFixture {
	t.Helper()
	dir := initRelay(t, "allowlist", "")
	alice, bob, mallory := testkit.Key(t), testkit.Key(t), testkit.Key(t)
	cfg := fmt.Sprintf("admin = \"\"\nmdns = false\n[policy]\nmode = \"allowlist\"\n[policy.rooms.news]\npost = [%q]\n", bob.Public().Fingerprint())
	if err := os.WriteFile(filepath.Join(dir, server.ConfigFile), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := relayCmd(t, "--data", dir, "allow", alice.Public().String(), "--note", "alice"); code != 0 {
		t.Fatalf("allow alice: exit %d: %s", code, out)
	}
	p := startRelay(t, dir, "127.0.0.1:0")
	ctx := timeout(t, 5*time.Minute)
	c := dial(t, p.addr, alice)
	fx := &tamperFixture{alice: alice}
	for round := range 3 {
		publishRound(ctx, t, c, alice, round)
		if _, err := c.Publish(ctx, mustNext(t, &testkit.Author{Key: alice, Room: "news"})); err == nil {
			t.Fatal("a publish to a room whose post list does not name alice was stored")
		}
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		if _, err := relay.Dial(dctx, p.addr, mallory, relay.ClientOptions{}); err == nil {
			t.Fatal("mallory, not on the allow list, was admitted")
		}
		cancel()
		for _, args := range [][]string{{"allow", bob.Public().String(), "--note", fmt.Sprint("bob ", round)}, {"ban", mallory.Public().String(), "--note", "spam"}, {"unban", mallory.Public().String()}} {
			if out, code := relayCmd(t, append([]string{"--data", dir}, args...)...); code != 0 {
				t.Fatalf("relay %s: exit %d: %s", args[0], code, out)
			}
		}
		if round < 2 {
			fx.snapshots = append(fx.snapshots, snapshotDB(t, dir))
		}
	}
	p.stop(t)
	fx.finish(t, dir)
	return fx
}

// publishRound publishes from four streams at once, 25 envelopes each.
func publishRound(ctx context.Context, t *testing.T, c *relay.Client, key identity.PrivateKey, round int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for s := range 4 {
		a := &testkit.Author{Key: key, Room: fmt.Sprintf("lobby-%d-%d", round, s)}
		raws := make([][]byte, 25)
		for i := range raws {
			raws[i] = mustNext(t, a)
		}
		wg.Go(func() {
			for _, raw := range raws {
				if _, err := c.Publish(ctx, raw); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("publish: %v", err)
	}
}

func mustNext(t *testing.T, a *testkit.Author) []byte {
	raw, _ := a.Next(t, "hello")
	return raw
}

// snapshotDB returns a consistent copy of the (running) relay's database.
func snapshotDB(t *testing.T, dir string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "snapshot.db")
	db, err := sql.Open("sqlite", filepath.Join(dir, server.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`VACUUM INTO ?`, out); err != nil {
		t.Fatalf("snapshot relay.db: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// finish takes the stopped relay's folder as the fixture: a copy of its
// database in one file, its checkpoints, and the sizes of the snapshots.
func (fx *tamperFixture) finish(t *testing.T, dir string) {
	t.Helper()
	fx.dir = filepath.Join(t.TempDir(), "pristine")
	fx.db = snapshotDB(t, dir)
	if err := os.MkdirAll(fx.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{server.KeyFile, server.ConfigFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fx.dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(fx.dir, server.DBFile), fx.db, 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if fx.key, err = server.LoadKey(fx.dir); err != nil {
		t.Fatal(err)
	}
	l, err := readTamperLog(filepath.Join(fx.dir, server.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	fx.log, fx.digest, fx.size = l, l.digest(), l.size()
	for _, c := range l.cps {
		cp, err := audit.Open(c.note, fx.key.Public())
		if err != nil {
			t.Fatalf("checkpoint %d of the untouched log: %v", c.size, err)
		}
		fx.cps = append(fx.cps, keptCheckpoint{cp, c.note})
	}
	for _, s := range fx.snapshots {
		sl, err := readTamperLogBytes(t, s)
		if err != nil {
			t.Fatal(err)
		}
		if sl.size() >= fx.size {
			t.Fatalf("a snapshot of %d records, the final log %d", sl.size(), fx.size)
		}
		fx.snapshotSizes = append(fx.snapshotSizes, sl.size())
	}
	if fx.size < 200 || len(fx.cps) < 10 {
		t.Fatalf("the log has %d records and %d checkpoints: too few for the suite", fx.size, len(fx.cps))
	}
}

func readTamperLogBytes(t *testing.T, db []byte) (*tamperLog, error) {
	path := filepath.Join(t.TempDir(), "read.db")
	if err := os.WriteFile(path, db, 0o600); err != nil {
		return nil, err
	}
	return readTamperLog(path)
}

// The stored log, as the tamperings see it.

type tamperRow struct {
	idx    int64
	recs   [][]byte // the row's records, split
	hashes []byte
}

type tamperCP struct {
	size int64
	note []byte
}

type tamperLog struct {
	rows []tamperRow
	cps  []tamperCP
	file []byte // if set, relay.db is replaced by these bytes (a rollback)
}

// clone returns a copy whose rows and checkpoints can be replaced; the
// tamperings copy the bytes they change.
func (l *tamperLog) clone() *tamperLog {
	return &tamperLog{rows: slices.Clone(l.rows), cps: slices.Clone(l.cps)}
}

// digest hashes the log as the audit tables would hold it.
func (l *tamperLog) digest() [32]byte {
	h := sha256.New()
	for _, r := range l.rows {
		fmt.Fprintf(h, "r %d %d %x %x\n", r.idx, len(r.recs), bytes.Join(r.recs, nil), r.hashes)
	}
	for _, c := range l.cps {
		fmt.Fprintf(h, "c %d %x\n", c.size, c.note)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func (r tamperRow) equal(o tamperRow) bool {
	return r.idx == o.idx && bytes.Equal(r.hashes, o.hashes) && slices.EqualFunc(r.recs, o.recs, bytes.Equal)
}

func (l *tamperLog) size() int64 {
	if len(l.rows) == 0 {
		return 0
	}
	last := l.rows[len(l.rows)-1]
	return last.idx + int64(len(last.recs))
}

// records returns every record's position: its row and place in it.
func (l *tamperLog) records() [][2]int {
	var out [][2]int
	for i, r := range l.rows {
		for j := range r.recs {
			out = append(out, [2]int{i, j})
		}
	}
	return out
}

// openFast opens the database at path for the tamperings, which need
// not wait for the disk.
func openFast(path string) (*sql.DB, error) {
	return sql.Open("sqlite", "file:"+path+"?_pragma=synchronous(0)")
}

func readTamperLog(path string) (*tamperLog, error) {
	db, err := openFast(path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	l := &tamperLog{}
	rows, err := db.Query(`SELECT idx, n, data, hashes FROM audit_records ORDER BY idx`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var r tamperRow
		var n int64
		var data []byte
		if err := rows.Scan(&r.idx, &n, &data, &r.hashes); err != nil {
			return nil, err
		}
		for range n {
			k, err := audit.RecordLen(data)
			if err != nil {
				return nil, fmt.Errorf("row %d: %w", r.idx, err)
			}
			r.recs, data = append(r.recs, data[:k:k]), data[k:]
		}
		if len(data) != 0 {
			return nil, fmt.Errorf("row %d: %d bytes after its records", r.idx, len(data))
		}
		l.rows = append(l.rows, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	cps, err := db.Query(`SELECT size, note FROM audit_checkpoints ORDER BY size`)
	if err != nil {
		return nil, err
	}
	defer cps.Close()
	for cps.Next() {
		var c tamperCP
		if err := cps.Scan(&c.size, &c.note); err != nil {
			return nil, err
		}
		l.cps = append(l.cps, c)
	}
	return l, cps.Err()
}

// writeChanges makes the audit tables of the database at path, which
// hold was, hold l: the rows and checkpoints that differ are replaced.
func (l *tamperLog) writeChanges(path string, was *tamperLog) error {
	db, err := openFast(path)
	if err != nil {
		return err
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	rows := map[int64]tamperRow{}
	for _, r := range l.rows {
		rows[r.idx] = r
	}
	for _, r := range was.rows {
		if n, ok := rows[r.idx]; ok && n.equal(r) {
			delete(rows, r.idx) // unchanged
		} else if !ok {
			if _, err := tx.Exec(`DELETE FROM audit_records WHERE idx = ?`, r.idx); err != nil {
				return err
			}
		}
	}
	for _, r := range rows {
		if _, err := tx.Exec(`INSERT OR REPLACE INTO audit_records (idx, n, data, hashes) VALUES (?, ?, ?, ?)`, r.idx, len(r.recs), bytes.Join(r.recs, nil), r.hashes); err != nil {
			return err
		}
	}
	cps := map[int64][]byte{}
	for _, c := range l.cps {
		cps[c.size] = c.note
	}
	for _, c := range was.cps {
		n, ok := cps[c.size]
		switch {
		case !ok:
			if _, err := tx.Exec(`DELETE FROM audit_checkpoints WHERE size = ?`, c.size); err != nil {
				return err
			}
		case bytes.Equal(n, c.note):
			delete(cps, c.size)
		}
	}
	for size, n := range cps {
		if _, err := tx.Exec(`INSERT OR REPLACE INTO audit_checkpoints (size, note) VALUES (?, ?)`, size, n); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// rehash numbers the rows' records from 0 again and stores the tree hashes
// the records give: what a tamperer without the relay's key can redo.
func (l *tamperLog) rehash() error {
	var all []tlog.Hash
	read := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x >= int64(len(all)) {
				return nil, fmt.Errorf("hash %d not computed", x)
			}
			out[i] = all[x]
		}
		return out, nil
	})
	next := int64(0)
	for i := range l.rows {
		l.rows[i].idx = next
		var hb []byte
		for _, rec := range l.rows[i].recs {
			hs, err := tlog.StoredHashes(next, rec, read)
			if err != nil {
				return err
			}
			all = append(all, hs...)
			for _, h := range hs {
				hb = append(hb, h[:]...)
			}
			next++
		}
		l.rows[i].hashes = hb
	}
	return nil
}

// dropEmpty removes rows left without records.
func (l *tamperLog) dropEmpty() {
	l.rows = slices.DeleteFunc(l.rows, func(r tamperRow) bool { return len(r.recs) == 0 })
}

// cut keeps the records below k; the hashes of a row cut in two are cut
// with it.
func (l *tamperLog) cut(k int64) {
	var rows []tamperRow
	for _, r := range l.rows {
		if r.idx >= k {
			break
		}
		if end := r.idx + int64(len(r.recs)); end > k {
			keep := k - r.idx
			r.recs = r.recs[:keep]
			r.hashes = r.hashes[:(tlog.StoredHashIndex(0, k)-tlog.StoredHashIndex(0, r.idx))*tlog.HashSize]
		}
		rows = append(rows, r)
	}
	l.rows = rows
}

// The kinds of tampering. Each returns what it did and the first record
// index it touched (for a checkpoint, its size less one).

type tamperKind struct {
	name  string
	apply func(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error)
}

// tamperKinds lists the kinds, in the order of the counts' table.
func tamperKinds() []tamperKind {
	return []tamperKind{
		{"flip a byte of a record", tamperFlipRecord(false)},
		{"flip a byte of a record, hashes recomputed", tamperFlipRecord(true)},
		{"flip a byte of a stored hash", tamperFlipHash},
		{"drop a record", tamperDrop(false)},
		{"drop a record, renumber, hashes recomputed", tamperDrop(true)},
		{"swap two records", tamperSwap(false)},
		{"swap two records, hashes recomputed", tamperSwap(true)},
		{"truncate the records", tamperTruncate(false)},
		{"truncate the records and checkpoints", tamperTruncate(true)},
		{"replace a checkpoint: another key, same text", tamperOtherKey(true)},
		{"replace a checkpoint: another relay's", tamperOtherKey(false)},
		{"flip a byte of a checkpoint", tamperFlipCheckpoint},
		{"re-encode a checkpoint's signature (same bytes)", tamperReencode},
		{"roll back to an older relay.db", tamperRollback},
		{appendKind, tamperAppend},
	}
}

// flipByte changes b[i] to another value.
func flipByte(b []byte, rng *mrand.Rand) (int, byte, byte) {
	i := rng.IntN(len(b))
	old := b[i]
	b[i] ^= byte(1 + rng.IntN(255))
	return i, old, b[i]
}

func tamperFlipRecord(rehash bool) func(*tamperFixture, *tamperLog, *mrand.Rand) (string, int64, error) {
	return func(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error) {
		recs := l.records()
		at := recs[rng.IntN(len(recs))]
		r := &l.rows[at[0]]
		r.recs = slices.Clone(r.recs)
		rec := slices.Clone(r.recs[at[1]])
		off, from, to := flipByte(rec, rng)
		r.recs[at[1]] = rec
		n := r.idx + int64(at[1])
		if rehash {
			if err := l.rehash(); err != nil {
				return "", 0, err
			}
		}
		return fmt.Sprintf("record %d, byte %d: %02x to %02x", n, off, from, to), n, nil
	}
}

func tamperFlipHash(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error) {
	r := &l.rows[rng.IntN(len(l.rows))]
	r.hashes = slices.Clone(r.hashes)
	off, from, to := flipByte(r.hashes, rng)
	return fmt.Sprintf("row of record %d, hash byte %d: %02x to %02x", r.idx, off, from, to), r.idx, nil
}

func tamperDrop(renumber bool) func(*tamperFixture, *tamperLog, *mrand.Rand) (string, int64, error) {
	return func(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error) {
		recs := l.records()
		at := recs[rng.IntN(len(recs))]
		r := &l.rows[at[0]]
		n := r.idx + int64(at[1])
		r.recs = slices.Delete(slices.Clone(r.recs), at[1], at[1]+1)
		l.dropEmpty()
		if renumber {
			if err := l.rehash(); err != nil {
				return "", 0, err
			}
		}
		return fmt.Sprintf("record %d of %d", n, len(recs)), n, nil
	}
}

func tamperSwap(rehash bool) func(*tamperFixture, *tamperLog, *mrand.Rand) (string, int64, error) {
	return func(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error) {
		recs := l.records()
		i, j := rng.IntN(len(recs)), rng.IntN(len(recs)-1)
		if j >= i {
			j++
		}
		i, j = min(i, j), max(i, j)
		a, b := recs[i], recs[j]
		ra, rb := &l.rows[a[0]], &l.rows[b[0]]
		ra.recs, rb.recs = slices.Clone(ra.recs), slices.Clone(rb.recs)
		if a[0] == b[0] {
			rb = ra
		}
		ra.recs[a[1]], rb.recs[b[1]] = rb.recs[b[1]], ra.recs[a[1]]
		if rehash {
			if err := l.rehash(); err != nil {
				return "", 0, err
			}
		}
		return fmt.Sprintf("records %d and %d", i, j), int64(i), nil
	}
}

func tamperTruncate(checkpoints bool) func(*tamperFixture, *tamperLog, *mrand.Rand) (string, int64, error) {
	return func(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error) {
		k := rng.Int64N(l.size())
		if checkpoints {
			// Cut where a checkpoint ends (or to nothing), and drop the
			// checkpoints above: what is left is a whole, older log.
			sizes := []int64{0}
			for _, c := range l.cps {
				if c.size < l.size() {
					sizes = append(sizes, c.size)
				}
			}
			k = sizes[rng.IntN(len(sizes))]
			l.cps = slices.DeleteFunc(l.cps, func(c tamperCP) bool { return c.size > k })
		}
		l.cut(k)
		return fmt.Sprintf("to %d records", k), k, nil
	}
}

func tamperOtherKey(sameText bool) func(*tamperFixture, *tamperLog, *mrand.Rand) (string, int64, error) {
	return func(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error) {
		c := &l.cps[rng.IntN(len(l.cps))]
		cp, err := audit.Open(c.note, fx.key.Public())
		if err != nil {
			return "", 0, err
		}
		other, err := identity.Generate(rand.Reader)
		if err != nil {
			return "", 0, err
		}
		if sameText {
			// The relay's text, under the relay's key name, signed by
			// another Ed25519 key.
			skey, _, err := note.GenerateKey(rand.Reader, audit.Origin(fx.key.Public()))
			if err != nil {
				return "", 0, err
			}
			s, err := note.NewSigner(skey)
			if err != nil {
				return "", 0, err
			}
			c.note, err = note.Sign(&note.Note{Text: cp.Text()}, s)
			if err != nil {
				return "", 0, err
			}
		} else {
			cp.Origin = audit.Origin(other.Public())
			if c.note, err = audit.Sign(cp, other); err != nil {
				return "", 0, err
			}
		}
		return fmt.Sprintf("the checkpoint of size %d", c.size), max(c.size-1, 0), nil
	}
}

func tamperFlipCheckpoint(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error) {
	c := &l.cps[rng.IntN(len(l.cps))]
	orig, err := audit.Open(c.note, fx.key.Public())
	if err != nil {
		return "", 0, err
	}
	c.note = slices.Clone(c.note)
	off, from, to := flipByte(c.note, rng)
	what := fmt.Sprintf("checkpoint of size %d, byte %d: %02x to %02x", c.size, off, from, to)
	if cp, err := audit.Open(c.note, fx.key.Public()); err == nil && cp == orig {
		// The same signed checkpoint: nothing signed changed. Not
		// written, so the case counts as a no-op and is drawn again.
		// (audit.Open refuses another base64 of the same signature.)
		return what + " (the same checkpoint)", max(c.size-1, 0), nil
	}
	return what, max(c.size-1, 0), nil
}

func tamperRollback(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error) {
	i := rng.IntN(len(fx.snapshots))
	l.file = fx.snapshots[i]
	return fmt.Sprintf("to the copy of %d records", fx.snapshotSizes[i]), fx.snapshotSizes[i], nil
}

// tamperAppend adds a copy of a record at the end of the log, with the
// tree hashes it gives: a record no checkpoint covers.
func tamperAppend(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error) {
	recs := l.records()
	at := recs[rng.IntN(len(recs))]
	n := l.size()
	l.rows = append(l.rows, tamperRow{idx: n, recs: [][]byte{l.rows[at[0]].recs[at[1]]}})
	if err := l.rehash(); err != nil {
		return "", 0, err
	}
	return fmt.Sprintf("record %d, a copy of record %d", n, l.rows[at[0]].idx+int64(at[1])), n, nil
}

// tamperReencode changes the last base64 character of a checkpoint's
// signature in its two padding bits only: lax base64 decodes it to the
// same signature, so only a check that the encoding is canonical (in
// audit.Opener.Open) sees it.
func tamperReencode(fx *tamperFixture, l *tamperLog, rng *mrand.Rand) (string, int64, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	c := &l.cps[rng.IntN(len(l.cps))]
	c.note = slices.Clone(c.note)
	i := bytes.LastIndexByte(c.note, '=') - 1
	if i < 0 || strings.IndexByte(alphabet, c.note[i]) < 0 {
		return "", 0, fmt.Errorf("checkpoint of size %d: no padded base64 signature", c.size)
	}
	from := c.note[i]
	c.note[i] = alphabet[strings.IndexByte(alphabet, from)^(1+rng.IntN(3))]
	return fmt.Sprintf("checkpoint of size %d, byte %d: %q to %q", c.size, i, from, c.note[i]), max(c.size-1, 0), nil
}

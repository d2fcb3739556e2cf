package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/freeport"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/server"
	"github.com/parleychat/parley/store"
)

// The growing-store scenario (issue 22): the publish rate of a relay whose
// store already holds many envelopes, beside a fresh relay's, in
// alternating runs. The filled relay is restarted on the same data folder
// before each of its runs, so what differs is the data, not the process.
//
// Filling a store with millions of envelopes by publishing them through a
// relay takes hours; fill writes the same rows through the store package
// instead, as the relay's committer does (commit.go): each batch of up to
// 512 real signed envelopes in one durable transaction, with an audit
// record of kind publish for each and one signed checkpoint, by the
// relay's own key, so that the relay's audit check at start passes. The
// rows are those that runs of the publish scenario leave behind: each
// block of 40,000 is 4 new identities, each publishing 10,000 envelopes
// in one of the rooms publish-0 to publish-3.

// growBlock is how many envelopes one block of fill has: 4 identities of
// 10,000 each, as one run of the publish scenario.
const (
	growSenders   = 4
	growPerSender = 10000
	fillBatch     = 512 // the relay's maxBatch
)

// growOptions are the scenario's flags.
type growOptions struct {
	size     int            // envelopes in the filled store
	runs     int            // alternating runs of each relay
	dir      string         // the filled relay's data folder, kept and topped up; "" for one under work
	settings []storeSetting // store settings measured beside the current one
	warm     bool           // each relay takes one unmeasured load first
}

// storeSetting is one way the relays open their store: the [store]
// table of their config.
type storeSetting struct {
	name string // as given with -grow-store; "current" for the defaults
	cfg  server.StoreConfig
}

// currentStore is the relay's default store setting.
func currentStore() storeSetting {
	return storeSetting{name: "current", cfg: server.DefaultConfig().Store}
}

// parseStoreSetting reads a -grow-store value: comma-separated
// cache=SIZE, mmap=SIZE and checkpoint=PAGES over the defaults, sizes in
// bytes or with a KiB, MiB or GiB suffix, as in "cache=256MiB,mmap=1GiB".
// The relay's config validation checks the result.
func parseStoreSetting(v string) (storeSetting, error) {
	set := currentStore()
	set.name = v
	for kv := range strings.SplitSeq(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return set, fmt.Errorf("-grow-store %q: %q is not KEY=VALUE", v, kv)
		}
		n, err := parseSize(val)
		if err != nil {
			return set, fmt.Errorf("-grow-store %q: %s: %w", v, k, err)
		}
		switch k {
		case "cache":
			set.cfg.CacheSize = n
		case "mmap":
			set.cfg.MmapSize = n
		case "checkpoint":
			set.cfg.CheckpointPages = int(n)
		default:
			return set, fmt.Errorf("-grow-store %q: unknown key %q (cache, mmap, checkpoint)", v, k)
		}
	}
	cfg := server.DefaultConfig()
	cfg.Store = set.cfg
	if err := cfg.Validate(); err != nil {
		return set, fmt.Errorf("-grow-store %q: %w", v, err)
	}
	return set, nil
}

// parseSize reads a count, or bytes with a KiB, MiB or GiB suffix.
func parseSize(v string) (int64, error) {
	digits, mult := v, int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if n, ok := strings.CutSuffix(v, suffix); ok {
			digits, mult = n, m
			break
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size", v)
	}
	return n * mult, nil
}

// toml is the setting as the [store] table of a relay config.
func (s storeSetting) toml() string {
	return fmt.Sprintf("[store]\ncache_size = %d\nmmap_size = %d\ncheckpoint_pages = %d\n", s.cfg.CacheSize, s.cfg.MmapSize, s.cfg.CheckpointPages)
}

// growRow gathers one relay's runs under one store setting.
type growRow struct {
	rates, cpus, writes, rss, stops []float64
	stored                          []int64
}

func (r *growRow) add(stored int64, res result, use usage) {
	r.stored = append(r.stored, stored)
	r.rates = append(r.rates, res.rate)
	r.cpus = append(r.cpus, float64(use.cpu.Microseconds())/float64(res.n))
	r.writes = append(r.writes, float64(use.written)/float64(res.n))
	r.rss = append(r.rss, float64(use.peakRSS))
	r.stops = append(r.stops, use.stop.Seconds())
}

// grow runs the scenario and prints its table.
func (b *bench) grow(o growOptions) error {
	dir := o.dir
	if dir == "" {
		dir = filepath.Join(b.work, "grown")
	}
	if err := prepareGrown(b.work, dir, o.size); err != nil {
		return err
	}
	settings := append([]storeSetting{currentStore()}, o.settings...)
	fmt.Printf("## growing store: 4 clients, 256-byte payloads, 256 outstanding each, over QUIC; a fresh relay beside one restarted on a store of %d envelopes, %d times each, alternating, under %d store settings; warm-up load first: %v\n", o.size, o.runs, len(settings), o.warm)
	rows := make([][2]growRow, len(settings)) // [fresh, filled] per setting
	for round := range o.runs {
		for i, set := range settings {
			for k, filled := range []bool{false, true} {
				n, res, use, err := b.growRun(dir, set, filled, o.warm)
				if err != nil {
					return err
				}
				rows[i][k].add(n, res, use)
				fmt.Fprintf(os.Stderr, "  run %d, %s, filled %v: %.0f msgs/s [%s]\n", round+1, set.name, filled, res.rate, loadAvg())
			}
		}
	}
	printGrow(settings, rows)
	return nil
}

// growRun measures one run of the fresh relay (a new data folder) or the
// filled one (dir) under set, and returns how many envelopes its store
// held before.
func (b *bench) growRun(dir string, set storeSetting, filled, warm bool) (int64, result, usage, error) {
	data := dir
	if !filled {
		var err error
		if data, err = newRelayDir(b.work, true); err != nil {
			return 0, result{}, usage{}, err
		}
		defer os.RemoveAll(filepath.Dir(data))
	}
	n, err := storedIn(data)
	if err != nil {
		return 0, result{}, usage{}, err
	}
	res, use, err := publishOn(b.ctx, b.work, data, set, warm)
	return n, res, use, err
}

// printGrow prints the scenario's table and the ratios of each setting.
func printGrow(settings []storeSetting, rows [][2]growRow) {
	fmt.Println("| store setting | relay | stored before each run | runs (msgs/s) | median msgs/s | relay CPU per publish (median) | relay bytes written per publish (median) | relay peak RSS (max) | relay stop (median) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for i, set := range settings {
		for k, name := range []string{"fresh", "filled"} {
			r := rows[i][k]
			fmt.Printf("| %s | %s | %d to %d | %s | %.0f | %.1f µs | %.1f KB | %.0f MiB | %.2f s |\n", set.name, name, r.stored[0], r.stored[len(r.stored)-1], joinRates(r.rates), median(r.rates), median(r.cpus), median(r.writes)/1024, slices.Max(r.rss)/(1<<20), median(r.stops))
		}
	}
	fmt.Println()
	cur := rows[0][0].rates
	for i, set := range settings {
		filled, fresh := rows[i][1].rates, rows[i][0].rates
		fmt.Printf("%s: filled / fresh %.2f (medians), runs paired in order: %s; filled / current fresh: %s\n", set.name, median(filled)/median(fresh), ratios(filled, fresh), ratios(filled, cur))
	}
	fmt.Println()
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "load ?"
	}
	f := strings.Fields(string(b))
	return "load " + strings.Join(f[:min(3, len(f))], " ")
}

func ratios(a, b []float64) string {
	out := make([]string, len(a))
	for i := range a {
		out[i] = fmt.Sprintf("%.2f", a[i]/b[i])
	}
	return strings.Join(out, ", ")
}

// usage is what the relay process used over a run: CPU time, and bytes
// it wrote (write calls, to any file: the write-ahead log, and the
// database at checkpoints).
type usage struct {
	cpu     time.Duration
	written int64
	peakRSS int64 // bytes, the most the process has held since it started
	stop    time.Duration
}

func usageOf(pid int) (usage, error) {
	cpu, err := cpuTime(pid)
	if err != nil {
		return usage{}, err
	}
	w, err := procField(pid, "io", "wchar:")
	if err != nil {
		return usage{}, err
	}
	kb, err := procField(pid, "status", "VmHWM:")
	return usage{cpu: cpu, written: w, peakRSS: kb * 1024}, err
}

// procField is the number after prefix in /proc/PID/file (wchar: in
// io, the bytes the process wrote; VmHWM: in status, its peak resident
// set in kB).
func procField(pid int, file, prefix string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/%s", prefix, pid, file)
}

// publishOn starts the relay of data folder data with the store setting
// set, runs the publish load on it over QUIC, stops it, and returns the
// result and what the relay used over the load (its peak RSS: since it
// started; its stop: the time it took to exit, the final checkpoint of
// its write-ahead log included). With warm, the relay takes the same
// load once before, unmeasured, as a relay that has run a while has its
// caches filled.
func publishOn(ctx context.Context, work, data string, set storeSetting, warm bool) (result, usage, error) {
	rp, err := serveDir(work, data, set)
	if err != nil {
		return result{}, usage{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			rp.stop()
		}
	}()
	if warm {
		if _, err := relayPublish(ctx, rp.over(relay.ViaQUIC), growSenders, growPerSender); err != nil {
			return result{}, usage{}, fmt.Errorf("warm-up publish on %s: %w", data, err)
		}
	}
	u0, err := usageOf(rp.cmd.Process.Pid)
	if err != nil {
		return result{}, usage{}, err
	}
	res, err := relayPublish(ctx, rp.over(relay.ViaQUIC), growSenders, growPerSender)
	if err != nil {
		return result{}, usage{}, fmt.Errorf("publish on %s: %w", data, err)
	}
	u1, err := usageOf(rp.cmd.Process.Pid)
	if err != nil {
		return result{}, usage{}, err
	}
	start := time.Now()
	rp.stop()
	stopped = true
	return res, usage{u1.cpu - u0.cpu, u1.written - u0.written, u1.peakRSS, time.Since(start)}, nil
}

// storedIn is how many envelopes the relay database of data holds.
func storedIn(data string) (int64, error) {
	st, err := store.Open(filepath.Join(data, server.DBFile), store.Relay())
	if err != nil {
		return 0, err
	}
	defer st.Close()
	return st.LastPos(context.Background())
}

// prepareGrown makes dir a relay data folder holding at least size
// envelopes: it initialises it if need be, then fills it up to size.
func prepareGrown(work, dir string, size int) error {
	if _, err := os.Stat(filepath.Join(dir, server.ConfigFile)); err != nil {
		if err := initRelayDir(work, dir, true); err != nil {
			return err
		}
	}
	have, err := storedIn(dir)
	if err != nil {
		return err
	}
	if have >= int64(size) {
		return nil
	}
	start := time.Now()
	fmt.Fprintf(os.Stderr, "filling %s from %d to %d envelopes\n", dir, have, size)
	if err := fill(dir, int(int64(size)-have)); err != nil {
		return fmt.Errorf("fill %s: %w", dir, err)
	}
	fmt.Fprintf(os.Stderr, "filled in %s\n", time.Since(start).Round(time.Second))
	return nil
}

// filler writes envelopes into a relay's store as its committer does.
type filler struct {
	st     *store.Store
	log    *audit.Log
	policy uint64
}

// fill adds n envelopes to the relay database of dir, the relay not
// running, in blocks of 40,000 signed while the block before is written.
func fill(dir string, n int) error {
	ctx := context.Background()
	key, err := server.LoadKey(dir)
	if err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(dir, server.DBFile), store.Relay(), store.Durable(), store.CheckpointEvery(10000))
	if err != nil {
		return err
	}
	defer st.Close()
	f := &filler{st: st}
	if f.log, err = server.OpenAudit(ctx, key, st); err != nil {
		return err
	}
	if f.policy, err = st.PolicyVersion(ctx); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	blocks := make(chan []store.Record, 1)
	errc := make(chan error, 1)
	go func() { errc <- signBlocks(sctx, n, blocks) }()
	written := 0
	for recs := range blocks {
		if err := f.write(ctx, recs); err != nil {
			cancel() // the signer stops at its next block
			for range blocks {
			}
			<-errc
			return err
		}
		written += len(recs)
		if written%(25*growSenders*growPerSender) == 0 || written == n {
			fmt.Fprintf(os.Stderr, "  %d of %d\n", written, n)
		}
	}
	return <-errc
}

// signBlocks sends n records in blocks of 40,000 (the last may be
// shorter) on out and closes it.
func signBlocks(ctx context.Context, n int, out chan<- []store.Record) error {
	defer close(out)
	for n > 0 {
		recs, err := signBlock(min(n, growSenders*growPerSender))
		if err != nil {
			return err
		}
		select {
		case out <- recs:
		case <-ctx.Done():
			return ctx.Err()
		}
		n -= len(recs)
	}
	return nil
}

// signBlock makes n records, from up to 4 new identities of up to 10,000
// envelopes each, the identities' envelopes interleaved as concurrent
// publishers' are. The identities sign in parallel.
func signBlock(n int) ([]store.Record, error) {
	per := make([][]store.Record, growSenders)
	errs := make(chan error, growSenders)
	for i := range growSenders {
		count := min(growPerSender, max(0, n-i*growPerSender))
		go func() {
			var err error
			per[i], err = senderRecords(fmt.Sprintf("publish-%d", i), count)
			errs <- err
		}()
	}
	for range growSenders {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	out := make([]store.Record, 0, n)
	for j := range growPerSender {
		for i := range per {
			if j < len(per[i]) {
				out = append(out, per[i][j])
			}
		}
	}
	return out, nil
}

// senderRecords makes count records of a new identity in room, as the
// publish scenario's client sends them.
func senderRecords(room string, count int) ([]store.Record, error) {
	if count == 0 {
		return nil, nil
	}
	key, err := identity.Generate(rand.Reader)
	if err != nil {
		return nil, err
	}
	raws, _, err := signed(key, room, count)
	if err != nil {
		return nil, err
	}
	recs := make([]store.Record, count)
	now := time.Now()
	for i, raw := range raws {
		rec, err := recordOf(raw, now)
		if err != nil {
			return nil, err
		}
		recs[i] = rec
	}
	return recs, nil
}

// write commits recs in batches of up to 512, each with its audit records
// and a signed checkpoint, in one transaction.
func (f *filler) write(ctx context.Context, recs []store.Record) error {
	for len(recs) > 0 {
		k := min(fillBatch, len(recs))
		if err := f.commit(ctx, recs[:k]); err != nil {
			return err
		}
		recs = recs[k:]
	}
	return nil
}

func (f *filler) commit(ctx context.Context, recs []store.Record) error {
	b, err := f.st.Begin(ctx)
	if err != nil {
		return err
	}
	defer b.Rollback()
	out, err := b.Append(ctx, recs)
	if err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	arecs := make([]*audit.Record, 0, len(recs))
	for i, o := range out {
		if o.Result != store.Stored {
			return fmt.Errorf("fill: envelope %s not stored (%d)", recs[i].ID, o.Result)
		}
		r := recs[i]
		arecs = append(arecs, &audit.Record{Kind: audit.KindPublish, Time: now, PolicyVersion: f.policy, Identity: r.Env.Sender,
			Message: r.ID, Size: uint32(len(r.Raw)), Path: audit.PathRelay, Room: r.Env.Room})
	}
	if _, err := f.log.Append(b, arecs); err != nil {
		return err
	}
	if _, err := f.log.Seal(b); err != nil {
		f.log.Abort()
		return err
	}
	if err := b.Commit(); err != nil {
		f.log.Abort()
		return err
	}
	f.log.Commit()
	return nil
}

// newRelayDir makes a new relay data folder under work, with the load
// generator's config (audit log on or off).
func newRelayDir(work string, audited bool) (string, error) {
	parent, err := os.MkdirTemp(work, "relay-data")
	if err != nil {
		return "", err
	}
	data := filepath.Join(parent, "d")
	return data, initRelayDir(work, data, audited)
}

// initRelayDir initialises data with the relay command and writes the
// load generator's config into it. The listen address is chosen when the
// relay starts (serveDir).
func initRelayDir(work, data string, audited bool) error {
	bin, err := relayBin(work)
	if err != nil {
		return err
	}
	if out, err := exec.Command(bin, "--data", data, "init").CombinedOutput(); err != nil {
		return fmt.Errorf("relay init: %v: %s", err, out)
	}
	return writeRelayConfig(data, "127.0.0.1:1", audited)
}

// writeRelayConfig writes the load generator's config into data.
func writeRelayConfig(data, listen string, audited bool) error {
	// PARLEY_LOADGEN_ADMIN=127.0.0.1:PORT turns on the relay's admin
	// listener, to take profiles while the load runs.
	return os.WriteFile(filepath.Join(data, server.ConfigFile), fmt.Appendf(nil, relayConfig, listen, os.Getenv("PARLEY_LOADGEN_ADMIN"), audited), 0o600)
}

// serveDir starts the relay of the initialised folder data on a free
// port, its audit log on, its store opened as set says.
func serveDir(work, data string, set storeSetting) (*relayProc, error) {
	bin, err := relayBin(work)
	if err != nil {
		return nil, err
	}
	listen, err := freeport.Loopback()
	if err != nil {
		return nil, err
	}
	if err := writeRelayConfig(data, listen, true); err != nil {
		return nil, err
	}
	if err := appendFile(filepath.Join(data, server.ConfigFile), set.toml()); err != nil {
		return nil, err
	}
	return serving(exec.Command(bin, "--data", data, "serve", "--log-level", "warn"))
}

// appendFile appends text to the file at path.
func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	return errors.Join(err, f.Close())
}

// relayBin builds the relay command into work once and returns its path.
func relayBin(work string) (string, error) {
	bin := filepath.Join(work, "relay")
	if _, err := os.Stat(bin); err != nil {
		if err := goBuild(bin, "github.com/parleychat/parley/cmd/relay"); err != nil {
			return "", fmt.Errorf("build relay: %w", err)
		}
	}
	return bin, nil
}

// recordOf is the record the relay stores for raw, published by a client
// and received at now.
func recordOf(raw []byte, now time.Time) (store.Record, error) {
	e, err := protocol.Parse(raw)
	if err != nil {
		return store.Record{}, err
	}
	return store.Record{ID: protocol.IDOf(raw), Env: e, Raw: raw, Via: "relay", Received: now}, nil
}

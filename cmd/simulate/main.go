// Command simulate runs Parley's mesh under churn on go-libp2p's mocknet
// (package sim) and prints the figures of each run as a table, and
// optionally as JSON and an SVG plot of delivery and p99 against churn.
//
//	go run ./cmd/simulate -peers 100,300 -churn 10 -relays 0,1,3,3k -duration 2m
//
// Runs are every combination of -peers, -churn and -relays; a relays entry
// "3k" is 3 relays with one killed half way through.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/parleychat/parley/sim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "simulate:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		peers    = flag.String("peers", "100", "comma-separated numbers of people's nodes")
		churn    = flag.String("churn", "10", "comma-separated churn rates, % of peers leaving (and coming back) per minute")
		relays   = flag.String("relays", "0", `comma-separated relay counts; "3k": 3 relays, one killed half way`)
		rooms    = flag.Int("rooms", 10, "rooms")
		rate     = flag.Float64("rate", 20, "messages per second over the network")
		duration = flag.Duration("duration", time.Minute, "publishing and churn per run")
		warmup   = flag.Duration("warmup", 10*time.Second, "time for the network to form before the first message")
		drain    = flag.Duration("drain", 30*time.Second, "longest wait for the last deliveries after the end")
		seed     = flag.Uint64("seed", 1, "seed of the runs' choices")
		dir      = flag.String("dir", "", "folder for the nodes' stores (default: a new temporary folder, removed after)")
		jsonOut  = flag.String("json", "", "write the results as JSON to this file")
		svgOut   = flag.String("svg", "", "write delivery and p99 against churn as SVG to this file")
		pprofAt  = flag.String("pprof", "", "serve net/http/pprof at this address during the runs (say 127.0.0.1:6060)")
	)
	flag.Parse()
	cfgs, err := plan(*peers, *churn, *relays)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *pprofAt != "" {
		end, err := servePprof(*pprofAt)
		if err != nil {
			return err
		}
		defer end()
	}
	var results []sim.Result
	for _, c := range cfgs {
		c.Rooms, c.Rate, c.Duration, c.Warmup, c.Drain, c.Seed = *rooms, *rate, *duration, *warmup, *drain, *seed
		if c.KillRelayAt < 0 {
			c.KillRelayAt = *duration / 2
		}
		r, err := runOne(ctx, c, *dir)
		if err != nil {
			return fmt.Errorf("run %s: %w", c.Label(), err)
		}
		results = append(results, r)
		if err := sim.WriteTable(os.Stdout, results[len(results)-1:]); err != nil {
			return err
		}
		fmt.Println("p99 ms by minute of publication:", strings.Trim(fmt.Sprint(r.P99ByMinute), "[]"))
		fmt.Printf("the process, from the first message to the end of the drain: %.2f cores, the collector %.1f%% of it, %d collections, %.0f MB live after the last\n",
			r.Process.Cores, 100*r.Process.GCShare, r.Process.Collections, r.Process.LiveHeapMB)
	}
	fmt.Println()
	if err := sim.WriteTable(os.Stdout, results); err != nil {
		return err
	}
	if *jsonOut != "" {
		b, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	if *svgOut != "" {
		f, err := os.Create(*svgOut)
		if err != nil {
			return err
		}
		if err := sim.PlotChurn(f, results); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	return nil
}

// servePprof serves the runtime's profiles at addr, for looking inside a
// long run (a heap profile at minute 2 and minute 9, say); end stops it.
func servePprof(addr string) (end func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	fmt.Fprintf(os.Stderr, "simulate: profiles at http://%s/debug/pprof/\n", ln.Addr())
	return func() {
		srv.Close()
		<-done
	}, nil
}

// runOne runs c with its stores in a fresh folder under dir, removed after.
func runOne(ctx context.Context, c sim.Config, dir string) (sim.Result, error) {
	d, err := os.MkdirTemp(dir, "parley-sim-")
	if err != nil {
		return sim.Result{}, err
	}
	defer os.RemoveAll(d)
	c.Dir = d
	s, err := sim.New(c)
	if err != nil {
		return sim.Result{}, err
	}
	return s.Run(ctx)
}

// plan makes a Config for every combination of the lists; KillRelayAt -1
// marks a run whose relay is killed half way.
func plan(peers, churn, relays string) ([]sim.Config, error) {
	var out []sim.Config
	for _, p := range strings.Split(peers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("-peers %q: %w", p, err)
		}
		for _, c := range strings.Split(churn, ",") {
			pc, err := strconv.ParseFloat(strings.TrimSpace(c), 64)
			if err != nil {
				return nil, fmt.Errorf("-churn %q: %w", c, err)
			}
			for _, r := range strings.Split(relays, ",") {
				r = strings.TrimSpace(r)
				kill, ok := strings.CutSuffix(r, "k")
				nr, err := strconv.Atoi(kill)
				if err != nil || (ok && nr == 0) {
					return nil, errors.Join(fmt.Errorf("-relays %q: want a number, or a number and k", r), err)
				}
				cfg := sim.Config{Peers: n, ChurnPerMin: pc / 100, Relays: nr}
				if ok {
					cfg.KillRelayAt = -1
				}
				out = append(out, cfg)
			}
		}
	}
	return out, nil
}

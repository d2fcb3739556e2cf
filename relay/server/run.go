package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"sync"
	"time"

	"github.com/parleychat/parley/internal/lockfile"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// walPages is how far the relay's write-ahead log may grow before SQLite
// copies it into the database (store.CheckpointEvery): about 40 MiB.
const walPages = 10000

// ErrAuditCheck: at start, the audit log did not check out against its
// newest signed checkpoint; the relay refuses to serve.
var ErrAuditCheck = errors.New("relay: the audit log does not check out against its newest signed checkpoint; the relay will not serve on it")

// RunOptions say how to run the relay of a data folder.
type RunOptions struct {
	Dir    string
	Config Config
	Log    *slog.Logger
	// Ready, if not nil, is called once the relay listens, with the
	// address clients can use (the listen address with its real port).
	Ready func(addr relay.Addr, meshAddrs []string)
	// Reload, if not nil, asks for the config file to be read again and
	// applied (Server.Reload), as SIGHUP does.
	Reload <-chan struct{}
}

// Run runs the relay in o.Dir until ctx ends, then shuts it down
// gracefully (Server.Serve) and returns nil. It holds the data folder's
// lock throughout, so a second relay on the same folder is refused.
func Run(ctx context.Context, o RunOptions) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lock, err := lockfile.Acquire(filepath.Join(o.Dir, LockFile))
	if err != nil {
		return fmt.Errorf("relay: data folder %s: %w", o.Dir, err)
	}
	defer lock.Release()
	key, err := LoadKey(o.Dir)
	if err != nil {
		return err
	}
	st, err := openStore(o.Dir, DBFile, store.Durable(), store.CheckpointEvery(walPages))
	if err != nil {
		return err
	}
	defer st.Close()

	if o.Config.Audit.Enabled {
		// Before anything is appended (NewServer records a change of the
		// config's policy; Serve its start): a relay never extends a log
		// that does not check out, nor serves receipts from it.
		if _, err := CheckAuditLog(ctx, st, key.Public(), log); err != nil {
			return fmt.Errorf("%w: %w", ErrAuditCheck, err)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := NewServer(ctx, Options{Config: o.Config, Key: key, Store: st, Log: log, Registry: reg})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}

	// Everything below ends with run, which ends after Serve returns: the
	// bridge, the admin socket and /healthz go on while the relay drains,
	// and never outlive it.
	run, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()

	var meshAddrs []string
	var bridge *MeshBridge
	if len(o.Config.P2PListen) > 0 {
		mst, err := openStore(o.Dir, MeshDBFile)
		if err != nil {
			return err
		}
		defer mst.Close()
		node, err := mesh.New(run, mesh.Config{
			Key: key, Store: mst, ListenAddrs: o.Config.P2PListen, Bootstrap: o.Config.Bootstrap,
			MDNS: o.Config.MDNS, DHT: true, Skew: o.Config.Limits.Skew.Duration,
			Retention: o.Config.Retention.MaxAge.Duration, Registerer: reg, Logger: log.With("part", "mesh"),
		})
		if err != nil {
			return fmt.Errorf("relay: mesh node: %w", err)
		}
		defer node.Close()
		meshAddrs = node.Addrs()
		bridge = NewMeshBridge(run, srv, node, log.With("part", "bridge"))
		defer bridge.Close()
		srv.SetBridge(bridge)
	}

	if o.Config.Admin != "" {
		ln, err := net.Listen("tcp", o.Config.Admin)
		if err != nil {
			return fmt.Errorf("relay: admin listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		// Profiles, for operators chasing a slow relay: the listener is
		// on loopback by default, and nothing here changes state.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			if ctx.Err() != nil {
				http.Error(w, "stopping", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() { hs.Serve(ln) })
		context.AfterFunc(run, func() { hs.Close() })
		log.Info("admin listener", "addr", ln.Addr().String())
	}
	reload := func(ctx context.Context, by string) AdminResponse {
		cfg, err := LoadDirConfig(o.Dir)
		if err != nil {
			return AdminResponse{Error: fmt.Sprintf("reload: %v; nothing changed", err), PolicyVersion: srv.policy.Version()}
		}
		return srv.Reload(ctx, cfg, by)
	}
	if o.Reload != nil {
		wg.Go(func() {
			for {
				select {
				case <-o.Reload:
					if r := reload(run, "SIGHUP"); r.Error != "" {
						log.Error("config reload", "err", r.Error)
					}
				case <-run.Done():
					return
				}
			}
		})
	}
	wg.Go(func() {
		if err := srv.ServeAdmin(run, filepath.Join(o.Dir, SocketFile), func(ctx context.Context) AdminResponse { return reload(ctx, "relay reload") }); err != nil {
			log.Error("admin socket", "err", err)
		}
	})
	wg.Go(func() { retain(run, st, o.Config.Retention, 2*o.Config.Limits.Skew.Duration, log) })

	// The address to share: the real port, and the advertised or this
	// machine's name when the relay listens on every interface.
	shared := o.Config
	shared.Listen = srv.Addr().String()
	if host, _, _ := net.SplitHostPort(o.Config.Listen); host != "" && net.ParseIP(host) != nil && !net.ParseIP(host).IsUnspecified() {
		shared.Listen = net.JoinHostPort(host, portOf(srv.Addr().String()))
	} else {
		shared.Listen = net.JoinHostPort("", portOf(srv.Addr().String()))
	}
	addr, _ := ShareAddr(key.Public(), shared)
	log.Info("relay serving", "addr", addr.String(), "policy", srv.policy.Mode().String(), "policy_version", srv.policy.Version(), "mesh", meshAddrs)
	if o.Ready != nil {
		o.Ready(addr, meshAddrs)
	}
	err = srv.Serve(ctx)
	stop()
	log.Info("relay stopped")
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func portOf(hostPort string) string {
	_, port, _ := net.SplitHostPort(hostPort)
	return port
}

// retain prunes history past the retention limits every ten minutes. It
// keeps what arrived within keep, however large: an envelope whose time
// the relay still accepts must stay, or a resend would be stored twice.
func retain(ctx context.Context, st *store.Store, r RetentionConfig, keep time.Duration, log *slog.Logger) {
	tick := time.NewTicker(10 * time.Minute)
	defer tick.Stop()
	for {
		if r.MaxAge.Duration > 0 {
			if n, err := st.Prune(ctx, time.Now().Add(-r.MaxAge.Duration)); err != nil && ctx.Err() == nil {
				log.Warn("retention by age", "err", err)
			} else if n > 0 {
				log.Info("retention by age", "deleted", n)
			}
		}
		if r.MaxBytes > 0 {
			if n, err := st.PruneBytes(ctx, r.MaxBytes, time.Now().Add(-keep)); err != nil && ctx.Err() == nil {
				log.Warn("retention by size", "err", err)
			} else if n > 0 {
				log.Info("retention by size", "deleted", n)
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

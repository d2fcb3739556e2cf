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
	"slices"
	"sync"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/lockfile"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

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
	sc := o.Config.Store
	st, err := openStore(o.Dir, DBFile, store.Durable(), store.CheckpointEvery(sc.CheckpointPages), store.CacheSize(sc.CacheSize), store.MmapSize(sc.MmapSize))
	if err != nil {
		return err
	}
	defer st.Close()
	// The directory of envelope IDs is read before the relay serves, not
	// at the first lookup by ID (a subscriber's cursor, a mesh peer's
	// sync), which would wait for it: seconds at millions of envelopes.
	began := time.Now()
	if err := st.LoadIDs(ctx); err != nil {
		return err
	}
	log.Debug("envelope IDs read", "took", time.Since(began).Round(time.Millisecond))

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
	r := &relayRun{o: o, log: log, key: key, st: st, reg: reg, srv: srv}
	return r.serve(ctx)
}

// relayRun is one run of a listening relay: its server, and the parts
// Run starts around it (the mesh bridge, the admin listener and socket,
// config reloads, retention).
type relayRun struct {
	o   RunOptions
	log *slog.Logger
	key identity.PrivateKey
	st  *store.Store
	reg *prometheus.Registry
	srv *Server
	// run ends after Serve returns; wg waits for what was started on it.
	run context.Context
	wg  sync.WaitGroup
}

// serve starts the parts around the server, serves until ctx ends and
// stops them.
func (r *relayRun) serve(ctx context.Context) error {
	// Everything below ends with run, which ends after Serve returns: the
	// bridge, the admin socket and /healthz go on while the relay drains,
	// and never outlive it.
	run, stop := context.WithCancel(context.WithoutCancel(ctx))
	r.run = run
	defer stop()
	defer r.wg.Wait()

	var meshAddrs []string
	if len(r.o.Config.P2PListen) > 0 {
		addrs, closeMesh, err := r.startMesh()
		if err != nil {
			return err
		}
		defer closeMesh()
		meshAddrs = addrs
	}
	if r.o.Config.Admin != "" {
		if err := r.startAdminListener(ctx); err != nil {
			return err
		}
	}
	if r.o.Reload != nil {
		r.wg.Go(r.reloadOnRequest)
	}
	r.wg.Go(r.serveAdminSocket)
	r.wg.Go(func() { retain(run, r.st, r.o.Config.Retention, 2*r.o.Config.Limits.Skew.Duration, r.log) })

	addr := r.sharedAddr()
	r.log.Info("relay serving", "addr", addr.String(), "transports", r.srv.listening(), "policy", r.srv.policy.Mode().String(), "policy_version", r.srv.policy.Version(), "mesh", meshAddrs)
	if r.o.Ready != nil {
		r.o.Ready(addr, meshAddrs)
	}
	err := r.srv.Serve(ctx)
	stop()
	r.log.Info("relay stopped")
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// startMesh starts the mesh node, on a store of its own, and bridges it
// to the server. closeMesh closes the bridge, the node and its store, in
// that order.
func (r *relayRun) startMesh() (addrs []string, closeMesh func(), err error) {
	mst, err := openStore(r.o.Dir, MeshDBFile)
	if err == nil {
		err = mst.LoadIDs(r.run) // as the relay's store, before the node serves
		if err != nil {
			mst.Close()
		}
	}
	if err != nil {
		return nil, nil, err
	}
	cfg := r.o.Config
	fed, err := newFederation(cfg.Federation.Relays, r.key.Public())
	if err != nil {
		mst.Close()
		return nil, nil, fmt.Errorf("relay: %w", err)
	}
	// Whom the relay admits may use its circuits, as the policy says now.
	circuit := cfg.Circuit.meshConfig(func(id identity.PublicKey) bool { return r.srv.policy.Connect(id).Allow })
	node, err := mesh.New(r.run, mesh.Config{
		Key: r.key, Store: mst, ListenAddrs: cfg.P2PListen, Bootstrap: append(slices.Clone(cfg.Bootstrap), cfg.Federation.Relays...),
		MDNS: cfg.MDNS, DHT: true, Skew: cfg.Limits.Skew.Duration,
		Retention: cfg.Retention.MaxAge.Duration, Registerer: r.reg, Logger: r.log.With("part", "mesh"),
		// One member list per private room for the node and the
		// server: what either learns, both judge by.
		Rosters: r.srv.Rosters(),
		// What the relay's policy refuses from the mesh, its node neither
		// keeps nor forwards.
		Policy:  r.meshPolicy,
		MaySync: fed.member,
		Circuit: circuit, NATService: circuit != nil,
	})
	if err != nil {
		mst.Close()
		return nil, nil, fmt.Errorf("relay: mesh node: %w", err)
	}
	addrs = node.Addrs()
	bridge := NewMeshBridge(r.run, r.srv, node, r.log.With("part", "bridge"))
	r.srv.SetBridge(bridge)
	flog := r.log.With("part", "federation")
	for _, g := range fed.gauges(node) {
		if err := r.reg.Register(g); err != nil {
			flog.Warn("federation metrics", "err", err)
		}
	}
	fed.keep(r.run, node, flog, &r.wg)
	r.wg.Go(func() { carry(r.run, bridge, r.st, cfg.Federation.Rooms, flog) })
	r.startAnnouncing(node, bridge, fed)
	return addrs, func() {
		bridge.Close()
		node.Close()
		mst.Close()
	}, nil
}

// meshPolicy is the relay's policy for what its mesh node receives: the
// sender must be allowed to post in the room, as on the relay.
func (r *relayRun) meshPolicy(env *protocol.Envelope) error {
	if d := r.srv.policy.Post(env.Sender, env.Room); !d.Allow {
		return fmt.Errorf("relay policy: %s", d.Reason)
	}
	return nil
}

// startAdminListener serves metrics, profiles and /healthz on the admin
// address until r.run ends; /healthz fails once ctx ends.
func (r *relayRun) startAdminListener(ctx context.Context) error {
	ln, err := net.Listen("tcp", r.o.Config.Admin)
	if err != nil {
		return fmt.Errorf("relay: admin listener: %w", err)
	}
	hs := &http.Server{Handler: adminHTTPHandler(ctx, r.reg), ReadHeaderTimeout: 5 * time.Second}
	r.wg.Go(func() { hs.Serve(ln) })
	context.AfterFunc(r.run, func() { hs.Close() })
	r.log.Info("admin listener", "addr", ln.Addr().String())
	return nil
}

// adminHTTPHandler serves the admin listener: metrics of reg, profiles,
// and /healthz, which answers "stopping" once ctx ends.
func adminHTTPHandler(ctx context.Context, reg *prometheus.Registry) http.Handler {
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
	return mux
}

// reload reads the config file again and applies it; by says who asked.
func (r *relayRun) reload(ctx context.Context, by string) AdminResponse {
	cfg, err := LoadDirConfig(r.o.Dir)
	if err != nil {
		return AdminResponse{Error: fmt.Sprintf("reload: %v; nothing changed", err), PolicyVersion: r.srv.policy.Version()}
	}
	return r.srv.Reload(ctx, cfg, by)
}

// reloadOnRequest reloads the config each time r.o.Reload asks (SIGHUP),
// until r.run ends.
func (r *relayRun) reloadOnRequest() {
	for {
		select {
		case <-r.o.Reload:
			if resp := r.reload(r.run, "SIGHUP"); resp.Error != "" {
				r.log.Error("config reload", "err", resp.Error)
			}
		case <-r.run.Done():
			return
		}
	}
}

// serveAdminSocket serves the admin commands (relay allow, reload...) on
// the data folder's socket until r.run ends.
func (r *relayRun) serveAdminSocket() {
	reload := func(ctx context.Context) AdminResponse { return r.reload(ctx, "relay reload") }
	if err := r.srv.ServeAdmin(r.run, filepath.Join(r.o.Dir, SocketFile), reload); err != nil {
		r.log.Error("admin socket", "err", err)
	}
}

// sharedAddr is the address to share: the real port, and the advertised
// or this machine's name when the relay listens on every interface.
func (r *relayRun) sharedAddr() relay.Addr {
	shared := r.o.Config
	port := portOf(r.srv.Addr().String())
	if host, _, _ := net.SplitHostPort(r.o.Config.Listen); host != "" && net.ParseIP(host) != nil && !net.ParseIP(host).IsUnspecified() {
		shared.Listen = net.JoinHostPort(host, port)
	} else {
		shared.Listen = net.JoinHostPort("", port)
	}
	addr, _ := ShareAddr(r.key.Public(), shared)
	return addr
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

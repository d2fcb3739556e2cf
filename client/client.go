package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/lockfile"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/store"
)

// Paths a message can arrive by, as Message.Via and the store name them.
const (
	ViaLocal = "local" // sent from this home folder
	ViaMesh  = "mesh"  // live gossip
	ViaSync  = "sync"  // the mesh's catch-up sync
	ViaRelay = "relay" // the relay
)

// ErrNoPath: no path could carry a message: no mesh peer in the room and
// no relay, or every path failed.
var ErrNoPath = errors.New("client: not delivered")

// ErrRelayUnreachable: the relay could not be reached (as opposed to a
// relay that answered with another key, or refused us).
var ErrRelayUnreachable = errors.New("client: cannot reach the relay")

// Options say how to open a Client.
type Options struct {
	// Config is the configuration, flags applied; it is validated.
	Config Config
	// Logger receives the client's logs. If nil, they are discarded.
	Logger *slog.Logger
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
	// Offline opens the home folder and its store only: no mesh node and
	// no relay, for reading history.
	Offline bool
	// KeepPeers is how often peers that dropped are dialled again, and
	// messages no path took are sent again. If zero, 10 seconds.
	KeepPeers time.Duration
	// Silent sessions show nothing (chat send): messages that arrive are
	// stored and left unshown for the next session that shows them, and
	// Messages delivers nothing.
	Silent bool
}

// Client is a person's session: their home folder, held for this process,
// the mesh node and the relay connection that the mode asks for, and the
// rooms joined. Messages from every path arrive once, on Messages.
type Client struct {
	home *Home
	cfg  Config
	log  *slog.Logger
	now  func() time.Time

	lock      *lockfile.Lock
	st        *store.Store
	node      *mesh.Node    // nil in relay mode
	relay     *relay.Client // nil without a relay, or when it could not be reached
	relayName string        // the relay's key fingerprint: where its cursors and checkpoint are kept
	relayErr  error         // why there is no relay connection although one is configured

	alloc protocol.SeqAllocator
	clock protocol.LamportClock

	in     chan arrival
	out    chan Message
	failed chan error // a path that stopped for good

	joinMu    sync.Mutex // one Join at a time
	mu        sync.Mutex
	rooms     map[string]*room
	contacts  *identity.Contacts
	seen      *seenSet      // the merger's
	pending   []pendingVia  // the merger's
	silent    bool          // Messages delivers nothing: Options.Silent
	keepEvery time.Duration // Options.KeepPeers

	shownMu sync.Mutex
	shownQ  []protocol.ID // noted shown, not yet written

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // readers of the paths
	mergeW sync.WaitGroup // the merger
	closed bool
}

// room is a joined room.
type room struct {
	name string
	mesh *mesh.Room // nil without a mesh node
	// caughtUp is closed once the relay's history of the room (up to the
	// moment of joining) is merged; nil without a relay.
	caughtUp   chan struct{}
	caughtOnce sync.Once
	pubMu      sync.Mutex         // serialises Send: numbers and chain in order
	head       protocol.ID        // the ID of our last envelope in the room
	stop       context.CancelFunc // ends the room's readers
}

// arrival is an envelope that a path delivered, not yet deduplicated.
type arrival struct {
	room string
	id   protocol.ID
	env  *protocol.Envelope
	raw  []byte
	via  string
	// caughtUp marks the end of the relay's history of room: no envelope.
	caughtUp bool
	// stored is a message stored in an earlier session and never shown.
	stored bool
}

// Open opens a session on home with the options' configuration: it takes
// the home folder's lock, opens the store, and starts the mesh node and
// connects to the relay as the mode says. In relay mode a relay that
// cannot be reached is an error; in auto mode it is logged, kept in
// RelayError, and the mesh carries on alone.
func Open(ctx context.Context, home *Home, o Options) (_ *Client, err error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		home:      home,
		cfg:       o.Config,
		log:       o.Logger,
		now:       o.Now,
		in:        make(chan arrival, 1024),
		out:       make(chan Message, 1024),
		failed:    make(chan error, 1),
		rooms:     make(map[string]*room),
		seen:      newSeenSet(seenMemory),
		silent:    o.Silent,
		keepEvery: o.KeepPeers,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.lock, err = home.Lock(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.shutdown()
		}
	}()
	if c.contacts, err = home.Contacts(); err != nil {
		return nil, err
	}
	if c.st, err = store.Open(filepath.Join(home.Dir, StoreFile), store.Search()); err != nil {
		return nil, err
	}
	c.alloc = protocol.SeqAllocator{Store: c.st}
	c.ctx, c.cancel = context.WithCancel(context.Background())

	if !o.Offline && c.cfg.Mode != ModeRelay {
		c.node, err = mesh.New(ctx, mesh.Config{
			Key:         home.Key,
			Store:       c.st,
			ListenAddrs: c.cfg.Listen,
			Bootstrap:   c.cfg.Peers,
			MDNS:        c.cfg.MDNS,
			Now:         o.Now,
			Logger:      c.log,
		})
		if err != nil {
			return nil, err
		}
	}
	if !o.Offline && c.cfg.Relay != "" && c.cfg.Mode != ModeP2P {
		dctx := ctx
		if d, ok := ctx.Deadline(); ok && c.cfg.Mode == ModeAuto {
			// Leave the mesh half the time if the relay does not answer.
			var cancel context.CancelFunc
			dctx, cancel = context.WithTimeout(ctx, time.Until(d)/2)
			defer cancel()
		}
		if err := c.dialRelay(dctx); err != nil {
			if c.cfg.Mode == ModeRelay {
				return nil, err
			}
			c.relayErr = err
			c.log.Debug("relay unreachable; the mesh carries on alone", "err", err)
		}
	}
	c.mergeW.Add(1)
	go c.merge()
	if !o.Offline {
		c.wg.Add(1)
		go c.tend()
	}
	return c, nil
}

// defaultKeepPeers is how often the session tends its paths
// (Options.KeepPeers).
const defaultKeepPeers = 10 * time.Second

// tend runs, every KeepPeers, what keeps a session whole after a peer or
// the relay restarts: dialling the configured peers again (the node dials
// them only at start), asking the relay again for the peers of rooms that
// have none, and sending what no path took (resendOutbox).
func (c *Client) tend() {
	defer c.wg.Done()
	every := c.keepEvery
	if every <= 0 {
		every = defaultKeepPeers
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		if c.node != nil {
			c.keepPeers(every)
		}
		if !c.silent {
			c.resendOutbox(every)
		}
	}
}

// keepPeers dials the configured peers that are not connected, and asks
// the relay for the peers of rooms that have none.
func (c *Client) keepPeers(every time.Duration) {
	for _, a := range c.cfg.Peers {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil || c.node.Host().Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, max(every/2, time.Second))
		if err := c.node.Connect(ctx, a); err != nil {
			c.log.Debug("peer unreachable", "addr", a, "err", err)
		}
		cancel()
	}
	if c.relay == nil {
		return
	}
	c.mu.Lock()
	var lonely []string
	for name, r := range c.rooms {
		if r.mesh != nil && len(r.mesh.Peers()) == 0 {
			lonely = append(lonely, name)
		}
	}
	c.mu.Unlock()
	for _, name := range lonely {
		c.wg.Add(1)
		c.meetPeers(c.ctx, name)
	}
}

func (c *Client) dialRelay(ctx context.Context) error {
	addr, err := relay.ParseAddr(c.cfg.Relay)
	if err != nil {
		return err
	}
	c.relayName = addr.Fingerprint
	kept, err := c.st.RelayCheckpoint(ctx, c.relayName)
	if err != nil {
		return err
	}
	rc, err := relay.Dial(ctx, addr, c.home.Key, relay.ClientOptions{Log: c.log, Checkpoint: kept})
	var refused *protocol.RelayError
	switch {
	case err == nil:
		c.relay = rc
		return nil
	case errors.Is(err, relay.ErrWrongRelay), errors.As(err, &refused), errors.Is(err, relay.ErrAuditLog):
		return err
	}
	return fmt.Errorf("%w %s: %w", ErrRelayUnreachable, addr, err)
}

// Home returns the client's home folder.
func (c *Client) Home() *Home { return c.home }

// Key returns the identity the client speaks as.
func (c *Client) Key() identity.PrivateKey { return c.home.Key }

// Node returns the mesh node, or nil in relay mode.
func (c *Client) Node() *mesh.Node { return c.node }

// Relay returns the relay connection, or nil.
func (c *Client) Relay() *relay.Client { return c.relay }

// RelayError returns why the configured relay is not connected, or nil.
func (c *Client) RelayError() error { return c.relayErr }

// Messages returns the messages of others, from every path and every
// joined room, each once, as they arrive. The application must keep
// reading it.
func (c *Client) Messages() <-chan Message { return c.out }

// Rooms returns the rooms joined in this home folder, now or before.
func (c *Client) Rooms(ctx context.Context) ([]string, error) { return c.st.Rooms(ctx) }

// Join joins room on every path, adds it to the home's room list and
// starts catching up: the relay subscription resumes after the last
// envelope it delivered to this home, and the mesh syncs with each peer
// of the room. Joining twice is joining once.
func (c *Client) Join(ctx context.Context, name string) error {
	if err := protocol.ValidRoom(name); err != nil {
		return fmt.Errorf("client: join: %w", err)
	}
	// Joins one at a time; c.mu, which the merger takes, is held only to
	// look at the map, never while the merger's queue is written to.
	c.joinMu.Lock()
	defer c.joinMu.Unlock()
	c.mu.Lock()
	_, joined := c.rooms[name]
	closed := c.closed
	c.mu.Unlock()
	switch {
	case closed:
		return errors.New("client: closed")
	case joined:
		return nil
	}
	if err := c.st.AddRoom(ctx, name, c.now()); err != nil {
		return err
	}
	r := &room{name: name}
	if c.relay != nil {
		r.caughtUp = make(chan struct{})
	}
	last, err := c.st.Last(ctx, c.home.Key.Public(), name)
	switch {
	case err == nil:
		r.head = last.ID
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("client: join %s: %w", name, err)
	}
	lamport, err := c.st.MaxLamport(ctx, name)
	if err != nil {
		return fmt.Errorf("client: join %s: %w", name, err)
	}
	c.clock.Witness(lamport)
	var unshown []store.Record
	if !c.silent {
		if unshown, err = c.st.Unshown(ctx, name); err != nil {
			return err
		}
	}

	rctx, stop := context.WithCancel(c.ctx)
	r.stop = stop
	if c.node != nil {
		if r.mesh, err = c.node.Join(name); err != nil {
			stop()
			return fmt.Errorf("client: join %s: %w", name, err)
		}
	}
	var sub *relay.Subscription
	if c.relay != nil {
		cursor, err := c.st.RelayCursor(ctx, c.relayName, name)
		if err == nil {
			sub, err = c.relay.Subscribe(rctx, name, cursor)
		}
		if err != nil {
			stop()
			if r.mesh != nil {
				r.mesh.Leave()
			}
			return fmt.Errorf("client: join %s on the relay: %w", name, err)
		}
	}
	c.mu.Lock()
	c.rooms[name] = r
	c.mu.Unlock()
	// What an earlier session stored and never showed comes first, then
	// what the paths deliver. Not on this goroutine: the application
	// reads Messages only once Join returns.
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for _, rec := range unshown {
			if !c.deliver(rctx, arrival{room: name, id: rec.ID, env: rec.Env, raw: rec.Raw, via: rec.Via, stored: true}) {
				return
			}
		}
		if r.mesh != nil {
			c.wg.Add(1)
			go c.readMesh(rctx, r)
		}
		if sub != nil {
			c.wg.Add(1)
			go c.readRelay(rctx, r, sub)
			if c.node != nil {
				// The relay as control plane: the mesh peers it knows
				// in the room, to go peer-to-peer with.
				c.wg.Add(1)
				go c.meetPeers(rctx, name)
			}
		}
	}()
	return nil
}

// CaughtUp returns a channel closed once the relay's history of the room,
// up to the moment of joining, is stored and shown; nil when there is no
// relay.
func (c *Client) CaughtUp(name string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.rooms[name]; ok && r.caughtUp != nil {
		return r.caughtUp
	}
	return nil
}

// MeshPeers returns how many mesh peers are known to be in the room.
func (c *Client) MeshPeers(name string) int {
	c.mu.Lock()
	r, ok := c.rooms[name]
	c.mu.Unlock()
	if !ok || r.mesh == nil {
		return 0
	}
	return len(r.mesh.Peers())
}

func (c *Client) readMesh(ctx context.Context, r *room) {
	defer c.wg.Done()
	for {
		select {
		case m := <-r.mesh.Messages():
			via := m.Via
			if via != ViaSync {
				via = ViaMesh
			}
			if !c.deliver(ctx, arrival{room: r.name, id: m.ID, env: m.Env, via: via}) {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

func (c *Client) readRelay(ctx context.Context, r *room, sub *relay.Subscription) {
	defer c.wg.Done()
	for attempt := 0; ; attempt++ {
		err := c.drain(ctx, r, sub)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, &protocol.RelayError{Code: protocol.CodeUnknownCursor}) && attempt == 0 {
			// The relay lost what the cursor names: restored from a
			// backup, or it went down before committing what it had sent.
			// From the start again; what is here already is not shown
			// twice.
			c.log.Warn("the relay does not know this home's cursor; catching up from the start", "room", r.name)
			if sub, err = c.relay.Subscribe(ctx, r.name, protocol.ID{}); err == nil {
				continue
			}
		}
		// Ended for good: a Send waiting for the history must not wait.
		c.deliver(ctx, arrival{room: r.name, caughtUp: true})
		if err != nil {
			c.log.Debug("relay subscription ended", "room", r.name, "err", err)
			select {
			case c.failed <- fmt.Errorf("relay subscription to %s: %w", r.name, err):
			default:
			}
		}
		return
	}
}

// drain hands a subscription's envelopes to the merger, with a caught-up
// mark after its history, until it ends, and returns why it ended.
func (c *Client) drain(ctx context.Context, r *room, sub *relay.Subscription) error {
	// The subscription puts the history on C before it closes Live: once
	// Live is closed, the history is within what C holds at that moment.
	live, left := sub.Live, -1
	for {
		if left == 0 {
			if !c.deliver(ctx, arrival{room: r.name, caughtUp: true}) {
				return ctx.Err()
			}
			left = -1
		}
		select {
		case <-live:
			live, left = nil, len(sub.C)
			continue
		case d, ok := <-sub.C:
			if !ok {
				return sub.Err()
			}
			if left > 0 {
				left--
			}
			if d.Env.Room != r.name {
				c.log.Warn("relay sent an envelope of another room; dropped", "room", r.name, "id", d.ID)
				continue
			}
			if !c.deliver(ctx, arrival{room: r.name, id: d.ID, env: d.Env, raw: d.Raw, via: ViaRelay}) {
				return ctx.Err()
			}
		}
	}
}

// Failed delivers the error of a path that stopped for good: a relay
// subscription the relay refused (a ban, a room rule), which retrying
// cannot help. In auto mode the mesh carries on; in relay mode nothing
// does.
func (c *Client) Failed() <-chan error { return c.failed }

func (c *Client) meetPeers(ctx context.Context, name string) {
	defer c.wg.Done()
	addrs, err := c.relay.Peers(ctx, name)
	if err != nil {
		c.log.Debug("room peers from the relay", "room", name, "err", err)
		return
	}
	self := c.node.ID().String()
	for _, a := range addrs {
		if ctx.Err() != nil {
			return
		}
		if len(a) >= len(self) && a[len(a)-len(self):] == self {
			continue
		}
		if err := c.node.Connect(ctx, a); err != nil {
			c.log.Debug("room peer from the relay unreachable", "addr", a, "err", err)
		}
	}
}

func (c *Client) deliver(ctx context.Context, a arrival) bool {
	select {
	case c.in <- a:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close leaves every room, stops the mesh node and the relay connection,
// keeps the relay's newest audit checkpoint and releases the home folder.
func (c *Client) Close() error {
	c.joinMu.Lock() // a Join under way finishes first
	c.mu.Lock()
	closed := c.closed
	c.closed = true
	c.mu.Unlock()
	c.joinMu.Unlock()
	if closed {
		return nil
	}
	return c.shutdown()
}

func (c *Client) shutdown() error {
	var errs []error
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait() // the readers end with c.ctx, and so do the subscriptions
	if c.ctx != nil {
		close(c.in)
		c.mergeW.Wait()
		c.flushShown()
	}
	for _, r := range c.rooms {
		if r.mesh != nil {
			r.mesh.Leave()
		}
	}
	if c.relay != nil {
		errs = append(errs, c.keepCheckpoint(context.Background()), c.relay.Close())
	}
	if c.node != nil {
		errs = append(errs, c.node.Close())
	}
	if c.st != nil {
		errs = append(errs, c.st.Close())
	}
	if c.lock != nil {
		errs = append(errs, c.lock.Release())
	}
	return errors.Join(errs...)
}

// keepCheckpoint stores the relay's newest audit checkpoint, so that the
// next session holds the relay to it.
func (c *Client) keepCheckpoint(ctx context.Context) error {
	if c.relay.AuditError() != nil {
		return nil // keep the last good one: the user has been told
	}
	cp := c.relay.Checkpoint()
	if cp == nil {
		return nil
	}
	return c.st.SetRelayCheckpoint(ctx, c.relayName, cp)
}

// AuditError returns the security error found in the relay's audit log:
// a relay that forked or rewrote its log. The application must show it.
func (c *Client) AuditError() error {
	if c.relay == nil {
		return nil
	}
	return c.relay.AuditError()
}

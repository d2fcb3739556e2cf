package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/lockfile"
	"github.com/parleychat/parley/keyring"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/roster"
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

// ErrClosed: the client is closed.
var ErrClosed = errors.New("client: closed")

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
	// no MessageEvent is delivered.
	Silent bool
}

// Client is a person's session: their home folder, held for this process,
// the mesh node and the relay connection that the mode asks for, and the
// rooms joined. Everything a front end shows arrives on Events.
type Client struct {
	home *Home
	cfg  Config
	log  *slog.Logger
	now  func() time.Time

	lock   *lockfile.Lock
	st     *store.Store
	node   *mesh.Node // nil in relay mode
	relays relaySet   // none without a relay
	need   int        // how many relays must acknowledge a message (relay_ack)
	sign   *signer
	ring   *keyring.Ring // our end-to-end keys
	clock  protocol.LamportClock
	ev     *eventQueue
	merge  *merger

	in chan arrival // to the merger

	joinMu   sync.Mutex // one Join at a time
	mu       sync.Mutex
	rooms    map[string]*room
	contacts *identity.Contacts
	rosters  *roster.Book              // member lists of private rooms, shared with the mesh node
	inflight map[protocol.ID]*delivery // our messages being sent now
	closed   bool

	silent    bool          // Options.Silent
	keepEvery time.Duration // Options.KeepPeers
	kick      chan struct{} // a path came up: send the outbox now
	found     foundRooms    // private rooms the relay says we are in (tend's own)

	shownMu    sync.Mutex
	shownQ     []protocol.ID // noted shown, not yet written
	shownAgain []shownNote   // written before their message was stored

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // every goroutine but the merger and the pump: readers, sends, tending
	mergeW  sync.WaitGroup // the merger
	evStop  context.CancelFunc
	evDoneW sync.WaitGroup // the pump
}

// room is a joined room.
type room struct {
	name string
	mesh *mesh.Room // nil without a mesh node
	// caughtUp is closed once a relay's history of the room (up to the
	// moment of joining) is merged; nil without a relay.
	caughtUp   chan struct{}
	caughtOnce sync.Once
	gaveUp     map[*relayPath]bool // relays whose history will not come (the merger's)
	stop       context.CancelFunc  // ends the room's readers

	postMu sync.Mutex       // our messages are queued for the paths in the order they are signed
	meshQ  chan *delivery   // to the room's mesh sender, under c.mu; nil until the first send
	relayQ []chan *delivery // to the room's sender of each relay (as c.relays), likewise
}

func (r *room) markCaughtUp() {
	if r.caughtUp != nil {
		r.caughtOnce.Do(func() { close(r.caughtUp) })
	}
}

// relayCaughtUp takes relay p's caught-up mark (of n relays), on the
// merger's goroutine: the room is caught up once one relay's history is
// in, or once every relay gave up on it. It reports whether the mark
// said either.
func (r *room) relayCaughtUp(p *relayPath, gaveUp bool, n int) bool {
	if !gaveUp {
		r.markCaughtUp()
		return true
	}
	if r.gaveUp == nil {
		r.gaveUp = map[*relayPath]bool{}
	}
	r.gaveUp[p] = true
	if len(r.gaveUp) < n {
		return false
	}
	r.markCaughtUp()
	return true
}

// arrival is what a path delivered, not yet deduplicated: an envelope, or
// one of the relay subscription's marks.
type arrival struct {
	room string
	id   protocol.ID
	env  *protocol.Envelope
	raw  []byte
	via  string
	// relay is the relay that delivered it, when via is ViaRelay.
	relay *relayPath
	// history: sent by the relay before its Live mark.
	history bool
	// caughtUp marks the end of the relay's history of room: no envelope.
	// With gaveUp, the relay's subscription ended before it (the relay
	// is down, or refused the room).
	caughtUp, gaveUp bool
	// committed marks that the relay has every envelope up to id on its
	// disk: the cursor a later session resumes from. No envelope.
	committed bool
	// stored is a message stored in an earlier session and never shown.
	stored bool
}

func (a arrival) mark() bool { return a.caughtUp || a.committed }

// Open opens a session on home with the options' configuration: it takes
// the home folder's lock, opens the store, and starts the mesh node and
// the relay connection as the mode says. A relay that cannot be reached
// is dialled again in the background, with backoff (RelayEvent says how
// it goes); a relay with another key than its address names, or one that
// refuses us, is an error.
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
		ev:        newEventQueue(),
		rooms:     make(map[string]*room),
		inflight:  make(map[protocol.ID]*delivery),
		silent:    o.Silent,
		keepEvery: o.KeepPeers,
		kick:      make(chan struct{}, 1),
		rosters:   roster.NewBook(),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.keepEvery <= 0 {
		c.keepEvery = defaultKeepPeers
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
	c.sign = newSigner(home.Key, c.st, &c.clock, c.now)
	if c.ring, err = keyring.Open(ctx, c.st, home.Key, c.now); err != nil {
		return nil, err
	}
	c.merge = newMerger(c)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	evCtx, evStop := context.WithCancel(context.Background())
	c.evStop = evStop
	c.evDoneW.Add(1)
	go func() {
		defer c.evDoneW.Done()
		c.ev.pump(evCtx)
	}()

	if !o.Offline && c.cfg.Mode != ModeRelay {
		c.node, err = mesh.New(ctx, mesh.Config{
			Key:         home.Key,
			Store:       c.st,
			ListenAddrs: c.cfg.Listen,
			Bootstrap:   c.cfg.Peers,
			MDNS:        c.cfg.MDNS,
			Rosters:     c.rosters,
			MaySync:     c.relayMaySync(),
			// Behind a NAT, peers reach this node through a circuit on
			// the relay's mesh node (useRelayCircuit), then directly
			// once hole punching succeeds.
			AutoRelay: len(c.cfg.Relays) > 0 && c.cfg.Mode != ModeP2P,
			Now:       o.Now,
			Logger:    c.log,
		})
		if err != nil {
			return nil, err
		}
	}
	if !o.Offline && len(c.cfg.Relays) > 0 && c.cfg.Mode != ModeP2P {
		if c.need, err = relayNeed(c.cfg.RelayAck, len(c.cfg.Relays)); err != nil {
			return nil, err
		}
		if c.relays, err = c.openRelays(ctx); err != nil {
			return nil, err
		}
		c.putPackage()
	}
	c.mergeW.Add(1)
	go c.merge.run()
	if !o.Offline {
		c.wg.Add(1)
		go c.tend()
	}
	if c.node != nil && !c.silent {
		c.wg.Add(1)
		go c.watchPaths()
	}
	return c, nil
}

// defaultKeepPeers is how often the session tends its paths
// (Options.KeepPeers).
const defaultKeepPeers = 10 * time.Second

// tend runs, every KeepPeers and whenever a path comes up, what keeps a
// session whole after a peer or the relay restarts: dialling the
// configured peers again (the node dials them only at start), asking the
// relay again for the peers of rooms that have none, and sending what no
// path took (resendOutbox).
func (c *Client) tend() {
	defer c.wg.Done()
	t := time.NewTicker(c.keepEvery)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			if c.node != nil {
				c.keepPeers()
			}
		case <-c.kick:
		}
		if !c.silent {
			c.resendOutbox()
			c.findRooms()
		}
	}
}

// kickOutbox asks tend to send the outbox now: a path came up.
func (c *Client) kickOutbox() { notify(c.kick) }

// keepPeers dials the configured peers that are not connected, and asks
// the relays for the peers of rooms that have none.
func (c *Client) keepPeers() {
	for _, a := range c.cfg.Peers {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil || c.node.Host().Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, max(c.keepEvery/2, time.Second))
		if err := c.node.Connect(ctx, a); err != nil {
			c.log.Debug("peer unreachable", "addr", a, "err", err)
		}
		cancel()
	}
	up := c.relays.connected()
	if len(up) == 0 {
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
		for _, p := range up {
			c.meetPeers(c.ctx, p, name)
		}
	}
}

// Home returns the client's home folder.
func (c *Client) Home() *Home { return c.home }

// Key returns the identity the client speaks as.
func (c *Client) Key() identity.PrivateKey { return c.home.Key }

// Config returns the session's configuration.
func (c *Client) Config() Config { return c.cfg }

// Node returns the mesh node, or nil in relay mode.
func (c *Client) Node() *mesh.Node { return c.node }

// Events returns everything a front end shows, in order: messages (each
// once, from every path and every joined room), what became of our own,
// peers, the relay's state, catch-up progress and security alarms. The
// application must keep reading it; it is closed by Close.
func (c *Client) Events() <-chan Event { return c.ev.out }

// emit queues a status event; it never waits.
func (c *Client) emit(e Event) { c.ev.push(context.Background(), e) }

// Rooms returns the rooms joined in this home folder, now or before.
func (c *Client) Rooms(ctx context.Context) ([]string, error) { return c.st.Rooms(ctx) }

// KeptCheckpoints returns the newest audit checkpoint kept for each
// relay: what this home holds each relay's log to, for a person to
// compare with a relay's export or with other people's.
func (c *Client) KeptCheckpoints(ctx context.Context) ([]store.KeptCheckpoint, error) {
	return c.st.RelayCheckpoints(ctx)
}

// Join joins room on every path, adds it to the home's room list and
// starts catching up: the relay subscription resumes after the last
// envelope the relay confirmed committed to this home, and the mesh syncs
// with each peer of the room. Joining twice is joining once.
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
		return ErrClosed
	case joined:
		return nil
	}
	r, unshown, err := c.prepareRoom(ctx, name)
	if err != nil {
		return fmt.Errorf("client: join %s: %w", name, err)
	}
	rctx, stop := context.WithCancel(c.ctx)
	r.stop = stop
	if c.node != nil {
		if r.mesh, err = c.node.Join(name); err != nil {
			stop()
			return fmt.Errorf("client: join %s: %w", name, err)
		}
	}
	c.mu.Lock()
	c.rooms[name] = r
	c.mu.Unlock()
	c.announceIfMember(ctx, name)
	// What an earlier session stored and never showed comes first, then
	// what the paths deliver. Not on this goroutine: the application
	// reads Events only once Join returns.
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for _, rec := range unshown {
			if !c.deliver(rctx, arrival{room: name, id: rec.ID, env: rec.Env, raw: rec.Raw, via: rec.Via, stored: true}) {
				return
			}
		}
		if r.mesh != nil {
			c.wg.Add(2)
			go c.readMesh(rctx, r)
			go c.watchPeers(rctx, r)
		}
		for _, p := range c.relays {
			c.wg.Add(1)
			go p.follow(rctx, r)
		}
	}()
	return nil
}

// prepareRoom reads what the store knows of a room about to be joined.
func (c *Client) prepareRoom(ctx context.Context, name string) (*room, []store.Record, error) {
	if err := c.st.AddRoom(ctx, name, c.now()); err != nil {
		return nil, nil, err
	}
	r := &room{name: name}
	if len(c.relays) > 0 {
		r.caughtUp = make(chan struct{})
	}
	lamport, err := c.st.MaxLamport(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	c.clock.Witness(lamport)
	var unshown []store.Record
	if !c.silent {
		if unshown, err = c.st.Unshown(ctx, name); err != nil {
			return nil, nil, err
		}
	}
	return r, unshown, nil
}

// CaughtUp returns a channel closed once a relay's history of the room,
// up to the moment of joining, is stored and shown, or once each relay
// has given up on it (not connected, or refused it); nil when there is
// no relay.
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

// watchPeers reports the room's mesh peers joining and leaving, and sends
// the outbox when the first one comes.
func (c *Client) watchPeers(ctx context.Context, r *room) {
	defer c.wg.Done()
	for {
		select {
		case pc := <-r.mesh.PeerChanges():
			n := len(r.mesh.Peers())
			c.emit(&PeerEvent{Room: r.name, Peer: pc.Peer.String(), Joined: pc.Joined, Peers: n})
			if pc.Joined {
				c.kickOutbox()
			}
		case <-ctx.Done():
			return
		}
	}
}

// meetPeers dials the mesh peers that relay p knows in a room, to go
// peer-to-peer with them.
func (c *Client) meetPeers(ctx context.Context, p *relayPath, name string) {
	if c.node == nil {
		return
	}
	addrs, err := p.rc.Peers(ctx, name)
	if err != nil {
		c.log.Debug("room peers from the relay", "relay", p.addr, "room", name, "err", err)
		return
	}
	c.useRelayCircuit(p, addrs)
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

// useRelayCircuit gives the mesh node the relay's own mesh addresses,
// found among those the relay answered, as a circuit relay: peers behind
// NATs reach each other through it first, then hole punching makes the
// connection direct.
func (c *Client) useRelayCircuit(p *relayPath, addrs []string) {
	key := p.rc.RelayKey()
	if key.IsZero() {
		return
	}
	id, err := mesh.PeerID(key)
	if err != nil {
		return
	}
	suffix := "/p2p/" + id.String()
	var own []string
	for _, a := range addrs {
		if strings.HasSuffix(a, suffix) {
			own = append(own, a)
		}
	}
	if len(own) == 0 {
		return
	}
	if err := c.node.AddRelay(own); err != nil {
		c.log.Debug("the relay's mesh node as a circuit relay", "err", err)
	}
}

// deliver hands an arrival to the merger.
func (c *Client) deliver(ctx context.Context, a arrival) bool {
	select {
	case c.in <- a:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close leaves every room, ends the sends under way (what they did not
// deliver stays in the outbox), stops the mesh node and the relay
// connection, keeps the relay's newest audit checkpoint, closes Events and
// releases the home folder.
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
	c.wg.Wait() // readers, sends and tending end with c.ctx
	if c.merge != nil && c.ctx != nil {
		close(c.in)
		c.mergeW.Wait()
	}
	if c.evStop != nil {
		c.evStop()
		c.evDoneW.Wait()
	}
	// Leaving commits what the mesh node still holds, which the store
	// notes unshown: the last shown notes are written after it.
	for _, r := range c.rooms {
		if r.mesh != nil {
			r.mesh.Leave()
		}
	}
	if c.merge != nil && c.ctx != nil {
		c.flushShown()
	}
	errs = append(errs, c.relays.close(context.Background()))
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

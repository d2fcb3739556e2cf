// Command natpeer is one mesh node for the NAT traversal test
// (mesh/nat_test.go), which starts it inside a network namespace and
// drives it through stdin and stdout: one command a line in, one JSON
// object a line out. It is a test helper, not a tool.
//
// Commands:
//
//	join ROOM          join a room; its messages are printed as they come
//	say ROOM TEXT      sign a text envelope and publish it
//	connect ADDR       Node.Connect (direct addresses, then the relays)
//	disconnect PEER    close every connection to a peer
//	paths              print Node.Paths
//	quit               close the node and exit (so does the end of stdin)
//
// Each command is answered by {"ev":"done","cmd":...,"err":...}. Events:
// "ready" (ID and addresses), "addrs" (the host's addresses changed),
// "punch-ready" (the hole punching service runs: the node knows a public
// address of its own), "msg" (with the paths to the peer that passed it on,
// as they were when it came), "room-peer" (gossipsub saw a peer join or
// leave a room), "punch" (a hole punching attempt ended) and "paths".
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// Line is one line of output.
type Line struct {
	Ev    string   `json:"ev"`
	Cmd   string   `json:"cmd,omitempty"`
	Err   string   `json:"err,omitempty"`
	ID    string   `json:"id,omitempty"`
	Addrs []string `json:"addrs,omitempty"`
	Room  string   `json:"room,omitempty"`
	Text  string   `json:"text,omitempty"`
	Via   string   `json:"via,omitempty"`
	From  string   `json:"from,omitempty"`
	Peer  string   `json:"peer,omitempty"`
	OK    bool     `json:"ok,omitempty"`
	Paths []Path   `json:"paths,omitempty"`
}

// Path is mesh.Path in JSON.
type Path struct {
	Peer      string `json:"peer"`
	Kind      string `json:"kind"`
	Transport string `json:"transport"`
	Remote    string `json:"remote"`
	Relay     string `json:"relay,omitempty"`
	Inbound   bool   `json:"inbound,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "natpeer:", err)
		os.Exit(1)
	}
}

type peerProc struct {
	ctx  context.Context // ends when the process does
	node *mesh.Node
	key  identity.PrivateKey
	out  *json.Encoder
	outM sync.Mutex

	mu    sync.Mutex
	rooms map[string]*author
	wg    sync.WaitGroup
}

// author is this node's chain of envelopes in one room.
type author struct {
	room *mesh.Room
	seq  uint64
	prev protocol.ID
}

func run() error {
	var (
		dir       = flag.String("dir", "", "folder for the store (required)")
		listen    = flag.String("listen", "", "listen multiaddrs, comma-separated")
		relays    = flag.String("relays", "", "relay multiaddrs, comma-separated")
		circuit   = flag.Bool("circuit", false, "run the circuit relay service")
		autoRelay = flag.Bool("autorelay", false, "keep a slot on a relay (AutoRelay)")
	)
	flag.Parse()
	if *dir == "" {
		return errors.New("-dir is required")
	}
	key, err := identity.Generate(rand.Reader)
	if err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(*dir, "parley.db"))
	if err != nil {
		return err
	}
	defer st.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &peerProc{ctx: ctx, key: key, out: json.NewEncoder(os.Stdout), rooms: map[string]*author{}}
	cfg := mesh.Config{
		Key:         key,
		Store:       st,
		ListenAddrs: split(*listen),
		Relays:      split(*relays),
		AutoRelay:   *autoRelay,
		AntiEntropy: -1, // what arrives, arrives by the paths under test
		OnHolePunch: func(peer peer.ID, err error) {
			l := Line{Ev: "punch", Peer: peer.String(), OK: err == nil}
			if err != nil {
				l.Err = err.Error()
			}
			p.print(l)
		},
	}
	if *circuit {
		cfg.Circuit = &mesh.CircuitConfig{}
	}
	node, err := mesh.New(ctx, cfg)
	if err != nil {
		return err
	}
	p.node = node
	defer func() {
		cancel()
		node.Close()
		p.wg.Wait()
	}()

	bus := node.Host().EventBus()
	sub, err := bus.Subscribe([]any{new(event.EvtLocalAddressesUpdated), new(event.EvtLocalProtocolsUpdated)})
	if err != nil {
		return err
	}
	p.wg.Add(1)
	go p.watchHost(ctx, sub)
	p.print(Line{Ev: "ready", ID: node.ID().String(), Addrs: node.Addrs()})
	p.reportPunchReady()
	return p.commands(ctx)
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func (p *peerProc) print(l Line) {
	p.outM.Lock()
	defer p.outM.Unlock()
	p.out.Encode(l)
}

// watchHost reports address changes, and when the hole punching service
// starts (it registers its protocol once the node knows a public
// address of its own).
func (p *peerProc) watchHost(ctx context.Context, sub event.Subscription) {
	defer p.wg.Done()
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			switch e.(type) {
			case event.EvtLocalAddressesUpdated:
				p.print(Line{Ev: "addrs", Addrs: p.node.Addrs()})
			case event.EvtLocalProtocolsUpdated:
				p.reportPunchReady()
			}
		}
	}
}

func (p *peerProc) reportPunchReady() {
	if slices.Contains(p.node.Host().Mux().Protocols(), holepunch.Protocol) {
		p.print(Line{Ev: "punch-ready"})
	}
}

func (p *peerProc) commands(ctx context.Context) error {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		verb, rest, _ := strings.Cut(strings.TrimSpace(in.Text()), " ")
		var err error
		switch verb {
		case "join":
			err = p.join(rest)
		case "say":
			room, text, _ := strings.Cut(rest, " ")
			err = p.say(ctx, room, text)
		case "connect":
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err = p.node.Connect(cctx, rest)
			cancel()
		case "disconnect":
			var id peer.ID
			if id, err = peer.Decode(rest); err == nil {
				err = p.node.Host().Network().ClosePeer(id)
			}
		case "paths":
			p.print(Line{Ev: "paths", Paths: p.paths("")})
		case "quit":
			p.print(Line{Ev: "done", Cmd: verb})
			return nil
		default:
			err = fmt.Errorf("unknown command %q", verb)
		}
		l := Line{Ev: "done", Cmd: verb}
		if err != nil {
			l.Err = err.Error()
		}
		p.print(l)
	}
	return in.Err()
}

func (p *peerProc) join(name string) error {
	r, err := p.node.Join(name)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.rooms[name]; !ok {
		p.rooms[name] = &author{room: r}
		p.wg.Add(1)
		go p.read(r)
	}
	return nil
}

// read prints the room's messages, each with the paths to the peer that
// passed it on as they are when it comes, and its peers coming and going.
func (p *peerProc) read(r *mesh.Room) {
	defer p.wg.Done()
	for {
		var m mesh.Message
		select {
		case m = <-r.Messages():
		case c := <-r.PeerChanges():
			p.print(Line{Ev: "room-peer", Room: r.Name(), Peer: c.Peer.String(), OK: c.Joined})
			continue
		case <-p.ctx.Done():
			return
		}
		text := ""
		if t, err := protocol.ParseText(m.Env.Payload); err == nil {
			text = t.Body
		}
		p.print(Line{Ev: "msg", Room: r.Name(), Text: text, Via: m.Via, From: m.From.String(), Paths: p.paths(m.From)})
	}
}

func (p *peerProc) say(ctx context.Context, room, text string) error {
	p.mu.Lock()
	a, ok := p.rooms[room]
	if !ok {
		p.mu.Unlock()
		return fmt.Errorf("room %s not joined", room)
	}
	payload, err := (&protocol.Text{Nick: "natpeer", Body: text}).MarshalBinary()
	if err != nil {
		p.mu.Unlock()
		return err
	}
	a.seq++
	e := &protocol.Envelope{Kind: protocol.KindText, Room: room, Seq: a.seq, Prev: a.prev,
		Lamport: a.seq, Time: time.Now().UnixMilli(), Payload: payload}
	id, err := e.Sign(p.key)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	a.prev = id
	p.mu.Unlock()
	raw, err := e.MarshalBinary()
	if err != nil {
		return err
	}
	return a.room.PublishChecked(ctx, e, id, raw)
}

// paths returns the node's paths, to peer only if it is not empty.
func (p *peerProc) paths(only peer.ID) []Path {
	var out []Path
	for _, path := range p.node.Paths() {
		if only != "" && path.Peer != only {
			continue
		}
		jp := Path{Peer: path.Peer.String(), Kind: string(path.Kind), Transport: path.Transport, Remote: path.Remote, Inbound: path.Inbound}
		if path.Relay != "" {
			jp.Relay = path.Relay.String()
		}
		out = append(out, jp)
	}
	return out
}

package sim

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
	"github.com/prometheus/client_golang/prometheus"
)

// simPeer is one identity of the simulation: a person's node (in one
// room) or a relay's (in every room). Its key, address and store survive
// its sessions; mu guards the session and the author.
type simPeer struct {
	i     int
	relay bool
	room  int // -1 for a relay
	key   identity.PrivateKey
	id    peer.ID
	addr  multiaddr.Multiaddr

	mu     sync.Mutex
	sess   *session
	seq    uint64      // the author's last sequence number, across sessions
	prev   protocol.ID // and its last envelope
	nLinks int
}

// session is one run of a peer's node, from start to stop.
type session struct {
	host  *countingHost
	node  *mesh.Node
	store *store.Store
	reg   *prometheus.Registry
	rooms []*mesh.Room
	done  chan struct{} // closed when the node is closed: readers end
	wg    sync.WaitGroup
}

func newSimPeer(i int, relay bool, room int, seed uint64) (*simPeer, error) {
	s := make([]byte, ed25519.SeedSize)
	binary.BigEndian.PutUint64(s, seed)
	binary.BigEndian.PutUint64(s[8:], uint64(i))
	key, err := identity.PrivateKeyFromSeed(s)
	if err != nil {
		return nil, fmt.Errorf("sim: key of peer %d: %w", i, err)
	}
	id, err := mesh.PeerID(key.Public())
	if err != nil {
		return nil, err
	}
	// Loopback addresses, one per peer: mocknet never dials them.
	addr, err := multiaddr.NewMultiaddr(fmt.Sprintf("/ip4/127.%d.%d.%d/tcp/4001", 1+i>>16, i>>8&255, i&255))
	if err != nil {
		return nil, fmt.Errorf("sim: address of peer %d: %w", i, err)
	}
	return &simPeer{i: i, relay: relay, room: room, key: key, id: id, addr: addr}, nil
}

func (p *simPeer) libp2pKey() (lcrypto.PrivKey, error) {
	k, err := lcrypto.UnmarshalEd25519PrivateKey(p.key.Ed25519())
	if err != nil {
		return nil, fmt.Errorf("sim: libp2p key of peer %d: %w", p.i, err)
	}
	return k, nil
}

func (p *simPeer) info() peer.AddrInfo {
	return peer.AddrInfo{ID: p.id, Addrs: []multiaddr.Multiaddr{p.addr}}
}

// roomName is the room ID of room r.
func roomName(r int) string { return "sim-" + strconv.Itoa(r) }

// body is what message msg says; msgIndex reads it back.
func body(msg int) string { return "sim:" + strconv.Itoa(msg) }

func msgIndex(m mesh.Message) (int, bool) {
	t, err := protocol.ParseText(m.Env.Payload)
	if err != nil {
		return 0, false
	}
	s, ok := strings.CutPrefix(t.Body, "sim:")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// sign signs the peer's next envelope in its room saying body. The caller
// holds p.mu.
func (p *simPeer) sign(text string, now time.Time) (*protocol.Envelope, protocol.ID, []byte, error) {
	payload, err := (&protocol.Text{Nick: "sim", Body: text}).MarshalBinary()
	if err != nil {
		return nil, protocol.ID{}, nil, err
	}
	e := &protocol.Envelope{Kind: protocol.KindText, Room: roomName(p.room), Seq: p.seq + 1, Prev: p.prev,
		Lamport: p.seq + 1, Time: now.UnixMilli(), Payload: payload}
	id, err := e.Sign(p.key)
	if err != nil {
		return nil, protocol.ID{}, nil, fmt.Errorf("sim: sign: %w", err)
	}
	raw, err := e.MarshalBinary()
	if err != nil {
		return nil, protocol.ID{}, nil, fmt.Errorf("sim: encode: %w", err)
	}
	p.seq++
	p.prev = id
	return e, id, raw, nil
}

// publish signs and gossips a message, if the peer is up: record, given
// the time of publication, records it and returns its index.
func (p *simPeer) publish(ctx context.Context, record func(time.Time) int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sess == nil {
		return errNotUp
	}
	now := time.Now()
	e, id, raw, err := p.sign(body(record(now)), now)
	if err != nil {
		return err
	}
	return p.sess.rooms[0].PublishChecked(ctx, e, id, raw)
}

var errNotUp = errors.New("sim: peer is not up")

// openSession starts the peer's node on host h (already on the mocknet
// and linked), joins its rooms and hands every message to deliver.
func (p *simPeer) openSession(h *countingHost, dir string, rooms int, antiEntropy time.Duration, deliver func(mesh.Message)) (*session, error) {
	st, err := store.Open(filepath.Join(dir, fmt.Sprintf("peer%d.db", p.i)))
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("sim: store of peer %d: %w", p.i, err)
	}
	s := &session{host: h, store: st, reg: prometheus.NewRegistry(), done: make(chan struct{})}
	s.node, err = mesh.New(context.Background(), mesh.Config{
		Key: p.key, Store: st, Host: h, Registerer: s.reg, AntiEntropy: antiEntropy,
	})
	if err != nil {
		h.Close()
		st.Close()
		return nil, fmt.Errorf("sim: node of peer %d: %w", p.i, err)
	}
	names := []string{roomName(p.room)}
	if p.relay {
		names = names[:0]
		for r := range rooms {
			names = append(names, roomName(r))
		}
	}
	for _, name := range names {
		r, err := s.node.Join(name)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("sim: peer %d joins %s: %w", p.i, name, err)
		}
		s.rooms = append(s.rooms, r)
		s.wg.Add(1)
		go s.read(r, deliver)
	}
	return s, nil
}

// read hands the room's messages on until the session is closed.
func (s *session) read(r *mesh.Room, deliver func(mesh.Message)) {
	defer s.wg.Done()
	for {
		select {
		case m := <-r.Messages():
			deliver(m)
		case <-s.done:
			return
		}
	}
}

// close stops the node and its store, and returns the duplicates its
// gossipsub counted and what its queues dropped.
func (s *session) close() (dups, dropped int64) {
	dups = s.duplicates()
	dropped = s.node.Dropped()
	s.node.Close()
	s.host.detach()
	close(s.done)
	s.wg.Wait()
	s.store.Close()
	return dups, dropped
}

// duplicates reads the node's duplicates counter.
func (s *session) duplicates() int64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "parley_mesh_duplicates_total" && len(mf.GetMetric()) > 0 {
			return int64(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return 0
}

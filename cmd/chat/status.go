package main

import (
	"context"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/relay"
)

// statusJSON is what chat status --json prints.
type statusJSON struct {
	Fingerprint string          `json:"fingerprint"`
	Nick        string          `json:"nick"`
	Mode        string          `json:"mode"`
	Relay       *relayStatus    `json:"relay,omitempty"`  // the first relay
	Relays      []*relayStatus  `json:"relays,omitempty"` // every relay, in the config's order
	Mesh        *meshStatusJSON `json:"mesh,omitempty"`
}

type relayStatus struct {
	Address   string  `json:"address"`
	Status    string  `json:"status"`    // connecting, connected, down, refused
	Transport string  `json:"transport"` // quic or tcp, while connected
	Want      string  `json:"want"`      // auto, quic or tcp: what it may use
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	Error     string  `json:"error,omitempty"`
}

type meshStatusJSON struct {
	PeerID string     `json:"peer_id"`
	Listen []string   `json:"listen"`
	Peers  []pathJSON `json:"peers"`
}

// pathJSON is one connection to a mesh peer.
type pathJSON struct {
	Peer      string `json:"peer"`
	Path      string `json:"path"`      // direct, hole-punched, circuit
	Transport string `json:"transport"` // quic, tcp, ...
	Remote    string `json:"remote"`
	Relay     string `json:"relay,omitempty"` // a circuit's relay
}

// status prints where the session stands: the relay (its state, the
// transport, the round trip) and the mesh (its addresses, and each
// connection to a peer with its path: direct, hole-punched or through a
// circuit).
func (c *cli) status(args []string) int {
	fs := c.flags("status")
	asJSON := fs.Bool("json", false, "print one JSON object")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the relay and the configured peers")
	ctx, cl, done, code := c.parsedSession(func() error { return c.parse(fs, args, 0) }, timeout)
	if cl == nil {
		return code
	}
	defer done()
	c.awaitPeers(ctx, cl)
	v := c.statusOf(cl)
	if *asJSON {
		return c.printJSON(v)
	}
	c.printStatus(v)
	return exitOK
}

// awaitPeers waits, within ctx, until the mesh has a connection to every
// configured peer.
func (c *cli) awaitPeers(ctx context.Context, cl *client.Client) {
	n := cl.Node()
	if n == nil {
		return
	}
	var want []lpeer.ID
	for _, a := range cl.Config().Peers {
		if ai, err := lpeer.AddrInfoFromString(a); err == nil {
			want = append(want, ai.ID)
		}
	}
	for {
		missing := slices.ContainsFunc(want, func(id lpeer.ID) bool {
			return n.Host().Network().Connectedness(id) != network.Connected
		})
		if !missing {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *cli) statusOf(cl *client.Client) statusJSON {
	cfg := cl.Config()
	v := statusJSON{Fingerprint: cl.Key().Public().Fingerprint(), Nick: cfg.Nick, Mode: cfg.Mode}
	via, _ := relay.ParseVia(cfg.RelayTransport)
	for _, rc := range cl.Relays() {
		v.Relays = append(v.Relays, statusOfRelay(rc, via))
	}
	if len(v.Relays) > 0 {
		v.Relay = v.Relays[0]
	}
	if n := cl.Node(); n != nil {
		m := &meshStatusJSON{PeerID: n.ID().String(), Listen: n.Addrs(), Peers: []pathJSON{}}
		for _, p := range cl.MeshPaths() {
			m.Peers = append(m.Peers, pathOf(p))
		}
		v.Mesh = m
	}
	return v
}

// statusOfRelay is the state of the connection to a relay, reached over
// via.
func statusOfRelay(rc *relay.Client, via relay.Via) *relayStatus {
	st := rc.State()
	r := &relayStatus{Address: rc.Addr().String(), Status: st.Status.String(), Want: via.String()}
	if st.Status == relay.StatusConnected {
		r.Transport = st.Transport.String()
		r.RTTMillis = float64(st.RTT.Microseconds()) / 1000
	}
	if st.Err != nil {
		r.Error = oneLine(st.Err)
	}
	return r
}

func pathOf(p mesh.Path) pathJSON {
	j := pathJSON{Peer: p.Peer.String(), Path: string(p.Kind), Transport: p.Transport, Remote: p.Remote}
	if p.Relay != "" {
		j.Relay = p.Relay.String()
	}
	return j
}

func (c *cli) printStatus(v statusJSON) {
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "identity\t%s (%s), mode %s\n", v.Fingerprint, v.Nick, v.Mode)
	for _, r := range v.Relays {
		switch {
		case r.Status == "connected":
			fmt.Fprintf(tw, "relay\t%s: connected over %s, round trip %.1f ms\n", r.Address, r.Transport, r.RTTMillis)
		case r.Error != "":
			fmt.Fprintf(tw, "relay\t%s: %s: %s\n", r.Address, r.Status, r.Error)
		default:
			fmt.Fprintf(tw, "relay\t%s: %s\n", r.Address, r.Status)
		}
	}
	if m := v.Mesh; m != nil {
		fmt.Fprintf(tw, "mesh\t%s, %d connection(s)\n", m.PeerID, len(m.Peers))
	}
	tw.Flush()
	if v.Mesh == nil {
		return
	}
	for _, p := range v.Mesh.Peers {
		via := ""
		if p.Relay != "" {
			via = " via " + p.Relay
		}
		fmt.Fprintf(c.stdout, "  %s  %s over %s%s: %s\n", p.Peer, p.Path, p.Transport, via, p.Remote)
	}
}

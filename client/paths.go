package client

import (
	"time"

	"github.com/parleychat/parley/mesh"
)

// PathsEvent says how the session reaches its mesh peers now: how many
// peers it has a direct connection to, one that hole punching made, or
// only a circuit through a relay's mesh node. It is sent when the counts
// change.
type PathsEvent struct {
	Direct, HolePunched, Circuit int
}

func (*PathsEvent) event() {}

// MeshPaths returns the mesh node's connections and how each goes (nil
// without a mesh node).
func (c *Client) MeshPaths() []mesh.Path {
	if c.node == nil {
		return nil
	}
	return c.node.Paths()
}

// pathsEvery is how often the session looks at how its peers are
// reached: soon enough to show a circuit turning into a hole-punched
// connection while the person watches.
const pathsEvery = 2 * time.Second

// countPaths counts the peers by their best connection: direct, then
// hole-punched, then circuit.
func countPaths(paths []mesh.Path) PathsEvent {
	best := map[string]mesh.PathKind{}
	rank := map[mesh.PathKind]int{mesh.PathDirect: 3, mesh.PathHolePunched: 2, mesh.PathCircuit: 1}
	for _, p := range paths {
		id := p.Peer.String()
		if rank[p.Kind] > rank[best[id]] {
			best[id] = p.Kind
		}
	}
	var ev PathsEvent
	for _, k := range best {
		switch k {
		case mesh.PathDirect:
			ev.Direct++
		case mesh.PathHolePunched:
			ev.HolePunched++
		case mesh.PathCircuit:
			ev.Circuit++
		}
	}
	return ev
}

// watchPaths tells PathsEvent whenever the counts change, until the
// session ends.
func (c *Client) watchPaths() {
	defer c.wg.Done()
	t := time.NewTicker(pathsEvery)
	defer t.Stop()
	var last PathsEvent
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		if now := countPaths(c.node.Paths()); now != last {
			last = now
			c.emit(&now)
		}
	}
}

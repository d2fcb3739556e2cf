package mesh

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

// mdnsService is the DNS-SD service name under which Parley peers find
// each other on a local network.
const mdnsService = "parley-1"

type mdnsNotifee struct{ n *Node }

func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.n.host.ID() {
		return
	}
	ctx, cancel := context.WithTimeout(m.n.ctx, 10*time.Second)
	defer cancel()
	if err := m.n.host.Connect(ctx, ai); err != nil {
		m.n.log.Debug("mDNS peer", "peer", ai.ID, "err", err)
	}
}

func (n *Node) startMDNS() error {
	svc := mdns.NewMdnsService(n.host, mdnsService, mdnsNotifee{n})
	if err := svc.Start(); err != nil {
		return fmt.Errorf("mesh: mDNS: %w", err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		<-n.ctx.Done()
		svc.Close()
	}()
	return nil
}

package mesh

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The per-peer tables stay bounded however many peers come, and forget the
// earliest entry first.
func TestPerPeerTablesAreBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	l := newPeerLimits(1, 1, clock)
	p := penalties{now: clock}
	for i := range maxLimited + 10 {
		now = now.Add(time.Second)
		id := peer.ID(fmt.Sprint("peer", i))
		l.allow(id)
		p.add(id)
	}
	if len(l.peers) != maxLimited || len(p.peers) != maxPenalised {
		t.Fatalf("tables hold %d and %d peers, want at most %d and %d", len(l.peers), len(p.peers), maxLimited, maxPenalised)
	}
	if _, ok := l.peers[peer.ID("peer0")]; ok {
		t.Fatal("the idlest peer was kept")
	}
	if p.score(peer.ID(fmt.Sprint("peer", maxLimited+9))) != rejectPenalty {
		t.Fatal("the newest penalty was dropped")
	}
	// A rate-limited peer is refused once its burst is spent.
	q := peer.ID("busy")
	if !l.allow(q) || l.allow(q) {
		t.Fatal("burst of 1 not enforced")
	}
}

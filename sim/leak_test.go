package sim

import (
	"runtime"
	"testing"
	"time"
	"weak"
)

// TestStoppedNodeIsFreed stops a peer whose host stays reachable, as
// mocknet keeps a stopped peer's host for the rest of a run, and checks
// that the stopped node can still be collected: neither the host's muxer
// nor its network may hold on to it.
func TestStoppedNodeIsFreed(t *testing.T) {
	s, err := New(Config{
		Peers: 4, Rooms: 1,
		LatencyMin: time.Millisecond, LatencyMax: 5 * time.Millisecond,
		Bootstrap: 3, Seed: 1, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.mn.Close()
	if err := s.startAll(); err != nil {
		t.Fatal(err)
	}
	defer s.stopAll()
	for i, p := range s.peers {
		if err := p.publish(t.Context(), func(time.Time) int { return i }); err != nil {
			t.Fatal(err)
		}
	}
	p := s.peers[len(s.peers)-1]
	p.mu.Lock()
	h := p.sess.host.Host
	node := weak.Make(p.sess.node)
	p.mu.Unlock()
	s.mu.Lock()
	s.online[p.i] = false
	s.mu.Unlock()
	s.stopPeer(p)
	// Wait for the node's last goroutines to end, generously for a busy
	// machine: a healthy run frees it at the first collection.
	for deadline := time.Now().Add(30 * time.Second); node.Value() != nil && time.Now().Before(deadline); {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
	}
	if node.Value() != nil {
		t.Error("the stopped node is still in memory while its host is")
	}
	runtime.KeepAlive(h)
}

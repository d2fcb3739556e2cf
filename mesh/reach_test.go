package mesh

import "testing"

// TestHasPublicAddr: a node that listens on a public address is not
// forced private (it would hide that address behind its circuit).
func TestHasPublicAddr(t *testing.T) {
	for _, c := range []struct {
		listen []string
		want   bool
	}{
		{[]string{"/ip4/127.0.0.1/udp/0/quic-v1"}, false},
		{[]string{"/ip4/10.1.2.3/tcp/4001", "/ip4/192.168.1.9/udp/4001/quic-v1"}, false},
		{[]string{"/ip4/127.0.0.1/tcp/0", "/ip4/7.0.0.2/udp/4001/quic-v1"}, true},
		{[]string{"/ip6/2001:4860::1/tcp/4001"}, true},
	} {
		if got := hasPublicAddr(c.listen); got != c.want {
			t.Errorf("hasPublicAddr(%q) = %v, want %v", c.listen, got, c.want)
		}
	}
}

// TestCircuitSlots: a relay's slots per address leave room for many
// people behind one NAT, never more than its slots in all; a node that is
// no relay reserves nothing for slots.
func TestCircuitSlots(t *testing.T) {
	var none *CircuitConfig
	if none.slots() != 0 {
		t.Fatalf("no circuit relay: %d slots", none.slots())
	}
	rc := (&CircuitConfig{}).resources()
	if rc.MaxReservations != DefaultCircuitReservations || rc.MaxReservationsPerIP != circuitSlotsPerIP || rc.MaxReservationsPerASN != circuitSlotsPerASN {
		t.Fatalf("defaults: %d slots, %d per IP, %d per AS", rc.MaxReservations, rc.MaxReservationsPerIP, rc.MaxReservationsPerASN)
	}
	small := (&CircuitConfig{MaxReservations: 10}).resources()
	if small.MaxReservationsPerIP != 10 || small.MaxReservationsPerASN != 10 {
		t.Fatalf("10 slots: %d per IP, %d per AS", small.MaxReservationsPerIP, small.MaxReservationsPerASN)
	}
}

// TestRelaySetAddsOnlyNews: AddRelay runs at each meeting of a room's
// peers; giving a known relay again wakes no one waiting for relays.
func TestRelaySetAddsOnlyNews(t *testing.T) {
	rs := newRelaySet()
	ai, err := parseAddrs([]string{"/ip4/127.0.0.1/udp/4434/quic-v1/p2p/12D3KooWNDQCEcGFGyHnJLP7S1XaKUr1qemcXf7Pi9y1D74E4uHP"})
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.add(ai...); err != nil {
		t.Fatal(err)
	}
	_, changed := rs.list()
	if err := rs.add(ai...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
		t.Fatal("a known relay given again counted as a change")
	default:
	}
}

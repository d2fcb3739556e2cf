package server

import (
	"testing"
	"time"
)

// The pause between looks at another relay: it doubles while dials fail
// and while connections drop soon after they are made, is bounded, and
// starts over once a connection has held.
func TestRedial(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var r redial
	if got := r.wait(); got != federationRedialMin {
		t.Fatalf("at first: %v, want %v", got, federationRedialMin)
	}
	r.down(at(0))
	r.failed()
	r.down(at(time.Second))
	r.failed()
	if got := r.wait(); got != 4*federationRedialMin {
		t.Errorf("after two failed dials: %v, want %v", got, 4*federationRedialMin)
	}
	for range 10 {
		r.failed()
	}
	if got := r.wait(); got != federationRedialMax {
		t.Errorf("after many: %v, want the bound %v", got, federationRedialMax)
	}

	// A connection that holds: the pause starts over.
	r = redial{}
	r.down(at(0))
	r.failed()
	if !r.connected(at(2 * time.Second)) {
		t.Error("the first connection is not news")
	}
	r.up(at(2*time.Second + federationStable))
	if got := r.wait(); got != federationRedialMin {
		t.Errorf("after a connection held %v: %v, want %v", federationStable, got, federationRedialMin)
	}

	// A relay that accepts and hangs up at once: each reconnect counts as
	// a failure, the flapping is said once, and the reconnects are no
	// news while it lasts.
	r = redial{}
	now := at(0)
	var began int
	for i := range 8 {
		if r.down(now) {
			began++
		}
		if news := r.connected(now); news != (i == 0) {
			t.Errorf("reconnect %d: news %v, want %v", i, news, i == 0)
		}
		now = now.Add(r.wait() + time.Second) // it is gone when next looked at
	}
	if began != 1 {
		t.Errorf("flapping said %d times, want once", began)
	}
	if got := r.wait(); got != federationRedialMax {
		t.Errorf("after 8 connections dropped at once: %v, want %v", got, federationRedialMax)
	}
	// Then one holds: news again, and the pause starts over.
	r.down(now)
	r.connected(now)
	r.up(now.Add(federationStable))
	if got := r.wait(); got != federationRedialMin || r.flaps {
		t.Errorf("after a connection held: pause %v, flapping %v", got, r.flaps)
	}
}

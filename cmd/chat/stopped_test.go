package main

import "testing"

// In relay mode a listener ends when no relay serves its room any more:
// not at the first relay that stops, nor twice for one relay.
func TestStoppedRelays(t *testing.T) {
	st := stopped{}
	steps := []struct {
		room, relay string
		want        int
	}{
		{"a", "r1", 1}, {"a", "r1", 1}, {"b", "r2", 1}, {"a", "r2", 2},
	}
	for _, s := range steps {
		if got := st.add(s.room, s.relay); got != s.want {
			t.Errorf("%s stops %s: %d relays stopped, want %d", s.relay, s.room, got, s.want)
		}
	}
}

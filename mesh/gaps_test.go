package mesh

import (
	"testing"
	"time"

	"github.com/parleychat/parley/protocol"
)

// TestGapWatchHoldsUntilDue: an envelope whose predecessor was missing is
// handed back for a gap check once gapWait has passed, not before, oldest
// first; past gapMemory the oldest is handed back at once.
func TestGapWatchHoldsUntilDue(t *testing.T) {
	var g gapWatch
	defer g.stop()
	if g.due() != nil {
		t.Fatal("an empty watch has a timer running")
	}
	t0 := time.Unix(1_000_000, 0)
	held := func(i int) inbound { return inbound{id: protocol.ID{byte(i), byte(i >> 8)}} }
	if early := g.add(held(1), t0); len(early) != 0 {
		t.Fatalf("handed back %d at once", len(early))
	}
	g.add(held(2), t0.Add(time.Second))
	if g.due() == nil {
		t.Fatal("a watch holding envelopes has no timer")
	}
	if got := g.take(t0.Add(gapWait - time.Millisecond)); len(got) != 0 {
		t.Fatalf("took %d before their time", len(got))
	}
	got := g.take(t0.Add(gapWait))
	if len(got) != 1 || got[0].id != held(1).id {
		t.Fatalf("at the first one's time took %v, want the first one", got)
	}
	if got := g.take(t0.Add(time.Second + gapWait)); len(got) != 1 || got[0].id != held(2).id {
		t.Fatalf("at the second one's time took %v, want the second one", got)
	}
	if g.due() != nil {
		t.Fatal("an emptied watch has a timer running")
	}

	for i := range gapMemory {
		if early := g.add(held(i), t0); len(early) != 0 {
			t.Fatalf("handed back %d at once with %d held", len(early), i)
		}
	}
	early := g.add(held(gapMemory), t0)
	if len(early) != 1 || early[0].id != held(0).id {
		t.Fatalf("past gapMemory handed back %v, want the oldest", early)
	}
	if got := g.take(t0.Add(gapWait)); len(got) != gapMemory {
		t.Fatalf("took %d, want %d", len(got), gapMemory)
	}
}

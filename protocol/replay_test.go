package protocol

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// arrival is one envelope as a receiver gets it.
type arrival struct {
	e  *Envelope
	id ID
}

func arrive(t testing.TB, seed byte, room string, seq uint64, payload string) arrival {
	t.Helper()
	e, b := signed(t, key(t, seed), room, seq, payload)
	return arrival{e, IDOf(b)}
}

func fixedClock(at time.Time) func() time.Time { return func() time.Time { return at } }

func TestReplayInOrderAndDuplicates(t *testing.T) {
	g := ReplayGuard{Now: fixedClock(t0)}
	for seq := uint64(1); seq <= 5; seq++ {
		a := arrive(t, 1, "general", seq, "m")
		if err := g.Check(a.e, a.id, Live); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
	}
	a := arrive(t, 1, "general", 3, "m")
	err := g.Check(a.e, a.id, Live)
	if !errors.Is(err, ErrDuplicate) || !errors.Is(err, ErrReplay) {
		t.Fatalf("repeat: %v, want ErrDuplicate and ErrReplay", err)
	}
	// The same number from another sender, or in another room, is its own.
	for _, other := range []arrival{arrive(t, 2, "general", 3, "m"), arrive(t, 1, "random", 3, "m")} {
		if err := g.Check(other.e, other.id, Live); err != nil {
			t.Fatalf("independent stream: %v", err)
		}
	}
}

func TestReplayReorderedInsideWindow(t *testing.T) {
	g := ReplayGuard{Now: fixedClock(t0)}
	const n = 3 * WindowSize
	msgs := make([]arrival, n)
	for i := range msgs {
		msgs[i] = arrive(t, 1, "general", uint64(i+1), "m")
	}
	// Shuffle within blocks of half a window: every arrival stays inside
	// the window of the highest number seen so far.
	rng := rand.New(rand.NewPCG(1, 2))
	for lo := 0; lo < n; lo += WindowSize / 2 {
		blk := msgs[lo:min(lo+WindowSize/2, n)]
		rng.Shuffle(len(blk), func(i, j int) { blk[i], blk[j] = blk[j], blk[i] })
	}
	for _, a := range msgs {
		if err := g.Check(a.e, a.id, History); err != nil {
			t.Fatalf("seq %d: %v", a.e.Seq, err)
		}
	}
	// Each of them again is a duplicate, or below the window by now.
	for _, a := range msgs {
		if err := g.Check(a.e, a.id, History); !errors.Is(err, ErrReplay) {
			t.Fatalf("seq %d again: %v, want ErrReplay", a.e.Seq, err)
		}
	}
}

func TestReplayWindowEdges(t *testing.T) {
	g := ReplayGuard{Now: fixedClock(t0)}
	high := arrive(t, 1, "r", 5000, "m")
	if err := g.Check(high.e, high.id, Live); err != nil {
		t.Fatal(err)
	}
	// The oldest number still inside the window, and the first one below it.
	inside := arrive(t, 1, "r", 5000-WindowSize+1, "m")
	if err := g.Check(inside.e, inside.id, Live); err != nil {
		t.Fatalf("oldest in window: %v", err)
	}
	below := arrive(t, 1, "r", 5000-WindowSize, "m")
	if err := g.Check(below.e, below.id, Live); !errors.Is(err, ErrBelowWindow) || !errors.Is(err, ErrReplay) {
		t.Fatalf("below window: %v, want ErrBelowWindow", err)
	}
	// A gap forward is fine: numbers may be skipped.
	jump := arrive(t, 1, "r", 9000, "m")
	if err := g.Check(jump.e, jump.id, Live); err != nil {
		t.Fatalf("jump: %v", err)
	}
	if err := g.Check(high.e, high.id, Live); !errors.Is(err, ErrBelowWindow) {
		t.Fatalf("old high after jump: %v, want ErrBelowWindow", err)
	}
}

func TestReplayExpired(t *testing.T) {
	const skew = 2 * time.Minute
	a := arrive(t, 1, "r", 1, "m") // stamped t0
	for _, tc := range []struct {
		now  time.Time
		want error
	}{
		{t0.Add(skew), nil},
		{t0.Add(-skew), nil},
		{t0.Add(skew + time.Millisecond), ErrExpired},
		{t0.Add(-skew - time.Millisecond), ErrExpired},
	} {
		g := ReplayGuard{Skew: skew, Now: fixedClock(tc.now)}
		if err := g.Check(a.e, a.id, Live); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("now = t0%+v: %v, want %v", tc.now.Sub(t0), err, tc.want)
		}
		// The zero Delivery is held to the clock too.
		z := ReplayGuard{Skew: skew, Now: fixedClock(tc.now)}
		if err := z.Check(a.e, a.id, 0); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("zero Delivery at t0%+v: %v, want %v", tc.now.Sub(t0), err, tc.want)
		}
		// History is not held to the clock.
		h := ReplayGuard{Skew: skew, Now: fixedClock(tc.now)}
		if err := h.Check(a.e, a.id, History); err != nil {
			t.Errorf("history at t0%+v: %v", tc.now.Sub(t0), err)
		}
	}
	// An expired envelope does not enter the window.
	g := ReplayGuard{Skew: skew, Now: fixedClock(t0.Add(time.Hour))}
	_ = g.Check(a.e, a.id, Live)
	g.Now = fixedClock(t0)
	if err := g.Check(a.e, a.id, Live); err != nil {
		t.Fatalf("after an expired try: %v", err)
	}
}

func TestReplayEquivocation(t *testing.T) {
	g := ReplayGuard{Now: fixedClock(t0)}
	first := arrive(t, 1, "r", 42, "the deal is on")
	second := arrive(t, 1, "r", 42, "the deal is off")
	if err := g.Check(first.e, first.id, Live); err != nil {
		t.Fatal(err)
	}
	err := g.Check(second.e, second.id, Live)
	var eq *EquivocationError
	if !errors.Is(err, ErrEquivocation) || !errors.As(err, &eq) || errors.Is(err, ErrReplay) {
		t.Fatalf("second envelope as 42: %v, want *EquivocationError", err)
	}
	if eq.First != first.id || eq.Second != second.id || eq.Seq != 42 || eq.Room != "r" || eq.Sender != first.e.Sender {
		t.Fatalf("EquivocationError = %+v", eq)
	}
	// The first stays the accepted one.
	if err := g.Check(first.e, first.id, Live); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("first again: %v, want ErrDuplicate", err)
	}
}

func TestReplayStateSurvivesRestart(t *testing.T) {
	g := ReplayGuard{Now: fixedClock(t0)}
	var seen []arrival
	for _, seed := range []byte{1, 2} {
		for _, room := range []string{"a", "b"} {
			for seq := uint64(1); seq <= WindowSize+10; seq += 3 {
				a := arrive(t, seed, room, seq, "m")
				if err := g.Check(a.e, a.id, Live); err != nil {
					t.Fatal(err)
				}
				seen = append(seen, a)
			}
		}
	}
	state, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}

	var restarted ReplayGuard
	restarted.Now = fixedClock(t0)
	if err := restarted.UnmarshalBinary(state); err != nil {
		t.Fatal(err)
	}
	again, err := restarted.MarshalBinary()
	if err != nil || !bytes.Equal(again, state) {
		t.Fatalf("state changed across a restart: %v", err)
	}
	for _, a := range seen {
		if err := restarted.Check(a.e, a.id, Live); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay of %s seq %d after restart: %v, want ErrReplay", a.e.Room, a.e.Seq, err)
		}
	}
	// Equivocation is still seen after a restart, and new numbers still pass.
	last := seen[len(seen)-1]
	other := arrive(t, 2, "b", last.e.Seq, "something else")
	if err := restarted.Check(other.e, other.id, Live); !errors.Is(err, ErrEquivocation) {
		t.Fatalf("equivocation after restart: %v", err)
	}
	next := arrive(t, 2, "b", last.e.Seq+1, "m")
	if err := restarted.Check(next.e, next.id, Live); err != nil {
		t.Fatalf("new number after restart: %v", err)
	}
}

func TestReplayStateRejectsMalformed(t *testing.T) {
	g := ReplayGuard{Now: fixedClock(t0)}
	for seq := uint64(1); seq <= 3; seq++ {
		a := arrive(t, 1, "r", seq, "m")
		if err := g.Check(a.e, a.id, Live); err != nil {
			t.Fatal(err)
		}
	}
	good, _ := g.MarshalBinary()
	hdr := len(replayMagic) + 4
	entry := hdr + 32 + 1 + 1 + 2 // first entry's sequence number
	swap := bytes.Clone(good)
	copy(swap[entry:entry+8], []byte{0, 0, 0, 0, 0, 0, 0, 9}) // 9, then 2, 3: out of order
	zeroCount := bytes.Clone(good)
	zeroCount[entry-1], zeroCount[entry-2] = 0, 0
	for name, in := range map[string][]byte{
		"empty":        nil,
		"bad magic":    append([]byte("xarley"), good[6:]...),
		"truncated":    good[:len(good)-1],
		"trailing":     append(bytes.Clone(good), 0),
		"huge count":   append(append([]byte(replayMagic), 0xff, 0xff, 0xff, 0xff), good[hdr:]...),
		"out of order": swap,
		"no entries":   zeroCount,
	} {
		before, _ := g.MarshalBinary()
		if err := g.UnmarshalBinary(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
		if after, _ := g.MarshalBinary(); !bytes.Equal(before, after) {
			t.Errorf("%s: a failed restore changed the guard", name)
		}
	}
}

func TestReplayMemoryIsBounded(t *testing.T) {
	g := ReplayGuard{Now: fixedClock(t0)}
	e := &Envelope{Kind: KindText, Room: "r", Sender: key(t, 1).Public(), Time: t0.UnixMilli()}
	for seq := uint64(1); seq <= 20*WindowSize; seq++ {
		e.Seq = seq
		if err := g.Check(e, ID{byte(seq), byte(seq >> 8), 1}, History); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range g.streams {
		if len(w.ids) > WindowSize+WindowSize/2 {
			t.Fatalf("window holds %d IDs, want at most %d", len(w.ids), WindowSize+WindowSize/2)
		}
	}
}

package fuzz

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"math"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// The replay guard against a reference model of the rules that
// docs/protocol.md ("Replay protection") states. Per (sender, room):
//
//   - a live envelope whose time is more than the skew from the clock,
//     either way, is ErrExpired;
//   - a number at or below highest - 1024 is ErrBelowWindow;
//   - a number seen with the same ID is ErrDuplicate, with another ID
//     ErrEquivocation (the first stays);
//   - any other number is accepted, in any order, and the highest moves.
//
// Sequence number 0 is not a number a sender uses (1..MaxCounter): it is
// ErrMalformed. A refused envelope changes nothing. The model keeps every
// ID it accepted, forever, and compares numbers exactly; it shares no
// code with the guard.

// modelWindow is the documented window size.
const modelWindow = 1024

type modelKey struct {
	sender int
	room   string
}

type modelStream struct {
	high uint64
	ids  map[uint64]protocol.ID
}

type replayModel struct {
	now     time.Time
	skew    time.Duration
	streams map[modelKey]*modelStream
}

// tooFar reports whether an envelope dated t (Unix ms) is more than skew
// from now, computed exactly in big integers of nanoseconds.
func (m *replayModel) tooFar(t int64) bool {
	d := new(big.Int).Mul(big.NewInt(t), big.NewInt(int64(time.Millisecond)))
	d.Sub(big.NewInt(m.now.UnixNano()), d)
	return d.CmpAbs(big.NewInt(int64(m.skew))) > 0
}

// decide returns the errors Check may answer (nil: accept). When an
// envelope breaks two rules the documentation does not say which one is
// reported, so either is allowed; a refusal of any kind records nothing.
func (m *replayModel) decide(k modelKey, seq uint64, id protocol.ID, t int64, live bool) []error {
	var allowed []error
	if live && m.tooFar(t) {
		allowed = append(allowed, protocol.ErrExpired)
	}
	if seq == 0 {
		return append(allowed, protocol.ErrMalformed)
	}
	s := m.streams[k]
	switch {
	case s != nil && s.high >= modelWindow && seq <= s.high-modelWindow:
		allowed = append(allowed, protocol.ErrBelowWindow)
	case s != nil && s.ids[seq] == id && hasKey(s.ids, seq):
		allowed = append(allowed, protocol.ErrDuplicate)
	case s != nil && hasKey(s.ids, seq):
		allowed = append(allowed, protocol.ErrEquivocation)
	case len(allowed) == 0:
		if s == nil {
			s = &modelStream{ids: map[uint64]protocol.ID{}}
			m.streams[k] = s
		}
		s.ids[seq] = id
		s.high = max(s.high, seq)
		return nil
	}
	return allowed
}

func hasKey(m map[uint64]protocol.ID, k uint64) bool { _, ok := m[k]; return ok }

// encode is the saved state as docs/protocol.md and the format comment
// in protocol/replay.go describe it: the magic, the stream count, and per
// stream (sorted by sender key, then room) the sender, the room, and the
// numbers in the window with their IDs, ascending.
func (m *replayModel) encode(senders []identity.PublicKey) []byte {
	keys := make([]modelKey, 0, len(m.streams))
	for k := range m.streams {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b modelKey) int {
		if c := bytes.Compare(senders[a.sender].Bytes(), senders[b.sender].Bytes()); c != 0 {
			return c
		}
		return cmp.Compare(a.room, b.room)
	})
	out := append([]byte("parley-replay"), 1)
	out = binary.BigEndian.AppendUint32(out, uint32(len(keys)))
	for _, k := range keys {
		s := m.streams[k]
		var in []uint64
		for seq := range s.ids {
			if s.high < modelWindow || seq > s.high-modelWindow {
				in = append(in, seq)
			}
		}
		slices.Sort(in)
		out = append(out, senders[k.sender].Bytes()...)
		out = append(out, byte(len(k.room)))
		out = append(out, k.room...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(in)))
		for _, seq := range in {
			id := s.ids[seq]
			out = binary.BigEndian.AppendUint64(out, seq)
			out = append(out, id[:]...)
		}
	}
	return out
}

// replayRooms are the rooms of the fuzzed envelopes.
var replayRooms = [2]string{"general", "a:b"}

// replayOffsets are envelope times relative to the clock, in ms, chosen
// by the input (replayTime): on and around the skew's edges (of DefaultSkew and of
// the 1.5 s skew some runs use), and far away.
func replayOffsets(skew time.Duration) [14]int64 {
	s := skew.Milliseconds()
	return [14]int64{0, 1, -1, s, -s, s + 1, -s - 1, s - 1, -s + 1,
		1 << 58, -1 << 58, 3_600_000, -3_600_000, 1501}
}

// replayTime is the time of an envelope by the input's choice: an offset
// from the clock, or (14, 15) the largest and smallest time.
func replayTime(now time.Time, offsets [14]int64, sel byte) int64 {
	switch sel {
	case 14:
		return math.MaxInt64
	case 15:
		return math.MinInt64
	}
	return now.UnixMilli() - offsets[sel]
}

// replayRun applies one fuzz input to a guard and to the model.
type replayRun struct {
	t       *testing.T
	senders []identity.PublicKey
	guard   *protocol.ReplayGuard
	model   *replayModel
	history []uint64 // numbers used so far, for repeats
	// decisions counts the decisions by name, for TestReplaySeeds.
	decisions map[string]int
}

// newGuard returns a guard on the model's clock and skew setting.
func (r *replayRun) newGuard(skewField time.Duration) *protocol.ReplayGuard {
	now := r.model.now
	return &protocol.ReplayGuard{Skew: skewField, Now: func() time.Time { return now }}
}

// seq picks a sequence number near the stream's highest, by mode.
func (r *replayRun) seq(k modelKey, mode, arg byte) uint64 {
	var high uint64
	if s := r.model.streams[k]; s != nil {
		high = s.high
	}
	add := func(a, b uint64) uint64 { return min(a+b, protocol.MaxCounter) } // a, b < 2^63: no wrap
	sub := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return a - b
	}
	switch mode % 8 {
	case 0:
		return add(high, 1+uint64(arg%4))
	case 1:
		return sub(high, uint64(arg%16))
	case 2:
		return add(sub(high, modelWindow+4), uint64(arg%9))
	case 3:
		return add(high, modelWindow-4+uint64(arg%9))
	case 4:
		return uint64(arg)
	case 5:
		return protocol.MaxCounter - uint64(arg%4)
	case 6:
		if len(r.history) > 0 {
			return r.history[int(arg)%len(r.history)]
		}
		return 1
	default:
		return high
	}
}

// check applies one envelope to both and compares the decisions.
func (r *replayRun) check(k modelKey, seq uint64, id protocol.ID, tm int64, live bool) {
	r.t.Helper()
	e := &protocol.Envelope{Kind: protocol.KindText, Room: k.room, Sender: r.senders[k.sender], Seq: seq, Time: tm}
	how := protocol.History
	if live {
		how = protocol.Live
	}
	got := r.guard.Check(e, id, how)
	want := r.model.decide(k, seq, id, tm, live)
	r.history = append(r.history, seq)
	r.decisions[decisionName(got)]++
	if want == nil {
		if got != nil {
			r.t.Fatalf("Check(sender %d, %s, #%d, id %x, time %d, live %v) = %v; the rules accept it", k.sender, k.room, seq, id[:1], tm, live, got)
		}
		return
	}
	if got == nil {
		r.t.Fatalf("Check(sender %d, %s, #%d, id %x, time %d, live %v) accepted; the rules say %v", k.sender, k.room, seq, id[:1], tm, live, want)
	}
	matched := slices.ContainsFunc(want, func(s error) bool { return errors.Is(got, s) })
	if !matched {
		r.t.Fatalf("Check(sender %d, %s, #%d, id %x, time %d, live %v) = %v; the rules say one of %v", k.sender, k.room, seq, id[:1], tm, live, got, want)
	}
	replay := errors.Is(got, protocol.ErrDuplicate) || errors.Is(got, protocol.ErrBelowWindow)
	if errors.Is(got, protocol.ErrReplay) != replay || errors.Is(got, protocol.ErrDuplicate) && errors.Is(got, protocol.ErrBelowWindow) {
		r.t.Fatalf("%v: ErrReplay must hold exactly for a duplicate or a number below the window", got)
	}
	r.checkEquivocation(got, k, seq, id)
}

// checkEquivocation: an equivocation names the sender, room, number, the
// ID that stays and the one refused.
func (r *replayRun) checkEquivocation(err error, k modelKey, seq uint64, id protocol.ID) {
	r.t.Helper()
	var eq *protocol.EquivocationError
	if !errors.As(err, &eq) {
		if errors.Is(err, protocol.ErrEquivocation) {
			r.t.Fatalf("%v is ErrEquivocation but not an *EquivocationError", err)
		}
		return
	}
	first := r.model.streams[k].ids[seq]
	if !eq.Sender.Equal(r.senders[k.sender]) || eq.Room != k.room || eq.Seq != seq || eq.First != first || eq.Second != id {
		r.t.Fatalf("%+v: want sender %d, room %s, #%d, first %x, second %x", eq, k.sender, k.room, seq, first[:1], id[:1])
	}
}

// save compares the guard's saved state with the model's encoding, then
// goes on with a new guard restored from it, as after a restart.
func (r *replayRun) save(skewField time.Duration) {
	r.t.Helper()
	b, err := r.guard.MarshalBinary()
	if err != nil {
		r.t.Fatalf("MarshalBinary: %v", err)
	}
	if want := r.model.encode(r.senders); !bytes.Equal(b, want) {
		r.t.Fatalf("saved state differs from the documented encoding of the model:\n got %x\nwant %x", b, want)
	}
	g := r.newGuard(skewField)
	if err := g.UnmarshalBinary(b); err != nil {
		r.t.Fatalf("UnmarshalBinary of a saved state: %v", err)
	}
	r.guard = g
	r.decisions["saved"]++
}

// decisionName names the sentinel err wraps.
func decisionName(err error) string {
	for _, s := range []struct {
		err  error
		name string
	}{{protocol.ErrExpired, "ErrExpired"}, {protocol.ErrDuplicate, "ErrDuplicate"}, {protocol.ErrBelowWindow, "ErrBelowWindow"},
		{protocol.ErrEquivocation, "ErrEquivocation"}, {protocol.ErrMalformed, "ErrMalformed"}} {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	if err == nil {
		return "accepted"
	}
	return err.Error()
}

// FuzzReplayGuard: Check, on any sequence of envelopes from three
// senders in two rooms, decides as the documented rules do (the model
// above), also across MarshalBinary and UnmarshalBinary, and the saved
// state is the documented encoding of the model's state.
//
// The input is a skew setting (even: the guard's Skew left zero, so
// DefaultSkew; odd: 1.5 s) and up to 256 operations of four bytes each:
//
//   - byte 0: sender (bits 0-1, modulo 3), room (bit 2), live (bit 3),
//     and the operation (bits 4-7): 15 saves and restores the guard, 14
//     checks a run of 8 × byte 1 consecutive numbers (history delivery,
//     enough for the guard to prune), anything else checks one envelope;
//   - bytes 1 and 2: how to pick its number, and an argument (seq);
//   - byte 3: its ID (bits 0-1) and time (bits 2-5, replayTime).
func FuzzReplayGuard(f *testing.F) {
	var senders []identity.PublicKey
	for n := byte(1); n <= 3; n++ {
		senders = append(senders, testKey(f, n).Public())
	}
	for _, s := range replaySeeds() {
		f.Add(s.skew, s.ops)
	}
	f.Fuzz(func(t *testing.T, skewSel byte, ops []byte) {
		runReplay(t, senders, skewSel, ops)
	})
}

// runReplay applies the operations in ops to a guard and the model, and
// returns the run (its decisions).
func runReplay(t *testing.T, senders []identity.PublicKey, skewSel byte, ops []byte) *replayRun {
	var skewField time.Duration
	if skewSel%2 == 1 {
		skewField = 1500 * time.Millisecond
	}
	skew := cmp.Or(skewField, protocol.DefaultSkew)
	r := &replayRun{t: t, senders: senders, decisions: map[string]int{},
		model: &replayModel{now: time.UnixMilli(1764137501000), skew: skew, streams: map[modelKey]*modelStream{}}}
	r.guard = r.newGuard(skewField)
	offsets := replayOffsets(skew)
	for i := 0; i+4 <= len(ops) && i < 4*256; i += 4 {
		b0, b1, b2, b3 := ops[i], ops[i+1], ops[i+2], ops[i+3]
		k := modelKey{sender: int(b0&3) % 3, room: replayRooms[b0>>2&1]}
		switch b0 >> 4 {
		case 15:
			r.save(skewField)
			continue
		case 14: // a run of consecutive numbers from history, enough to prune
			s := r.seq(k, 0, 0)
			for j := range uint64(b1) * 8 {
				r.check(k, min(s+j, protocol.MaxCounter), protocol.ID{9}, 0, false)
			}
			continue
		}
		tm := replayTime(r.model.now, offsets, b3>>2&15)
		r.check(k, r.seq(k, b1, b2), protocol.ID{1 + b3&3}, tm, b0>>3&1 == 1)
	}
	r.save(skewField)
	return r
}

// TestReplaySeeds: the seeds of FuzzReplayGuard reach every decision.
func TestReplaySeeds(t *testing.T) {
	var senders []identity.PublicKey
	for n := byte(1); n <= 3; n++ {
		senders = append(senders, testKey(t, n).Public())
	}
	all := map[string]int{}
	for _, s := range replaySeeds() {
		for d, n := range runReplay(t, senders, s.skew, s.ops).decisions {
			all[d] += n
		}
	}
	for _, d := range []string{"accepted", "ErrDuplicate", "ErrEquivocation", "ErrBelowWindow", "ErrExpired", "ErrMalformed", "saved"} {
		if all[d] == 0 {
			t.Errorf("no seed reaches %s (decisions: %v)", d, all)
		}
	}
}

type replaySeed struct {
	skew byte
	ops  []byte
}

// replaySeeds cover every decision: accepted in and out of order,
// duplicate, equivocation, below the window, expired both ways and at
// the extremes of time, number 0, the largest number, a save and
// restore, and a run long enough that the guard prunes.
func replaySeeds() []replaySeed {
	const (
		live    = 8
		save    = 0xf0
		run     = 0xe0
		above   = 0 // the highest + 1 + arg%4
		recent  = 1 // the highest - arg%16
		edge    = 2 // the highest - 1028 + arg%9
		jump    = 3 // the highest + 1020 + arg%9
		abs     = 4 // arg
		top     = 5 // MaxCounter - arg%4
		repeat  = 6 // an earlier number
		highest = 7
	)
	at := func(offset byte) byte { return offset << 2 }
	return []replaySeed{
		{0, []byte{0, above, 0, 0, 0, repeat, 0, 0}},                                     // duplicate
		{0, []byte{0, above, 0, 0, 0, repeat, 0, 1}},                                     // equivocation
		{0, []byte{0, jump, 8, 0, 0, abs, 4, 0, 0, abs, 5, 0}},                           // below the window, then the lowest inside
		{0, []byte{0, above, 3, 0, 0, recent, 2, 2, 0, recent, 1, 3}},                    // out of order
		{0, []byte{live, above, 0, at(5), live, above, 0, at(6), live, above, 0, at(3)}}, // expired both ways, then on the edge
		{1, []byte{live, above, 0, at(3), live, above, 0, at(5), live, above, 0, at(12)}},
		{0, []byte{live, above, 0, at(14), live, above, 0, at(15), live, above, 0, at(9), 0, above, 0, at(15)}}, // extremes of time
		{0, []byte{0, abs, 0, 0, live, abs, 0, at(5)}},                                                          // number 0
		{0, []byte{0, top, 0, 0, 0, above, 0, 0, 0, above, 0, 1}},                                               // the largest number
		{0, []byte{1, above, 0, 0, 2, above, 0, 0, 4, above, 0, 0, 7, above, 0, 0, save, 0, 0, 0, 1, repeat, 0, 0, 2, repeat, 1, 1}},
		{0, []byte{run, 200, 0, 0, 0, edge, 4, 0, 0, edge, 5, 0, 0, edge, 3, 1, save, 0, 0, 0, 0, edge, 5, 0, 0, highest, 0, 0}},
	}
}

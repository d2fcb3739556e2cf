package roster

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/parleychat/parley/protocol"
)

// signAt signs change c as a's next envelope dated ms (Unix ms), with
// the parents and clock a would give it, without adding it anywhere.
func (a *actor) signAt(c *protocol.Change, ms int64) item {
	a.w.t.Helper()
	lamport := a.next(c)
	payload, err := c.MarshalBinary()
	if err != nil {
		a.w.t.Fatal(err)
	}
	it := signEnvelope(a.w.t, a.key, a.w.room, a.seq+1, a.prev, lamport, ms, payload)
	a.seq, a.prev, a.lamport = a.seq+1, it.id, max(a.lamport, lamport)
	return it
}

// TestInviteExpiryExtremes: an invite's expiry (u32 Unix seconds) at its
// extremes, against joins dated at the extremes of an envelope's time.
// The largest expiry (2106) does not wrap to expired; a join dated past
// the expiry is refused by its payload check (protocol.CheckPayload) and
// void in the log, the same verdict on both; a join dated before 1970 is
// before any expiry (the join's time is the joiner's claim: only the live
// skew bounds it).
func TestInviteExpiryExtremes(t *testing.T) {
	const maxExpiry = math.MaxUint32
	for _, tc := range []struct {
		name    string
		expires int64 // Unix s
		joined  int64 // Unix ms
		member  bool
	}{
		{"the largest expiry, joined now", maxExpiry, t0.UnixMilli(), true},
		{"the largest expiry, joined a millisecond before it", maxExpiry, maxExpiry*1000 - 1, true},
		{"the largest expiry, joined as it expires", maxExpiry, maxExpiry * 1000, false},
		{"the largest expiry, joined at the largest time", maxExpiry, math.MaxInt64, false},
		{"the largest expiry, joined at the smallest time", maxExpiry, math.MinInt64, true},
		{"expiry 1, joined at 0", 1, 0, true},
		{"expiry 1, joined at -1 ms", 1, -1, true},
		{"expiry 1, joined at 999 ms", 1, 999, true},
		{"expiry 1, joined at 1000 ms", 1, 1000, false},
		{"expiry 1, joined at the smallest time", 1, math.MinInt64, true},
	} {
		w, alice := newWorld(t)
		code := alice.invite(1, time.Unix(tc.expires, 0))
		if got := code.Expires().Unix(); got != tc.expires {
			t.Fatalf("%s: the code expires at %d, want %d", tc.name, got, tc.expires)
		}
		parsed, err := ParseCode(code.String())
		if err != nil || parsed.Cap.Expires != uint32(tc.expires) {
			t.Fatalf("%s: the code parsed back: %v, expires %d", tc.name, err, parsed.Cap.Expires)
		}
		bob := w.actor("bob", 2)
		it := bob.signAt(bob.joinChange(code), tc.joined)
		checked := protocol.CheckPayload(it.env)
		if tc.member != (checked == nil) {
			t.Errorf("%s: CheckPayload = %v, want accepted %v", tc.name, checked, tc.member)
		}
		if checked != nil && !errors.Is(checked, protocol.ErrMalformed) {
			t.Errorf("%s: CheckPayload = %v, want ErrMalformed", tc.name, checked)
		}
		// The log's own verdict, as if the payload check were skipped.
		if _, err := alice.log.Add(it.env, it.id); err != nil && !errors.Is(err, ErrRefused) {
			t.Fatalf("%s: Add: %v", tc.name, err)
		}
		if got := alice.log.IsMember(bob.pub); got != tc.member {
			t.Errorf("%s: member %v, want %v", tc.name, got, tc.member)
		}
	}
}

// TestRemovalTimeExtremes: a removal dated at the extremes of an
// envelope's time, against posts dated at the extremes, naming a head
// from before the removal. A post counts exactly when it is dated before
// the removal (Admit compares the two times as they are, with no
// arithmetic): a removal at the smallest time ends every post, one at the
// largest time lets every post but one dated at that same time through.
func TestRemovalTimeExtremes(t *testing.T) {
	times := []int64{math.MinInt64, math.MinInt64 + 1, -1, 0, 1, t0.UnixMilli(), math.MaxInt64 - 1, math.MaxInt64}
	for _, removed := range times {
		w, alice := newWorld(t)
		bob := w.actor("bob", 2)
		alice.do(add(bob))
		head := alice.log.Head()
		it := alice.signAt(remove(bob), removed)
		if _, err := alice.log.Add(it.env, it.id); err != nil {
			t.Fatalf("a removal at %d: %v", removed, err)
		}
		if alice.log.IsMember(bob.pub) {
			t.Fatalf("a removal at %d: bob is still a member", removed)
		}
		for _, posted := range times {
			err := alice.log.Admit(bob.pub, head, posted)
			want := posted < removed
			if want && err != nil || !want && !errors.Is(err, ErrRemoved) {
				t.Errorf("removed at %d, posted at %d: Admit = %v, want admitted %v", removed, posted, err, want)
			}
		}
	}
}

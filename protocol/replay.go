package protocol

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/parleychat/parley/identity"
	"golang.org/x/crypto/cryptobyte"
)

// WindowSize is how many sequence numbers below a sender's highest one the
// replay guard still tells apart. An envelope inside the window is accepted
// once, in any order; one below it is refused with ErrBelowWindow.
const WindowSize = 1024

// DefaultSkew is how far an envelope's timestamp may be from the receiver's
// clock, either way, for live delivery.
const DefaultSkew = 5 * time.Minute

// ReplayGuard decides whether a verified envelope is new. Per (sender, room)
// it keeps the highest sequence number seen and the IDs of the envelopes in
// a sliding window of WindowSize numbers below it (the idea of RFC 6479 and
// wireguard-go's replay filter, with IDs kept so that a second, different
// envelope under a used number is seen as equivocation, not as a replay).
//
// Give it only envelopes whose signature verified: a forged envelope must
// not move anybody's window.
//
// The zero value is ready to use with DefaultSkew and the system clock. It
// is safe for concurrent use. Its state is saved with MarshalBinary and
// restored with UnmarshalBinary, so that a restart does not reopen a window.
type ReplayGuard struct {
	// Skew is the largest accepted difference between an envelope's
	// timestamp and Now for live delivery. If zero, DefaultSkew.
	Skew time.Duration
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time

	mu      sync.Mutex
	streams map[streamKey]*window
}

type streamKey struct {
	sender [32]byte
	room   string
}

// window is one (sender, room)'s state: the highest sequence number seen,
// and the ID of every accepted envelope whose number is within WindowSize of
// it. IDs of older numbers are pruned lazily.
type window struct {
	high uint64
	ids  map[uint64]ID
}

// below reports whether seq is older than the window.
func (w *window) below(seq uint64) bool {
	return w.high >= WindowSize && seq <= w.high-WindowSize
}

func (w *window) add(seq uint64, id ID) {
	w.ids[seq] = id
	w.high = max(w.high, seq)
	// At most WindowSize numbers are inside the window, so a map this big
	// holds stale ones: drop them. Amortised, this is constant work.
	if len(w.ids) > WindowSize+WindowSize/2 {
		for s := range w.ids {
			if w.below(s) {
				delete(w.ids, s)
			}
		}
	}
}

// EquivocationError reports two different envelopes that a sender signed
// with the same room and sequence number. errors.Is(err, ErrEquivocation)
// holds for it.
type EquivocationError struct {
	Sender        identity.PublicKey
	Room          string
	Seq           uint64
	First, Second ID
}

func (e *EquivocationError) Error() string {
	return fmt.Sprintf("protocol: equivocation: %s signed envelopes %s and %s as number %d in %s",
		e.Sender.Fingerprint(), e.First, e.Second, e.Seq, e.Room)
}

func (e *EquivocationError) Unwrap() error { return ErrEquivocation }

// Delivery says how an envelope reached the receiver.
type Delivery int

const (
	// Live: just sent, on the mesh or by a relay's live stream. The
	// timestamp must be within the skew.
	Live Delivery = iota + 1
	// History: from a store (sync, relay history), possibly old. The
	// timestamp is not checked against the clock.
	History
)

// Check decides whether the verified envelope e with ID id is new, and if it
// is, records it. It returns nil for a new envelope; otherwise an error
// wrapping ErrExpired (Live only), ErrDuplicate, ErrBelowWindow (both also
// ErrReplay) or ErrEquivocation (an *EquivocationError).
func (g *ReplayGuard) Check(e *Envelope, id ID, how Delivery) error {
	if how != History { // anything but History is held to the clock
		if err := g.checkTime(e); err != nil {
			return err
		}
	}
	if e.Seq == 0 {
		return fmt.Errorf("%w: sequence number 0", ErrMalformed)
	}
	key := streamKey{sender: e.Sender.Array(), room: e.Room}

	g.mu.Lock()
	defer g.mu.Unlock()
	w := g.streams[key]
	if w == nil {
		if g.streams == nil {
			g.streams = make(map[streamKey]*window)
		}
		w = &window{ids: make(map[uint64]ID)}
		g.streams[key] = w
	}
	if w.below(e.Seq) {
		return fmt.Errorf("%w: number %d from %s in %s; highest seen %d", ErrBelowWindow, e.Seq, e.Sender.ShortFingerprint(), e.Room, w.high)
	}
	if seen, ok := w.ids[e.Seq]; ok {
		if seen == id {
			return fmt.Errorf("%w: %s", ErrDuplicate, id)
		}
		return &EquivocationError{Sender: e.Sender, Room: e.Room, Seq: e.Seq, First: seen, Second: id}
	}
	w.add(e.Seq, id)
	return nil
}

// Age is how long before now the time t (Unix milliseconds, an
// envelope's Time) is: negative for a time in the future. It saturates at
// the largest and smallest time.Duration instead of overflowing, so a time
// millions of years away is far from now, never near it. Compare
// envelope times with the clock through Age (or time.Time.Sub), never as
// time.Duration(now.UnixMilli()-t) * time.Millisecond, which wraps for
// |now-t| above 2^63 ns (about 292 years): an envelope dated 2^58 ms in the
// past would then look as if it were sent now.
func Age(now time.Time, t int64) time.Duration {
	return now.Sub(time.UnixMilli(t)) // time.Time.Sub saturates
}

// WithinSkew reports whether time t (Unix milliseconds) is within skew of now,
// either side, without overflow (Age).
func WithinSkew(now time.Time, t int64, skew time.Duration) bool {
	d := Age(now, t)
	return d <= skew && d >= -skew
}

func (g *ReplayGuard) checkTime(e *Envelope) error {
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	skew := g.Skew
	if skew == 0 {
		skew = DefaultSkew
	}
	d := Age(now(), e.Time)
	switch {
	case d > skew:
		return fmt.Errorf("%w: envelope is %v old, limit %v", ErrExpired, d.Round(time.Millisecond), skew)
	case d < -skew:
		return fmt.Errorf("%w: envelope is %v in the future, limit %v", ErrExpired, (-d).Round(time.Millisecond), skew)
	}
	return nil
}

// Saved replay state, as MarshalBinary writes it:
//
//	"parley-replay" 0x01
//	stream count (4 bytes), then per stream, sorted by sender, then room:
//	  sender (32 bytes), room (1-byte length, then bytes),
//	  entry count (2 bytes, at least 1), then per entry, by ascending number:
//	    sequence number (8 bytes), envelope ID (32 bytes)
//
// The highest number of a stream is its last entry's; every entry lies in
// the window below it. There is one encoding of a given state.
const replayMagic = "parley-replay\x01"

// MaxReplayState is the largest saved state UnmarshalBinary reads.
const MaxReplayState = 1 << 30

// MarshalBinary returns the guard's state.
func (g *ReplayGuard) MarshalBinary() ([]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	keys := make([]streamKey, 0, len(g.streams))
	for k := range g.streams {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	b := cryptobyte.NewBuilder(nil)
	b.AddBytes([]byte(replayMagic))
	b.AddUint32(uint32(len(keys)))
	for _, k := range keys {
		w := g.streams[k]
		seqs := make([]uint64, 0, len(w.ids))
		for s := range w.ids {
			if !w.below(s) {
				seqs = append(seqs, s)
			}
		}
		slices.Sort(seqs)
		b.AddBytes(k.sender[:])
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(k.room)) })
		b.AddUint16(uint16(len(seqs)))
		for _, s := range seqs {
			id := w.ids[s]
			b.AddUint64(s)
			b.AddBytes(id[:])
		}
	}
	return b.Bytes()
}

func compareKeys(a, b streamKey) int {
	if c := bytes.Compare(a.sender[:], b.sender[:]); c != 0 {
		return c
	}
	return cmp.Compare(a.room, b.room)
}

// UnmarshalBinary replaces the guard's state with a state MarshalBinary
// returned. Only that exact encoding is accepted; on error the guard is
// unchanged.
func (g *ReplayGuard) UnmarshalBinary(data []byte) error {
	if len(data) > MaxReplayState {
		return fmt.Errorf("%w: replay state of %d bytes", ErrTooLarge, len(data))
	}
	s := cryptobyte.String(data)
	var magic []byte
	if !s.ReadBytes(&magic, len(replayMagic)) || string(magic) != replayMagic {
		return fmt.Errorf("%w: not a replay state of this version", ErrMalformed)
	}
	var n uint32
	if !s.ReadUint32(&n) {
		return fmt.Errorf("%w: truncated replay state", ErrMalformed)
	}
	// Each stream takes at least 32+1+1+2+40 bytes: refuse a count the
	// input cannot hold before allocating for it.
	if uint64(n)*76 > uint64(len(s)) {
		return fmt.Errorf("%w: replay state claims %d streams in %d bytes", ErrMalformed, n, len(s))
	}
	streams := make(map[streamKey]*window, n)
	var prev *streamKey
	for i := range n {
		var (
			sender, room cryptobyte.String
			count        uint16
		)
		if !s.ReadBytes((*[]byte)(&sender), 32) || !s.ReadUint8LengthPrefixed(&room) || !s.ReadUint16(&count) {
			return fmt.Errorf("%w: truncated replay state at stream %d", ErrMalformed, i)
		}
		k := streamKey{room: string(room)}
		copy(k.sender[:], sender)
		if err := ValidRoom(k.room); err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
		if prev != nil && compareKeys(*prev, k) >= 0 {
			return fmt.Errorf("%w: replay state streams out of order at %d", ErrMalformed, i)
		}
		prev = &k
		if count == 0 || count > WindowSize {
			return fmt.Errorf("%w: stream %d has %d entries", ErrMalformed, i, count)
		}
		w := &window{ids: make(map[uint64]ID, count)}
		var last uint64
		for j := range count {
			var seq uint64
			var id []byte
			if !s.ReadUint64(&seq) || !s.ReadBytes(&id, len(ID{})) {
				return fmt.Errorf("%w: truncated replay state at stream %d entry %d", ErrMalformed, i, j)
			}
			if seq == 0 || seq > MaxCounter || (j > 0 && seq <= last) {
				return fmt.Errorf("%w: stream %d entry %d: number %d out of order", ErrMalformed, i, j, seq)
			}
			last = seq
			w.ids[seq] = ID(id)
		}
		w.high = last
		for seq := range w.ids {
			if w.below(seq) {
				return fmt.Errorf("%w: stream %d: number %d is below the window of %d", ErrMalformed, i, seq, last)
			}
		}
		streams[k] = w
	}
	if !s.Empty() {
		return fmt.Errorf("%w: %d trailing bytes after replay state", ErrMalformed, len(s))
	}
	g.mu.Lock()
	g.streams = streams
	g.mu.Unlock()
	return nil
}

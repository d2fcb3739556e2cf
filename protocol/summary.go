package protocol

import (
	"crypto/sha256"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// A summary lets two peers learn in one exchange that they hold the same
// envelopes of a room over a time range. Anti-entropy asks for one before
// it pages through the range: it almost always finds nothing missing, and
// paging costs the peer a read and parse of every envelope in the range,
// every minute, where a summary costs each side one read of their IDs.

// MaxSummaryCount is the most envelopes a summary covers. A responder
// that holds more in the range answers Over, and the asker pages instead.
const MaxSummaryCount = 1 << 16

// MaxSummaryRequest is the largest encoded summary request.
const MaxSummaryRequest = 2 + 1 + MaxRoomLen + 8 + 8

// SummaryLen is the length of an encoded summary.
const SummaryLen = 2 + 1 + 4 + sha256.Size

const (
	summaryRequestType = 3
	summaryType        = 4
)

// SummaryRequest asks for the summary of the envelopes of Room with
// Since <= time < Until. It travels on the sync protocol, as a sync
// message of its own type.
type SummaryRequest struct {
	Room         string
	Since, Until int64 // Unix milliseconds
}

// MarshalBinary returns the request's canonical encoding:
//
//	version (1), type (1 = 3), room (1-byte length, then bytes),
//	since, until (8 bytes each, two's complement)
func (r *SummaryRequest) MarshalBinary() ([]byte, error) {
	if err := ValidRoom(r.Room); err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 2+1+len(r.Room)+16))
	b.AddUint8(SyncVersion)
	b.AddUint8(summaryRequestType)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(r.Room)) })
	b.AddUint64(uint64(r.Since))
	b.AddUint64(uint64(r.Until))
	return b.Bytes()
}

// ParseSummaryRequest parses a summary request, strictly.
func ParseSummaryRequest(data []byte) (*SummaryRequest, error) {
	if len(data) > MaxSummaryRequest {
		return nil, fmt.Errorf("%w: summary request of %d bytes, limit %d", ErrTooLarge, len(data), MaxSummaryRequest)
	}
	s := cryptobyte.String(data)
	if err := readSyncHeader(&s, summaryRequestType); err != nil {
		return nil, err
	}
	var (
		room         cryptobyte.String
		since, until uint64
	)
	if !s.ReadUint8LengthPrefixed(&room) || !s.ReadUint64(&since) || !s.ReadUint64(&until) {
		return nil, fmt.Errorf("%w: truncated summary request", ErrMalformed)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: %d trailing bytes after summary request", ErrMalformed, len(s))
	}
	r := &SummaryRequest{Room: string(room), Since: int64(since), Until: int64(until)}
	if err := ValidRoom(r.Room); err != nil {
		return nil, err
	}
	return r, nil
}

// IsSummaryRequest reports whether a sync message is a summary request
// (by its header only), so that the responder knows which parser to use.
func IsSummaryRequest(data []byte) bool {
	return len(data) >= 2 && data[0] == SyncVersion && data[1] == summaryRequestType
}

// Summary is what a peer holds of a room over a time range: how many
// envelopes, and a digest of their IDs in (time, ID) order (SummaryOf).
// Over says the peer holds more than MaxSummaryCount; then Count and
// Digest are zero.
type Summary struct {
	Over   bool
	Count  int
	Digest [sha256.Size]byte
}

// summaryDomain separates the summary's digest from every other hash of
// IDs.
const summaryDomain = "parley sync summary 1\x00"

// SummaryOf returns the summary of the envelopes with the IDs ids, which
// must be in (time, ID) order, the order the store reads them in. More
// than MaxSummaryCount IDs make a summary that is Over.
func SummaryOf(ids []ID) Summary {
	if len(ids) > MaxSummaryCount {
		return Summary{Over: true}
	}
	h := sha256.New()
	h.Write([]byte(summaryDomain))
	for _, id := range ids {
		h.Write(id[:])
	}
	s := Summary{Count: len(ids)}
	h.Sum(s.Digest[:0])
	return s
}

// MarshalBinary returns the summary's canonical encoding:
//
//	version (1), type (1 = 4), over (1: 0 or 1), count (4), digest (32)
func (s *Summary) MarshalBinary() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, SummaryLen))
	b.AddUint8(SyncVersion)
	b.AddUint8(summaryType)
	over := uint8(0)
	if s.Over {
		over = 1
	}
	b.AddUint8(over)
	b.AddUint32(uint32(s.Count))
	b.AddBytes(s.Digest[:])
	return b.Bytes()
}

func (s *Summary) check() error {
	switch {
	case s.Count < 0 || s.Count > MaxSummaryCount:
		return fmt.Errorf("%w: summary of %d envelopes, limit %d", ErrMalformed, s.Count, MaxSummaryCount)
	case s.Over && (s.Count != 0 || s.Digest != [sha256.Size]byte{}):
		return fmt.Errorf("%w: a summary over the limit carries a count or digest", ErrMalformed)
	}
	return nil
}

// ParseSummary parses a summary, strictly.
func ParseSummary(data []byte) (*Summary, error) {
	s := cryptobyte.String(data)
	if err := readSyncHeader(&s, summaryType); err != nil {
		return nil, err
	}
	if len(data) != SummaryLen {
		return nil, fmt.Errorf("%w: summary of %d bytes, want %d", ErrMalformed, len(data), SummaryLen)
	}
	var (
		over  uint8
		count uint32
		out   Summary
	)
	if !s.ReadUint8(&over) || !s.ReadUint32(&count) || !s.CopyBytes(out.Digest[:]) {
		return nil, fmt.Errorf("%w: truncated summary", ErrMalformed)
	}
	if over > 1 {
		return nil, fmt.Errorf("%w: summary over flag %d", ErrMalformed, over)
	}
	if count > MaxSummaryCount {
		return nil, fmt.Errorf("%w: summary of %d envelopes, limit %d", ErrMalformed, count, MaxSummaryCount)
	}
	out.Over, out.Count = over == 1, int(count)
	if err := out.check(); err != nil {
		return nil, err
	}
	return &out, nil
}

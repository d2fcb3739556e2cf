package protocol

import (
	"crypto/sha256"
	"fmt"
	"math"

	"golang.org/x/crypto/cryptobyte"
)

// A summary lets two peers learn in one exchange which minutes of a
// room's recent past they hold the same envelopes of. Anti-entropy asks
// for one before it pages: it almost always finds nothing missing, and
// paging costs the peer a read and parse of every envelope in the range,
// every minute, where a summary costs each side one read of their IDs.
// The range is cut into buckets, each summarised on its own, so that a
// difference in one minute (an envelope still on its way to one of the
// two, say) makes the asker page through that minute alone.

// MaxSummaryCount is the most envelopes one summary response covers, over
// all its buckets. A responder that holds more answers Over for the
// bucket where its count passes the limit and for every later one, and
// the asker pages through those.
const MaxSummaryCount = 1 << 16

// MaxSummaryBuckets is the most buckets a summary request asks for.
const MaxSummaryBuckets = 64

// MaxSummaryStep is the widest bucket, in milliseconds: about 49 days.
const MaxSummaryStep = 1<<32 - 1

// MaxSummaryRequest is the largest encoded summary request.
const MaxSummaryRequest = 2 + 1 + MaxRoomLen + 8 + 4 + 1

// bucketLen is the length of one bucket's summary in a response.
const bucketLen = 1 + 4 + sha256.Size

// MaxSummaryResponse is the largest encoded summary response.
const MaxSummaryResponse = 2 + 1 + MaxSummaryBuckets*bucketLen

const (
	summaryRequestType = 3
	summaryType        = 4
)

// SummaryRequest asks for the summaries of the envelopes of Room in
// Buckets consecutive buckets of Step milliseconds each, from Since:
// bucket k holds those with Since + k·Step <= time < Since + (k+1)·Step.
// It travels on the sync protocol, as a sync message of its own type.
type SummaryRequest struct {
	Room    string
	Since   int64 // Unix milliseconds
	Step    int64 // milliseconds, 1..MaxSummaryStep
	Buckets int   // 1..MaxSummaryBuckets
}

// Bucket returns the time range of bucket k: since <= time < until.
func (r *SummaryRequest) Bucket(k int) (since, until int64) {
	since = r.Since + int64(k)*r.Step
	return since, since + r.Step
}

// Until is the end of the last bucket.
func (r *SummaryRequest) Until() int64 {
	_, until := r.Bucket(r.Buckets - 1)
	return until
}

// check reports whether r is a request this package encodes: a valid
// room, a step and count of buckets within their limits, and an end that
// is a time (no overflow past the last millisecond int64 holds).
func (r *SummaryRequest) check() error {
	if err := ValidRoom(r.Room); err != nil {
		return err
	}
	switch {
	case r.Step < 1 || r.Step > MaxSummaryStep:
		return fmt.Errorf("%w: summary step of %d ms, want 1..%d", ErrMalformed, r.Step, int64(MaxSummaryStep))
	case r.Buckets < 1 || r.Buckets > MaxSummaryBuckets:
		return fmt.Errorf("%w: %d summary buckets, want 1..%d", ErrMalformed, r.Buckets, MaxSummaryBuckets)
	case r.Since > math.MaxInt64-int64(r.Buckets)*r.Step:
		return fmt.Errorf("%w: summary buckets end past the last time", ErrMalformed)
	}
	return nil
}

// MarshalBinary returns the request's canonical encoding:
//
//	version (1), type (1 = 3), room (1-byte length, then bytes),
//	since (8 bytes, two's complement), step (4), buckets (1)
func (r *SummaryRequest) MarshalBinary() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 2+1+len(r.Room)+13))
	b.AddUint8(SyncVersion)
	b.AddUint8(summaryRequestType)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(r.Room)) })
	b.AddUint64(uint64(r.Since))
	b.AddUint32(uint32(r.Step))
	b.AddUint8(uint8(r.Buckets))
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
		room    cryptobyte.String
		since   uint64
		step    uint32
		buckets uint8
	)
	if !s.ReadUint8LengthPrefixed(&room) || !s.ReadUint64(&since) || !s.ReadUint32(&step) || !s.ReadUint8(&buckets) {
		return nil, fmt.Errorf("%w: truncated summary request", ErrMalformed)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: %d trailing bytes after summary request", ErrMalformed, len(s))
	}
	r := &SummaryRequest{Room: string(room), Since: int64(since), Step: int64(step), Buckets: int(buckets)}
	if err := r.check(); err != nil {
		return nil, err
	}
	return r, nil
}

// IsSummaryRequest reports whether a sync message is a summary request
// (by its header only), so that the responder knows which parser to use.
func IsSummaryRequest(data []byte) bool {
	return len(data) >= 2 && data[0] == SyncVersion && data[1] == summaryRequestType
}

// Summary is what a peer holds of a room over one bucket: how many
// envelopes, and a digest of their IDs in (time, ID) order (SummaryOf).
// Over says the responder did not count this bucket: it held more than
// its response may cover (MaxSummaryCount). Then Count and Digest are
// zero.
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

// emptySummary is the summary of no envelopes.
var emptySummary = SummaryOf(nil)

func (s *Summary) check() error {
	switch {
	case s.Count < 0 || s.Count > MaxSummaryCount:
		return fmt.Errorf("%w: summary of %d envelopes, limit %d", ErrMalformed, s.Count, MaxSummaryCount)
	case s.Over && (s.Count != 0 || s.Digest != [sha256.Size]byte{}):
		return fmt.Errorf("%w: a summary over the limit carries a count or digest", ErrMalformed)
	}
	return nil
}

// SummaryResponse answers a SummaryRequest: one summary per bucket asked
// for, in order.
type SummaryResponse struct {
	Buckets []Summary
}

// check reports whether the response is one a responder may send: 1 to
// MaxSummaryBuckets buckets, each valid, counting no more than
// MaxSummaryCount envelopes in all, with no bucket counted after one
// that is Over (the count passed the limit there), and an empty bucket's
// digest the digest of no IDs.
func (r *SummaryResponse) check() error {
	if n := len(r.Buckets); n < 1 || n > MaxSummaryBuckets {
		return fmt.Errorf("%w: %d summary buckets, want 1..%d", ErrMalformed, n, MaxSummaryBuckets)
	}
	total, over := 0, false
	for i, b := range r.Buckets {
		if err := b.check(); err != nil {
			return err
		}
		switch {
		case over && !b.Over:
			return fmt.Errorf("%w: summary bucket %d counted after one over the limit", ErrMalformed, i)
		case !b.Over && b.Count == 0 && b.Digest != emptySummary.Digest:
			return fmt.Errorf("%w: empty summary bucket %d with the digest of some IDs", ErrMalformed, i)
		}
		over = b.Over
		total += b.Count
	}
	if total > MaxSummaryCount {
		return fmt.Errorf("%w: summaries of %d envelopes in all, limit %d", ErrMalformed, total, MaxSummaryCount)
	}
	return nil
}

// MarshalBinary returns the response's canonical encoding:
//
//	version (1), type (1 = 4), buckets (1), then for each bucket:
//	over (1: 0 or 1), count (4), digest (32)
func (r *SummaryResponse) MarshalBinary() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 3+len(r.Buckets)*bucketLen))
	b.AddUint8(SyncVersion)
	b.AddUint8(summaryType)
	b.AddUint8(uint8(len(r.Buckets)))
	for _, s := range r.Buckets {
		over := uint8(0)
		if s.Over {
			over = 1
		}
		b.AddUint8(over)
		b.AddUint32(uint32(s.Count))
		b.AddBytes(s.Digest[:])
	}
	return b.Bytes()
}

// ParseSummaryResponse parses a summary response, strictly.
func ParseSummaryResponse(data []byte) (*SummaryResponse, error) {
	if len(data) > MaxSummaryResponse {
		return nil, fmt.Errorf("%w: summary response of %d bytes, limit %d", ErrTooLarge, len(data), MaxSummaryResponse)
	}
	s := cryptobyte.String(data)
	if err := readSyncHeader(&s, summaryType); err != nil {
		return nil, err
	}
	var n uint8
	if !s.ReadUint8(&n) {
		return nil, fmt.Errorf("%w: truncated summary response", ErrMalformed)
	}
	if len(s) != int(n)*bucketLen {
		return nil, fmt.Errorf("%w: %d bytes for %d summary buckets, want %d", ErrMalformed, len(s), n, int(n)*bucketLen)
	}
	out := &SummaryResponse{Buckets: make([]Summary, n)}
	for i := range out.Buckets {
		var (
			over  uint8
			count uint32
			b     = &out.Buckets[i]
		)
		if !s.ReadUint8(&over) || !s.ReadUint32(&count) || !s.CopyBytes(b.Digest[:]) {
			return nil, fmt.Errorf("%w: truncated summary response", ErrMalformed)
		}
		if over > 1 {
			return nil, fmt.Errorf("%w: summary over flag %d", ErrMalformed, over)
		}
		if count > MaxSummaryCount {
			return nil, fmt.Errorf("%w: summary of %d envelopes, limit %d", ErrMalformed, count, MaxSummaryCount)
		}
		b.Over, b.Count = over == 1, int(count)
	}
	if err := out.check(); err != nil {
		return nil, err
	}
	return out, nil
}

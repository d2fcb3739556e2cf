package protocol

import (
	"bytes"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Catch-up sync: a peer that was offline, or that sees a gap in a sender's
// hash chain, asks a neighbour for the envelopes of a room that it misses.
// The messages here are the bodies of one request and one response; the mesh
// frames them on a libp2p stream (see docs/protocol.md).

// SyncVersion is the version of the sync messages.
const SyncVersion = 1

// Limits of sync.
const (
	// MaxSyncPage is the most envelopes one response carries.
	MaxSyncPage = 256
	// MaxSyncHave is the most IDs a request may list as already held.
	MaxSyncHave = 256
	// MaxSyncRequest is the largest encoded request.
	MaxSyncRequest = 2 + 1 + MaxRoomLen + 8 + 8 + 8 + 32 + 2 + 2 + MaxSyncHave*32
	// MaxSyncResponse is the largest encoded response. A responder stops
	// adding envelopes before a page would pass it, and sets More.
	MaxSyncResponse = 4 << 20
)

const (
	syncRequestType  = 1
	syncResponseType = 2
)

// SyncRequest asks for the envelopes of Room with Since <= time < Until,
// after the cursor (After; exclusive), in (time, ID) order, skipping those
// whose IDs are in Have.
type SyncRequest struct {
	Room         string
	Since, Until int64 // Unix milliseconds
	AfterTime    int64
	AfterID      ID
	Limit        int  // 1..MaxSyncPage
	Have         []ID // strictly ascending, at most MaxSyncHave
}

func (r *SyncRequest) check() error {
	if err := ValidRoom(r.Room); err != nil {
		return err
	}
	if r.Limit < 1 || r.Limit > MaxSyncPage {
		return fmt.Errorf("%w: sync page limit %d outside 1..%d", ErrMalformed, r.Limit, MaxSyncPage)
	}
	if len(r.Have) > MaxSyncHave {
		return fmt.Errorf("%w: sync request lists %d IDs, limit %d", ErrTooLarge, len(r.Have), MaxSyncHave)
	}
	for i := 1; i < len(r.Have); i++ {
		if bytes.Compare(r.Have[i-1][:], r.Have[i][:]) >= 0 {
			return fmt.Errorf("%w: sync request IDs not strictly ascending", ErrMalformed)
		}
	}
	return nil
}

// MarshalBinary returns the request's canonical encoding:
//
//	version (1), type (1), room (1-byte length, then bytes),
//	since, until, after time (8 bytes each, two's complement), after ID (32),
//	limit (2), have count (2), then that many IDs (32 each)
func (r *SyncRequest) MarshalBinary() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 64+len(r.Room)+32*len(r.Have)))
	b.AddUint8(SyncVersion)
	b.AddUint8(syncRequestType)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(r.Room)) })
	b.AddUint64(uint64(r.Since))
	b.AddUint64(uint64(r.Until))
	b.AddUint64(uint64(r.AfterTime))
	b.AddBytes(r.AfterID[:])
	b.AddUint16(uint16(r.Limit))
	b.AddUint16(uint16(len(r.Have)))
	for _, id := range r.Have {
		b.AddBytes(id[:])
	}
	return b.Bytes()
}

// ParseSyncRequest parses a request, strictly.
func ParseSyncRequest(data []byte) (*SyncRequest, error) {
	if len(data) > MaxSyncRequest {
		return nil, fmt.Errorf("%w: sync request of %d bytes, limit %d", ErrTooLarge, len(data), MaxSyncRequest)
	}
	s := cryptobyte.String(data)
	if err := readSyncHeader(&s, syncRequestType); err != nil {
		return nil, err
	}
	var (
		r                SyncRequest
		room, afterID    cryptobyte.String
		since, until, at uint64
		limit, count     uint16
	)
	if !s.ReadUint8LengthPrefixed(&room) || !s.ReadUint64(&since) || !s.ReadUint64(&until) ||
		!s.ReadUint64(&at) || !s.ReadBytes((*[]byte)(&afterID), 32) || !s.ReadUint16(&limit) || !s.ReadUint16(&count) {
		return nil, fmt.Errorf("%w: truncated sync request", ErrMalformed)
	}
	if int(count) > MaxSyncHave || len(s) != int(count)*32 {
		return nil, fmt.Errorf("%w: sync request lists %d IDs in %d bytes", ErrMalformed, count, len(s))
	}
	r.Room, r.Since, r.Until, r.AfterTime = string(room), int64(since), int64(until), int64(at)
	copy(r.AfterID[:], afterID)
	r.Limit = int(limit)
	if count > 0 {
		r.Have = make([]ID, count)
		for i := range r.Have {
			copy(r.Have[i][:], s[32*i:])
		}
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	return &r, nil
}

// SyncResponse carries one page of envelopes, encoded, and whether there is
// more. When there is, the next request continues after (NextTime, NextID):
// the position of the last envelope the responder looked at, which may be
// one it left out because the request listed it in Have. The receiver
// parses and verifies every envelope as if it had come live.
type SyncResponse struct {
	Envelopes [][]byte
	More      bool
	NextTime  int64
	NextID    ID
}

// MarshalBinary returns the response's canonical encoding:
//
//	version (1), type (1), more (1: 0 or 1),
//	next time (8, two's complement), next ID (32), count (2),
//	then per envelope: 3-byte length, then the envelope
func (r *SyncResponse) MarshalBinary() ([]byte, error) {
	if len(r.Envelopes) > MaxSyncPage {
		return nil, fmt.Errorf("%w: sync page of %d envelopes, limit %d", ErrTooLarge, len(r.Envelopes), MaxSyncPage)
	}
	b := cryptobyte.NewBuilder(nil)
	b.AddUint8(SyncVersion)
	b.AddUint8(syncResponseType)
	more := uint8(0)
	if r.More {
		more = 1
	}
	b.AddUint8(more)
	b.AddUint64(uint64(r.NextTime))
	b.AddBytes(r.NextID[:])
	b.AddUint16(uint16(len(r.Envelopes)))
	for _, e := range r.Envelopes {
		if len(e) == 0 || len(e) > MaxEnvelopeSize {
			return nil, fmt.Errorf("%w: envelope of %d bytes in a sync page", ErrMalformed, len(e))
		}
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e) })
	}
	out, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	if len(out) > MaxSyncResponse {
		return nil, fmt.Errorf("%w: sync response of %d bytes, limit %d", ErrTooLarge, len(out), MaxSyncResponse)
	}
	return out, nil
}

// ParseSyncResponse parses a response, strictly. It does not parse the
// envelopes it carries; it checks only that each is of a possible size.
func ParseSyncResponse(data []byte) (*SyncResponse, error) {
	if len(data) > MaxSyncResponse {
		return nil, fmt.Errorf("%w: sync response of %d bytes, limit %d", ErrTooLarge, len(data), MaxSyncResponse)
	}
	s := cryptobyte.String(data)
	if err := readSyncHeader(&s, syncResponseType); err != nil {
		return nil, err
	}
	var (
		more     uint8
		count    uint16
		nextTime uint64
		nextID   []byte
	)
	if !s.ReadUint8(&more) || !s.ReadUint64(&nextTime) || !s.ReadBytes(&nextID, 32) || !s.ReadUint16(&count) {
		return nil, fmt.Errorf("%w: truncated sync response", ErrMalformed)
	}
	if more > 1 {
		return nil, fmt.Errorf("%w: sync response more flag %d", ErrMalformed, more)
	}
	if count > MaxSyncPage {
		return nil, fmt.Errorf("%w: sync page of %d envelopes, limit %d", ErrMalformed, count, MaxSyncPage)
	}
	r := &SyncResponse{More: more == 1, NextTime: int64(nextTime), NextID: ID(nextID), Envelopes: make([][]byte, 0, count)}
	for i := range int(count) {
		var e cryptobyte.String
		if !s.ReadUint24LengthPrefixed(&e) {
			return nil, fmt.Errorf("%w: truncated sync response at envelope %d", ErrMalformed, i)
		}
		if len(e) == 0 || len(e) > MaxEnvelopeSize {
			return nil, fmt.Errorf("%w: envelope %d of %d bytes in a sync page", ErrMalformed, i, len(e))
		}
		r.Envelopes = append(r.Envelopes, bytes.Clone(e))
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: %d trailing bytes after sync response", ErrMalformed, len(s))
	}
	return r, nil
}

func readSyncHeader(s *cryptobyte.String, want uint8) error {
	var version, typ uint8
	if !s.ReadUint8(&version) {
		return fmt.Errorf("%w: empty sync message", ErrMalformed)
	}
	if version != SyncVersion {
		return fmt.Errorf("%w: sync version %d, this code knows %d", ErrUnknownVersion, version, SyncVersion)
	}
	if !s.ReadUint8(&typ) || typ != want {
		return fmt.Errorf("%w: sync message type %d, want %d", ErrMalformed, typ, want)
	}
	return nil
}

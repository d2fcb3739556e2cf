package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/protocol"
)

// FrameHeaderSize is the size of a frame header: type and body length.
const FrameHeaderSize = 5

// MaxFrameBody is the largest body any frame may have: an envelope of the
// maximum size with room to spare. The transport refuses a longer one
// before reading it.
const MaxFrameBody = protocol.MaxEnvelopeSize + 1024

// Limits of the list frames.
const (
	MaxFetchIDs      = 256 // IDs in one FetchIDs
	MaxFetchLimit    = protocol.MaxSyncPage
	MaxPeerAddrs     = 64  // addresses in one Peers frame
	MaxPeerAddrLen   = 512 // bytes of one address
	MaxErrorMessage  = 512 // bytes of an error's text
	MaxRelayVersions = 16
	MaxInviteToken   = 64  // bytes of an invite token
	MaxGetKeys       = 256 // identities in one GetKeys
	MaxRoomsFrame    = 512 // rooms in one Rooms frame
	// MaxRooms is the most rooms the relay lists in answer to one
	// RoomsRequest, in several Rooms frames: past it, End says more, and
	// the client asks again after the last room it got.
	MaxRooms = 4096
	// MaxKeyPackage is the largest key package a PutKeys or KeyPackage
	// frame carries: the encoding of package crypto/keypackage.
	MaxKeyPackage = keypackage.MaxSize
)

// FrameType says what a frame's body holds.
type FrameType uint8

// The frame types. Requests go from client to relay, the rest back. Each
// body's layout is beside its type: sizes in bytes, integers big-endian;
// room is a u8 length then the name, text a u16 length then UTF-8, ID 32
// bytes (zeros: none). docs/relay-protocol.md has each field's rules.
const (
	// FramePublish (request): an envelope to store and pass on.
	//	envelope  0..65,536  the encoded envelope, as signed
	FramePublish FrameType = 1
	// FrameAck: a publish is committed.
	//	id 32 | status 1 (1 stored, 2 duplicate) | pos 8 | time 8
	//	| has receipt 1 | [receipt index 8 | receipt time 8
	//	| policy version 8 | checkpoint u16+c (empty: the previous one's)
	//	| proof u8 count p, 32p | shared 1 (last s hashes of the previous)]
	FrameAck FrameType = 2
	// FrameNack: a publish was refused.
	//	id 32 (of the bytes sent) | code 2 (not 0) | message text ≤ 512
	FrameNack FrameType = 3
	// FrameError: the stream ends with an error.
	//	code 2 | message text ≤ 512
	FrameError FrameType = 4
	// FrameSubscribe (request): a room's history from a cursor, then live.
	//	room 1+n | cursor 32 (zeros: from the oldest kept)
	FrameSubscribe FrameType = 5
	// FrameEnvelope: one stored envelope.
	//	envelope  ≤ 65,536  byte for byte as its sender signed it
	FrameEnvelope FrameType = 6
	// FrameLive: a subscription's history is done; live from here.
	//	(empty)
	FrameLive FrameType = 7
	// FrameFetchRange (request): a room's envelopes in a time range.
	//	room 1+n | since 8 | until 8 (≥ since) | after 32 (paging cursor)
	//	| limit 2 (1..256)
	FrameFetchRange FrameType = 8
	// FrameFetchIDs (request): envelopes by ID.
	//	count k 2 (1..256) | ids 32k
	FrameFetchIDs FrameType = 9
	// FrameEnd: a fetch is done.
	//	more 1 (0 or 1)
	FrameEnd FrameType = 10
	// FramePeersRequest (request): mesh addresses of a room's peers.
	//	room 1+n
	FramePeersRequest FrameType = 11
	// FramePeers: the addresses.
	//	count k 1 (0..64) | k × text (1..512 bytes, starts with /)
	FramePeers FrameType = 12
	// FrameInfoRequest (request): the relay's versions, limits and policy.
	//	(empty)
	FrameInfoRequest FrameType = 13
	// FrameInfo: the answer.
	//	versions u8 v (1..16), v bytes | max envelope 4 | publish rate 4
	//	| publish burst 4 | retention days 4 | policy 1 (1..3)
	//	| policy version 8
	FrameInfo FrameType = 14
	// FrameRedeem (request): join the allow list with an invite token.
	//	token 1..64 bytes of 0x21..0x7E, not length-prefixed
	FrameRedeem FrameType = 15
	// FrameRedeemed: the invite worked.
	//	(empty)
	FrameRedeemed FrameType = 16
	// FrameCommitted: a subscription's envelopes up to one are on disk.
	//	id 32
	FrameCommitted FrameType = 17
	// FrameProveTree (request): consistency proofs between audit log
	// sizes.
	//	new 8 | count k 1 (1..64) | old 8k (each 1..new)
	FrameProveTree FrameType = 18
	// FrameTreeProof: the proofs, in the order asked.
	//	count k 1 (1..64) | k × (u8 count p ≤ 64, 32p)
	FrameTreeProof FrameType = 19
	// FramePutKeys (request): store the connection's identity's key
	// package, its newest, for others to encrypt to.
	//	package 1..MaxKeyPackage  the encoded key package, as signed
	FramePutKeys FrameType = 20
	// FrameKeysStored: the key package is stored.
	//	(empty)
	FrameKeysStored FrameType = 21
	// FrameGetKeys (request): the newest key packages of identities.
	//	count k 2 (1..256) | keys 32k (identity public keys, distinct)
	FrameGetKeys FrameType = 22
	// FrameKeyPackage: one stored key package, in answer to GetKeys.
	//	package 1..MaxKeyPackage  byte for byte as its identity signed it
	FrameKeyPackage FrameType = 23
	// FrameRoomsRequest (request): the private rooms the connection's
	// identity is a member of, after a room (paging).
	//	(empty) or after 1+n (a private room ID)
	FrameRoomsRequest FrameType = 24
	// FrameRooms: some of those rooms, in ascending order; one or more
	// Rooms frames answer a RoomsRequest, then an End.
	//	count k 2 (0..512) | k × room 1+n
	FrameRooms FrameType = 25
)

var frameNames = [...]string{
	FramePublish: "publish", FrameAck: "ack", FrameNack: "nack", FrameError: "error",
	FrameSubscribe: "subscribe", FrameEnvelope: "envelope", FrameLive: "live",
	FrameFetchRange: "fetch-range", FrameFetchIDs: "fetch-ids", FrameEnd: "end",
	FramePeersRequest: "peers-request", FramePeers: "peers",
	FrameInfoRequest: "info-request", FrameInfo: "info",
	FrameRedeem: "redeem", FrameRedeemed: "redeemed", FrameCommitted: "committed",
	FrameProveTree: "prove-tree", FrameTreeProof: "tree-proof",
	FramePutKeys: "put-keys", FrameKeysStored: "keys-stored", FrameGetKeys: "get-keys", FrameKeyPackage: "key-package",
	FrameRoomsRequest: "rooms-request", FrameRooms: "rooms",
}

// Known reports whether t is a frame type of this protocol version. A
// relay refuses a frame of a type it does not know with an Error frame,
// code CodeBadFrame, whose text contains "unknown type N" (ParseFrameHeader):
// a relay older than a request answers it so, and a client tells the
// user (relay.ErrUnsupported) by that text, so it must not change.
func (t FrameType) Known() bool { return t >= FramePublish && t <= FrameRooms }

func (t FrameType) String() string {
	if t.Known() {
		return frameNames[t]
	}
	return fmt.Sprintf("frame(%d)", uint8(t))
}

// ErrBadFrame: a frame that does not parse.
var ErrBadFrame = errors.New("wire: malformed frame")

// ErrFrameTooLarge: a frame header names a body over the limit. It wraps
// ErrBadFrame too.
var ErrFrameTooLarge = fmt.Errorf("%w: too large", ErrBadFrame)

func badFrame(t FrameType, why string) error {
	return fmt.Errorf("%w: %s: %s", ErrBadFrame, t, why)
}

// AppendFrame appends a frame of type t with body to dst.
func AppendFrame(dst []byte, t FrameType, body []byte) []byte {
	dst = append(dst, byte(t))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}

// ParseFrameHeader returns a header's type and body length. It refuses an
// unknown type and a body longer than MaxFrameBody, so the caller never
// reads or allocates for one.
func ParseFrameHeader(h [FrameHeaderSize]byte) (FrameType, int, error) {
	t := FrameType(h[0])
	if !t.Known() {
		return t, 0, fmt.Errorf("%w: unknown type %d", ErrBadFrame, h[0])
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > MaxFrameBody {
		return t, 0, fmt.Errorf("%w: %s: body of %d bytes, limit %d", ErrFrameTooLarge, t, n, MaxFrameBody)
	}
	return t, int(n), nil
}

// ErrorCode says why the relay refused something. The same codes close
// streams and connections (as QUIC application error codes).
type ErrorCode uint16

// The error codes; docs/relay-protocol.md says when each is sent.
const (
	CodeOK            ErrorCode = 0  // no error: a normal close
	CodeBadFrame      ErrorCode = 1  // a frame that does not parse, or of the wrong type here
	CodeTooLarge      ErrorCode = 2  // a frame or envelope over the limit
	CodeBadEnvelope   ErrorCode = 3  // an envelope that does not parse or verify
	CodeNotSender     ErrorCode = 4  // the envelope's sender is not the connection's identity
	CodeForbidden     ErrorCode = 5  // the policy refuses this
	CodeRateLimited   ErrorCode = 6  // over the rate; retry later
	CodeEquivocation  ErrorCode = 7  // another envelope has this sender, room and number
	CodeStale         ErrorCode = 8  // the envelope's time is outside the accepted skew
	CodeUnknownCursor ErrorCode = 9  // the subscription's cursor is not a stored envelope of the room
	CodeSlowConsumer  ErrorCode = 10 // the client did not read fast enough
	CodeShuttingDown  ErrorCode = 11 // the relay is stopping; reconnect later
	CodeInternal      ErrorCode = 12 // the relay failed; nothing was committed
	CodeNotAllowed    ErrorCode = 13 // the identity may not connect (allow list, invite)
	CodeBanned        ErrorCode = 14 // the identity is banned
	CodeTooMany       ErrorCode = 15 // the relay is at its connection limit
	CodeUnsupported   ErrorCode = 16 // an envelope of a newer version
	CodeIdle          ErrorCode = 17 // a stream that asked nothing in time
	CodeNotMember     ErrorCode = 18 // not a member of this private room
	CodeBadKeyPackage ErrorCode = 19 // a key package that does not parse or verify
	CodeExpired       ErrorCode = 20 // a key package that has expired, or is made too far in the future
)

var codeNames = [...]string{
	CodeOK: "ok", CodeBadFrame: "bad frame", CodeTooLarge: "too large",
	CodeBadEnvelope: "bad envelope", CodeNotSender: "not the sender",
	CodeForbidden: "forbidden", CodeRateLimited: "rate limited",
	CodeEquivocation: "equivocation", CodeStale: "stale",
	CodeUnknownCursor: "unknown cursor", CodeSlowConsumer: "slow consumer",
	CodeShuttingDown: "shutting down", CodeInternal: "internal error",
	CodeNotAllowed: "not allowed", CodeBanned: "banned", CodeTooMany: "too many",
	CodeUnsupported: "unsupported", CodeIdle: "idle", CodeNotMember: "not a member",
	CodeBadKeyPackage: "bad key package", CodeExpired: "expired",
}

func (c ErrorCode) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code %d", uint16(c))
}

// RelayError is an error the relay sent: a Nack, an Error frame, or the
// code a stream or connection was closed with.
type RelayError struct {
	Code    ErrorCode
	Message string
}

func (e *RelayError) Error() string {
	if e.Message == "" {
		return "relay: " + e.Code.String()
	}
	return "relay: " + e.Code.String() + ": " + e.Message
}

// Is makes errors.Is(err, &RelayError{Code: c}) match any RelayError with
// code c.
func (e *RelayError) Is(target error) bool {
	t, ok := target.(*RelayError)
	return ok && t.Code == e.Code
}

func addText(b *cryptobyte.Builder, s string) {
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
}

func readText(s *cryptobyte.String, max int, out *string) bool {
	var v cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&v) || len(v) > max || !utf8.Valid(v) {
		return false
	}
	for _, r := range string(v) {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	*out = string(v)
	return true
}

func addRoom(b *cryptobyte.Builder, room string) {
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(room)) })
}

func readRoom(s *cryptobyte.String, out *string) bool {
	var v cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&v) || protocol.ValidRoom(string(v)) != nil {
		return false
	}
	*out = string(v)
	return true
}

func readID(s *cryptobyte.String, id *protocol.ID) bool { return s.CopyBytes(id[:]) }

func build(f func(*cryptobyte.Builder)) []byte {
	b := cryptobyte.NewBuilder(nil)
	f(b)
	return b.BytesOrPanic()
}

package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"

	"github.com/parleychat/parley/protocol"
)

// RelayALPN is the TLS application protocol of this version of the relay
// protocol. A relay that speaks another version fails the handshake.
const RelayALPN = "parley-relay/1"

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
	MaxInviteToken   = 64 // bytes of an invite token
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
)

var frameNames = [...]string{
	FramePublish: "publish", FrameAck: "ack", FrameNack: "nack", FrameError: "error",
	FrameSubscribe: "subscribe", FrameEnvelope: "envelope", FrameLive: "live",
	FrameFetchRange: "fetch-range", FrameFetchIDs: "fetch-ids", FrameEnd: "end",
	FramePeersRequest: "peers-request", FramePeers: "peers",
	FrameInfoRequest: "info-request", FrameInfo: "info",
	FrameRedeem: "redeem", FrameRedeemed: "redeemed", FrameCommitted: "committed",
	FrameProveTree: "prove-tree", FrameTreeProof: "tree-proof",
}

// Known reports whether t is a frame type of this protocol version.
func (t FrameType) Known() bool { return t >= FramePublish && t <= FrameTreeProof }

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
)

var codeNames = [...]string{
	CodeOK: "ok", CodeBadFrame: "bad frame", CodeTooLarge: "too large",
	CodeBadEnvelope: "bad envelope", CodeNotSender: "not the sender",
	CodeForbidden: "forbidden", CodeRateLimited: "rate limited",
	CodeEquivocation: "equivocation", CodeStale: "stale",
	CodeUnknownCursor: "unknown cursor", CodeSlowConsumer: "slow consumer",
	CodeShuttingDown: "shutting down", CodeInternal: "internal error",
	CodeNotAllowed: "not allowed", CodeBanned: "banned", CodeTooMany: "too many",
	CodeUnsupported: "unsupported", CodeIdle: "idle",
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

// AckStatus says what a committed publish was.
type AckStatus uint8

const (
	// AckStored: the envelope is new and committed.
	AckStored AckStatus = 1
	// AckDuplicate: the relay had committed this envelope before; a
	// client that resends after a lost acknowledgement gets this.
	AckDuplicate AckStatus = 2
)

// Ack acknowledges a publish once the envelope is committed to disk.
type Ack struct {
	ID     protocol.ID
	Status AckStatus
	// Pos is the envelope's position in the relay's log: the order in
	// which subscribers get it.
	Pos uint64
	// Time is when the relay committed it, Unix ms.
	Time int64
	// Receipt proves the publish's record is in the relay's audit log;
	// nil for a duplicate, or when the relay keeps no audit log.
	Receipt *Receipt
}

// Receipt is a publish's audit receipt: the index of its record in the
// relay's audit log, the two fields of that record the client cannot know
// (the relay's time and policy version: the client rebuilds the record
// from them and its envelope, docs/audit.md), a checkpoint of the log
// signed by the relay (a signed note), and the Merkle proof that the
// record is in the tree the checkpoint names. On a publish stream the
// checkpoint is sent only when it changes: an empty one means the one of
// the stream's previous receipt. So are the hashes a proof shares with the
// previous receipt's (those of one commit share all but their first few):
// Shared says how many of the previous receipt's last hashes end this one.
type Receipt struct {
	Index         uint64
	Time          int64
	PolicyVersion uint64
	Checkpoint    []byte
	Proof         [][32]byte
	Shared        uint8
}

// Limits of a receipt.
const (
	MaxCheckpointNote = 1024
	MaxProofHashes    = 64
)

func addHashes(b *cryptobyte.Builder, hs [][32]byte) {
	b.AddUint8(uint8(len(hs)))
	for _, h := range hs {
		b.AddBytes(h[:])
	}
}

func readHashes(s *cryptobyte.String, out *[][32]byte) bool {
	var n uint8
	if !s.ReadUint8(&n) || n > MaxProofHashes {
		return false
	}
	hs := make([][32]byte, n)
	for i := range hs {
		if !s.CopyBytes(hs[i][:]) {
			return false
		}
	}
	*out = hs
	return true
}

func (a *Ack) MarshalBinary() ([]byte, error) { return a.AppendBinary(nil) }

// AppendBinary appends the Ack's body to b: the relay writes one per
// publish, so it is encoded field by field, without a builder.
func (a *Ack) AppendBinary(b []byte) ([]byte, error) {
	r := a.Receipt
	if r != nil && (len(r.Checkpoint) > MaxCheckpointNote || len(r.Proof)+int(r.Shared) > MaxProofHashes || r.Time < 0) {
		return nil, errors.New("wire: receipt out of bounds")
	}
	b = append(b, a.ID[:]...)
	b = append(b, uint8(a.Status))
	b = binary.BigEndian.AppendUint64(b, a.Pos)
	b = binary.BigEndian.AppendUint64(b, uint64(a.Time))
	if r == nil {
		return append(b, 0), nil
	}
	b = append(b, 1)
	b = binary.BigEndian.AppendUint64(b, r.Index)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time))
	b = binary.BigEndian.AppendUint64(b, r.PolicyVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Checkpoint)))
	b = append(b, r.Checkpoint...)
	b = append(b, uint8(len(r.Proof)))
	for _, h := range r.Proof {
		b = append(b, h[:]...)
	}
	return append(b, r.Shared), nil
}

// ParseAck parses an Ack body.
func ParseAck(body []byte) (*Ack, error) {
	s := cryptobyte.String(body)
	var a Ack
	var status, has uint8
	var t uint64
	if !readID(&s, &a.ID) || !s.ReadUint8(&status) || !s.ReadUint64(&a.Pos) || !s.ReadUint64(&t) || !s.ReadUint8(&has) || has > 1 {
		return nil, badFrame(FrameAck, "bad layout")
	}
	if has == 1 {
		var r Receipt
		var t uint64
		var note cryptobyte.String
		if !s.ReadUint64(&r.Index) || !s.ReadUint64(&t) || t > 1<<63-1 || !s.ReadUint64(&r.PolicyVersion) ||
			!s.ReadUint16LengthPrefixed(&note) || len(note) > MaxCheckpointNote || !readHashes(&s, &r.Proof) ||
			!s.ReadUint8(&r.Shared) || len(r.Proof)+int(r.Shared) > MaxProofHashes {
			return nil, badFrame(FrameAck, "bad receipt")
		}
		r.Time = int64(t)
		if len(note) > 0 {
			r.Checkpoint = append([]byte(nil), note...)
		}
		a.Receipt = &r
	}
	if !s.Empty() {
		return nil, badFrame(FrameAck, "trailing bytes")
	}
	a.Status, a.Time = AckStatus(status), int64(t)
	if a.Status != AckStored && a.Status != AckDuplicate {
		return nil, badFrame(FrameAck, "unknown status")
	}
	if a.Time < 0 || a.Pos == 0 || a.Pos > 1<<63-1 {
		return nil, badFrame(FrameAck, "position or time out of range")
	}
	return &a, nil
}

// Nack refuses one publish: the envelope with ID (the hash of the bytes
// sent, even if they do not parse) was not committed.
type Nack struct {
	ID  protocol.ID
	Err RelayError
}

func (n *Nack) MarshalBinary() ([]byte, error) {
	if err := checkError(&n.Err); err != nil {
		return nil, err
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddBytes(n.ID[:])
		b.AddUint16(uint16(n.Err.Code))
		addText(b, n.Err.Message)
	}), nil
}

// ParseNack parses a Nack body.
func ParseNack(body []byte) (*Nack, error) {
	s := cryptobyte.String(body)
	var n Nack
	var code uint16
	if !readID(&s, &n.ID) || !s.ReadUint16(&code) || !readText(&s, MaxErrorMessage, &n.Err.Message) || !s.Empty() {
		return nil, badFrame(FrameNack, "bad layout")
	}
	n.Err.Code = ErrorCode(code)
	if n.Err.Code == CodeOK {
		return nil, badFrame(FrameNack, "code 0")
	}
	return &n, nil
}

func checkError(e *RelayError) error {
	if len(e.Message) > MaxErrorMessage {
		return fmt.Errorf("wire: error message of %d bytes, limit %d", len(e.Message), MaxErrorMessage)
	}
	var s string
	b := build(func(b *cryptobyte.Builder) { addText(b, e.Message) })
	str := cryptobyte.String(b)
	if !readText(&str, MaxErrorMessage, &s) {
		return errors.New("wire: error message is not printable UTF-8")
	}
	return nil
}

// MarshalErrorFrame encodes an Error frame's body.
func MarshalErrorFrame(e *RelayError) ([]byte, error) {
	if err := checkError(e); err != nil {
		return nil, err
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint16(uint16(e.Code))
		addText(b, e.Message)
	}), nil
}

// ParseErrorFrame parses an Error frame's body.
func ParseErrorFrame(body []byte) (*RelayError, error) {
	s := cryptobyte.String(body)
	var e RelayError
	var code uint16
	if !s.ReadUint16(&code) || !readText(&s, MaxErrorMessage, &e.Message) || !s.Empty() {
		return nil, badFrame(FrameError, "bad layout")
	}
	e.Code = ErrorCode(code)
	return &e, nil
}

// Subscribe asks for a room's envelopes after Cursor (exclusive; the
// zero ID: from the oldest the relay keeps), in the relay's log order,
// then for each new one as it is committed. A Live frame marks the switch.
type Subscribe struct {
	Room   string
	Cursor protocol.ID
}

func (m *Subscribe) MarshalBinary() ([]byte, error) {
	if err := protocol.ValidRoom(m.Room); err != nil {
		return nil, err
	}
	return build(func(b *cryptobyte.Builder) {
		addRoom(b, m.Room)
		b.AddBytes(m.Cursor[:])
	}), nil
}

// ParseSubscribe parses a Subscribe body.
func ParseSubscribe(body []byte) (*Subscribe, error) {
	s := cryptobyte.String(body)
	var m Subscribe
	if !readRoom(&s, &m.Room) || !readID(&s, &m.Cursor) || !s.Empty() {
		return nil, badFrame(FrameSubscribe, "bad layout")
	}
	return &m, nil
}

// FetchRange asks for a room's envelopes with Since <= time < Until (the
// sender's clock, Unix ms), ordered by time then ID, at most Limit, and
// after (time, ID) = (Since, After) when After is not zero: the cursor of
// the next page. The relay answers with Envelope frames and an End.
type FetchRange struct {
	Room         string
	Since, Until int64
	After        protocol.ID
	Limit        uint16
}

func (m *FetchRange) MarshalBinary() ([]byte, error) {
	if err := protocol.ValidRoom(m.Room); err != nil {
		return nil, err
	}
	return build(func(b *cryptobyte.Builder) {
		addRoom(b, m.Room)
		b.AddUint64(uint64(m.Since))
		b.AddUint64(uint64(m.Until))
		b.AddBytes(m.After[:])
		b.AddUint16(m.Limit)
	}), nil
}

// ParseFetchRange parses a FetchRange body.
func ParseFetchRange(body []byte) (*FetchRange, error) {
	s := cryptobyte.String(body)
	var m FetchRange
	var since, until uint64
	if !readRoom(&s, &m.Room) || !s.ReadUint64(&since) || !s.ReadUint64(&until) ||
		!readID(&s, &m.After) || !s.ReadUint16(&m.Limit) || !s.Empty() {
		return nil, badFrame(FrameFetchRange, "bad layout")
	}
	m.Since, m.Until = int64(since), int64(until)
	if m.Since < 0 || m.Until < m.Since || m.Limit == 0 || m.Limit > MaxFetchLimit {
		return nil, badFrame(FrameFetchRange, "range or limit out of bounds")
	}
	return &m, nil
}

// FetchIDs asks for envelopes by ID, in any room the client may read;
// the relay answers with an Envelope frame for each it has, in the order
// asked, and an End. A client confirms its message is stored this way.
type FetchIDs struct {
	IDs []protocol.ID
}

func (m *FetchIDs) MarshalBinary() ([]byte, error) {
	if len(m.IDs) == 0 || len(m.IDs) > MaxFetchIDs {
		return nil, fmt.Errorf("wire: %d IDs in a fetch, want 1 to %d", len(m.IDs), MaxFetchIDs)
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint16(uint16(len(m.IDs)))
		for _, id := range m.IDs {
			b.AddBytes(id[:])
		}
	}), nil
}

// ParseFetchIDs parses a FetchIDs body.
func ParseFetchIDs(body []byte) (*FetchIDs, error) {
	s := cryptobyte.String(body)
	var n uint16
	if !s.ReadUint16(&n) || n == 0 || n > MaxFetchIDs || len(s) != int(n)*len(protocol.ID{}) {
		return nil, badFrame(FrameFetchIDs, "bad layout")
	}
	m := &FetchIDs{IDs: make([]protocol.ID, n)}
	for i := range m.IDs {
		readID(&s, &m.IDs[i])
	}
	return m, nil
}

// End closes a fetch. More says the range had more envelopes than the
// limit: ask again after the last one received.
type End struct {
	More bool
}

func (m *End) MarshalBinary() ([]byte, error) {
	if m.More {
		return []byte{1}, nil
	}
	return []byte{0}, nil
}

// ParseEnd parses an End body.
func ParseEnd(body []byte) (*End, error) {
	if len(body) != 1 || body[0] > 1 {
		return nil, badFrame(FrameEnd, "bad layout")
	}
	return &End{More: body[0] == 1}, nil
}

// PeersRequest asks for the mesh addresses of peers in a room.
type PeersRequest struct {
	Room string
}

func (m *PeersRequest) MarshalBinary() ([]byte, error) {
	if err := protocol.ValidRoom(m.Room); err != nil {
		return nil, err
	}
	return build(func(b *cryptobyte.Builder) { addRoom(b, m.Room) }), nil
}

// ParsePeersRequest parses a PeersRequest body.
func ParsePeersRequest(body []byte) (*PeersRequest, error) {
	s := cryptobyte.String(body)
	var m PeersRequest
	if !readRoom(&s, &m.Room) || !s.Empty() {
		return nil, badFrame(FramePeersRequest, "bad layout")
	}
	return &m, nil
}

// Peers lists libp2p multiaddrs, each ending in /p2p/<peer ID>, of peers
// in a room, the relay's own mesh node first. They are text here; the
// client parses them with the multiaddr library before it dials.
type Peers struct {
	Addrs []string
}

func (m *Peers) MarshalBinary() ([]byte, error) {
	if len(m.Addrs) > MaxPeerAddrs {
		return nil, fmt.Errorf("wire: %d peer addresses, limit %d", len(m.Addrs), MaxPeerAddrs)
	}
	for _, a := range m.Addrs {
		if !validAddr(a) {
			return nil, fmt.Errorf("wire: peer address %q is not a multiaddr string", a)
		}
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint8(uint8(len(m.Addrs)))
		for _, a := range m.Addrs {
			addText(b, a)
		}
	}), nil
}

func validAddr(a string) bool {
	if len(a) == 0 || len(a) > MaxPeerAddrLen || a[0] != '/' {
		return false
	}
	for i := 0; i < len(a); i++ {
		if a[i] <= 0x20 || a[i] >= 0x7f {
			return false
		}
	}
	return true
}

// ParsePeers parses a Peers body.
func ParsePeers(body []byte) (*Peers, error) {
	s := cryptobyte.String(body)
	var n uint8
	if !s.ReadUint8(&n) || n > MaxPeerAddrs {
		return nil, badFrame(FramePeers, "bad count")
	}
	m := &Peers{Addrs: make([]string, 0, n)}
	for range n {
		var a string
		if !readText(&s, MaxPeerAddrLen, &a) || !validAddr(a) {
			return nil, badFrame(FramePeers, "bad address")
		}
		m.Addrs = append(m.Addrs, a)
	}
	if !s.Empty() {
		return nil, badFrame(FramePeers, "trailing bytes")
	}
	return m, nil
}

// PolicyMode is how a relay decides who may connect.
type PolicyMode uint8

const (
	PolicyOpen      PolicyMode = 1 // anyone not banned
	PolicyAllowList PolicyMode = 2 // only identities on the allow list
	PolicyInvite    PolicyMode = 3 // the allow list, which invite tokens join
)

func (m PolicyMode) String() string {
	switch m {
	case PolicyOpen:
		return "open"
	case PolicyAllowList:
		return "allowlist"
	case PolicyInvite:
		return "invite"
	}
	return fmt.Sprintf("policy(%d)", uint8(m))
}

// ParsePolicyMode parses "open", "allowlist" or "invite".
func ParsePolicyMode(s string) (PolicyMode, error) {
	for _, m := range []PolicyMode{PolicyOpen, PolicyAllowList, PolicyInvite} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("wire: unknown policy %q (want open, allowlist or invite)", s)
}

// Info describes a relay: what it speaks, its limits, its policy.
type Info struct {
	Versions      []uint8 // envelope versions it accepts
	MaxEnvelope   uint32  // bytes
	PublishRate   uint32  // envelopes per second per identity
	PublishBurst  uint32
	RetentionDays uint32 // how long history is kept; 0: no age limit
	Policy        PolicyMode
	PolicyVersion uint64
}

func (m *Info) MarshalBinary() ([]byte, error) {
	if len(m.Versions) == 0 || len(m.Versions) > MaxRelayVersions {
		return nil, fmt.Errorf("wire: %d versions in info, want 1 to %d", len(m.Versions), MaxRelayVersions)
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Versions) })
		b.AddUint32(m.MaxEnvelope)
		b.AddUint32(m.PublishRate)
		b.AddUint32(m.PublishBurst)
		b.AddUint32(m.RetentionDays)
		b.AddUint8(uint8(m.Policy))
		b.AddUint64(m.PolicyVersion)
	}), nil
}

// ParseInfo parses an Info body.
func ParseInfo(body []byte) (*Info, error) {
	s := cryptobyte.String(body)
	var m Info
	var versions cryptobyte.String
	var mode uint8
	if !s.ReadUint8LengthPrefixed(&versions) || !s.ReadUint32(&m.MaxEnvelope) || !s.ReadUint32(&m.PublishRate) ||
		!s.ReadUint32(&m.PublishBurst) || !s.ReadUint32(&m.RetentionDays) || !s.ReadUint8(&mode) ||
		!s.ReadUint64(&m.PolicyVersion) || !s.Empty() {
		return nil, badFrame(FrameInfo, "bad layout")
	}
	if len(versions) == 0 || len(versions) > MaxRelayVersions {
		return nil, badFrame(FrameInfo, "bad version list")
	}
	m.Versions = append([]uint8(nil), versions...)
	m.Policy = PolicyMode(mode)
	if m.Policy < PolicyOpen || m.Policy > PolicyInvite {
		return nil, badFrame(FrameInfo, "unknown policy")
	}
	return &m, nil
}

// Redeem presents an invite token: printable ASCII, at most
// MaxInviteToken bytes. The relay answers Redeemed or an Error.
type Redeem struct {
	Token string
}

func (m *Redeem) MarshalBinary() ([]byte, error) {
	if !validToken(m.Token) {
		return nil, errors.New("wire: invite token is not 1 to 64 printable ASCII bytes")
	}
	return []byte(m.Token), nil
}

func validToken(t string) bool {
	if len(t) == 0 || len(t) > MaxInviteToken {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= 0x20 || t[i] >= 0x7f {
			return false
		}
	}
	return true
}

// ParseRedeem parses a Redeem body.
func ParseRedeem(body []byte) (*Redeem, error) {
	if !validToken(string(body)) {
		return nil, badFrame(FrameRedeem, "bad token")
	}
	return &Redeem{Token: string(body)}, nil
}

// Committed tells a subscriber that every envelope the subscription has
// sent, up to and including the one with ID, is committed on the relay's
// disk. Live envelopes go out before their commit, so that delivery does
// not wait for the disk; a subscriber resumes from the last committed
// one, and skips what it had already been given.
type Committed struct {
	ID protocol.ID
}

func (m *Committed) MarshalBinary() ([]byte, error) { return append([]byte(nil), m.ID[:]...), nil }

// ParseCommitted parses a Committed body.
func ParseCommitted(body []byte) (*Committed, error) {
	if len(body) != len(protocol.ID{}) {
		return nil, badFrame(FrameCommitted, "bad layout")
	}
	return &Committed{ID: protocol.ID(body)}, nil
}

// ProveTree asks for the proofs that the relay's audit log of size New
// contains its logs of each size in Old: the client checks every
// checkpoint it sees against the newest one this way, many at a time.
type ProveTree struct {
	New uint64
	Old []uint64 // 1 to MaxProofs sizes, each from 1 to New
}

// MaxProofs is the most proofs one ProveTree asks for.
const MaxProofs = 64

func (m *ProveTree) MarshalBinary() ([]byte, error) {
	if len(m.Old) == 0 || len(m.Old) > MaxProofs || m.New > 1<<63-1 {
		return nil, fmt.Errorf("wire: prove tree: %d sizes in %d", len(m.Old), m.New)
	}
	for _, o := range m.Old {
		if o == 0 || o > m.New {
			return nil, fmt.Errorf("wire: prove tree %d in %d", o, m.New)
		}
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint64(m.New)
		b.AddUint8(uint8(len(m.Old)))
		for _, o := range m.Old {
			b.AddUint64(o)
		}
	}), nil
}

// ParseProveTree parses a ProveTree body.
func ParseProveTree(body []byte) (*ProveTree, error) {
	s := cryptobyte.String(body)
	var m ProveTree
	var n uint8
	if !s.ReadUint64(&m.New) || m.New > 1<<63-1 || !s.ReadUint8(&n) || n == 0 || n > MaxProofs {
		return nil, badFrame(FrameProveTree, "bad layout")
	}
	m.Old = make([]uint64, n)
	for i := range m.Old {
		if !s.ReadUint64(&m.Old[i]) || m.Old[i] == 0 || m.Old[i] > m.New {
			return nil, badFrame(FrameProveTree, "bad size")
		}
	}
	if !s.Empty() {
		return nil, badFrame(FrameProveTree, "trailing bytes")
	}
	return &m, nil
}

// TreeProof answers ProveTree: one proof per size asked, in order.
type TreeProof struct {
	Proofs [][][32]byte
}

func (m *TreeProof) MarshalBinary() ([]byte, error) {
	if len(m.Proofs) == 0 || len(m.Proofs) > MaxProofs {
		return nil, fmt.Errorf("wire: %d tree proofs", len(m.Proofs))
	}
	for _, p := range m.Proofs {
		if len(p) > MaxProofHashes {
			return nil, fmt.Errorf("wire: proof of %d hashes", len(p))
		}
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint8(uint8(len(m.Proofs)))
		for _, p := range m.Proofs {
			addHashes(b, p)
		}
	}), nil
}

// ParseTreeProof parses a TreeProof body.
func ParseTreeProof(body []byte) (*TreeProof, error) {
	s := cryptobyte.String(body)
	var n uint8
	if !s.ReadUint8(&n) || n == 0 || n > MaxProofs {
		return nil, badFrame(FrameTreeProof, "bad layout")
	}
	m := &TreeProof{Proofs: make([][][32]byte, n)}
	for i := range m.Proofs {
		if !readHashes(&s, &m.Proofs[i]) {
			return nil, badFrame(FrameTreeProof, "bad proof")
		}
	}
	if !s.Empty() {
		return nil, badFrame(FrameTreeProof, "trailing bytes")
	}
	return m, nil
}

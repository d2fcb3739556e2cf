package wire

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/parleychat/parley/protocol"
)

// The frames of subscriptions, fetches and peer lookups.

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
	if m.Since < 0 || m.Until < m.Since { // as ParseFetchRange
		return nil, fmt.Errorf("wire: fetch range %d to %d out of bounds", m.Since, m.Until)
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

package wire

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/parleychat/parley/protocol"
)

// The frames of "my private rooms": a client asks which private rooms
// its identity is a member of now, and so learns of a direct room
// someone started with it, or a room it was added to, while it was away,
// without knowing the room's ID.

// RoomsRequest asks for the private rooms the connection's identity is a
// member of now, those whose ID sorts after After (bytewise), if set: a
// previous answer's last room, to ask for the next page. The relay
// answers with one or more Rooms frames, together listing at most
// MaxRooms rooms in ascending order, and an End whose More says that it
// stopped at MaxRooms.
type RoomsRequest struct {
	After string // "" or a private room ID
}

func (m *RoomsRequest) MarshalBinary() ([]byte, error) {
	if m.After == "" {
		return nil, nil
	}
	if !protocol.IsPrivateRoom(m.After) {
		return nil, fmt.Errorf("wire: rooms request after %q, not a private room ID", m.After)
	}
	return build(func(b *cryptobyte.Builder) { addRoom(b, m.After) }), nil
}

// ParseRoomsRequest parses a RoomsRequest body: empty, or one private
// room ID.
func ParseRoomsRequest(body []byte) (*RoomsRequest, error) {
	var m RoomsRequest
	if len(body) == 0 {
		return &m, nil
	}
	s := cryptobyte.String(body)
	if !readRoom(&s, &m.After) || !s.Empty() {
		return nil, badFrame(FrameRoomsRequest, "bad layout")
	}
	if !protocol.IsPrivateRoom(m.After) {
		return nil, badFrame(FrameRoomsRequest, "the room to start after is not a private room ID")
	}
	return &m, nil
}

// Rooms lists rooms, at most MaxRoomsFrame, in strictly ascending order.
// The frame layer takes any valid room ID; a client keeps only private
// ones (protocol.IsPrivateRoom).
type Rooms struct {
	Rooms []string
}

func (m *Rooms) MarshalBinary() ([]byte, error) {
	if len(m.Rooms) > MaxRoomsFrame {
		return nil, fmt.Errorf("wire: %d rooms in a rooms frame, limit %d", len(m.Rooms), MaxRoomsFrame)
	}
	for i, r := range m.Rooms {
		if err := protocol.ValidRoom(r); err != nil {
			return nil, err
		}
		if i > 0 && m.Rooms[i-1] >= r {
			return nil, fmt.Errorf("wire: rooms frame: %q after %q, not in ascending order", r, m.Rooms[i-1])
		}
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint16(uint16(len(m.Rooms)))
		for _, r := range m.Rooms {
			addRoom(b, r)
		}
	}), nil
}

// ParseRooms parses a Rooms body.
func ParseRooms(body []byte) (*Rooms, error) {
	s := cryptobyte.String(body)
	var n uint16
	if !s.ReadUint16(&n) || n > MaxRoomsFrame {
		return nil, badFrame(FrameRooms, "bad count")
	}
	m := &Rooms{Rooms: make([]string, 0, n)}
	for i := range int(n) {
		var r string
		if !readRoom(&s, &r) {
			return nil, badFrame(FrameRooms, fmt.Sprintf("room %d: bad room ID", i))
		}
		if i > 0 && m.Rooms[i-1] >= r {
			return nil, badFrame(FrameRooms, fmt.Sprintf("room %d: not in ascending order", i))
		}
		m.Rooms = append(m.Rooms, r)
	}
	if !s.Empty() {
		return nil, badFrame(FrameRooms, "trailing bytes")
	}
	return m, nil
}

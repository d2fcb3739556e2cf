package fuzz

import (
	"errors"
	"testing"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
)

// FuzzRoomsFrames: a rooms request or rooms answer body that parses
// encodes back to exactly the input (a request names a private room or
// none; an answer valid room IDs in ascending order, which the client
// then keeps only if private); one that does not is refused with
// wire.ErrBadFrame.
func FuzzRoomsFrames(f *testing.F) {
	a := protocol.PrivateRoomFromHash([20]byte{1})
	b := protocol.PrivateRoomFromHash([20]byte{2})
	f.Add([]byte{})
	f.Add(mustMarshal(f, &wire.RoomsRequest{After: a}))
	f.Add(mustMarshal(f, &wire.Rooms{Rooms: []string{a, b}}))
	f.Add(mustMarshal(f, &wire.Rooms{Rooms: []string{a, b}})[:10])
	f.Fuzz(func(t *testing.T, body []byte) {
		if req, err := wire.ParseRoomsRequest(body); err != nil {
			if !errors.Is(err, wire.ErrBadFrame) {
				t.Fatalf("rooms request: %v does not wrap ErrBadFrame", err)
			}
		} else {
			if req.After != "" && !protocol.IsPrivateRoom(req.After) {
				t.Fatalf("rooms request after %q, not a private room", req.After)
			}
			sameBytes(t, body)(req.MarshalBinary())
		}
		rooms, err := wire.ParseRooms(body)
		if err != nil {
			if !errors.Is(err, wire.ErrBadFrame) {
				t.Fatalf("rooms: %v does not wrap ErrBadFrame", err)
			}
			return
		}
		for _, r := range rooms.Rooms {
			if err := protocol.ValidRoom(r); err != nil {
				t.Fatalf("rooms names %q: %v", r, err)
			}
		}
		sameBytes(t, body)(rooms.MarshalBinary())
	})
}

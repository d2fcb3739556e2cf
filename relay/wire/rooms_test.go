package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/parleychat/parley/protocol"
)

func privateIDs(t *testing.T, n int) []string {
	t.Helper()
	key := testKeys(t, 1)[0]
	var out []string
	for i := range n {
		var nonce [protocol.NonceSize]byte
		copy(nonce[:], fmt.Sprint(i))
		out = append(out, protocol.PrivateRoomID(key, nonce))
	}
	slices.Sort(out)
	return out
}

func TestRoomsRequest(t *testing.T) {
	room := privateIDs(t, 1)[0]
	for _, m := range []RoomsRequest{{}, {After: room}} {
		body, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if m.After == "" && len(body) != 0 {
			t.Fatalf("a request from the start has a body: %x", body)
		}
		got, err := ParseRoomsRequest(body)
		if err != nil || *got != m {
			t.Fatalf("round trip of %+v: %+v, %v", m, got, err)
		}
	}
	if _, err := (&RoomsRequest{After: "lobby"}).MarshalBinary(); err == nil {
		t.Fatal("a request after a public room marshals")
	}
	good, _ := (&RoomsRequest{After: room}).MarshalBinary()
	for what, body := range map[string][]byte{
		"garbage":        {0xff, 1},
		"cut short":      good[:len(good)-1],
		"trailing bytes": append(slices.Clone(good), 0),
		"a public room":  append([]byte{5}, "lobby"...),
		"an empty room":  {0},
		"an invalid ID":  append([]byte{3}, "A:B"...),
	} {
		if _, err := ParseRoomsRequest(body); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", what, err)
		}
	}
}

func TestRooms(t *testing.T) {
	many := privateIDs(t, MaxRoomsFrame)
	for _, rooms := range [][]string{nil, {"lobby"}, {"lobby", many[0]}, many} {
		body, err := (&Rooms{Rooms: rooms}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(body) > MaxFrameBody {
			t.Fatalf("%d rooms: a body of %d bytes", len(rooms), len(body))
		}
		got, err := ParseRooms(body)
		if err != nil || len(got.Rooms) != len(rooms) || (len(rooms) > 0 && !slices.Equal(got.Rooms, rooms)) {
			t.Fatalf("round trip of %d rooms: %d, %v", len(rooms), len(got.Rooms), err)
		}
	}
	// The longest rooms fit a frame too.
	var long []string
	for i := range MaxRoomsFrame {
		long = append(long, fmt.Sprintf("%s%06d", strings.Repeat("x", protocol.MaxRoomLen-6), i))
	}
	if body, err := (&Rooms{Rooms: long}).MarshalBinary(); err != nil || len(body) > MaxFrameBody {
		t.Fatalf("%d rooms of %d bytes: %d bytes, %v", len(long), protocol.MaxRoomLen, len(body), err)
	}

	for what, m := range map[string]*Rooms{
		"too many":     {Rooms: privateIDs(t, MaxRoomsFrame+1)},
		"out of order": {Rooms: []string{many[1], many[0]}},
		"twice":        {Rooms: []string{many[0], many[0]}},
		"invalid":      {Rooms: []string{"A"}},
	} {
		if _, err := m.MarshalBinary(); err == nil {
			t.Errorf("%s: marshals", what)
		}
	}

	r0, r1 := append([]byte{byte(len(many[0]))}, many[0]...), append([]byte{byte(len(many[1]))}, many[1]...)
	cat := func(bs ...[]byte) []byte { return slices.Concat(bs...) }
	for what, body := range map[string][]byte{
		"empty":          {},
		"short count":    {0},
		"count over":     binary.BigEndian.AppendUint16(nil, MaxRoomsFrame+1),
		"fewer rooms":    cat([]byte{0, 2}, r0),
		"trailing bytes": cat([]byte{0, 1}, r0, []byte{0}),
		"out of order":   cat([]byte{0, 2}, r1, r0),
		"twice":          cat([]byte{0, 2}, r0, r0),
		"invalid room":   cat([]byte{0, 1, 1}, []byte("A")),
	} {
		if _, err := ParseRooms(body); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", what, err)
		}
	}
}

package relay_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
)

// TestPrivateRoomsOldRelay: a relay from before RoomsRequest gives an
// error wrapping ErrUnsupported, at once, not after retries.
func TestPrivateRoomsOldRelay(t *testing.T) {
	var asked atomic.Int32
	c := dialKeys(t, keysRelay(t, func(fw *wire.Writer, ft wire.FrameType, _ []byte) {
		asked.Add(1)
		if ft > wire.FrameKeyPackage {
			fw.WriteError(&wire.RelayError{Code: wire.CodeBadFrame, Message: "wire: malformed frame: unknown type " + strconv.Itoa(int(ft))})
			return
		}
		fw.WriteError(&wire.RelayError{Code: wire.CodeInternal, Message: "not in this test"})
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rooms, err := c.PrivateRooms(ctx)
	if !errors.Is(err, relay.ErrUnsupported) || !errors.Is(err, &wire.RelayError{Code: wire.CodeBadFrame}) || rooms != nil {
		t.Fatalf("private rooms of an old relay: %q, %v; want ErrUnsupported", rooms, err)
	}
	if n := asked.Load(); n != 1 {
		t.Fatalf("asked %d times, want once", n)
	}
	t.Log(err)
}

func privateRoomIDs(t *testing.T, n int) []string {
	var out []string
	for range n {
		out = append(out, protocol.DirectRoomID(testkit.Key(t).Public(), testkit.Key(t).Public()))
	}
	slices.Sort(out)
	return out
}

// TestPrivateRoomsPages: the client follows the relay's pages, asking
// after the last private room it got, and drops what is not a private
// room ID.
func TestPrivateRoomsPages(t *testing.T) {
	ids := privateRoomIDs(t, 3)
	var (
		mu     sync.Mutex
		afters []string
	)
	c := dialKeys(t, keysRelay(t, func(fw *wire.Writer, ft wire.FrameType, body []byte) {
		m, err := wire.ParseRoomsRequest(body)
		if ft != wire.FrameRoomsRequest || err != nil {
			fw.WriteError(&wire.RelayError{Code: wire.CodeInternal, Message: "not in this test"})
			return
		}
		mu.Lock()
		afters = append(afters, m.After)
		mu.Unlock()
		switch m.After {
		case "":
			// "lobby" sorts before "p:": a public room, dropped.
			fw.Msg(wire.FrameRooms, &wire.Rooms{Rooms: []string{"lobby", ids[0]}})
			fw.Msg(wire.FrameRooms, &wire.Rooms{Rooms: []string{ids[1]}})
			fw.Msg(wire.FrameEnd, &wire.End{More: true})
		case ids[1]:
			fw.Msg(wire.FrameRooms, &wire.Rooms{Rooms: []string{ids[2], "q:not-private"}})
			fw.Msg(wire.FrameEnd, &wire.End{})
		default:
			fw.WriteError(&wire.RelayError{Code: wire.CodeInternal, Message: "asked after " + m.After})
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := c.PrivateRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("rooms %q, want %q", got, ids)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(afters, []string{"", ids[1]}) {
		t.Fatalf("asked after %q, want after nothing, then after %s", afters, ids[1])
	}
}

// TestPrivateRoomsOutOfOrder: an answer whose rooms go back, across
// frames or before the room asked after, is an error.
func TestPrivateRoomsOutOfOrder(t *testing.T) {
	ids := privateRoomIDs(t, 2)
	c := dialKeys(t, keysRelay(t, func(fw *wire.Writer, ft wire.FrameType, body []byte) {
		fw.Msg(wire.FrameRooms, &wire.Rooms{Rooms: []string{ids[1]}})
		fw.Msg(wire.FrameRooms, &wire.Rooms{Rooms: []string{ids[0]}})
		fw.Msg(wire.FrameEnd, &wire.End{})
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got, err := c.PrivateRooms(ctx); err == nil {
		t.Fatalf("rooms out of order taken: %q", got)
	} else {
		t.Log(err)
	}
}

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/freeport"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
)

// startTestFloor runs the floor forwarder in this process on loopback.
// stop stops it and reports whether it stopped in time; the test's
// cleanup calls it too.
func startTestFloor(t *testing.T) (addr relay.Addr, stop func() error) {
	t.Helper()
	listen, err := freeport.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan relay.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- serveFloor(ctx, listen, func(a relay.Addr) { ready <- a }) }()
	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(10 * time.Second):
				stopErr = errors.New("floor did not stop")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("floor: %v", err)
		}
	})
	select {
	case a := <-ready:
		return a, stop
	case err := <-done:
		t.Fatalf("floor: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("floor did not start")
	}
	return relay.Addr{}, stop
}

// overBoth runs test as a subtest over each transport of the floor at
// addr.
func overBoth(t *testing.T, addr relay.Addr, test func(t *testing.T, e endpoint)) {
	floor := &relayProc{addr: addr, floor: true}
	for _, via := range []relay.Via{relay.ViaQUIC, relay.ViaTCP} {
		t.Run(via.String(), func(t *testing.T) { test(t, floor.over(via)) })
	}
}

func TestFloorFanout(t *testing.T) {
	addr, _ := startTestFloor(t)
	overBoth(t, addr, func(t *testing.T, e endpoint) {
		res, err := fanoutRun(t.Context(), e, 3, 200, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if res.lost != 0 || res.n != 600 {
			t.Fatalf("delivered %d of 600, lost %d", res.n, res.lost)
		}
	})
}

// TestFloorChecksSignatures: the floor forwards only envelopes whose
// signature holds, as a relay must; else it would not be a floor.
func TestFloorChecksSignatures(t *testing.T) {
	addr, _ := startTestFloor(t)
	overBoth(t, addr, func(t *testing.T, e endpoint) {
		ctx := t.Context()
		key, err := identity.Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		raws, _, err := signed(key, "checked", 2)
		if err != nil {
			t.Fatal(err)
		}
		forged := append([]byte(nil), raws[0]...)
		forged[len(forged)-1] ^= 1 // the signature's last byte

		rd := subscribeTest(t, e, key, "checked")
		pub, err := dialBare(ctx, nil, e, key)
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close(wire.CodeOK, "")
		if err := floorPublish(ctx, pub, [][]byte{forged, raws[1]}, func(int) {}, func(int) {}); err != nil {
			t.Fatal(err)
		}
		ft, got, err := readFloorFrame(rd)
		if err != nil || ft != wire.FrameEnvelope {
			t.Fatalf("read: %v, %s", err, ft)
		}
		if protocol.IDOf(got) != protocol.IDOf(raws[1]) {
			t.Fatal("the first envelope forwarded is not the one with a good signature")
		}
	})
}

// subscribeTest subscribes to room of the floor at e as key and returns
// the stream's reader once the subscription is live; the connection
// closes with the test.
func subscribeTest(t *testing.T, e endpoint, key identity.PrivateKey, room string) *bufio.Reader {
	t.Helper()
	ctx := t.Context()
	conn, err := dialBare(ctx, nil, e, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(wire.CodeOK, "") })
	str, err := conn.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := (&wire.Subscribe{Room: room}).MarshalBinary()
	if _, err := str.Write(wire.AppendFrame(nil, wire.FrameSubscribe, body)); err != nil {
		t.Fatal(err)
	}
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(str)
	if ft, _, err := readFloorFrame(rd); err != nil || ft != wire.FrameLive {
		t.Fatalf("subscribe: %v, %s", err, ft)
	}
	return rd
}

func TestFloorRequest(t *testing.T) {
	addr, _ := startTestFloor(t)
	tr, done, err := loopbackTransport()
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	overBoth(t, addr, func(t *testing.T, e endpoint) {
		n, _, err := connectLoop(2, 200*time.Millisecond, func(key identity.PrivateKey) error {
			return floorRequest(t.Context(), tr, e, key)
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("no connection made")
		}
	})
}

// TestFloorIdleSubscribers: floorSubscribe, which the idle scenario
// holds its subscriptions with, subscribes over either transport.
func TestFloorIdleSubscribers(t *testing.T) {
	addr, _ := startTestFloor(t)
	overBoth(t, addr, func(t *testing.T, e endpoint) {
		conn, err := floorSubscribe(t.Context(), nil, e, "idle-"+e.via.String())
		if err != nil {
			t.Fatal(err)
		}
		conn.Close(wire.CodeOK, "")
	})
}

// TestFloorStopsWithClients: the floor stops when its context ends even
// while a subscriber is connected over each transport and a stream has
// sent only part of its first frame.
func TestFloorStopsWithClients(t *testing.T) {
	addr, stop := startTestFloor(t)
	ctx := t.Context()
	floor := &relayProc{addr: addr, floor: true}
	for _, via := range []relay.Via{relay.ViaQUIC, relay.ViaTCP} {
		e := floor.over(via)
		key, err := identity.Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		subscribeTest(t, e, key, "open")
		conn, err := dialBare(ctx, nil, e, key)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(wire.CodeOK, "")
		half, err := conn.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := (&wire.Subscribe{Room: "open"}).MarshalBinary()
		frame := wire.AppendFrame(nil, wire.FrameSubscribe, body)
		if _, err := half.Write(frame[:len(frame)-1]); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing tells when the floor has taken the streams and is waiting
	// for the rest of their frames; give it the time (the test passes
	// either way if the floor is right).
	time.Sleep(100 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

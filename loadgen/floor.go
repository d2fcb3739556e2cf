package main

// The floor: a forwarder over the same transports and TLS as the relay
// that does what any relay must do with an envelope, and nothing else.
// It checks the envelope (protocol.ParseVerify) and writes it to the
// room's subscribers: no store, no acknowledgement, no policy, no audit
// log, no limits. It serves over QUIC (the quic-go floor) and, on the
// same port number, over TCP with TLS 1.3, the relay's admission frame
// and yamux (the TCP+TLS floor), both from package relay/transport as the
// relay does. What it measures is what each transport, mutual TLS and one
// signature check cost on this machine, beside nats-server in the same
// run: a relay built on them cannot do better.

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/freeport"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/quic-go/quic-go"
)

// startFloor starts the floor forwarder, this program run with -floor, on
// a free loopback port.
func startFloor() (*relayProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	listen, err := freeport.Loopback()
	if err != nil {
		return nil, err
	}
	r, err := serving(exec.Command(self, "-floor", listen))
	if err != nil {
		return nil, fmt.Errorf("floor forwarder: %w", err)
	}
	r.floor = true
	return r, nil
}

// serveFloor runs the floor forwarder until ctx ends: over QUIC on the
// UDP address listen, and over TCP with TLS on the same port number.
// ready gets its address once it listens on both.
func serveFloor(ctx context.Context, listen string, ready func(relay.Addr)) error {
	key, err := identity.Generate(rand.Reader)
	if err != nil {
		return err
	}
	tlsConf, err := relay.ServerTLS(key) // the relay's own TLS configuration
	if err != nil {
		return err
	}
	// The relay's QUIC settings (relay/server/server.go).
	ln, err := quic.ListenAddr(listen, tlsConf, &quic.Config{
		HandshakeIdleTimeout:           5 * time.Second,
		MaxIdleTimeout:                 60 * time.Second,
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     32 << 10,
		MaxStreamReceiveWindow:         1 << 20,
		InitialConnectionReceiveWindow: 64 << 10,
		MaxConnectionReceiveWindow:     4 << 20,
	})
	if err != nil {
		return err
	}
	defer ln.Close()
	// The relay's TCP settings with its default limits: keep-alive at
	// half the idle timeout, 100 streams.
	tcp, err := transport.ListenTCP(ln.Addr().String(), tlsConf, func() transport.ListenOptions {
		return transport.ListenOptions{
			TCPOptions:       transport.TCPOptions{KeepAlive: 30 * time.Second, MaxStreams: 100},
			HandshakeTimeout: 10 * time.Second,
		}
	})
	if err != nil {
		return fmt.Errorf("floor: listen on TCP: %w", err)
	}
	defer tcp.Close()
	ready(relay.AddrOf(key.Public(), ln.Addr().String()))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := &floor{rooms: map[string]map[*floorSub]struct{}{}}
	var wg sync.WaitGroup
	defer wg.Wait()
	acceptQUIC := func(ctx context.Context) (transport.Conn, error) {
		c, err := ln.Accept(ctx)
		if err != nil {
			return nil, err
		}
		return transport.FromQUIC(c), nil
	}
	errs := make(chan error, 2)
	for _, accept := range []func(context.Context) (transport.Conn, error){acceptQUIC, tcp.Accept} {
		wg.Go(func() { errs <- f.acceptLoop(ctx, accept, &wg) })
	}
	// The first loop to end ends the other: ctx ended, or a listener
	// failed.
	err = <-errs
	cancel()
	return err
}

// floor is the forwarder's one piece of state: each room's subscribers.
type floor struct {
	mu    sync.Mutex
	rooms map[string]map[*floorSub]struct{}
}

// acceptLoop serves the connections accept returns until ctx ends (nil)
// or accept fails.
func (f *floor) acceptLoop(ctx context.Context, accept func(context.Context) (transport.Conn, error), wg *sync.WaitGroup) error {
	for {
		conn, err := accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Go(func() { f.serve(ctx, conn, wg) })
	}
}

// serve takes a connection's streams. A stream's first frame says what it
// is: Subscribe registers it (and it is answered with Live), Publish makes
// it a publish stream, read on a goroutine of its own, and an info request
// is answered and the stream closed. An idle subscriber costs the
// transport's connection and stream, and this goroutine. Over TCP, the
// first AcceptStream admits the connection (the relay's admission frame).
func (f *floor) serve(ctx context.Context, conn transport.Conn, wg *sync.WaitGroup) {
	defer conn.Close(wire.CodeOK, "")
	// At shutdown, also a read of a first frame that never comes ends.
	stop := context.AfterFunc(ctx, func() { conn.Close(wire.CodeOK, "") })
	defer stop()
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		rd := bufio.NewReader(str)
		t, body, err := readFloorFrame(rd)
		if err != nil {
			reset(str)
			continue
		}
		switch t {
		case wire.FrameSubscribe:
			m, err := wire.ParseSubscribe(body)
			if err != nil {
				reset(str)
				continue
			}
			f.subscribe(m.Room, str)
		case wire.FramePublish:
			wg.Go(func() { f.publish(rd, body) })
		default:
			str.Write(wire.AppendFrame(nil, wire.FrameInfo, nil))
			str.Close()
		}
	}
}

func reset(str transport.Stream) {
	str.CancelRead(wire.CodeOK)
	str.CancelWrite(wire.CodeOK)
}

// subscribe registers str as a subscriber of room, with Live the first
// frame it is sent, and unregisters it when the stream ends.
func (f *floor) subscribe(room string, str transport.Stream) {
	sub := &floorSub{str: str}
	f.mu.Lock()
	sub.send(wire.AppendFrame(nil, wire.FrameLive, nil))
	if f.rooms[room] == nil {
		f.rooms[room] = map[*floorSub]struct{}{}
	}
	f.rooms[room][sub] = struct{}{}
	f.mu.Unlock()
	context.AfterFunc(str.Context(), func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.rooms[room], sub)
		if len(f.rooms[room]) == 0 {
			delete(f.rooms, room)
		}
	})
}

// publish checks each envelope of a publish stream and hands it to the
// subscribers of its room; first is the first frame's body.
func (f *floor) publish(rd *bufio.Reader, first []byte) {
	body := first
	for {
		if env, _, err := protocol.ParseVerify(body); err == nil {
			frame := wire.AppendFrame(nil, wire.FrameEnvelope, body)
			f.mu.Lock()
			for s := range f.rooms[env.Room] {
				s.send(frame)
			}
			f.mu.Unlock()
		}
		t, b, err := readFloorFrame(rd)
		if err != nil || t != wire.FramePublish {
			return
		}
		body = b
	}
}

// floorSubQueue is the most frames a subscriber may have waiting; past
// it, the subscriber is cut off, as the relay cuts off a slow consumer.
const floorSubQueue = 4096

// A floorSub is a subscriber's stream and the frames waiting for it. A
// goroutine writes them, all that are waiting in one write, and ends when
// none are left: an idle subscriber has none.
type floorSub struct {
	str     transport.Stream
	mu      sync.Mutex
	queue   [][]byte
	writing bool
	dead    bool
}

// send queues frame for the subscriber; it never blocks.
func (s *floorSub) send(frame []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.dead:
		return
	case len(s.queue) >= floorSubQueue:
		s.dead, s.queue = true, nil
		s.str.CancelWrite(wire.CodeOK)
		return
	}
	s.queue = append(s.queue, frame)
	if !s.writing {
		s.writing = true
		go s.write()
	}
}

func (s *floorSub) write() {
	var buf []byte
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		if len(q) == 0 || s.dead {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		buf = buf[:0]
		for _, fr := range q {
			buf = append(buf, fr...)
		}
		if _, err := s.str.Write(buf); err != nil {
			s.mu.Lock()
			s.dead, s.queue, s.writing = true, nil, false
			s.mu.Unlock()
			return
		}
	}
}

func readFloorFrame(rd *bufio.Reader) (wire.FrameType, []byte, error) {
	var h [wire.FrameHeaderSize]byte
	if _, err := io.ReadFull(rd, h[:]); err != nil {
		return 0, nil, err
	}
	t, size, err := wire.ParseFrameHeader(h)
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(rd, body); err != nil {
		return 0, nil, err
	}
	return t, body, nil
}

// floorPublish publishes raws on a bare stream of conn, a connection to
// the floor forwarder, which answers nothing: a publish is done when it is
// written. It calls pace(i) before publish i and sent(i) just before
// writing it. The caller keeps conn open until the subscribers have
// everything: closing it drops what the transport has not sent yet.
func floorPublish(ctx context.Context, conn transport.Conn, raws [][]byte, pace, sent func(int)) error {
	str, err := conn.OpenStream(ctx)
	if err != nil {
		return err
	}
	var frame []byte
	for i, raw := range raws {
		pace(i)
		sent(i)
		frame = wire.AppendFrame(frame[:0], wire.FramePublish, raw)
		if _, err := str.Write(frame); err != nil {
			return err
		}
	}
	return str.Close()
}

// floorRequest connects to the floor forwarder at e as key (over QUIC on
// tr's socket), makes one request, waits for its answer and closes the
// connection.
func floorRequest(ctx context.Context, tr *quic.Transport, e endpoint, key identity.PrivateKey) error {
	conn, err := dialBare(ctx, tr, e, key)
	if err != nil {
		return err
	}
	defer conn.Close(wire.CodeOK, "")
	str, err := conn.OpenStream(ctx)
	if err != nil {
		return err
	}
	if _, err := str.Write(wire.AppendFrame(nil, wire.FrameInfoRequest, nil)); err != nil {
		return err
	}
	str.Close()
	t, _, err := readFloorFrame(bufio.NewReader(str))
	if err == nil && t != wire.FrameInfo {
		err = fmt.Errorf("floor: answered %s", t)
	}
	return err
}

// floorIdle holds n connections to the floor forwarder at e, each
// subscribed to a room, and returns the forwarder's resident memory before
// and after, as relayIdle does for the relay.
func floorIdle(ctx context.Context, e endpoint, n int) (int64, int64, error) {
	tr, done, err := loopbackTransport()
	if err != nil {
		return 0, 0, err
	}
	defer done()
	time.Sleep(2 * time.Second)
	before, err := rss(e.cmd.Process.Pid)
	if err != nil {
		return 0, 0, err
	}
	for i := range n {
		conn, err := floorSubscribe(ctx, tr, e, fmt.Sprintf("idle-%d", i%100))
		if err != nil {
			return 0, 0, err
		}
		defer conn.Close(wire.CodeOK, "")
	}
	time.Sleep(2 * time.Second)
	after, err := rss(e.cmd.Process.Pid)
	return before, after, err
}

// floorSubscribe connects to the floor forwarder at e with a new
// identity and subscribes to room; it returns once the subscription is
// live.
func floorSubscribe(ctx context.Context, tr *quic.Transport, e endpoint, room string) (transport.Conn, error) {
	key, err := identity.Generate(rand.Reader)
	if err != nil {
		return nil, err
	}
	conn, err := dialBare(ctx, tr, e, key)
	if err != nil {
		return nil, err
	}
	str, err := conn.OpenStream(ctx)
	if err == nil {
		body, _ := (&wire.Subscribe{Room: room}).MarshalBinary()
		_, err = str.Write(wire.AppendFrame(nil, wire.FrameSubscribe, body))
	}
	if err == nil {
		var t wire.FrameType
		if t, _, err = readFloorFrame(bufio.NewReader(str)); err == nil && t != wire.FrameLive {
			err = fmt.Errorf("floor: answered %s", t)
		}
	}
	if err != nil {
		conn.Close(wire.CodeOK, "")
		return nil, fmt.Errorf("floor: subscribe: %w", err)
	}
	return conn, nil
}

package relay_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
)

// keysRelay speaks just enough of the relay protocol for a client to
// dial it (it answers InfoRequest); every other request goes to answer,
// with the request's frame type and body, which writes the answer.
func keysRelay(t *testing.T, answer func(fw *wire.Writer, ft wire.FrameType, body []byte)) relay.Addr {
	t.Helper()
	key := testkit.Key(t)
	conf, err := relay.ServerTLS(key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", conf, &quic.Config{MaxIncomingUniStreams: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.CloseWithError(0, "")
				for {
					str, err := conn.AcceptStream(ctx)
					if err != nil {
						return
					}
					wg.Go(func() { serveKeys(str, answer) })
				}
			})
		}
	})
	return relay.AddrOf(key.Public(), ln.Addr().String())
}

func serveKeys(str *quic.Stream, answer func(*wire.Writer, wire.FrameType, []byte)) {
	defer str.Close()
	defer str.CancelRead(0)
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	// The header by hand: a relay of another version knows other types.
	var h [wire.FrameHeaderSize]byte
	if _, err := io.ReadFull(str, h[:]); err != nil {
		return
	}
	body := make([]byte, binary.BigEndian.Uint32(h[1:]))
	if _, err := io.ReadFull(str, body); err != nil {
		return
	}
	fw := wire.NewWriter(str)
	if ft := wire.FrameType(h[0]); ft == wire.FrameInfoRequest {
		fw.Msg(wire.FrameInfo, &wire.Info{Versions: []uint8{protocol.Version}, MaxEnvelope: protocol.MaxEnvelopeSize,
			PublishRate: 1, PublishBurst: 1, Policy: wire.PolicyOpen, PolicyVersion: 1})
	} else {
		answer(fw, ft, body)
	}
	fw.Flush()
}

// oldRelay answers as a relay from before key packages: a frame of a
// type above 19 is unknown to it (wire.ParseFrameHeader then).
func oldRelay(fw *wire.Writer, ft wire.FrameType, _ []byte) {
	if ft > wire.FrameTreeProof {
		fw.WriteError(&wire.RelayError{Code: wire.CodeBadFrame, Message: "wire: malformed frame: unknown type " + strconv.Itoa(int(ft))})
		return
	}
	fw.WriteError(&wire.RelayError{Code: wire.CodeInternal, Message: "not in this test"})
}

func dialKeys(t *testing.T, addr relay.Addr) *relay.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := relay.Dial(ctx, addr, testkit.Key(t), relay.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func makePackage(t *testing.T, key identity.PrivateKey, created time.Time) []byte {
	t.Helper()
	p, _, err := keypackage.New(key, [keypackage.DeviceSize]byte{1}, created, created.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestKeyPackagesOldRelay: a relay that does not know the key frames
// gives an error wrapping ErrUnsupported, at once, not after retries.
func TestKeyPackagesOldRelay(t *testing.T) {
	c := dialKeys(t, keysRelay(t, oldRelay))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := testkit.Key(t)
	err := c.PutKeyPackage(ctx, makePackage(t, key, time.Now()))
	if !errors.Is(err, relay.ErrUnsupported) || !errors.Is(err, &wire.RelayError{Code: wire.CodeBadFrame}) {
		t.Fatalf("put to an old relay: %v, want ErrUnsupported", err)
	}
	t.Log(err)
	_, err = c.KeyPackages(ctx, []identity.PublicKey{key.Public()})
	if !errors.Is(err, relay.ErrUnsupported) {
		t.Fatalf("get from an old relay: %v, want ErrUnsupported", err)
	}
	t.Log(err)
}

// TestKeyPackagesLyingRelay: the client keeps only packages that verify,
// of keys it asked for, the newest of each, in the order asked.
func TestKeyPackagesLyingRelay(t *testing.T) {
	alice, bob, mallory := testkit.Key(t), testkit.Key(t), testkit.Key(t)
	now := time.Now()
	alices := makePackage(t, alice, now)
	older := makePackage(t, alice, now.Add(-time.Minute))
	bobs := makePackage(t, bob, now)
	forged := bytes.Clone(bobs)
	forged[len(forged)-1] ^= 1
	unasked := makePackage(t, mallory, now)
	c := dialKeys(t, keysRelay(t, func(fw *wire.Writer, ft wire.FrameType, body []byte) {
		if ft != wire.FrameGetKeys {
			fw.WriteError(&wire.RelayError{Code: wire.CodeInternal, Message: "not in this test"})
			return
		}
		if m, err := wire.ParseGetKeys(body); err != nil || len(m.Keys) != 2 {
			fw.WriteError(&wire.RelayError{Code: wire.CodeInternal, Message: "not the keys asked"})
			return
		}
		for _, p := range [][]byte{unasked, alices, forged, older, {1, 2, 3}} {
			fw.Raw(wire.FrameKeyPackage, p)
		}
		fw.Msg(wire.FrameEnd, &wire.End{})
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// bob's forged, alice's newer kept over her older; bob twice is
	// asked once.
	got, err := c.KeyPackages(ctx, []identity.PublicKey{bob.Public(), alice.Public(), bob.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !bytes.Equal(got[0], alices) {
		t.Fatalf("kept %d packages, want alice's newest alone", len(got))
	}
}

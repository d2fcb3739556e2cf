package fuzz

import (
	"bytes"
	"encoding"
	"errors"
	"testing"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
)

// Relay frames: every body parser is strict, so a body that parses
// encodes back to exactly the input, and one that does not is refused
// with wire.ErrBadFrame.

func fuzzFrame[T encoding.BinaryMarshaler](f *testing.F, parse func([]byte) (T, error), seeds ...encoding.BinaryMarshaler) {
	for _, s := range seeds {
		b, err := s.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parse(b)
		if err != nil {
			if !errors.Is(err, wire.ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			return
		}
		sameBytes(t, b)(v.MarshalBinary())
	})
}

func FuzzFrameHeader(f *testing.F) {
	f.Add([]byte{1, 0, 0, 1, 0})
	f.Add([]byte{99, 0, 0, 0, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var h [wire.FrameHeaderSize]byte
		copy(h[:], b)
		ft, n, err := wire.ParseFrameHeader(h)
		if err != nil {
			if !errors.Is(err, wire.ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			return
		}
		if !ft.Known() || n < 0 || n > wire.MaxFrameBody {
			t.Fatalf("accepted type %d with a body of %d", ft, n)
		}
		again := wire.AppendFrame(nil, ft, make([]byte, n))
		if [wire.FrameHeaderSize]byte(again[:wire.FrameHeaderSize]) != h {
			t.Fatalf("header %x encodes back as %x", h, again[:wire.FrameHeaderSize])
		}
	})
}

func FuzzAck(f *testing.F) {
	fuzzFrame(f, wire.ParseAck, &wire.Ack{ID: protocol.ID{1}, Status: wire.AckStored, Pos: 7, Time: 1764137501000},
		&wire.Ack{ID: protocol.ID{1}, Status: wire.AckStored, Pos: 7, Time: 1764137501000,
			Receipt: &wire.Receipt{Index: 3, Time: 1764137501000, PolicyVersion: 2, Checkpoint: []byte("origin\n4\nroot\n\n— sig\n"), Proof: [][32]byte{{1}, {2}}}},
		&wire.Ack{ID: protocol.ID{1}, Status: wire.AckStored, Pos: 8, Time: 1764137501000,
			Receipt: &wire.Receipt{Index: 4, Time: 1764137501000, Proof: [][32]byte{{1}, {2}}}},
		&wire.Ack{ID: protocol.ID{1}, Status: wire.AckStored, Pos: 9, Time: 1764137501000,
			Receipt: &wire.Receipt{Index: 5, Time: 1764137501000, Proof: [][32]byte{{3}}, Shared: 19}})
}

func FuzzProveTree(f *testing.F) {
	fuzzFrame(f, wire.ParseProveTree, &wire.ProveTree{New: 9, Old: []uint64{3, 9, 1}})
}

func FuzzTreeProof(f *testing.F) {
	fuzzFrame(f, wire.ParseTreeProof, &wire.TreeProof{Proofs: [][][32]byte{{{1}, {2}, {3}}, {}}})
}

func FuzzNack(f *testing.F) {
	fuzzFrame(f, wire.ParseNack, &wire.Nack{ID: protocol.ID{2}, Err: wire.RelayError{Code: wire.CodeStale, Message: "late"}})
}

type errorFrame struct{ *wire.RelayError }

func (e errorFrame) MarshalBinary() ([]byte, error) { return wire.MarshalErrorFrame(e.RelayError) }

func FuzzErrorFrame(f *testing.F) {
	fuzzFrame(f, func(b []byte) (errorFrame, error) {
		e, err := wire.ParseErrorFrame(b)
		return errorFrame{e}, err
	}, errorFrame{&wire.RelayError{Code: wire.CodeForbidden, Message: "no posting in news"}})
}

func FuzzSubscribe(f *testing.F) {
	fuzzFrame(f, wire.ParseSubscribe, &wire.Subscribe{Room: "lobby", Cursor: protocol.ID{3}})
}

func FuzzFetchRange(f *testing.F) {
	fuzzFrame(f, wire.ParseFetchRange, &wire.FetchRange{Room: "lobby", Since: 5, Until: 9, After: protocol.ID{4}, Limit: 10})
}

func FuzzFetchIDs(f *testing.F) {
	fuzzFrame(f, wire.ParseFetchIDs, &wire.FetchIDs{IDs: []protocol.ID{{5}, {6}}})
}

func FuzzEnd(f *testing.F) {
	fuzzFrame(f, wire.ParseEnd, &wire.End{More: true})
}

func FuzzPeersRequest(f *testing.F) {
	fuzzFrame(f, wire.ParsePeersRequest, &wire.PeersRequest{Room: "lobby"})
}

func FuzzPeers(f *testing.F) {
	fuzzFrame(f, wire.ParsePeers, &wire.Peers{Addrs: []string{"/ip4/127.0.0.1/udp/4434/quic-v1/p2p/12D3KooWDLdC7P1fWXNSD2XB1bcyqomd9n6mVUqgLACLUNCFcAd8"}})
}

func FuzzInfo(f *testing.F) {
	fuzzFrame(f, wire.ParseInfo, &wire.Info{Versions: []uint8{1}, MaxEnvelope: 65536, PublishRate: 200, PublishBurst: 1000, RetentionDays: 30, Policy: wire.PolicyInvite, PolicyVersion: 4})
}

func FuzzRedeem(f *testing.F) {
	fuzzFrame(f, wire.ParseRedeem, &wire.Redeem{Token: "parley-invite-abc"})
}

func FuzzCommitted(f *testing.F) {
	fuzzFrame(f, wire.ParseCommitted, &wire.Committed{ID: protocol.ID{9}})
}

// FuzzAuditRecord: an audit record that parses encodes back to the input.
func FuzzAuditRecord(f *testing.F) {
	k := testKey(f, 1)
	for i, kind := range []audit.Kind{audit.KindConnect, audit.KindPublish, audit.KindAdmin} {
		b, err := (&audit.Record{Kind: kind, Time: 1764137501000 + int64(i), PolicyVersion: 3, Identity: k.Public(),
			Message: protocol.ID{1}, Size: 300, Path: audit.PathRelay, Room: "lobby", Addr: "127.0.0.1:4433", Detail: "allow"}).MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The store splits a row of records with RecordLen: it never
		// reads past the input, and a record's length is its own.
		n, lenErr := audit.RecordLen(b)
		if lenErr == nil && (n < 1 || n > len(b)) {
			t.Fatalf("RecordLen = %d of %d bytes", n, len(b))
		}
		r, err := audit.ParseRecord(b)
		if err != nil {
			if !errors.Is(err, audit.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		sameBytes(t, b)(r.MarshalBinary())
		if lenErr != nil || n != len(b) {
			t.Fatalf("RecordLen = %d, %v of a record of %d bytes", n, lenErr, len(b))
		}
	})
}

// FuzzCheckpoint: a checkpoint opens only if the relay's key signed it.
func FuzzCheckpoint(f *testing.F) {
	k := testKey(f, 1)
	good, err := audit.Sign(audit.Checkpoint{Origin: audit.Origin(k.Public()), Size: 5, Root: [32]byte{2}}, k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := audit.Open(b, k.Public())
		if err != nil {
			if !errors.Is(err, audit.ErrCheckpoint) {
				t.Fatalf("error %v does not wrap ErrCheckpoint", err)
			}
			return
		}
		// What opened is the note's text, exactly, and the relay's key
		// signed it: the signature the relay would make is in the note.
		again, err := audit.Sign(c, k)
		if err != nil {
			t.Fatal(err)
		}
		text := []byte(c.Text())
		if !bytes.HasPrefix(b, text) || !bytes.Contains(b[len(text):], again[len(text):]) {
			t.Fatalf("opened checkpoint %+v is not the note's text with the relay's signature", c)
		}
	})
}

// FuzzRelayAddr: a relay address that parses prints back as the input.
func FuzzRelayAddr(f *testing.F) {
	f.Add("SHA256:5jV9gJBjzXqNYZCm7iKTZC6XL5PqDH1RCOJS3SBkjtc@relay.example.org:4433")
	f.Add("SHA256:5jV9gJBjzXqNYZCm7iKTZC6XL5PqDH1RCOJS3SBkjtc@[::1]:4433")
	f.Add("relay.example.org:4433")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := relay.ParseAddr(s)
		if err != nil {
			return
		}
		if a.String() != s {
			t.Fatalf("%q parses to %+v, which prints as %q", s, a, a.String())
		}
		if _, err := relay.ParseAddr(a.String()); err != nil {
			t.Fatalf("a parsed address does not parse again: %v", err)
		}
	})
}

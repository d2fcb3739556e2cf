// Package testkit holds what tests of several packages need to make
// signed envelopes: fresh keys, and an author that signs one sender's
// chain of envelopes in a room.
package testkit

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// Key returns a fresh identity.
func Key(t testing.TB) identity.PrivateKey {
	t.Helper()
	k, err := identity.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Author signs one sender's envelopes in one room, in order: each with
// the next sequence number and linked to the one before.
type Author struct {
	Key  identity.PrivateKey
	Room string
	Seq  uint64           // the last number used
	Prev protocol.ID      // the last envelope's ID
	Now  func() time.Time // nil: time.Now
	Nick string           // on every text; empty: "tester"
}

// Next signs the next text envelope and returns it encoded, with its ID.
func (a *Author) Next(t testing.TB, text string) ([]byte, protocol.ID) {
	t.Helper()
	nick := a.Nick
	if nick == "" {
		nick = "tester"
	}
	payload, err := (&protocol.Text{Nick: nick, Body: text}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	raw, id, _ := a.Sign(t, protocol.KindText, payload, a.Seq+1, now())
	return raw, id
}

// Sign signs the author's next envelope of kind with payload, Lamport
// clock lamport and time at, and returns it encoded, with its ID and
// the envelope.
func (a *Author) Sign(t testing.TB, kind protocol.Kind, payload []byte, lamport uint64, at time.Time) ([]byte, protocol.ID, *protocol.Envelope) {
	t.Helper()
	raw, id, e, err := a.Envelope(kind, payload, lamport, at)
	if err != nil {
		t.Fatal(err)
	}
	return raw, id, e
}

// Envelope is Sign returning its error rather than failing a test: for
// a benchmark's publishing loop, where Sign's t.Helper walks the stack
// on every message. The author moves on only when it succeeds.
func (a *Author) Envelope(kind protocol.Kind, payload []byte, lamport uint64, at time.Time) ([]byte, protocol.ID, *protocol.Envelope, error) {
	e := &protocol.Envelope{Kind: kind, Room: a.Room, Seq: a.Seq + 1, Prev: a.Prev, Lamport: lamport, Time: at.UnixMilli(), Payload: payload}
	id, err := e.Sign(a.Key)
	if err != nil {
		return nil, protocol.ID{}, nil, fmt.Errorf("testkit: sign envelope %d: %w", e.Seq, err)
	}
	raw, err := e.MarshalBinary()
	if err != nil {
		return nil, protocol.ID{}, nil, fmt.Errorf("testkit: encode envelope %d: %w", e.Seq, err)
	}
	a.Seq, a.Prev = e.Seq, id
	return raw, id, e, nil
}

package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
)

func key(t testing.TB, n byte) identity.PrivateKey {
	t.Helper()
	k, err := identity.PrivateKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var t0 = time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)

// signed returns an envelope from k in room with number seq, signed, and its
// encoding.
func signed(t testing.TB, k identity.PrivateKey, room string, seq uint64, payload string) (*Envelope, []byte) {
	t.Helper()
	e := &Envelope{
		Kind:    KindText,
		Room:    room,
		Seq:     seq,
		Lamport: seq + 10,
		Time:    t0.UnixMilli(),
		Payload: []byte(payload),
	}
	if seq > 1 {
		e.Prev = ID{byte(seq - 1)}
	}
	if _, err := e.Sign(k); err != nil {
		t.Fatal(err)
	}
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return e, b
}

func TestEnvelopeRoundTrip(t *testing.T) {
	k := key(t, 1)
	e, b := signed(t, k, "general", 7, "hello, world")
	if got := len(b); got != headerSize+len("general")+len("hello, world") {
		t.Fatalf("encoding is %d bytes", got)
	}
	p, id, err := ParseVerify(b)
	if err != nil {
		t.Fatal(err)
	}
	if id != e.ID() || id != IDOf(b) || id.IsZero() {
		t.Fatalf("IDs differ: parsed %s, signed %s", id, e.ID())
	}
	if p.Kind != e.Kind || p.Room != e.Room || p.Sender != k.Public() || p.Seq != 7 || p.Prev != e.Prev ||
		p.Lamport != 17 || !p.Timestamp().Equal(t0) || string(p.Payload) != "hello, world" || p.Sig != e.Sig {
		t.Fatalf("parsed %+v, want %+v", p, e)
	}
	again, err := p.MarshalBinary()
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("re-encoding differs: %v", err)
	}
	// The parsed envelope must not alias the input.
	b[len(b)-70] ^= 0xff
	if p.Verify() != nil {
		t.Fatal("changing the input changed the parsed envelope")
	}
}

func TestParseIDText(t *testing.T) {
	_, b := signed(t, key(t, 1), "r", 1, "x")
	id := IDOf(b)
	back, err := ParseID(id.String())
	if err != nil || back != id {
		t.Fatalf("ParseID(String()) = %v, %v", back, err)
	}
	for _, bad := range []string{"", id.String()[1:], strings.ToUpper(id.String()), id.String() + "0", "zz" + id.String()[2:]} {
		if _, err := ParseID(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseID(%q) error = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestForgedEnvelopes(t *testing.T) {
	alice, mallory := key(t, 1), key(t, 2)
	e, _ := signed(t, alice, "general", 1, "I owe Mallory nothing")

	changed := *e
	changed.Payload = []byte("I owe Mallory 100")
	if err := changed.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Errorf("changed payload: Verify() = %v, want ErrBadSignature", err)
	}

	// Mallory signs, then claims Alice sent it.
	impostor := *e
	if _, err := impostor.Sign(mallory); err != nil {
		t.Fatal(err)
	}
	impostor.Sender = alice.Public()
	if err := impostor.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Errorf("impostor: Verify() = %v, want ErrBadSignature", err)
	}

	moved := *e
	moved.Room = "other"
	if err := moved.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Errorf("moved to another room: Verify() = %v, want ErrBadSignature", err)
	}

	// A signature over the same body without the domain-separation prefix
	// (as another protocol using the same key would make) does not verify.
	noContext := *e
	copy(noContext.Sig[:], alice.Sign(e.appendBody(nil)))
	if err := noContext.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signature without context: Verify() = %v, want ErrBadSignature", err)
	}
}

// Every single-byte change to a signed envelope is caught: by the parser or
// by the signature.
func TestEveryByteChangeIsCaught(t *testing.T) {
	_, b := signed(t, key(t, 1), "general", 3, "a payload of some length")
	for i := range b {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			m := bytes.Clone(b)
			m[i] ^= x
			if _, _, err := ParseVerify(m); err == nil {
				t.Fatalf("byte %d ^ %#x: ParseVerify accepted a changed envelope", i, x)
			}
		}
	}
}

func TestParseRejects(t *testing.T) {
	_, b := signed(t, key(t, 1), "general", 3, "payload")
	roomLen := 2 // offset of the room length byte

	if _, err := Parse(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty: %v, want ErrMalformed", err)
	}
	for n := 1; n < len(b); n++ {
		if _, err := Parse(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d bytes: %v, want ErrMalformed", n, err)
		}
	}
	if _, err := Parse(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("padded: %v, want ErrMalformed", err)
	}
	v2 := bytes.Clone(b)
	v2[0] = 2
	if _, err := Parse(v2); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("version 2: %v, want ErrUnknownVersion", err)
	}
	// The size limit is checked first: a huge input of an unknown version
	// is too large, not of an unknown version.
	huge := make([]byte, MaxEnvelopeSize+1)
	huge[0] = 99
	if _, err := Parse(huge); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: %v, want ErrTooLarge", err)
	}
	overlong := bytes.Clone(b)
	overlong[roomLen] = 0xff
	if _, err := Parse(overlong); !errors.Is(err, ErrMalformed) {
		t.Errorf("over-long room: %v, want ErrMalformed", err)
	}

	// A small-order sender key, under which R = identity, S = 0 would
	// verify for any message, is refused by the parser.
	forged := bytes.Clone(b)
	sender := 3 + len("general")
	copy(forged[sender:sender+32], append([]byte{1}, make([]byte, 31)...))
	copy(forged[len(forged)-64:], append(append([]byte{1}, make([]byte, 31)...), make([]byte, 32)...))
	if _, err := Parse(forged); !errors.Is(err, ErrMalformed) {
		t.Errorf("small-order sender: %v, want ErrMalformed", err)
	}

	mutate := func(name string, f func(e *Envelope)) {
		t.Helper()
		e, _ := signed(t, key(t, 1), "general", 3, "payload")
		f(e)
		// Encode by hand around check, as a hostile peer would.
		raw := append(e.appendBody(nil), e.Sig[:]...)
		if _, err := Parse(raw); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
		if _, err := e.MarshalBinary(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: MarshalBinary error %v, want ErrMalformed", name, err)
		}
	}
	mutate("kind 0", func(e *Envelope) { e.Kind = 0 })
	mutate("seq 0", func(e *Envelope) { e.Seq = 0 })
	mutate("seq above 2^63-1", func(e *Envelope) { e.Seq = MaxCounter + 1 })
	mutate("Lamport above 2^63-1", func(e *Envelope) { e.Lamport = 1 << 63 })
	mutate("empty room", func(e *Envelope) { e.Room = "" })
	mutate("upper-case room", func(e *Envelope) { e.Room = "General" })
	mutate("room with space", func(e *Envelope) { e.Room = "a b" })
	mutate("room with NUL", func(e *Envelope) { e.Room = "a\x00" })
	mutate("long room", func(e *Envelope) { e.Room = strings.Repeat("r", MaxRoomLen+1) })
}

func TestPayloadLimit(t *testing.T) {
	k := key(t, 1)
	e := &Envelope{Kind: KindText, Room: strings.Repeat("r", MaxRoomLen), Seq: 1, Payload: make([]byte, MaxPayloadSize)}
	if _, err := e.Sign(k); err != nil {
		t.Fatal(err)
	}
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != MaxEnvelopeSize {
		t.Fatalf("largest envelope is %d bytes, want %d", len(b), MaxEnvelopeSize)
	}
	if _, _, err := ParseVerify(b); err != nil {
		t.Fatal(err)
	}
	e.Payload = append(e.Payload, 0)
	if _, err := e.Sign(k); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Sign of an oversize payload: %v, want ErrTooLarge", err)
	}
}

func TestUnknownKindParses(t *testing.T) {
	e := &Envelope{Kind: 200, Room: "r", Seq: 1, Payload: []byte("from the future")}
	if _, err := e.Sign(key(t, 1)); err != nil {
		t.Fatal(err)
	}
	b, _ := e.MarshalBinary()
	p, _, err := ParseVerify(b)
	if err != nil {
		t.Fatalf("unknown kind: %v; want it to parse, so that it can be skipped", err)
	}
	if p.Kind.Known() || !KindText.Known() {
		t.Fatal("Kind.Known is wrong")
	}
}

func TestText(t *testing.T) {
	in := Text{Nick: "alice", Body: "hello ☃\n\tsecond line"}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseText(b)
	if err != nil || out != in {
		t.Fatalf("ParseText = %+v, %v; want %+v", out, err, in)
	}
	bad := map[string][]byte{
		"empty":    nil,
		"trailing": append(bytes.Clone(b), 0),
		"short":    b[:len(b)-1],
		"bad nick": {3, 'a', ' ', 'b', 0, 0},
		"no nick":  {0, 0, 0},
		"bad utf8": {1, 'a', 0, 1, 0xff},
		"escape":   {1, 'a', 0, 4, 0x1b, '[', '2', 'J'},
		"C1 CSI":   {1, 'a', 0, 2, 0xc2, 0x9b},
		"DEL":      {1, 'a', 0, 1, 0x7f},
		"NUL":      {1, 'a', 0, 1, 0},
	}
	for name, in := range bad {
		if _, err := ParseText(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	long := Text{Nick: "a", Body: strings.Repeat("x", MaxTextLen+1)}
	if _, err := long.MarshalBinary(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("long text: %v, want ErrTooLarge", err)
	}
}

// TestAddressing: the room and sender of an envelope, read without
// parsing it, and a clear error for bytes that cannot hold them.
func TestAddressing(t *testing.T) {
	k := key(t, 1)
	_, raw := signed(t, k, "general", 1, "hello")
	room, sender, err := Addressing(raw)
	if err != nil || room != "general" || !sender.Equal(k.Public()) {
		t.Fatalf("Addressing = %q, %v, %v", room, sender, err)
	}
	zeroKey := append(append([]byte{Version, 1, 1, 'r'}, make([]byte, 32)...), 0)
	badRoom := append([]byte{Version, 1, 2, 'R', '!'}, raw[3+len("general"):]...)
	for name, b := range map[string][]byte{
		"empty":         nil,
		"version 2":     append([]byte{2}, raw[1:]...),
		"cut in a room": raw[:5],
		"cut in a key":  raw[:3+len("general")+31],
		"bad room":      badRoom,
		"zero key":      zeroKey,
	} {
		if _, _, err := Addressing(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

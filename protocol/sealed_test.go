package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/identity"
)

// protocolSentinels are the errors of errors.go that an error of this
// package wraps exactly one of.
var protocolSentinels = []error{ErrMalformed, ErrTooLarge, ErrUnknownVersion, ErrBadSignature, ErrReplay, ErrExpired, ErrEquivocation}

// wantOnly fails t unless err wraps want and no other sentinel.
func wantOnly(t *testing.T, what string, err, want error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %v", what, want)
		return
	}
	var got []error
	for _, s := range protocolSentinels {
		if errors.Is(err, s) {
			got = append(got, s)
		}
	}
	if len(got) != 1 || got[0] != want {
		t.Errorf("%s: %v wraps %v, want only %v", what, err, got, want)
	}
}

// sealedRecipients returns the public keys of seeds 1 to n, in ascending
// order of their bytes.
func sealedRecipients(t testing.TB, n int) []identity.PublicKey {
	ks := make([]identity.PublicKey, n)
	for i := range ks {
		ks[i] = key(t, byte(i+1)).Public()
	}
	slices.SortFunc(ks, func(a, b identity.PublicKey) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	return ks
}

// testKeys returns a sender key sealed to the recipients, each with a
// sealed key of its own length.
func testKeys(rcpts []identity.PublicKey) *Keys {
	k := &Keys{Head: ID{0xee, 1}, Epoch: Epoch{9, 8, 7}}
	for i, r := range rcpts {
		k.Sealed = append(k.Sealed, SealedKey{Recipient: r, Package: [32]byte{byte(i), 0x55}, Key: bytes.Repeat([]byte{byte(i + 1)}, i+1)})
	}
	return k
}

// rawEntry is one recipient's part of a Keys encoding, as the format
// documents it, built by hand.
func rawEntry(rcpt []byte, pkg byte, key []byte) []byte {
	b := append(slices.Clone(rcpt), bytes.Repeat([]byte{pkg}, 32)...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
	return append(b, key...)
}

// rawKeys is a Keys encoding built by hand: head, epoch, from, to
// (each 32 bytes of the byte given), count, then the entries as given.
func rawKeys(head byte, from, to, count byte, entries ...[]byte) []byte {
	b := append(bytes.Repeat([]byte{head}, 32), bytes.Repeat([]byte{0xe0}, EpochSize)...)
	b = append(append(b, bytes.Repeat([]byte{from}, 32)...), bytes.Repeat([]byte{to}, 32)...)
	b = append(b, count)
	for _, e := range entries {
		b = append(b, e...)
	}
	return b
}

func TestKeysRoundTrip(t *testing.T) {
	all := sealedRecipients(t, MaxRecipients)
	for _, in := range []*Keys{
		testKeys(all[:1]),
		testKeys(all[:5]),
		testKeys(all),
		{Head: ID{1}, From: all[0].Array(), To: all[1].Array(), Sealed: []SealedKey{{Recipient: all[0], Key: make([]byte, MaxSealedKey)}}},
	} {
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatalf("%d recipients: %v", len(in.Sealed), err)
		}
		want := len(ID{}) + EpochSize + 64 + 1
		for _, s := range in.Sealed {
			want += 32 + 32 + 2 + len(s.Key)
		}
		if len(b) != want {
			t.Errorf("%d recipients: %d bytes, want %d", len(in.Sealed), len(b), want)
		}
		out, err := ParseKeys(b)
		if err != nil {
			t.Fatalf("%d recipients: ParseKeys: %v", len(in.Sealed), err)
		}
		if !reflect.DeepEqual(out, in) {
			t.Errorf("%d recipients: ParseKeys = %+v, want %+v", len(in.Sealed), out, in)
		}
		again, err := out.AppendBinary([]byte{7})
		if err != nil || !bytes.Equal(again, append([]byte{7}, b...)) {
			t.Errorf("%d recipients: AppendBinary = %x, %v", len(in.Sealed), again, err)
		}
	}
	// The encoding is the documented one, byte for byte.
	r := sealedRecipients(t, 2)
	in := &Keys{Head: ID{}, Epoch: Epoch{}, Sealed: []SealedKey{
		{Recipient: r[0], Package: [32]byte(bytes.Repeat([]byte{0xa1}, 32)), Key: []byte{1, 2, 3}},
		{Recipient: r[1], Package: [32]byte(bytes.Repeat([]byte{0xa2}, 32)), Key: []byte{4}},
	}}
	copy(in.Head[:], bytes.Repeat([]byte{0x11}, 32))
	copy(in.Epoch[:], bytes.Repeat([]byte{0xe0}, EpochSize))
	want := rawKeys(0x11, 0, 0, 2, rawEntry(r[0].Bytes(), 0xa1, []byte{1, 2, 3}), rawEntry(r[1].Bytes(), 0xa2, []byte{4}))
	if b, err := in.MarshalBinary(); err != nil || !bytes.Equal(b, want) {
		t.Errorf("MarshalBinary = %x, %v\nwant %x", b, err, want)
	}
	// A sealed key is the parser's own: changing the input later does
	// not change it.
	b := slices.Clone(want)
	out, err := ParseKeys(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if !bytes.Equal(out.Sealed[0].Key, []byte{1, 2, 3}) {
		t.Errorf("the sealed key aliases the input: %x", out.Sealed[0].Key)
	}
}

func TestParseKeysRejects(t *testing.T) {
	all := sealedRecipients(t, MaxRecipients+1)
	raw := make([][]byte, len(all))
	for i, r := range all {
		raw[i] = r.Bytes()
	}
	entry := func(i int) []byte { return rawEntry(raw[i], byte(i), []byte{byte(i), 1}) }
	var max, over [][]byte
	for i := range all {
		if i < MaxRecipients {
			max = append(max, entry(i))
		}
		over = append(over, entry(i))
	}
	good := rawKeys(1, 0, 0, 3, entry(0), entry(1), entry(2))
	if _, err := ParseKeys(good); err != nil {
		t.Fatalf("the good encoding: %v", err)
	}
	if _, err := ParseKeys(rawKeys(1, 0, 0, MaxRecipients, max...)); err != nil {
		t.Fatalf("%d recipients: %v", MaxRecipients, err)
	}
	for i := range len(good) {
		if k, err := ParseKeys(good[:i]); k != nil || err == nil {
			t.Errorf("cut to %d bytes: ParseKeys = %+v, %v", i, k, err)
		} else {
			wantOnly(t, "truncated", err, ErrMalformed)
		}
	}
	smallOrder := make([]byte, 32) // y = 0: a point of order 4
	nonCanonical := bytes.Repeat([]byte{0xff}, 32)
	for _, tc := range []struct {
		what string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"trailing byte", append(slices.Clone(good), 0), ErrMalformed},
		{"zero head", rawKeys(0, 0, 0, 1, entry(0)), ErrMalformed},
		{"empty stretch", rawKeys(1, 5, 5, 1, entry(0)), ErrMalformed},
		{"recipient outside the stretch", rawKeys(1, 0xff, 0, 1, entry(0)), ErrMalformed},
		{"0 recipients", rawKeys(1, 0, 0, 0), ErrMalformed},
		{"0 recipients, trailing", rawKeys(1, 0, 0, 0, entry(0)), ErrMalformed},
		{"count above the entries", rawKeys(1, 0, 0, 2, entry(0)), ErrMalformed},
		{"count below the entries", rawKeys(1, 0, 0, 1, entry(0), entry(1)), ErrMalformed},
		{"MaxRecipients+1 recipients", rawKeys(1, 0, 0, MaxRecipients+1, over...), ErrMalformed},
		{"unsorted", rawKeys(1, 0, 0, 2, entry(1), entry(0)), ErrMalformed},
		{"unsorted at the end", rawKeys(1, 0, 0, 3, entry(0), entry(2), entry(1)), ErrMalformed},
		{"repeated", rawKeys(1, 0, 0, 2, entry(0), entry(0)), ErrMalformed},
		{"repeated with another package", rawKeys(1, 0, 0, 2, entry(0), rawEntry(raw[0], 0xff, []byte{9})), ErrMalformed},
		{"empty sealed key", rawKeys(1, 0, 0, 1, rawEntry(raw[0], 0, nil)), ErrMalformed},
		{"oversized sealed key", rawKeys(1, 0, 0, 1, rawEntry(raw[0], 0, make([]byte, MaxSealedKey+1))), ErrMalformed},
		{"key length past the end", append(rawKeys(1, 0, 0, 1, raw[0], make([]byte, 32)), 0, 5, 1, 2), ErrMalformed},
		{"small-order recipient", rawKeys(1, 0, 0, 1, rawEntry(smallOrder, 0, []byte{1})), ErrMalformed},
		{"non-canonical recipient", rawKeys(1, 0, 0, 1, rawEntry(nonCanonical, 0, []byte{1})), ErrMalformed},
		{"over the payload limit", make([]byte, MaxPayloadSize+1), ErrTooLarge},
	} {
		k, err := ParseKeys(tc.b)
		if k != nil {
			t.Errorf("%s: ParseKeys = %+v", tc.what, k)
		}
		wantOnly(t, tc.what, err, tc.want)
	}
	// MarshalBinary refuses what ParseKeys refuses.
	r := sealedRecipients(t, MaxRecipients+1)
	for what, k := range map[string]*Keys{
		"zero head":                  {Sealed: testKeys(r[:1]).Sealed},
		"empty stretch":              {Head: ID{1}, From: r[1].Array(), To: r[1].Array(), Sealed: testKeys(r[1:2]).Sealed},
		"recipient outside":          {Head: ID{1}, From: r[1].Array(), To: r[2].Array(), Sealed: testKeys(r[2:3]).Sealed},
		"0 recipients":               {Head: ID{1}},
		"MaxRecipients+1 recipients": testKeys(r),
		"unsorted":                   {Head: ID{1}, Sealed: []SealedKey{testKeys(r).Sealed[1], testKeys(r).Sealed[0]}},
		"repeated":                   {Head: ID{1}, Sealed: []SealedKey{testKeys(r).Sealed[0], testKeys(r).Sealed[0]}},
		"empty sealed key":           {Head: ID{1}, Sealed: []SealedKey{{Recipient: r[0]}}},
		"oversized sealed key":       {Head: ID{1}, Sealed: []SealedKey{{Recipient: r[0], Key: make([]byte, MaxSealedKey+1)}}},
	} {
		b, err := k.AppendBinary([]byte{1})
		wantOnly(t, "MarshalBinary of "+what, err, ErrMalformed)
		if !bytes.Equal(b, []byte{1}) {
			t.Errorf("MarshalBinary of %s appended %x", what, b)
		}
	}
}

func TestKeysFor(t *testing.T) {
	r := sealedRecipients(t, 6)
	// The part holds r[1], r[3] and r[4]. Over the whole key space, r[2]
	// (between them) and r[0] and r[5] are surely not sealed to; over
	// the stretch from r[1] to r[5], r[2] is, and r[0] and r[5] are
	// another part's to say.
	for _, tc := range []struct {
		what     string
		from, to [32]byte
		none     map[int]bool
	}{
		{"the only part", [32]byte{}, [32]byte{}, map[int]bool{0: true, 2: true, 5: true}},
		{"a stretch", r[1].Array(), r[5].Array(), map[int]bool{2: true}},
		{"the last stretch", r[1].Array(), [32]byte{}, map[int]bool{2: true, 5: true}},
	} {
		k := testKeys([]identity.PublicKey{r[1], r[3], r[4]})
		k.From, k.To = tc.from, tc.to
		if _, err := k.MarshalBinary(); err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		for i, s := range k.Sealed {
			got, ok, none := k.For(s.Recipient)
			if !ok || none || !reflect.DeepEqual(got, s) {
				t.Errorf("%s, recipient %d: For = %+v, %v, %v", tc.what, i, got, ok, none)
			}
		}
		for _, i := range []int{0, 2, 5} {
			got, ok, none := k.For(r[i])
			if ok || none != tc.none[i] || !reflect.DeepEqual(got, SealedKey{}) {
				t.Errorf("%s, r[%d]: For = %+v, %v, %v; want none %v", tc.what, i, got, ok, none, tc.none[i])
			}
		}
	}
}

func TestSealedRoundTrip(t *testing.T) {
	for _, in := range []Sealed{
		{Head: ID{1}, Epoch: Epoch{2}, Index: 0, Box: bytes.Repeat([]byte{0xb0}, MinBox)},
		{Head: ID{0xff, 3}, Epoch: Epoch{15: 9}, Index: 1<<32 - 1, Box: bytes.Repeat([]byte{0xb1}, 1000)},
	} {
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		want := append(append(slices.Clone(in.Head[:]), in.Epoch[:]...), binary.BigEndian.AppendUint32(nil, in.Index)...)
		want = append(want, in.Box...)
		if !bytes.Equal(b, want) {
			t.Errorf("MarshalBinary = %x\nwant %x", b, want)
		}
		out, err := ParseSealed(b)
		if err != nil || !reflect.DeepEqual(out, in) {
			t.Errorf("ParseSealed = %+v, %v; want %+v", out, err, in)
		}
		again, err := out.AppendBinary([]byte{7})
		if err != nil || !bytes.Equal(again, append([]byte{7}, b...)) {
			t.Errorf("AppendBinary = %x, %v", again, err)
		}
	}
	good, _ := (&Sealed{Head: ID{1}, Box: make([]byte, MinBox)}).MarshalBinary()
	zeroHead := slices.Clone(good)
	clear(zeroHead[:32])
	for what, b := range map[string][]byte{
		"empty":                   nil,
		"head only":               good[:32],
		"no box":                  good[:32+EpochSize+4],
		"box shorter than MinBox": good[:len(good)-1],
		"zero head":               zeroHead,
		"zero head, long box":     append(slices.Clone(zeroHead), make([]byte, 100)...),
	} {
		p, err := ParseSealed(b)
		if !reflect.DeepEqual(p, Sealed{}) {
			t.Errorf("%s: ParseSealed = %+v", what, p)
		}
		wantOnly(t, what, err, ErrMalformed)
	}
	for what, p := range map[string]*Sealed{
		"zero head":               {Box: make([]byte, MinBox)},
		"box shorter than MinBox": {Head: ID{1}, Box: make([]byte, MinBox-1)},
		"no box":                  {Head: ID{1}},
	} {
		b, err := p.AppendBinary([]byte{1})
		wantOnly(t, "MarshalBinary of "+what, err, ErrMalformed)
		if !bytes.Equal(b, []byte{1}) {
			t.Errorf("MarshalBinary of %s appended %x", what, b)
		}
	}
}

// announcePackage derives a key package of key n, fixed for the test.
func announcePackage(t testing.TB, n byte) *keypackage.Package {
	t.Helper()
	created := time.Unix(1767225600, 0)
	p, _, err := keypackage.Derive(key(t, n), [keypackage.DeviceSize]byte{n}, created, created.Add(keypackage.Lifetime), bytes.Repeat([]byte{0x42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAnnounce(t *testing.T) {
	p := announcePackage(t, 1)
	pkg, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	in := Announce{Head: ID{4, 5}, Package: p}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, append(slices.Clone(in.Head[:]), pkg...)) {
		t.Fatal("the encoding is not the head, then the package")
	}
	out, err := ParseAnnounce(b)
	if err != nil || !reflect.DeepEqual(out, in) {
		t.Fatalf("ParseAnnounce = %+v, %v", out, err)
	}
	if again, err := out.AppendBinary([]byte{7}); err != nil || !bytes.Equal(again, append([]byte{7}, b...)) {
		t.Errorf("AppendBinary = %x, %v", again, err)
	}
	flip := func(i int, x byte) []byte {
		c := slices.Clone(b)
		c[i] ^= x
		return c
	}
	zeroHead := slices.Clone(b)
	clear(zeroHead[:32])
	for _, tc := range []struct {
		what string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"short head", b[:31], ErrMalformed},
		{"head only", b[:32], ErrMalformed},
		{"version only", b[:33], ErrMalformed},
		{"cut signature", b[:len(b)-1], ErrMalformed},
		{"trailing byte", append(slices.Clone(b), 0), ErrMalformed},
		{"zero head", zeroHead, ErrMalformed},
		{"another version", flip(32, 3), ErrUnknownVersion},
		{"another suite", flip(34, 1), ErrUnknownVersion},
		{"changed signature", flip(len(b)-1, 1), ErrBadSignature},
		{"changed device", flip(32+7+32, 1), ErrBadSignature},
	} {
		a, err := ParseAnnounce(tc.b)
		if !reflect.DeepEqual(a, Announce{}) {
			t.Errorf("%s: ParseAnnounce = %+v", tc.what, a)
		}
		wantOnly(t, tc.what, err, tc.want)
		// A keypackage sentinel does not leak through.
		for _, s := range []error{keypackage.ErrMalformed, keypackage.ErrUnknownVersion, keypackage.ErrBadSignature} {
			if errors.Is(err, s) {
				t.Errorf("%s: %v wraps %v", tc.what, err, s)
			}
		}
	}
	for what, a := range map[string]*Announce{"zero head": {Package: p}, "no package": {Head: ID{1}}} {
		got, err := a.AppendBinary([]byte{1})
		wantOnly(t, "MarshalBinary of "+what, err, ErrMalformed)
		if !bytes.Equal(got, []byte{1}) {
			t.Errorf("MarshalBinary of %s appended %x", what, got)
		}
	}
}

// sealedKindPayloads returns a valid payload of each sealed kind, the
// key package announced being key 1's.
func sealedKindPayloads(t *testing.T) map[Kind][]byte {
	announce, err := (&Announce{Head: ID{1}, Package: announcePackage(t, 1)}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	k := testKeys(sealedRecipients(t, 3))
	k.Head = ID{1}
	keys, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := (&Sealed{Head: ID{1}, Epoch: Epoch{2}, Index: 3, Box: make([]byte, MinBox)}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return map[Kind][]byte{KindKeyPackage: announce, KindKeys: keys, KindSealed: sealed}
}

func TestCheckPayloadSealedKinds(t *testing.T) {
	room := memberRoom(t)
	payloads := sealedKindPayloads(t)
	envelope := func(n byte, kind Kind, room string, payload []byte) *Envelope {
		t.Helper()
		e := &Envelope{Kind: kind, Room: room, Seq: 1, Lamport: 1, Time: t0.UnixMilli(), Payload: payload}
		if _, err := e.Sign(key(t, n)); err != nil {
			t.Fatal(err)
		}
		return e
	}
	for kind, p := range payloads {
		if err := CheckPayload(envelope(1, kind, room, p)); err != nil {
			t.Errorf("%s in a private room: %v", kind, err)
		}
		for _, public := range []string{"general", "p:general", room + "a"} {
			err := CheckPayload(envelope(1, kind, public, p))
			wantOnly(t, kind.String()+" in public room "+public, err, ErrMalformed)
		}
		cut := p[:len(p)-1]
		if kind == KindSealed {
			cut = p[:sealedPrefix+MinBox-1]
		}
		wantOnly(t, "cut "+kind.String(), CheckPayload(envelope(1, kind, room, cut)), ErrMalformed)
		wantOnly(t, "empty "+kind.String(), CheckPayload(envelope(1, kind, room, nil)), ErrMalformed)
		zero := slices.Clone(p)
		clear(zero[:32])
		wantOnly(t, kind.String()+" naming no head", CheckPayload(envelope(1, kind, room, zero)), ErrMalformed)
		// A text is none of them.
		text, _ := (&Text{Nick: "alice", Body: "hi"}).MarshalBinary()
		if err := CheckPayload(envelope(1, kind, room, text)); err == nil {
			t.Errorf("a text as %s passes", kind)
		}
	}
	// Key 1's package, announced by key 2.
	err := CheckPayload(envelope(2, KindKeyPackage, room, payloads[KindKeyPackage]))
	wantOnly(t, "a key package announced by another sender", err, ErrMalformed)
	// A bad signature stays a bad signature.
	bad := slices.Clone(payloads[KindKeyPackage])
	bad[len(bad)-1] ^= 1
	wantOnly(t, "a key package with a bad signature", CheckPayload(envelope(1, KindKeyPackage, room, bad)), ErrBadSignature)
}

func TestHeadOf(t *testing.T) {
	payloads := sealedKindPayloads(t)
	post, _ := (&Post{Head: ID{1}, Text: Text{Nick: "alice", Body: "hi"}}).MarshalBinary()
	payloads[KindPost] = post
	for kind := Kind(0); kind < 10; kind++ {
		want := kind == KindPost || kind == KindKeyPackage || kind == KindKeys || kind == KindSealed
		if kind.HasHead() != want {
			t.Errorf("%s: HasHead = %v", kind, !want)
		}
		p, ok := payloads[kind]
		if !ok {
			p = append([]byte{1}, make([]byte, 40)...)
		}
		h, err := HeadOf(&Envelope{Kind: kind, Payload: p})
		if !want {
			wantOnly(t, "HeadOf "+kind.String(), err, ErrMalformed)
			if !h.IsZero() {
				t.Errorf("%s: HeadOf = %s", kind, h)
			}
			continue
		}
		if err != nil || h != (ID{1}) {
			t.Errorf("%s: HeadOf = %s, %v; want %s", kind, h, err, ID{1})
		}
		_, err = HeadOf(&Envelope{Kind: kind, Payload: p[:31]})
		wantOnly(t, "HeadOf a cut "+kind.String(), err, ErrMalformed)
		_, err = HeadOf(&Envelope{Kind: kind, Payload: make([]byte, 200)})
		wantOnly(t, "HeadOf a zero head, "+kind.String(), err, ErrMalformed)
		// HeadOf reads only the head: the rest is the parser's to judge.
		if h, err := HeadOf(&Envelope{Kind: kind, Payload: []byte("\x07" + string(make([]byte, 31)))}); err != nil || h != (ID{7}) {
			t.Errorf("%s: HeadOf of a bare head = %s, %v", kind, h, err)
		}
	}
}

// sealedAADEnvelope is the fixed envelope of the SealedAAD known answer.
func sealedAADEnvelope(t *testing.T) (*Envelope, *Sealed) {
	p := &Sealed{Head: ID{0x11, 0x22}, Epoch: Epoch{0x33, 15: 0x44}, Index: 0x01020304, Box: make([]byte, MinBox+16)}
	payload, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	e := &Envelope{Kind: KindSealed, Room: DirectRoomID(key(t, 1).Public(), key(t, 2).Public()), Sender: key(t, 1).Public(),
		Seq: 7, Prev: ID{0x55}, Lamport: 42, Time: 1764137501000, Payload: payload}
	return e, p
}

func TestSealedAAD(t *testing.T) {
	e, p := sealedAADEnvelope(t)
	aad := SealedAAD(e, p)
	// This pins the format of the associated data: a sealed message made
	// by one version must open in the next. Change it only with a new
	// context string.
	const want = "48bc3d141ee3693d47cf41cb9a04e45359c9d8c8e821207c55e538d3bcf74e30"
	if got := sha256.Sum256(aad); hex.EncodeToString(got[:]) != want {
		t.Errorf("SHA-256 of SealedAAD = %x, want %s\n%x", got, want, aad)
	}
	if !bytes.HasPrefix(aad, []byte("parley sealed message v1\x00")) {
		t.Errorf("SealedAAD starts %q", aad[:min(len(aad), 25)])
	}
	// Sealing is done before the box exists, with one of the final
	// size: the AAD is the same.
	if again := SealedAAD(e, &Sealed{Head: p.Head, Epoch: p.Epoch, Index: p.Index, Box: make([]byte, len(p.Box))}); !bytes.Equal(again, aad) {
		t.Error("SealedAAD depends on the box's bytes, not only its length")
	}
	// A Sig is not in it (the AAD is made before signing).
	signed := *e
	signed.Sig[0] = 1
	if !bytes.Equal(SealedAAD(&signed, p), aad) {
		t.Error("SealedAAD depends on the signature")
	}
	seen := map[string]string{string(aad): "the fixed envelope"}
	change := func(what string, edit func(e *Envelope, p *Sealed)) {
		e2, p2 := sealedAADEnvelope(t)
		edit(e2, p2)
		got := string(SealedAAD(e2, p2))
		if prev, ok := seen[got]; ok {
			t.Errorf("changing the %s: SealedAAD is that of %s", what, prev)
		}
		seen[got] = what
	}
	change("room", func(e *Envelope, p *Sealed) { e.Room = DirectRoomID(key(t, 1).Public(), key(t, 3).Public()) })
	change("room's length", func(e *Envelope, p *Sealed) { e.Room = e.Room[:len(e.Room)-1] })
	change("sender", func(e *Envelope, p *Sealed) { e.Sender = key(t, 2).Public() })
	change("seq", func(e *Envelope, p *Sealed) { e.Seq++ })
	change("prev", func(e *Envelope, p *Sealed) { e.Prev[31] = 1 })
	change("lamport", func(e *Envelope, p *Sealed) { e.Lamport++ })
	change("time", func(e *Envelope, p *Sealed) { e.Time++ })
	change("kind", func(e *Envelope, p *Sealed) { e.Kind = KindPost })
	change("head", func(e *Envelope, p *Sealed) { p.Head[31] = 1 })
	change("epoch", func(e *Envelope, p *Sealed) { p.Epoch[15]++ })
	change("index", func(e *Envelope, p *Sealed) { p.Index++ })
	change("box length", func(e *Envelope, p *Sealed) { p.Box = append(p.Box, 0) })
	change("box length by 2^16", func(e *Envelope, p *Sealed) { p.Box = make([]byte, len(p.Box)+1<<16) })
}

func TestDirectRoomID(t *testing.T) {
	alice, bob := key(t, 1).Public(), key(t, 2).Public()
	room := DirectRoomID(alice, bob)
	// Known answer: the IDs of direct rooms must not change between
	// versions, or two people would find each other in new rooms.
	const want = "p:ln3z2ntjmhngkwxrh4ktx2lzum5r75vf"
	if room != want {
		t.Errorf("DirectRoomID = %q, want %q", room, want)
	}
	if DirectRoomID(bob, alice) != room {
		t.Errorf("DirectRoomID(bob, alice) = %q, DirectRoomID(alice, bob) = %q", DirectRoomID(bob, alice), room)
	}
	if !IsPrivateRoom(room) || ValidRoom(room) != nil {
		t.Errorf("%q is not a private room's ID", room)
	}
	carol := key(t, 3).Public()
	others := map[string]bool{
		DirectRoomID(alice, carol): true, DirectRoomID(bob, carol): true, DirectRoomID(alice, alice): true,
		PrivateRoomID(alice, [NonceSize]byte{}): true, PrivateRoomID(bob, [NonceSize]byte{}): true, PrivateRoomID(alice, memberNonce): true,
	}
	// The creation hash of a room whose nonce is bob's key's start.
	var nonce [NonceSize]byte
	copy(nonce[:], bob.Bytes())
	others[PrivateRoomID(alice, nonce)] = true
	if others[room] || len(others) != 7 {
		t.Errorf("DirectRoomID collides with another room: %v", others)
	}
}

func TestDirectChange(t *testing.T) {
	alice, bob := key(t, 1), key(t, 2)
	in := &Change{Op: OpDirect, Target: bob.Public()}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte{byte(OpDirect), 0}, bob.Public().Bytes()...); !bytes.Equal(b, want) {
		t.Errorf("encoding %x, want %x", b, want)
	}
	out, err := ParseChange(b)
	if err != nil || !reflect.DeepEqual(out, in) {
		t.Fatalf("ParseChange = %+v, %v; want %+v", out, err, in)
	}
	if OpDirect.String() != "direct" {
		t.Errorf("OpDirect.String() = %q", OpDirect.String())
	}
	withParent := &Change{Op: OpDirect, Parents: []ID{{1}}, Target: bob.Public()}
	_, err = withParent.MarshalBinary()
	wantOnly(t, "MarshalBinary of a direct start with a parent", err, ErrMalformed)
	_, err = ParseChange(append([]byte{byte(OpDirect), 1}, append(make([]byte, 31), 1)...))
	wantOnly(t, "ParseChange of a direct start with a parent and no target", err, ErrMalformed)
	parent := ID{1}
	p := append(append([]byte{byte(OpDirect), 1}, parent[:]...), bob.Public().Bytes()...)
	_, err = ParseChange(p)
	wantOnly(t, "ParseChange of a direct start with a parent", err, ErrMalformed)

	check := func(sender identity.PrivateKey, room string, c *Change) error {
		t.Helper()
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		e := &Envelope{Kind: KindMember, Room: room, Seq: 1, Lamport: 1, Time: t0.UnixMilli(), Payload: b}
		if _, err := e.Sign(sender); err != nil {
			t.Fatal(err)
		}
		if err := CheckChange(e, c); err != nil {
			return err
		}
		return CheckPayload(e)
	}
	room := DirectRoomID(alice.Public(), bob.Public())
	if err := check(alice, room, in); err != nil {
		t.Errorf("alice starts the room with bob: %v", err)
	}
	if err := check(bob, room, &Change{Op: OpDirect, Target: alice.Public()}); err != nil {
		t.Errorf("bob starts the room with alice: %v", err)
	}
	carol := key(t, 3)
	for _, tc := range []struct {
		what   string
		sender identity.PrivateKey
		room   string
		target identity.PublicKey
	}{
		{"another's room", carol, room, bob.Public()},
		{"the room of alice and carol, naming bob", alice, DirectRoomID(alice.Public(), carol.Public()), bob.Public()},
		{"a created room", alice, PrivateRoomID(alice.Public(), memberNonce), bob.Public()},
		{"a room with oneself", alice, DirectRoomID(alice.Public(), alice.Public()), alice.Public()},
	} {
		wantOnly(t, tc.what, check(tc.sender, tc.room, &Change{Op: OpDirect, Target: tc.target}), ErrMalformed)
	}
	// OpDirect is no OpCreate: it does not claim the room that hashes
	// like a creation.
	if err := check(alice, room, &Change{Op: OpCreate, Nonce: memberNonce, Name: "x"}); err == nil {
		t.Error("a creation claims a direct room")
	}
}

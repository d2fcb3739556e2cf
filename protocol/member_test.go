package protocol

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/parleychat/parley/identity"
)

var memberNonce = [NonceSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

// memberRoom returns a private room created by key 1.
func memberRoom(t testing.TB) string {
	return PrivateRoomID(key(t, 1).Public(), memberNonce)
}

// sortedIDs returns n distinct IDs in ascending order.
func sortedIDs(n int) []ID {
	ids := make([]ID, n)
	for i := range ids {
		ids[i] = ID{byte(i + 1), 0xaa}
	}
	return ids
}

// joinChange returns a join of joiner with an invite (key invite) that
// issuer signed for room at clock lamport.
func joinChange(t testing.TB, room string, issuer, invite identity.PrivateKey, joiner identity.PublicKey, lamport uint64) *Change {
	c := &Change{Op: OpJoin, Cap: Capability{Key: invite.Public(), Lamport: lamport, Expires: 2_000_000_000, Uses: 3}}
	c.Cap.Sign(room, issuer)
	copy(c.Proof[:], invite.Sign(JoinProofInput(room, joiner)))
	return c
}

// everyOp returns one change of each operation, with all its fields set.
func everyOp(t testing.TB) []*Change {
	room := memberRoom(t)
	parents := sortedIDs(3)
	target := key(t, 7).Public()
	return []*Change{
		{Op: OpCreate, Nonce: memberNonce, Name: "plans ☃"},
		{Op: OpAdd, Parents: parents, Target: target},
		{Op: OpRemove, Parents: parents[:1], Target: target},
		{Op: OpAdmin, Parents: parents, Target: target},
		{Op: OpUnadmin, Parents: parents, Target: target},
		{Op: OpRename, Parents: sortedIDs(MaxParents), Name: strings.Repeat("n", MaxRoomNameLen)},
		{Op: OpInvite, Parents: parents, Target: key(t, 8).Public(), Expires: 1 << 31, Uses: 65535},
		{Op: OpRevoke, Parents: parents, Target: key(t, 8).Public()},
		joinChange(t, room, key(t, 1), key(t, 8), key(t, 5).Public(), 41),
	}
}

func TestChangeRoundTrip(t *testing.T) {
	sizes := map[Op]int{OpCreate: 2 + NonceSize + 1 + len("plans ☃"), OpAdd: 2 + 3*32 + 32, OpRemove: 2 + 32 + 32,
		OpAdmin: 2 + 3*32 + 32, OpUnadmin: 2 + 3*32 + 32, OpRename: 2 + MaxParents*32 + 1 + MaxRoomNameLen,
		OpInvite: 2 + 3*32 + 32 + 4 + 2, OpRevoke: 2 + 3*32 + 32, OpJoin: 2 + 32 + 32 + 8 + 4 + 2 + 64 + 64}
	seen := make(map[Op]bool)
	for _, in := range everyOp(t) {
		seen[in.Op] = true
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatalf("%s: %v", in.Op, err)
		}
		if len(b) != sizes[in.Op] {
			t.Errorf("%s: %d bytes, want %d", in.Op, len(b), sizes[in.Op])
		}
		if b[0] != byte(in.Op) || int(b[1]) != len(in.Parents) {
			t.Errorf("%s: starts %x", in.Op, b[:2])
		}
		out, err := ParseChange(b)
		if err != nil {
			t.Fatalf("%s: ParseChange: %v", in.Op, err)
		}
		if !reflect.DeepEqual(out, in) {
			t.Errorf("%s: ParseChange = %+v, want %+v", in.Op, out, in)
		}
		again, err := out.AppendBinary([]byte("prefix"))
		if err != nil || !bytes.Equal(again, append([]byte("prefix"), b...)) {
			t.Errorf("%s: AppendBinary = %x, %v", in.Op, again, err)
		}
	}
	for op := OpCreate; op <= OpJoin; op++ {
		if !seen[op] {
			t.Errorf("%s not tested", op)
		}
	}
	// A join may name parents too.
	j := joinChange(t, memberRoom(t), key(t, 1), key(t, 8), key(t, 5).Public(), 41)
	j.Parents = sortedIDs(2)
	b, err := j.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ParseChange(b); err != nil || !reflect.DeepEqual(out, j) {
		t.Errorf("join with parents: %+v, %v", out, err)
	}
}

func TestOpString(t *testing.T) {
	want := []string{"op(0)", "create", "add", "remove", "admin", "unadmin", "rename", "invite", "revoke", "join", "direct", "op(11)"}
	for i, w := range want {
		if got := Op(i).String(); got != w {
			t.Errorf("Op(%d) = %q, want %q", i, got, w)
		}
	}
	if Op(255).String() != "op(255)" {
		t.Errorf("Op(255) = %q", Op(255))
	}
	for k, w := range map[Kind]string{KindText: "text", KindMember: "member", KindPost: "post",
		KindKeyPackage: "key-package", KindKeys: "keys", KindSealed: "sealed", 7: "kind(7)"} {
		if k.String() != w || k.Known() != (w != "kind(7)") {
			t.Errorf("Kind %d: %q, known %v", k, k, k.Known())
		}
	}
}

// wantMalformed fails t unless b does not parse as a change, with an
// error wrapping ErrMalformed only.
func wantMalformed(t *testing.T, what string, b []byte) {
	t.Helper()
	c, err := ParseChange(b)
	if !errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge) || c != nil {
		t.Errorf("%s: ParseChange = %+v, %v; want ErrMalformed", what, c, err)
	}
}

func TestParseChangeRejects(t *testing.T) {
	target := key(t, 7).Public().Bytes()
	ids := sortedIDs(MaxParents + 1)
	encode := func(op Op, parents []ID, rest ...[]byte) []byte {
		b := []byte{byte(op), byte(len(parents))}
		for _, p := range parents {
			b = append(b, p[:]...)
		}
		for _, r := range rest {
			b = append(b, r...)
		}
		return b
	}
	name := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }
	good := encode(OpAdd, ids[:1], target)
	if _, err := ParseChange(good); err != nil {
		t.Fatalf("the good change: %v", err)
	}
	wantMalformed(t, "trailing byte", append(slices.Clone(good), 0))
	wantMalformed(t, "trailing key", append(slices.Clone(good), target...))
	wantMalformed(t, "empty", nil)
	wantMalformed(t, "op only", []byte{byte(OpAdd)})
	for n := range len(good) {
		wantMalformed(t, "truncated", good[:n])
	}
	wantMalformed(t, "too many parents", encode(OpAdd, ids, target))
	wantMalformed(t, "255 parents", append([]byte{byte(OpAdd), 255}, make([]byte, 255*32+32)...))
	wantMalformed(t, "parents descending", encode(OpAdd, []ID{ids[1], ids[0]}, target))
	wantMalformed(t, "parent repeated", encode(OpAdd, []ID{ids[0], ids[0]}, target))
	wantMalformed(t, "parent repeated, not adjacent", encode(OpAdd, []ID{ids[0], ids[1], ids[0]}, target))
	for _, op := range []byte{0, byte(OpJoin) + 1, 100, 255} {
		wantMalformed(t, "op "+Op(op).String(), encode(Op(op), ids[:1], target))
	}
	wantMalformed(t, "create with a parent", encode(OpCreate, ids[:1], memberNonce[:], name("x")))
	if _, err := ParseChange(encode(OpCreate, nil, memberNonce[:], name("x"))); err != nil {
		t.Errorf("create: %v", err)
	}
	for _, op := range []Op{OpAdd, OpRemove, OpAdmin, OpUnadmin, OpRevoke} {
		wantMalformed(t, op.String()+" with no parent", encode(op, nil, target))
	}
	wantMalformed(t, "rename with no parent", encode(OpRename, nil, name("x")))
	wantMalformed(t, "invite with no parent", encode(OpInvite, nil, target, []byte{0, 0, 0, 1, 0, 1}))
	wantMalformed(t, "invite for no uses", encode(OpInvite, ids[:1], target, []byte{0, 0, 0, 1, 0, 0}))
	wantMalformed(t, "target of small order", encode(OpAdd, ids[:1], append([]byte{1}, make([]byte, 31)...)))
	wantMalformed(t, "target not canonical", encode(OpAdd, ids[:1], bytes.Repeat([]byte{0xff}, 32)))
	for what, n := range map[string]string{
		"empty":           "",
		"NUL":             "a\x00b",
		"newline":         "a\nb",
		"escape":          "\x1b[2J",
		"DEL":             "a\x7f",
		"C1":              "a\u0085",
		"CSI":             "\u009b2J",
		"not UTF-8":       "a\xff",
		"65 bytes":        strings.Repeat("x", MaxRoomNameLen+1),
		"66 bytes, runes": strings.Repeat("é", 33),
	} {
		wantMalformed(t, "create named "+what, encode(OpCreate, nil, memberNonce[:], name(n)))
		wantMalformed(t, "rename to "+what, encode(OpRename, ids[:1], name(n)))
		if err := ValidRoomName(n); !errors.Is(err, ErrMalformed) {
			t.Errorf("ValidRoomName(%q) = %v", n, err)
		}
		c := &Change{Op: OpRename, Parents: ids[:1], Name: n}
		if _, err := c.MarshalBinary(); !errors.Is(err, ErrMalformed) {
			t.Errorf("MarshalBinary, rename to %s: %v", what, err)
		}
	}
	wantMalformed(t, "rename to a name with a tab", encode(OpRename, ids[:1], name("a\tb")))
	for _, n := range []string{"x", strings.Repeat("é", 32), "plans for the 3rd: ☃ & co.", "no\u00a0break"} {
		if _, err := ParseChange(encode(OpRename, ids[:1], name(n))); err != nil {
			t.Errorf("rename to %q: %v", n, err)
		}
	}
	if _, err := ParseChange(make([]byte, MaxPayloadSize+1)); !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrMalformed) {
		t.Errorf("oversize: %v, want ErrTooLarge", err)
	}
	// MarshalBinary refuses what ParseChange refuses.
	for what, c := range map[string]*Change{
		"op 0":              {Parents: ids[:1]},
		"op 10":             {Op: OpJoin + 1, Parents: ids[:1]},
		"too many parents":  {Op: OpAdd, Parents: ids, Target: key(t, 7).Public()},
		"unsorted parents":  {Op: OpAdd, Parents: []ID{ids[1], ids[0]}, Target: key(t, 7).Public()},
		"repeated parents":  {Op: OpAdd, Parents: []ID{ids[0], ids[0]}, Target: key(t, 7).Public()},
		"create, parents":   {Op: OpCreate, Parents: ids[:1], Name: "x"},
		"add, no parents":   {Op: OpAdd, Target: key(t, 7).Public()},
		"rename, no parent": {Op: OpRename, Name: "x"},
		"invite, no uses":   {Op: OpInvite, Parents: ids[:1], Target: key(t, 7).Public(), Expires: 1},
		"create, no name":   {Op: OpCreate},
	} {
		if b, err := c.MarshalBinary(); !errors.Is(err, ErrMalformed) {
			t.Errorf("MarshalBinary of %s = %x, %v; want ErrMalformed", what, b, err)
		}
	}
}

func TestPrivateRoomID(t *testing.T) {
	alice, bob := key(t, 1).Public(), key(t, 2).Public()
	room := PrivateRoomID(alice, memberNonce)
	if !IsPrivateRoom(room) || !strings.HasPrefix(room, "p:") || len(room) != 34 {
		t.Fatalf("PrivateRoomID = %q", room)
	}
	if err := ValidRoom(room); err != nil {
		t.Errorf("a private room's ID is not a valid room ID: %v", err)
	}
	if room != PrivateRoomID(alice, memberNonce) {
		t.Error("PrivateRoomID is not a function of its arguments")
	}
	other := memberNonce
	other[15]++
	if PrivateRoomID(alice, other) == room || PrivateRoomID(bob, memberNonce) == room {
		t.Error("another nonce or creator, the same room")
	}
	h, ok := PrivateRoomHash(room)
	if !ok || PrivateRoomFromHash(h) != room {
		t.Errorf("PrivateRoomHash(%q) = %x, %v; back %q", room, h, ok, PrivateRoomFromHash(h))
	}
	for _, h := range [][20]byte{{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {1, 2, 3}} {
		r := PrivateRoomFromHash(h)
		if back, ok := PrivateRoomHash(r); !IsPrivateRoom(r) || !ok || back != h {
			t.Errorf("hash %x: room %q, back %x %v", h, r, back, ok)
		}
	}
	rest := room[2:]
	for _, s := range []string{"", "general", "p:", "p:" + rest[1:], room + "a", "P:" + rest, "q:" + rest,
		"p:" + strings.ToUpper(rest), "p:" + rest[:31] + "1", "p:" + rest[:31] + "8", "p:" + rest[:31] + "=", "p;" + rest, rest + "p:"} {
		if IsPrivateRoom(s) {
			t.Errorf("IsPrivateRoom(%q)", s)
		}
		if _, ok := PrivateRoomHash(s); ok {
			t.Errorf("PrivateRoomHash(%q) ok", s)
		}
	}
}

// signedKind returns an envelope of kind in room with payload, signed by
// key n.
func signedKind(t *testing.T, n byte, kind Kind, room string, lamport uint64, payload []byte) *Envelope {
	t.Helper()
	e := &Envelope{Kind: kind, Room: room, Seq: 1, Lamport: lamport, Time: t0.UnixMilli(), Payload: payload}
	if _, err := e.Sign(key(t, n)); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestCheckPayloadKindsByRoom(t *testing.T) {
	room := memberRoom(t)
	text, _ := (&Text{Nick: "alice", Body: "hi"}).MarshalBinary()
	post, _ := (&Post{Head: ID{1}, Text: Text{Nick: "alice", Body: "hi"}}).MarshalBinary()
	add, _ := (&Change{Op: OpAdd, Parents: sortedIDs(1), Target: key(t, 2).Public()}).MarshalBinary()
	for _, tc := range []struct {
		what    string
		kind    Kind
		room    string
		payload []byte
		want    error
	}{
		{"text in a public room", KindText, "general", text, nil},
		{"text in a private room", KindText, room, text, ErrMalformed},
		{"change in a public room", KindMember, "general", add, ErrMalformed},
		{"post in a public room", KindPost, "general", post, ErrMalformed},
		{"change in a room like p:", KindMember, "p:general", add, ErrMalformed},
		{"change in a private room", KindMember, room, add, nil},
		{"post in a private room", KindPost, room, post, nil},
		{"text as a change", KindMember, room, text, ErrMalformed},
		{"change as a post", KindPost, room, add[:10], ErrMalformed},
		{"unknown kind, private room", 9, room, []byte("future"), nil},
		{"unknown kind, public room", 9, "general", []byte("future"), nil},
	} {
		err := CheckPayload(signedKind(t, 1, tc.kind, tc.room, 5, tc.payload))
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: CheckPayload = %v, want %v", tc.what, err, tc.want)
		}
	}
}

func TestCheckChange(t *testing.T) {
	room := memberRoom(t)
	check := func(n byte, lamport uint64, c *Change) error {
		t.Helper()
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return CheckPayload(signedKind(t, n, KindMember, room, lamport, b))
	}
	create := &Change{Op: OpCreate, Nonce: memberNonce, Name: "plans"}
	if err := check(1, 1, create); err != nil {
		t.Errorf("create: %v", err)
	}
	if err := check(2, 1, create); !errors.Is(err, ErrMalformed) {
		t.Errorf("create by another: %v, want ErrMalformed", err)
	}
	wrong := *create
	wrong.Nonce[0]++
	if err := check(1, 1, &wrong); !errors.Is(err, ErrMalformed) {
		t.Errorf("create with another nonce: %v, want ErrMalformed", err)
	}

	issuer, invite, joiner := key(t, 1), key(t, 8), key(t, 5)
	join := joinChange(t, room, issuer, invite, joiner.Public(), 40)
	if err := check(5, 41, join); err != nil {
		t.Errorf("join: %v", err)
	}
	// The envelope's clock is the signer's say; the member list orders
	// by the graph (package roster).
	for _, lamport := range []uint64{40, 39, 0} {
		if err := check(5, lamport, join); err != nil {
			t.Errorf("join at clock %d, invite's 40: %v", lamport, err)
		}
	}
	if err := check(6, 41, join); !errors.Is(err, ErrBadSignature) {
		t.Errorf("join sent by another than the proof names: %v, want ErrBadSignature", err)
	}
	otherRoom := joinChange(t, PrivateRoomID(issuer.Public(), [NonceSize]byte{}), issuer, invite, joiner.Public(), 40)
	if err := check(5, 41, otherRoom); !errors.Is(err, ErrBadSignature) {
		t.Errorf("join with an invite to another room: %v, want ErrBadSignature", err)
	}
	noSecret := *join
	copy(noSecret.Proof[:], joiner.Sign(JoinProofInput(room, joiner.Public()))) // signed with the joiner's key, not the invite's
	if err := check(5, 41, &noSecret); !errors.Is(err, ErrBadSignature) {
		t.Errorf("join without the invite's secret: %v, want ErrBadSignature", err)
	}
	noUses := joinChange(t, room, issuer, invite, joiner.Public(), 40)
	noUses.Cap.Uses = 0
	noUses.Cap.Sign(room, issuer)
	if err := check(5, 41, noUses); !errors.Is(err, ErrMalformed) {
		t.Errorf("join with an invite for no uses: %v, want ErrMalformed", err)
	}
	raised := *join
	raised.Cap.Expires++
	if err := check(5, 41, &raised); !errors.Is(err, ErrBadSignature) {
		t.Errorf("join with an altered invite: %v, want ErrBadSignature", err)
	}
	// The invite's signature and the proof mean nothing elsewhere: an
	// envelope signature over the same bytes does not verify as either.
	if verifySig(issuer.Public().Bytes(), join.Cap.signingInput(room)[len(inviteContext):], join.Cap.Sig[:]) {
		t.Error("the capability's signature verifies without its context")
	}
	if !bytes.HasPrefix(JoinProofInput(room, joiner.Public()), []byte(proofContext)) {
		t.Error("the join proof has no context")
	}
}

func TestPost(t *testing.T) {
	in := Post{Head: ID{9, 8, 7}, Text: Text{Nick: "alice", Body: "hello ☃\nline"}}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	text, _ := in.Text.MarshalBinary()
	if !bytes.Equal(b, append(in.Head[:], text...)) {
		t.Errorf("encoding %x: want the head, then the text", b)
	}
	out, err := ParsePost(b)
	if err != nil || out != in {
		t.Fatalf("ParsePost = %+v, %v; want %+v", out, err, in)
	}
	again, err := out.AppendBinary([]byte{1})
	if err != nil || !bytes.Equal(again, append([]byte{1}, b...)) {
		t.Errorf("AppendBinary = %x, %v", again, err)
	}
	zero := Post{Text: in.Text}
	if b, err := zero.MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Errorf("post naming no head: %x, %v; want ErrMalformed", b, err)
	}
	zeroBytes := append(make([]byte, 32), text...)
	for what, b := range map[string][]byte{
		"zero head":   zeroBytes,
		"empty":       nil,
		"short head":  b[:31],
		"head only":   b[:32],
		"trailing":    append(slices.Clone(b), 0),
		"cut text":    b[:len(b)-1],
		"bad nick":    append(slices.Clone(b[:32]), 3, 'a', ' ', 'b', 0, 0),
		"escape text": append(slices.Clone(b[:32]), 1, 'a', 0, 1, 0x1b),
	} {
		if p, err := ParsePost(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParsePost = %+v, %v; want ErrMalformed", what, p, err)
		}
	}
	if _, err := (&Post{Head: ID{1}, Text: Text{Nick: "a", Body: strings.Repeat("x", MaxTextLen+1)}}).MarshalBinary(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("long post: %v, want ErrTooLarge", err)
	}
}

func TestCapabilityVerify(t *testing.T) {
	room := memberRoom(t)
	c := Capability{Key: key(t, 8).Public(), Lamport: 3, Expires: 100, Uses: 1}
	c.Sign(room, key(t, 1))
	if c.Issuer != key(t, 1).Public() || c.Verify(room) != nil {
		t.Fatalf("signed capability: %v", c.Verify(room))
	}
	if err := c.Verify(PrivateRoomID(key(t, 2).Public(), memberNonce)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("in another room: %v", err)
	}
	for what, f := range map[string]func(c *Capability){
		"key":     func(c *Capability) { c.Key = key(t, 9).Public() },
		"lamport": func(c *Capability) { c.Lamport++ },
		"expires": func(c *Capability) { c.Expires++ },
		"uses":    func(c *Capability) { c.Uses++ },
		"issuer":  func(c *Capability) { c.Issuer = key(t, 2).Public() },
		"sig":     func(c *Capability) { c.Sig[5] ^= 1 },
	} {
		d := c
		f(&d)
		if err := d.Verify(room); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s changed: %v, want ErrBadSignature", what, err)
		}
	}
	d := c
	d.Uses = 0
	if err := d.Verify(room); !errors.Is(err, ErrMalformed) {
		t.Errorf("no uses: %v, want ErrMalformed", err)
	}
}

package fuzz

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

func testKey(t testing.TB, n byte) identity.PrivateKey {
	k, err := identity.PrivateKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signedEnvelope(t testing.TB, kind protocol.Kind, room string, seq uint64, payload []byte) []byte {
	e := &protocol.Envelope{Kind: kind, Room: room, Seq: seq, Prev: protocol.ID{7}, Lamport: 3, Time: 1764137501000, Payload: payload}
	if _, err := e.Sign(testKey(t, 1)); err != nil {
		t.Fatal(err)
	}
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func textPayload(t testing.TB, nick, body string) []byte {
	b, err := (&protocol.Text{Nick: nick, Body: body}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameBytes returns a check that what parsed from b encodes back to exactly
// b: one encoding per value. Use it as sameBytes(t, b)(v.MarshalBinary()).
func sameBytes(t *testing.T, b []byte) func([]byte, error) {
	return func(again []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("a parsed value does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs from the input:\n in %q\nout %q", b, again)
		}
	}
}

// Every sentinel error of the packages whose parsers the targets call.
// An error of one of them wraps exactly one of its package's
// (protocol/errors.go), and callers branch on which. ErrDuplicate and
// ErrBelowWindow are left out: they are finer cases of ErrReplay, which
// they wrap, and would count twice.
var sentinelSets = map[string][]error{
	"protocol": {protocol.ErrMalformed, protocol.ErrTooLarge, protocol.ErrUnknownVersion, protocol.ErrBadSignature,
		protocol.ErrReplay, protocol.ErrExpired, protocol.ErrEquivocation},
	"identity": {identity.ErrMalformedKey, identity.ErrNotEd25519, identity.ErrMalformedContacts, identity.ErrBadNick,
		identity.ErrUnknownContact, identity.ErrAmbiguousContact, identity.ErrBadFingerprint, identity.ErrKeyPermissions,
		identity.ErrPassphraseRequired, identity.ErrWrongPassphrase},
}

// errorIsOneOf fails t unless err wraps one of the sentinels, the ones the
// parser documents, and no other sentinel of the same package.
func errorIsOneOf(t *testing.T, err error, sentinels ...error) {
	t.Helper()
	if problem := sentinelProblem(err, sentinels...); problem != "" {
		t.Fatal(problem)
	}
}

// sentinelProblem is errorIsOneOf's judgement: "" when err is as it should
// be, else what is wrong.
func sentinelProblem(err error, sentinels ...error) string {
	if !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
		return fmt.Sprintf("error %v wraps none of the documented sentinels", err)
	}
	for pkg, set := range sentinelSets {
		var wrapped []error
		for _, s := range set {
			if errors.Is(err, s) {
				wrapped = append(wrapped, s)
			}
		}
		if len(wrapped) > 1 {
			return fmt.Sprintf("error %v wraps %d of package %s's sentinels, want exactly one: %v", err, len(wrapped), pkg, wrapped)
		}
	}
	return ""
}

// TestSentinelProblem: the check of the fuzz targets' errors tells one
// documented sentinel from none and from two.
func TestSentinelProblem(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"one documented", fmt.Errorf("%w: detail", protocol.ErrMalformed), true},
		{"a finer case of one", fmt.Errorf("x: %w", protocol.ErrDuplicate), true},
		{"none", errors.New("plain"), false},
		{"another package's only", identity.ErrMalformedKey, false},
		{"one not documented", protocol.ErrBadSignature, false},
		{"two of one package", fmt.Errorf("%w: %w", protocol.ErrMalformed, protocol.ErrTooLarge), false},
		{"one documented, one not, of one package", fmt.Errorf("%w: %w", protocol.ErrMalformed, protocol.ErrBadSignature), false},
		{"one documented, one of another package", fmt.Errorf("%w: %w", protocol.ErrMalformed, identity.ErrMalformedKey), true},
	} {
		problem := sentinelProblem(c.err, protocol.ErrMalformed, protocol.ErrTooLarge, protocol.ErrReplay)
		if (problem == "") != c.ok {
			t.Errorf("%s: %q", c.name, problem)
		}
	}
}

// FuzzEnvelope: whatever parses encodes back to exactly the input, has the ID
// of its bytes, and verifies iff its signature is right.
func FuzzEnvelope(f *testing.F) {
	f.Add(signedEnvelope(f, protocol.KindText, "general", 1, textPayload(f, "alice", "hello")))
	f.Add(signedEnvelope(f, 9, "a:b.c-d_e", 1<<40, []byte{0, 1, 2}))
	f.Add(signedEnvelope(f, protocol.KindText, "r", 2, nil))
	f.Add([]byte{})
	f.Add([]byte{2})
	good, err := protocol.Parse(signedEnvelope(f, protocol.KindText, "general", 1, nil))
	if err != nil {
		f.Fatal(err)
	}
	var keys protocol.Verifier
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := protocol.Parse(b)
		if err != nil {
			errorIsOneOf(t, err, protocol.ErrMalformed, protocol.ErrTooLarge, protocol.ErrUnknownVersion)
			return
		}
		sameBytes(t, b)(e.MarshalBinary())
		if room, sender, err := protocol.Addressing(b); err != nil || room != e.Room || !sender.Equal(e.Sender) {
			t.Fatalf("Addressing = %q, %v, %v; Parse says %q, %v", room, sender, err, e.Room, e.Sender)
		}
		if e.ID() != protocol.IDOf(b) {
			t.Fatal("ID() differs from the hash of the input")
		}
		// Verify must agree with the documented rule (Ed25519, cofactored,
		// canonical A and R, curve25519-voi's default) over the documented
		// signing input: the context string, then every byte before the
		// signature.
		input := append([]byte("parley envelope signature v1\x00"), b[:len(b)-ed25519.SignatureSize]...)
		want := voi.VerifyWithOptions(e.Sender.Bytes(), input, b[len(b)-ed25519.SignatureSize:], &voi.Options{Verify: voi.VerifyOptionsDefault})
		err = e.Verify()
		if (err == nil) != want {
			t.Fatalf("Verify() = %v, but the signature rule over the signing input says %v", err, want)
		}
		if err != nil {
			errorIsOneOf(t, err, protocol.ErrBadSignature)
		}
		// A Verifier says the same, before and after it keeps the key
		// (which it does once the signature verifies), and whatever keys
		// earlier inputs left in it.
		for range 2 {
			if verr := keys.Verify(e); (verr == nil) != (err == nil) || (err != nil && verr.Error() != err.Error()) {
				t.Fatalf("Verifier = %v, Verify = %v", verr, err)
			}
		}
		// And a batch holding it says the same of it, and accepts a good
		// envelope beside it.
		errs := protocol.VerifyBatch([]*protocol.Envelope{good, e, good})
		if (errs == nil) != (err == nil) || (errs != nil && (errs[0] != nil || errs[2] != nil || errs[1] == nil)) {
			t.Fatalf("VerifyBatch = %v, Verify = %v", errs, err)
		}
	})
}

// FuzzEnvelopeTamper: a signed envelope with any byte changed fails to parse
// or to verify.
func FuzzEnvelopeTamper(f *testing.F) {
	f.Add(uint16(0), byte(1), textPayload(f, "alice", "hello"))
	f.Add(uint16(40), byte(0x80), []byte{})
	f.Add(uint16(300), byte(0xff), bytes.Repeat([]byte{'x'}, 300))
	f.Fuzz(func(t *testing.T, pos uint16, x byte, payload []byte) {
		if len(payload) > protocol.MaxPayloadSize {
			return
		}
		b := signedEnvelope(t, protocol.KindText, "general", 5, payload)
		if _, _, err := protocol.ParseVerify(b); err != nil {
			t.Fatalf("untouched envelope: %v", err)
		}
		if x == 0 {
			return
		}
		b[int(pos)%len(b)] ^= x
		if _, _, err := protocol.ParseVerify(b); err == nil {
			t.Fatalf("byte %d ^ %#x: a changed envelope verified", int(pos)%len(b), x)
		}
	})
}

// FuzzText: a text payload that parses encodes back to the input.
func FuzzText(f *testing.F) {
	f.Add(textPayload(f, "alice", "hello ☃"))
	f.Add(textPayload(f, "zoe", ""))
	f.Add([]byte{1, 'a', 0, 1, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		txt, err := protocol.ParseText(b)
		if err != nil {
			errorIsOneOf(t, err, protocol.ErrMalformed, protocol.ErrTooLarge)
			return
		}
		sameBytes(t, b)(txt.MarshalBinary())
	})
}

// FuzzPublicKey: a public key text that parses prints back as the input.
func FuzzPublicKey(f *testing.F) {
	f.Add(testKey(f, 1).Public().String())
	f.Add("ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB")
	f.Add("ed25519:")
	f.Fuzz(func(t *testing.T, s string) {
		pk, err := identity.ParsePublicKey(s)
		if err != nil {
			errorIsOneOf(t, err, identity.ErrMalformedKey)
			return
		}
		if pk.String() != s {
			t.Fatalf("ParsePublicKey(%q).String() = %q", s, pk.String())
		}
	})
}

// FuzzMessageID: an ID that parses prints back as the input.
func FuzzMessageID(f *testing.F) {
	f.Add(protocol.IDOf([]byte("x")).String())
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := protocol.ParseID(s)
		if err != nil {
			errorIsOneOf(t, err, protocol.ErrMalformed)
			return
		}
		if id.String() != s {
			t.Fatalf("ParseID(%q).String() = %q", s, id.String())
		}
	})
}

// FuzzContacts: a contacts file that parses encodes back to the input; a
// file of version 1 encodes as version 2, which encodes back to itself.
func FuzzContacts(f *testing.F) {
	var c identity.Contacts
	t0 := time.Date(2026, 11, 26, 6, 11, 41, 0, time.UTC)
	c.Observe("alice", testKey(f, 1).Public(), t0)
	c.Observe("bob", testKey(f, 2).Public(), t0.Add(time.Hour))
	c.Observe("alice", testKey(f, 3).Public(), t0.Add(2*time.Hour))
	c.Verify(testKey(f, 2).Public().Fingerprint())
	c.Verify(testKey(f, 1).Public().Fingerprint())
	c.Accept(testKey(f, 3).Public().Fingerprint())
	good, _ := c.MarshalText()
	f.Add(good)
	f.Add([]byte("# parley contacts v2\n"))
	f.Add([]byte("# parley contacts v1\n"))
	f.Add([]byte("# parley contacts v1\n" +
		"al " + testKey(f, 1).Public().String() + " known 2026-11-20T00:00:00Z\n" +
		"alice " + testKey(f, 1).Public().String() + " verified 2026-11-26T06:11:41Z\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := identity.ParseContacts(b)
		if err != nil {
			errorIsOneOf(t, err, identity.ErrMalformedContacts)
			return
		}
		if bytes.HasPrefix(b, []byte("# parley contacts v2\n")) {
			sameBytes(t, b)(c.MarshalText())
			return
		}
		v2, err := c.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		again, err := identity.ParseContacts(v2)
		if err != nil {
			t.Fatalf("a migrated file does not parse: %v\n%s", err, v2)
		}
		sameBytes(t, v2)(again.MarshalText())
	})
}

// FuzzReplayState: saved replay state that restores saves back to the input.
func FuzzReplayState(f *testing.F) {
	var g protocol.ReplayGuard
	for seq := uint64(1); seq <= 4; seq++ {
		e := &protocol.Envelope{Kind: protocol.KindText, Room: "r", Seq: seq * 3, Sender: testKey(f, 1).Public()}
		g.Check(e, protocol.ID{byte(seq)}, protocol.History)
		e.Room = "s"
		g.Check(e, protocol.ID{byte(seq)}, protocol.History)
	}
	good, _ := g.MarshalBinary()
	f.Add(good)
	empty, _ := new(protocol.ReplayGuard).MarshalBinary()
	f.Add(empty)
	f.Fuzz(func(t *testing.T, b []byte) {
		var g protocol.ReplayGuard
		if err := g.UnmarshalBinary(b); err != nil {
			errorIsOneOf(t, err, protocol.ErrMalformed, protocol.ErrTooLarge)
			return
		}
		sameBytes(t, b)(g.MarshalBinary())
	})
}

// FuzzPrivateKeyFile: a key file that parses holds a key that saves and
// loads back to the same key. Encrypted files are not decrypted here (the
// passphrase is not given), which keeps the fuzzer out of bcrypt.
func FuzzPrivateKeyFile(f *testing.F) {
	dir := f.TempDir()
	for i, pass := range []string{"", "secret"} {
		path := dir + "/k" + string(rune('0'+i))
		if err := identity.Save(path, testKey(f, 3), []byte(pass), "fuzz"); err != nil {
			f.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("-----BEGIN OPENSSH PRIVATE KEY-----\n-----END OPENSSH PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := identity.ParsePrivateKey(b, nil)
		if err != nil {
			errorIsOneOf(t, err, identity.ErrMalformedKey, identity.ErrPassphraseRequired, identity.ErrNotEd25519)
			return
		}
		path := t.TempDir() + "/k"
		if err := identity.Save(path, k, nil, ""); err != nil {
			t.Fatal(err)
		}
		back, err := identity.Load(path, nil)
		if err != nil || !back.Equal(k) {
			t.Fatalf("saved key does not load back: %v", err)
		}
		msg := []byte("m")
		if !k.Public().Verify(msg, k.Sign(msg)) {
			t.Fatal("parsed key signs for another public key")
		}
	})
}

// FuzzSyncRequest: a sync request that parses encodes back to the input.
func FuzzSyncRequest(f *testing.F) {
	good, _ := (&protocol.SyncRequest{Room: "general", Since: 1, Until: 2, Limit: 10, Have: []protocol.ID{{1}, {2}}}).MarshalBinary()
	f.Add(good)
	f.Add([]byte{1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.ParseSyncRequest(b)
		if err != nil {
			errorIsOneOf(t, err, protocol.ErrMalformed, protocol.ErrTooLarge, protocol.ErrUnknownVersion)
			return
		}
		sameBytes(t, b)(r.MarshalBinary())
	})
}

// FuzzSummaryRequest: a summary request that parses encodes back to the
// input, is known as one by its header, is no page request, and its
// buckets end at a time (no overflow).
func FuzzSummaryRequest(f *testing.F) {
	good, _ := (&protocol.SummaryRequest{Room: "general", Since: 1, Step: 60_000, Buckets: 11}).MarshalBinary()
	f.Add(good)
	f.Add([]byte{1, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.ParseSummaryRequest(b)
		if err != nil {
			errorIsOneOf(t, err, protocol.ErrMalformed, protocol.ErrTooLarge, protocol.ErrUnknownVersion)
			return
		}
		if !protocol.IsSummaryRequest(b) {
			t.Fatal("parsed as a summary request, but IsSummaryRequest says no")
		}
		if _, err := protocol.ParseSyncRequest(b); err == nil {
			t.Fatal("parses as a summary request and as a page request")
		}
		if until := r.Until(); until <= r.Since || until-r.Since != int64(r.Buckets)*r.Step {
			t.Fatalf("buckets of %+v end at %d", r, until)
		}
		sameBytes(t, b)(r.MarshalBinary())
	})
}

// FuzzSummaryResponse: a summary response that parses encodes back to the
// input, counts no more than a response may, and counts no bucket after
// one that is over the limit.
func FuzzSummaryResponse(f *testing.F) {
	good, _ := (&protocol.SummaryResponse{Buckets: []protocol.Summary{protocol.SummaryOf([]protocol.ID{{1}, {2}}), {Over: true}}}).MarshalBinary()
	f.Add(good)
	f.Add([]byte{1, 4, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.ParseSummaryResponse(b)
		if err != nil {
			errorIsOneOf(t, err, protocol.ErrMalformed, protocol.ErrTooLarge, protocol.ErrUnknownVersion)
			return
		}
		total, over := 0, false
		for i, s := range r.Buckets {
			if over && !s.Over {
				t.Fatalf("bucket %d counted after one over the limit", i)
			}
			total, over = total+s.Count, s.Over
		}
		if n := len(r.Buckets); n < 1 || n > protocol.MaxSummaryBuckets || total > protocol.MaxSummaryCount {
			t.Fatalf("%d buckets counting %d envelopes", n, total)
		}
		sameBytes(t, b)(r.MarshalBinary())
	})
}

// FuzzSyncResponse: a sync response that parses encodes back to the input.
func FuzzSyncResponse(f *testing.F) {
	good, _ := (&protocol.SyncResponse{Envelopes: [][]byte{signedEnvelope(f, protocol.KindText, "r", 1, nil)}, More: true}).MarshalBinary()
	f.Add(good)
	f.Add(append(append([]byte{1, 2, 0}, make([]byte, 40)...), 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.ParseSyncResponse(b)
		if err != nil {
			errorIsOneOf(t, err, protocol.ErrMalformed, protocol.ErrTooLarge, protocol.ErrUnknownVersion)
			return
		}
		sameBytes(t, b)(r.MarshalBinary())
	})
}

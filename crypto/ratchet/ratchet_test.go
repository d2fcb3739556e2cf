package ratchet_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/parleychat/parley/crypto/ratchet"
)

var sentinels = []error{ratchet.ErrTooFar, ratchet.ErrGone, ratchet.ErrExhausted, ratchet.ErrMalformed}

// isOnly fails t unless err wraps want and no other sentinel.
func isOnly(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Fatalf("error %v wraps %v as well as %v", err, s, want)
		}
	}
}

func chain() ratchet.ChainKey {
	var ck ratchet.ChainKey
	for i := range ck {
		ck[i] = byte(i)
	}
	return ck
}

// TestStepKnownAnswer pins Step: from the chain key 00 01 .. 1f, the first
// three message keys and chain keys. They were computed once (and checked
// with Python's hmac module); a change breaks every chain in the field.
func TestStepKnownAnswer(t *testing.T) {
	want := []struct{ mk, ck string }{
		{"9b4c8120a4823a95f47cde17a244f4507244ee6e3957d1fab9fa29b44d3829b7", "4304c22c84a53755ab08ead8d97a8d429be5efa480682d7ad1da27f73e1fbe1d"},
		{"f7703c39dea9feb30cb6369304ad7b847b9aca58c1152af317aa78a91beddda1", "26fc86b9b1303ea2e66f53ed0f1de753407e5428caf5e440e6b51c48d4bd4949"},
		{"5d2042bf4c603cf3aa7194739ed08bc1c698a7ec7fb8e77d3ea2588c6fe78ce1", "04428b813675036c07233edd0be13b7c422610a8c3d6ecc7c8fbd85671e47a13"},
	}
	ck := chain()
	for i, w := range want {
		var mk ratchet.MessageKey
		ck, mk = ratchet.Step(ck)
		if hex.EncodeToString(mk[:]) != w.mk || hex.EncodeToString(ck[:]) != w.ck {
			t.Errorf("step %d: mk %x ck %x, want %s %s", i, mk, ck, w.mk, w.ck)
		}
	}
}

// sent returns the first n message keys of the chain.
func sent(t *testing.T, n int) []ratchet.MessageKey {
	t.Helper()
	s := &ratchet.Sender{Chain: chain()}
	keys := make([]ratchet.MessageKey, n)
	for i := range keys {
		idx, mk, err := s.Key()
		if err != nil || idx != uint32(i) {
			t.Fatalf("sender key %d: index %d, %v", i, idx, err)
		}
		keys[i] = mk
	}
	return keys
}

func TestSender(t *testing.T) {
	s := &ratchet.Sender{Chain: chain()}
	next, mk := ratchet.Step(chain())
	idx, got, err := s.Key()
	if err != nil || idx != 0 || got != mk || s.Chain != next || s.Next != 1 {
		t.Fatalf("Key: %d %x %v; state %+v", idx, got, err, s)
	}
	s = &ratchet.Sender{Chain: chain(), Next: ratchet.MaxIndex}
	if idx, _, err := s.Key(); err != nil || idx != ratchet.MaxIndex {
		t.Fatalf("key of MaxIndex: %d %v", idx, err)
	}
	_, _, err = s.Key()
	isOnly(t, err, ratchet.ErrExhausted)
}

func TestInOrderAndOutOfOrder(t *testing.T) {
	keys := sent(t, 8)
	r := ratchet.NewReceiver(chain())
	for _, i := range []uint32{0, 1, 5, 2, 7, 4, 3, 6} {
		mk, err := r.Key(i)
		if err != nil {
			t.Fatalf("index %d: %v", i, err)
		}
		if mk != keys[i] {
			t.Fatalf("index %d: receiver key differs from the sender's", i)
		}
	}
	if len(r.Skipped) != 0 || r.Next != 8 {
		t.Fatalf("state after every key: next %d, %d skipped", r.Next, len(r.Skipped))
	}
}

func TestUsedTwice(t *testing.T) {
	r := ratchet.NewReceiver(chain())
	for _, i := range []uint32{3, 1} {
		if _, err := r.Key(i); err != nil {
			t.Fatal(err)
		}
		_, err := r.Key(i)
		isOnly(t, err, ratchet.ErrGone)
	}
	if _, err := r.Key(0); err != nil {
		t.Fatal(err)
	}
}

func marshal(t *testing.T, r *ratchet.Receiver) []byte {
	t.Helper()
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTooFar(t *testing.T) {
	r := ratchet.NewReceiver(chain())
	if _, err := r.Key(5); err != nil {
		t.Fatal(err)
	}
	before := marshal(t, r)
	_, err := r.Key(6 + ratchet.MaxSkip + 1)
	isOnly(t, err, ratchet.ErrTooFar)
	if !bytes.Equal(marshal(t, r), before) {
		t.Fatal("ErrTooFar changed the state")
	}
	_, err = r.Key(1<<32 - 1)
	isOnly(t, err, ratchet.ErrExhausted)
	if !bytes.Equal(marshal(t, r), before) {
		t.Fatal("ErrExhausted changed the state")
	}
	keys := sent(t, 6+ratchet.MaxSkip+1)
	mk, err := r.Key(6 + ratchet.MaxSkip)
	if err != nil || mk != keys[6+ratchet.MaxSkip] {
		t.Fatalf("MaxSkip ahead: %v", err)
	}
	if len(r.Skipped) != 5+ratchet.MaxSkip {
		t.Fatalf("%d skipped keys, want %d", len(r.Skipped), 5+ratchet.MaxSkip)
	}
}

// TestMaxSkipped: the skipped keys never number more than MaxSkipped, and
// the ones dropped are those of the lowest indexes.
func TestMaxSkipped(t *testing.T) {
	r := ratchet.NewReceiver(chain())
	idx := uint32(0)
	for range 5 {
		idx += ratchet.MaxSkip
		if _, err := r.Key(idx); err != nil {
			t.Fatal(err)
		}
		if len(r.Skipped) > ratchet.MaxSkipped {
			t.Fatalf("%d skipped keys at %d", len(r.Skipped), idx)
		}
		idx++
	}
	if len(r.Skipped) != ratchet.MaxSkipped {
		t.Fatalf("%d skipped keys, want %d", len(r.Skipped), ratchet.MaxSkipped)
	}
	// Received: 1000, 2001, ..., 5004. Skipped: the 5000 others below
	// 5005. Kept: the last MaxSkipped of them, 3003..5003 less 4003.
	for i := range r.Next {
		_, kept := r.Skipped[i]
		if want := i >= 3003 && i%1001 != 1000; kept != want {
			t.Fatalf("index %d kept %v, want %v", i, kept, want)
		}
	}
	_, err := r.Key(3001)
	isOnly(t, err, ratchet.ErrGone)
	keys := sent(t, 3004)
	if mk, err := r.Key(3003); err != nil || mk != keys[3003] {
		t.Fatalf("lowest kept key: %v", err)
	}
}

func TestReceiverRoundTrip(t *testing.T) {
	r := ratchet.NewReceiver(chain())
	for _, i := range []uint32{7, 2, 40} {
		if _, err := r.Key(i); err != nil {
			t.Fatal(err)
		}
	}
	b := marshal(t, r)
	var q ratchet.Receiver
	if err := q.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(marshal(t, &q), b) || q.Next != 41 || len(q.Skipped) != 38 {
		t.Fatalf("round trip: next %d, %d skipped", q.Next, len(q.Skipped))
	}
	keys := sent(t, 41)
	for _, i := range []uint32{0, 39, 8} {
		if mk, err := q.Key(i); err != nil || mk != keys[i] {
			t.Fatalf("index %d after the round trip: %v", i, err)
		}
	}
	var z ratchet.Receiver
	if err := z.UnmarshalBinary(marshal(t, &ratchet.Receiver{})); err != nil || z.Skipped == nil {
		t.Fatalf("empty receiver: %v", err)
	}
}

func TestReceiverUnmarshalRefuses(t *testing.T) {
	entry := func(i uint32) []byte {
		return append(binary.BigEndian.AppendUint32(nil, i), bytes.Repeat([]byte{0xee}, 32)...)
	}
	head := func(next uint32, count uint16) []byte {
		b := binary.BigEndian.AppendUint32(bytes.Repeat([]byte{1}, 32), next)
		return binary.BigEndian.AppendUint16(b, count)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	good := cat(head(10, 2), entry(3), entry(5))
	var r ratchet.Receiver
	if err := r.UnmarshalBinary(good); err != nil {
		t.Fatal(err)
	}
	before := marshal(t, &r)
	for name, b := range map[string][]byte{
		"empty":          nil,
		"truncated":      good[:len(good)-1],
		"trailing":       append(bytes.Clone(good), 0),
		"count too high": cat(head(10, 3), entry(3), entry(5)),
		"descending":     cat(head(10, 2), entry(5), entry(3)),
		"duplicate":      cat(head(10, 2), entry(3), entry(3)),
		"index = next":   cat(head(10, 2), entry(3), entry(10)),
		"index > next":   cat(head(10, 1), entry(11)),
		"over MaxSkipped": cat(head(1<<20, ratchet.MaxSkipped+1),
			bytes.Repeat(entry(0), ratchet.MaxSkipped+1)),
	} {
		err := r.UnmarshalBinary(b)
		if err == nil {
			t.Errorf("%s: unmarshals", name)
			continue
		}
		isOnly(t, err, ratchet.ErrMalformed)
		if !bytes.Equal(marshal(t, &r), before) {
			t.Fatalf("%s: a failed UnmarshalBinary changed the state", name)
		}
	}
	bad := &ratchet.Receiver{Next: 1, Skipped: map[uint32]ratchet.MessageKey{1: {}}}
	_, err := bad.MarshalBinary()
	isOnly(t, err, ratchet.ErrMalformed)
}

func TestSenderRoundTrip(t *testing.T) {
	s := ratchet.Sender{Chain: chain(), Next: 77}
	b, err := s.MarshalBinary()
	if err != nil || len(b) != 36 {
		t.Fatalf("%x %v", b, err)
	}
	var q ratchet.Sender
	if err := q.UnmarshalBinary(b); err != nil || q != s {
		t.Fatalf("round trip: %+v %v", q, err)
	}
	for _, b := range [][]byte{nil, b[:35], append(b, 0)} {
		isOnly(t, q.UnmarshalBinary(b), ratchet.ErrMalformed)
	}
	if q != s {
		t.Fatal("a failed UnmarshalBinary changed the state")
	}
}

// TestHMACIsRFC2104: the allocation-free HMAC is the standard library's,
// for messages that fit its buffer and longer ones.
func TestHMACIsRFC2104(t *testing.T) {
	key := [32]byte{1, 2, 3}
	for _, n := range []int{0, 1, 17, 50, 64, 65, 200} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i * 7)
		}
		h := hmac.New(sha256.New, key[:])
		h.Write(msg)
		if got := ratchet.HMAC(key, msg); !bytes.Equal(got[:], h.Sum(nil)) {
			t.Errorf("%d bytes: HMAC = %x, want %x", n, got, h.Sum(nil))
		}
	}
}

package relay

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
)

// TestParseEnvelopes: what a relay sends is checked in batches; a bad
// envelope stops it there, with the good ones before it kept.
func TestParseEnvelopes(t *testing.T) {
	a := &testkit.Author{Key: testkit.Key(t), Room: "r"}
	var raws [][]byte
	for i := range 6 {
		raw, _ := a.Next(t, fmt.Sprint(i))
		raws = append(raws, raw)
	}
	all, err := parseEnvelopes(raws)
	if err != nil || len(all) != 6 {
		t.Fatalf("good envelopes: %d, %v", len(all), err)
	}
	for i, e := range all {
		if e.ID != protocol.IDOf(raws[i]) || !bytes.Equal(e.Raw, raws[i]) {
			t.Fatalf("envelope %d comes back changed", i)
		}
	}
	forged := bytes.Clone(raws[2])
	forged[len(forged)-1] ^= 1
	got, err := parseEnvelopes([][]byte{raws[0], raws[1], forged, raws[3]})
	if len(got) != 2 || err == nil || !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("a forged third: %d kept, %v", len(got), err)
	}
	got, err = parseEnvelopes([][]byte{raws[0], {protocol.Version, 1}, raws[3]})
	if len(got) != 1 || !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("a broken second: %d kept, %v", len(got), err)
	}
}

package state

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

func TestSeqFileSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq")
	used := map[uint64]bool{}
	for life := range 3 {
		f, err := OpenSeqFile(path)
		if err != nil {
			t.Fatal(err)
		}
		a := &protocol.SeqAllocator{Store: f, Block: 4}
		for range 5 {
			n, err := a.Next("general")
			if err != nil {
				t.Fatal(err)
			}
			if used[n] {
				t.Fatalf("life %d: number %d used twice", life, n)
			}
			used[n] = true
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Lives use 1-5 (blocks 1-4, 5-8), 9-13 (9-12, 13-16), 17-21 (17-20, 21-24).
	if want := "# parley sequence reservations v1\ngeneral 24\n"; string(data) != want {
		t.Fatalf("sequence file:\n%s\nwant:\n%s", data, want)
	}
}

func TestParseSeqsRejects(t *testing.T) {
	h := "# parley sequence reservations v1\n"
	for name, in := range map[string]string{
		"no header":     "a 1\n",
		"no newline":    h + "a 1",
		"zero":          h + "a 0\n",
		"leading zero":  h + "a 01\n",
		"plus":          h + "a +1\n",
		"overflow":      h + "a 18446744073709551616\n",
		"above max":     h + "a 9223372036854775808\n",
		"unsorted":      h + "b 1\na 1\n",
		"repeated":      h + "a 1\na 2\n",
		"bad room":      h + "A 1\n",
		"extra field":   h + "a 1 2\n",
		"missing field": h + "a\n",
	} {
		if _, err := ParseSeqs([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	good := h + "a 1\nb 9223372036854775807\n"
	rooms, err := ParseSeqs([]byte(good))
	if err != nil || !bytes.Equal(FormatSeqs(rooms), []byte(good)) {
		t.Fatalf("round trip: %v, %v", rooms, err)
	}
}

func TestReplayFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "replay")
	k, err := identity.PrivateKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	e := &protocol.Envelope{Kind: protocol.KindText, Room: "r", Seq: 1, Time: now.UnixMilli()}
	id, err := e.Sign(k)
	if err != nil {
		t.Fatal(err)
	}
	var g protocol.ReplayGuard
	if err := LoadReplay(path, &g); err != nil {
		t.Fatalf("LoadReplay of a missing file: %v", err)
	}
	if err := g.Check(e, id, protocol.Live); err != nil {
		t.Fatal(err)
	}
	if err := SaveReplay(path, &g); err != nil {
		t.Fatal(err)
	}
	var restarted protocol.ReplayGuard
	if err := LoadReplay(path, &restarted); err != nil {
		t.Fatal(err)
	}
	if err := restarted.Check(e, id, protocol.Live); !errors.Is(err, protocol.ErrReplay) {
		t.Fatalf("replay after restart: %v, want ErrReplay", err)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := LoadReplay(path, &restarted); !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("LoadReplay(garbage): %v, want ErrMalformed", err)
	}
}

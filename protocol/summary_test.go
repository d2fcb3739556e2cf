package protocol

import (
	"bytes"
	"errors"
	"testing"
)

func TestSummaryRequestRoundTrip(t *testing.T) {
	in := &SummaryRequest{Room: "general", Since: -5, Until: t0.UnixMilli()}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !IsSummaryRequest(b) {
		t.Error("IsSummaryRequest: false for a summary request")
	}
	out, err := ParseSummaryRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if *out != *in {
		t.Fatalf("round trip gave %+v, want %+v", out, in)
	}
	page, _ := (&SyncRequest{Room: "general", Limit: 1}).MarshalBinary()
	if IsSummaryRequest(page) {
		t.Error("IsSummaryRequest: true for a page request")
	}
	if _, err := ParseSummaryRequest(page); !errors.Is(err, ErrMalformed) {
		t.Errorf("a page request: %v, want ErrMalformed", err)
	}
	if _, err := (&SummaryRequest{Room: "R"}).MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad room: %v, want ErrMalformed", err)
	}
	if _, err := ParseSummaryRequest(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing byte: %v", err)
	}
	for n := range len(b) {
		if _, err := ParseSummaryRequest(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	v2 := bytes.Clone(b)
	v2[0] = 2
	if _, err := ParseSummaryRequest(v2); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("version 2: %v", err)
	}
	if _, err := ParseSummaryRequest(make([]byte, MaxSummaryRequest+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: %v", err)
	}
}

// TestSummaryOf: the digest is of the IDs in the order given, and the
// count is theirs; the same IDs give the same summary, any other list
// another.
func TestSummaryOf(t *testing.T) {
	ids := []ID{{1}, {2}, {3}}
	a, b := SummaryOf(ids), SummaryOf([]ID{{1}, {2}, {3}})
	if a != b || a.Count != 3 || a.Over {
		t.Fatalf("same IDs: %+v and %+v", a, b)
	}
	for name, other := range map[string][]ID{
		"one missing": {{1}, {3}},
		"one more":    {{1}, {2}, {3}, {4}},
		"reordered":   {{2}, {1}, {3}},
		"none":        nil,
	} {
		if s := SummaryOf(other); s.Digest == a.Digest {
			t.Errorf("%s: same digest as the three", name)
		}
	}
	if s := SummaryOf(make([]ID, MaxSummaryCount+1)); s != (Summary{Over: true}) {
		t.Errorf("over the limit: %+v", s)
	}
	if s := SummaryOf(make([]ID, MaxSummaryCount)); s.Over || s.Count != MaxSummaryCount {
		t.Errorf("at the limit: %+v", s)
	}
}

func TestSummaryRoundTrip(t *testing.T) {
	for _, in := range []Summary{SummaryOf([]ID{{7}, {8}}), SummaryOf(nil), {Over: true}} {
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out, err := ParseSummary(b)
		if err != nil {
			t.Fatal(err)
		}
		if *out != in {
			t.Fatalf("round trip gave %+v, want %+v", out, in)
		}
		for n := range len(b) {
			if _, err := ParseSummary(b[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("truncated to %d: %v", n, err)
			}
		}
		if _, err := ParseSummary(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
			t.Errorf("trailing byte: %v", err)
		}
	}
	for name, bad := range map[string]Summary{
		"count over the limit": {Count: MaxSummaryCount + 1},
		"negative count":       {Count: -1},
		"over, with a count":   {Over: true, Count: 1},
		"over, with a digest":  {Over: true, Digest: [32]byte{1}},
	} {
		if _, err := bad.MarshalBinary(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	good, _ := (&Summary{Count: 2}).MarshalBinary()
	for name, edit := range map[string]func(b []byte){
		"over flag 2":          func(b []byte) { b[2] = 2 },
		"over with a count":    func(b []byte) { b[2], b[6] = 1, 2 },
		"count over the limit": func(b []byte) { b[3] = 1 },
	} {
		b := bytes.Clone(good)
		edit(b)
		if _, err := ParseSummary(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	v2 := bytes.Clone(good)
	v2[0] = 2
	if _, err := ParseSummary(v2); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("version 2: %v", err)
	}
}

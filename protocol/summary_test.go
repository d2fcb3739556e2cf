package protocol

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"
)

func TestSummaryRequestRoundTrip(t *testing.T) {
	in := &SummaryRequest{Room: "general", Since: -5, Step: 60_000, Buckets: 11}
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
	if since, until := out.Bucket(10); since != -5+600_000 || until != out.Until() || until != -5+660_000 {
		t.Errorf("last bucket [%d, %d), until %d", since, until, out.Until())
	}
	page, _ := (&SyncRequest{Room: "general", Limit: 1}).MarshalBinary()
	if IsSummaryRequest(page) {
		t.Error("IsSummaryRequest: true for a page request")
	}
	if _, err := ParseSummaryRequest(page); !errors.Is(err, ErrMalformed) {
		t.Errorf("a page request: %v, want ErrMalformed", err)
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

// TestSummaryRequestLimits: a request that names no valid room, a step
// or count of buckets out of range, or buckets that end past the last
// time is refused both ways, encoding and parsing.
func TestSummaryRequestLimits(t *testing.T) {
	ok := SummaryRequest{Room: "general", Since: 0, Step: 1, Buckets: 1}
	for name, edit := range map[string]func(r *SummaryRequest){
		"bad room":            func(r *SummaryRequest) { r.Room = "R" },
		"step 0":              func(r *SummaryRequest) { r.Step = 0 },
		"step over the limit": func(r *SummaryRequest) { r.Step = MaxSummaryStep + 1 },
		"no buckets":          func(r *SummaryRequest) { r.Buckets = 0 },
		"too many buckets":    func(r *SummaryRequest) { r.Buckets = MaxSummaryBuckets + 1 },
		"past the last time":  func(r *SummaryRequest) { r.Since, r.Step, r.Buckets = math.MaxInt64-10, 10, 2 },
	} {
		r := ok
		edit(&r)
		if _, err := r.MarshalBinary(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: encoded (%v), want ErrMalformed", name, err)
		}
	}
	last := SummaryRequest{Room: "general", Since: math.MaxInt64 - 20, Step: 10, Buckets: 2}
	good, err := last.MarshalBinary()
	if err != nil {
		t.Fatalf("buckets that end at the last time but one: %v", err)
	}
	// The encoding ends with since (8), step (4) and buckets (1).
	for name, edit := range map[string]func(b []byte){
		"step 0":             func(b []byte) { copy(b[len(b)-5:], []byte{0, 0, 0, 0}) },
		"no buckets":         func(b []byte) { b[len(b)-1] = 0 },
		"too many buckets":   func(b []byte) { b[len(b)-1] = MaxSummaryBuckets + 1 },
		"past the last time": func(b []byte) { b[len(b)-1] = 3 },
	} {
		b := bytes.Clone(good)
		edit(b)
		if _, err := ParseSummaryRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: parsed (%v), want ErrMalformed", name, err)
		}
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

func TestSummaryResponseRoundTrip(t *testing.T) {
	for _, in := range []SummaryResponse{
		{Buckets: []Summary{SummaryOf([]ID{{7}, {8}})}},
		{Buckets: []Summary{SummaryOf(nil), SummaryOf([]ID{{9}}), {Over: true}}},
		{Buckets: slices.Repeat([]Summary{SummaryOf(nil)}, MaxSummaryBuckets)},
	} {
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out, err := ParseSummaryResponse(b)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(out.Buckets, in.Buckets) {
			t.Fatalf("round trip gave %+v, want %+v", out, in)
		}
		for n := range len(b) {
			if _, err := ParseSummaryResponse(b[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("truncated to %d: %v", n, err)
			}
		}
		if _, err := ParseSummaryResponse(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("trailing byte: %v", err)
		}
	}
	for name, bad := range map[string]SummaryResponse{
		"no buckets":            {},
		"too many buckets":      {Buckets: make([]Summary, MaxSummaryBuckets+1)},
		"count over the limit":  {Buckets: []Summary{{Count: MaxSummaryCount + 1}}},
		"over the limit in all": {Buckets: []Summary{{Count: MaxSummaryCount}, {Count: 1}}},
		"negative count":        {Buckets: []Summary{{Count: -1}}},
		"over, with a count":    {Buckets: []Summary{{Over: true, Count: 1}}},
		"over, with a digest":   {Buckets: []Summary{{Over: true, Digest: [32]byte{1}}}},
		"counted after over":    {Buckets: []Summary{{Over: true}, SummaryOf(nil)}},
		"empty, with a digest":  {Buckets: []Summary{{Count: 0, Digest: [32]byte{1}}}},
	} {
		if _, err := bad.MarshalBinary(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	good, _ := (&SummaryResponse{Buckets: []Summary{{Count: 2}, {Count: MaxSummaryCount - 2}, SummaryOf(nil)}}).MarshalBinary()
	// Header (2), buckets (1); bucket 0 at 3: over (1), count (4), digest;
	// bucket 1 at 40, bucket 2 at 77.
	for name, edit := range map[string]func(b []byte){
		"counted after over":    func(b []byte) { b[40], b[43], b[44] = 1, 0, 0 },
		"empty, with a digest":  func(b []byte) { b[82] ^= 1 },
		"over flag 2":           func(b []byte) { b[3] = 2 },
		"over with a count":     func(b []byte) { b[3] = 1 },
		"count over the limit":  func(b []byte) { b[4] = 1 },
		"over the limit in all": func(b []byte) { b[7] = 3 },
		"one bucket fewer":      func(b []byte) { b[2] = 2 },
		"no buckets":            func(b []byte) { b[2] = 0 },
	} {
		b := bytes.Clone(good)
		edit(b)
		if _, err := ParseSummaryResponse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	v2 := bytes.Clone(good)
	v2[0] = 2
	if _, err := ParseSummaryResponse(v2); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("version 2: %v", err)
	}
	if _, err := ParseSummaryResponse(make([]byte, MaxSummaryResponse+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: %v", err)
	}
}

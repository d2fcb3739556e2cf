package protocol

import (
	"bytes"
	"errors"
	"testing"
)

func TestSyncRequestRoundTrip(t *testing.T) {
	in := &SyncRequest{Room: "general", Since: -5, Until: t0.UnixMilli(), AfterTime: 7, AfterID: ID{9}, Limit: 100,
		Have: []ID{{1}, {2}, {3, 4}}}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseSyncRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := out.MarshalBinary()
	if !bytes.Equal(again, b) || out.Room != in.Room || out.Since != -5 || out.Limit != 100 || len(out.Have) != 3 || out.Have[2] != in.Have[2] {
		t.Fatalf("round trip gave %+v", out)
	}
	for name, bad := range map[string]*SyncRequest{
		"limit 0":       {Room: "r", Limit: 0},
		"limit too big": {Room: "r", Limit: MaxSyncPage + 1},
		"bad room":      {Room: "R", Limit: 1},
		"unsorted have": {Room: "r", Limit: 1, Have: []ID{{2}, {1}}},
		"repeated have": {Room: "r", Limit: 1, Have: []ID{{1}, {1}}},
	} {
		if _, err := bad.MarshalBinary(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := ParseSyncRequest(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing byte: %v", err)
	}
	for n := range len(b) {
		if _, err := ParseSyncRequest(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	v2 := bytes.Clone(b)
	v2[0] = 2
	if _, err := ParseSyncRequest(v2); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("version 2: %v", err)
	}
	if _, err := ParseSyncRequest(make([]byte, MaxSyncRequest+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: %v", err)
	}
}

func TestSyncResponseRoundTrip(t *testing.T) {
	_, e1 := signed(t, key(t, 1), "r", 1, "one")
	_, e2 := signed(t, key(t, 1), "r", 2, "two")
	in := &SyncResponse{Envelopes: [][]byte{e1, e2}, More: true, NextTime: -3, NextID: ID{5}}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseSyncResponse(b)
	if err != nil || !out.More || out.NextTime != -3 || out.NextID != in.NextID || len(out.Envelopes) != 2 || !bytes.Equal(out.Envelopes[1], e2) {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	bad := bytes.Clone(b)
	bad[2] = 2 // more flag
	if _, err := ParseSyncResponse(bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("more = 2: %v", err)
	}
	for n := range len(b) {
		if _, err := ParseSyncResponse(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if _, err := ParseSyncResponse(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing byte: %v", err)
	}
	if _, err := (&SyncResponse{Envelopes: make([][]byte, MaxSyncPage+1)}).MarshalBinary(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize page: %v", err)
	}
}

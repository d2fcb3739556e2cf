package cputime

import (
	"crypto/sha256"
	"testing"
	"time"
)

// sink keeps the work of TestSelfGrows from being optimized away.
var sink [32]byte

func TestSelfGrows(t *testing.T) {
	before, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	// Work until the kernel has counted some of it: its clock has a
	// resolution, and a busy machine may run this slowly.
	deadline := time.Now().Add(30 * time.Second)
	after := before
	for after <= before && time.Now().Before(deadline) {
		for range 10000 {
			sink = sha256.Sum256(sink[:])
		}
		if after, err = Self(); err != nil {
			t.Fatal(err)
		}
	}
	if after <= before {
		t.Fatalf("CPU time %v, then %v after 30 s of hashing", before, after)
	}
}

package audit

import (
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/parleychat/parley/internal/testkit"
)

// TestWitnessFunnel: the first security error is final: every later
// check fails with it, whatever it is asked, and no later error replaces
// it; an error that is not the relay's (a failure to ask for proofs) is
// not one.
func TestWitnessFunnel(t *testing.T) {
	w := NewWitness(nil)
	if err := w.SetRelay(testkit.Key(t).Public()); err != nil {
		t.Fatal(err)
	}
	a := Seen{Checkpoint{Origin: "x", Size: 5, Root: tlog.Hash{1}}, []byte("a")}
	b := Seen{Checkpoint{Origin: "x", Size: 5, Root: tlog.Hash{2}}, []byte("b")}
	offline := errors.New("no connection")
	c := Seen{Checkpoint{Origin: "x", Size: 9, Root: tlog.Hash{3}}, []byte("c")}
	if err := w.Check([]Seen{a, c}, func(int64, []int64) ([]tlog.TreeProof, error) { return nil, offline }); !errors.Is(err, offline) || errors.Is(err, ErrSecurity) {
		t.Fatalf("a failure to ask: %v", err)
	}
	if w.Err() != nil {
		t.Fatalf("a failure to ask became final: %v", w.Err())
	}
	first := w.Check([]Seen{a, b}, nil) // a fork: no proof needed
	if !errors.Is(first, ErrSecurity) {
		t.Fatalf("a fork: %v", first)
	}
	if err := w.Fail(errors.New("something else")); err != first {
		t.Fatalf("Fail after the first: %v, want the first, %v", err, first)
	}
	if err := w.Check(nil, nil); err != first {
		t.Fatalf("a later check: %v", err)
	}
	if err := w.CheckReceipt([32]byte{}, true, nil, nil); err != first {
		t.Fatalf("a later receipt: %v", err)
	}
	if w.Checkpoint() != nil {
		t.Fatal("a checkpoint was kept although none was proved")
	}
}

// TestWitnessReceiptWithoutReceipt: a relay that gave receipts before
// must give one for each publish it stores new.
func TestWitnessReceiptWithoutReceipt(t *testing.T) {
	w := NewWitness(nil)
	if err := w.CheckReceipt([32]byte{}, true, nil, nil); err != nil {
		t.Fatalf("a relay that keeps no log: %v", err)
	}
	w.Keep(Seen{Checkpoint{Origin: "x", Size: 1}, []byte("kept")})
	if err := w.CheckReceipt([32]byte{}, false, nil, nil); err != nil {
		t.Fatalf("a duplicate without a receipt: %v", err)
	}
	if err := w.CheckReceipt([32]byte{}, true, nil, nil); !errors.Is(err, ErrSecurity) || w.Err() == nil {
		t.Fatalf("a new publish without a receipt: %v", err)
	}
}

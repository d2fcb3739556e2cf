package server

import (
	"testing"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// TestLinger: a batch of audit records alone takes what else is queued,
// and an envelope ends the wait, leaving what follows it for the next
// batch.
func TestLinger(t *testing.T) {
	record := func() *pending { return &pending{audit: &audit.Record{Kind: audit.KindConnect}} }
	envelope := func() *pending { return &pending{rec: store.Record{Env: &protocol.Envelope{}}} }

	in := make(chan *pending, 8)
	in <- record()
	in <- record()
	if got := linger([]*pending{record()}, in); len(got) != 3 {
		t.Fatalf("took %d records, want 3", len(got))
	}

	in <- record()
	in <- envelope()
	in <- record()
	got := linger([]*pending{record()}, in)
	if len(got) != 3 || !got[2].envelope() {
		t.Fatalf("took %d, want 3 ending with the envelope", len(got))
	}
	if len(in) != 1 {
		t.Fatalf("%d left queued, want the record after the envelope", len(in))
	}
	<-in

	close(in)
	if got := linger([]*pending{record()}, in); len(got) != 1 {
		t.Fatalf("took %d from a closed queue, want the 1 it had", len(got))
	}
}

// linger is the committer's linger on a queue of audit records alone.
func linger(batch []*pending, in <-chan *pending) []*pending {
	q := &commitQueue{records: in}
	return q.linger(batch)
}

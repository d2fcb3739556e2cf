package keyring

import (
	"context"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// BenchmarkEpoch100: a new sender key in a room of 100 members (sealed
// to the 99 others and to ourselves), as a sender's client makes it:
// every package looked up in the store, then sealed. It reports the
// bytes the epoch's kind-5 envelopes put on the wire.
//
//	go test -run '^$' -bench Epoch100 ./keyring
func BenchmarkEpoch100(b *testing.B) {
	alice := newPerson(b, time.Now)
	members := []identity.PublicKey{alice.key.Public()}
	for range 99 {
		p := newPerson(b, time.Now)
		pkg, _, err := p.ring.Current(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := pkg.MarshalBinary()
		if _, err := alice.ring.LearnRaw(context.Background(), raw); err != nil {
			b.Fatal(err)
		}
		members = append(members, p.key.Public())
	}
	var wire int
	for b.Loop() {
		// Never committed: each Prepare finds no sender key, and makes one.
		ep, err := alice.ring.Prepare(context.Background(), room, head, members)
		if err != nil || ep == nil {
			b.Fatalf("Prepare: %v, %v", ep, err)
		}
		wire = 0
		for _, k := range ep.Keys {
			e := &protocol.Envelope{Kind: protocol.KindKeys, Room: room, Seq: 1, Lamport: 1, Time: time.Now().UnixMilli()}
			e.Payload, _ = k.MarshalBinary()
			if _, err := e.Sign(alice.key); err != nil {
				b.Fatal(err)
			}
			raw, _ := e.MarshalBinary()
			wire += len(raw)
		}
	}
	b.ReportMetric(float64(wire), "wire-bytes/epoch")
}

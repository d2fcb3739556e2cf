package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/parleychat/parley/audit"
)

// BenchmarkCommitAudit: what the relay's committer does per batch of
// publishes, with the audit log and without, on a durable store:
//
//	go test -run '^$' -bench CommitAudit ./store
func BenchmarkCommitAudit(b *testing.B) {
	const batch = 256
	for _, withAudit := range []bool{false, true} {
		b.Run(fmt.Sprintf("audit=%v", withAudit), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "relay.db"), Durable())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			k := key(b, 1)
			log, err := audit.NewLog(k, 0, nil, s)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			seq := uint64(0)
			recs := make([]Record, batch)
			arecs := make([]*audit.Record, batch)
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				b.StopTimer()
				for j := range recs {
					seq++
					recs[j] = record(b, k, "r", seq, seq, t0, "payload of a typical chat message, a line or two long")
					arecs[j] = &audit.Record{Kind: audit.KindPublish, Time: t0.UnixMilli(), PolicyVersion: 1, Identity: k.Public(),
						Message: recs[j].ID, Size: uint32(len(recs[j].Raw)), Path: audit.PathRelay, Room: "r"}
				}
				b.StartTimer()
				tx, err := s.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tx.Append(ctx, recs); err != nil {
					b.Fatal(err)
				}
				var first int64
				if withAudit {
					if first, err = log.Append(tx, arecs); err != nil {
						b.Fatal(err)
					}
					if _, err := log.Seal(tx); err != nil {
						b.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
				if withAudit {
					log.Commit()
					if _, err := log.ProveBatch(first+batch, first, s); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "µs/publish")
		})
	}
}

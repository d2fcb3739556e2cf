package server

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// OpenAudit opens the audit log kept in st and makes every policy change
// append its record in its own transaction.
func OpenAudit(ctx context.Context, key identity.PrivateKey, st *store.Store) (*audit.Log, error) {
	size, err := st.AuditSize(ctx)
	if err != nil {
		return nil, err
	}
	latest, err := st.LatestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	log, err := audit.NewLog(key, size, latest, st)
	if err != nil {
		return nil, err
	}
	st.SetPolicyHook(func(b *store.Batch, version uint64, ev store.PolicyEvent) (func(bool), error) {
		detail := ev.Action
		if ev.Note != "" {
			detail += ": " + ev.Note
		}
		rec := &audit.Record{Kind: audit.KindAdmin, Time: time.Now().UnixMilli(), PolicyVersion: version, Identity: ev.Key, Detail: truncateDetail(detail)}
		if _, err := log.Append(b, []*audit.Record{rec}); err != nil {
			return nil, err
		}
		if _, err := log.Seal(b); err != nil {
			log.Abort()
			return nil, err
		}
		return func(committed bool) {
			if committed {
				log.Commit()
			} else {
				log.Abort()
			}
		}, nil
	})
	return log, nil
}

func truncateDetail(s string) string {
	s = truncate(s)
	if len(s) > audit.MaxDetail {
		s = s[:audit.MaxDetail]
	}
	return s
}

// record queues an audit record of an event that stores nothing else,
// without waiting for its commit.
func (s *Server) record(ctx context.Context, r *audit.Record) {
	if s.audit == nil {
		return
	}
	r.Time = s.now().UnixMilli()
	r.Detail = truncateDetail(r.Detail)
	if len(r.Addr) > audit.MaxAddr {
		r.Addr = r.Addr[:audit.MaxAddr]
	}
	p := &pending{audit: r, done: make(chan committed, 1)}
	s.closing.RLock()
	defer s.closing.RUnlock()
	if s.closed {
		return
	}
	select {
	case s.commits <- p:
	case <-ctx.Done():
	}
}

// recordSync queues an audit record and waits for its commit.
func (s *Server) recordSync(r *audit.Record) error {
	if s.audit == nil {
		return nil
	}
	r.Time = s.now().UnixMilli()
	p := &pending{audit: r, done: make(chan committed, 1)}
	s.commits <- p
	return (<-p.done).err
}

func addrOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// proveTree answers a client's ProveTree request.
func (s *Server) proveTree(fw *wire.Writer, body []byte) error {
	m, err := wire.ParseProveTree(body)
	if err != nil {
		return err
	}
	if s.audit == nil {
		return &wire.RelayError{Code: wire.CodeUnsupported, Message: "this relay keeps no audit log"}
	}
	if _, size := s.audit.Latest(); int64(m.New) > size {
		return &wire.RelayError{Code: wire.CodeBadFrame, Message: fmt.Sprintf("the audit log has %d records, not %d", size, m.New)}
	}
	out := &wire.TreeProof{Proofs: make([][][32]byte, len(m.Old))}
	for i, old := range m.Old {
		p, err := s.audit.ProveTree(int64(m.New), int64(old), s.auditReader)
		if err != nil {
			return err
		}
		out.Proofs[i] = make([][32]byte, len(p))
		for j, h := range p {
			out.Proofs[i][j] = h
		}
	}
	return fw.Msg(wire.FrameTreeProof, out)
}

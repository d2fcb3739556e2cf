package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// checkProgress is how often CheckAuditLog logs how far it got, and
// bigAuditLog the size from which it says it starts.
const (
	checkProgress = 2 * time.Second
	bigAuditLog   = 100_000
)

// CheckAuditLog checks the audit log in st against its newest signed
// checkpoint, before the relay appends to it: every record's leaf hash is
// recomputed from its bytes and compared with the stored one, the stored
// tree hashes with the ones the records give, and the tree rebuilt to the
// checkpoint's root. It reads the log page by page and keeps only the
// tree's right edge; on a big log it logs its progress. A log that does
// not check out is an error wrapping the *audit.Problem that names the
// first bad record.
func CheckAuditLog(ctx context.Context, st *store.Store, key identity.PublicKey, log *slog.Logger) (audit.Result, error) {
	latest, err := st.LatestCheckpoint(ctx)
	if err != nil {
		return audit.Result{}, err
	}
	c, err := audit.NewChecker(key, latest)
	if err != nil {
		return audit.Result{}, err
	}
	start := time.Now()
	last := start
	if c.Size() >= bigAuditLog {
		log.Info("audit log check: starting", "records", c.Size())
	}
	for {
		page, err := st.AuditEntries(ctx, c.Checked(), auditPage)
		if err != nil {
			return audit.Result{}, err
		}
		if err := c.Add(page); err != nil {
			return audit.Result{}, narrow(ctx, st, key, err)
		}
		if len(page) < auditPage {
			break
		}
		if now := time.Now(); now.Sub(last) >= checkProgress {
			last = now
			log.Info("audit log check", "checked", c.Checked(), "of", c.Size())
		}
	}
	res, err := c.Done()
	if err != nil {
		return audit.Result{}, narrow(ctx, st, key, err)
	}
	log.Info("audit log checked", "records", res.Records, "took", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// narrow turns a Checker's problem into the first bad record: when the
// stored hashes were rewritten too, only the older checkpoints (Verify)
// narrow it down from record 0.
func narrow(ctx context.Context, st *store.Store, key identity.PublicKey, err error) error {
	var p *audit.Problem
	if errors.As(err, &p) && p.Index == 0 {
		if cps, cerr := st.Checkpoints(ctx); cerr == nil {
			if entries, eerr := allEntries(ctx, st); eerr == nil {
				if _, verr := audit.Verify(key, entries, cps); verr != nil {
					err = verr
				}
			}
		}
	}
	return err
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

// recordRefusal records a refusal of something a client did (a
// connection, a publish), at most refusalRate a second per key (an
// identity's fingerprint, an address) in bursts of refusalBurst: a
// client must not grow the audit log, which is never pruned, faster than
// that by sending what it knows will be refused. The refusals past it are
// counted, and the next record of that key says how many there were.
func (s *Server) recordRefusal(ctx context.Context, key string, r *audit.Record) {
	ok, unrecorded := s.refusals.admit(key, s.now())
	if !ok {
		s.metrics.unrecorded.Inc()
		return
	}
	if unrecorded > 0 {
		r.Detail = fmt.Sprintf("%s (and %d refusals of %s before it, not recorded one by one)", r.Detail, unrecorded, key)
	}
	s.record(ctx, r)
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

package server

import (
	"context"
	"slices"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
	"golang.org/x/mod/sumdb/tlog"
)

// maxBatch is the most envelopes one transaction commits.
const maxBatch = 512

// pending is an envelope on its way to the store, or an audit record of
// an event that stores nothing else (a connection, a refusal).
type pending struct {
	rec   store.Record  // the envelope; rec.Env is nil for an audit record alone
	audit *audit.Record // that audit record
	// policy is the policy version that admitted the envelope.
	policy uint64
	// early: the envelope went to the live subscriptions before the
	// committer (sequence.go); else it goes after its insert.
	early bool
	done  chan committed // buffered: the committer never waits for it
}

type committed struct {
	app  store.Appended
	time int64 // Unix ms of the commit
	// The publish's audit record: its index, the log's size and signed
	// checkpoint after the commit, and its inclusion proof, from which
	// the stream's writer makes the receipt.
	audited *auditedAt
	err     error
}

type auditedAt struct {
	index, size int64
	signed      []byte
	record      *audit.Record
	proof       tlog.RecordProof
}

func (p *pending) envelope() bool { return p.rec.Env != nil }

// commit is the relay's one writer of envelopes and audit records: it
// takes everything that is waiting and commits it in one durable
// transaction (group commit: one disk flush for the batch, not one per
// envelope), with an audit record for each event and one signed
// checkpoint. New envelopes go to live subscribers before the flush.
// Answering the senders is left to a goroutine of its own (finish), so
// that the next transaction starts as soon as this one is committed. It
// returns when records and envs are closed and drained and every sender
// is answered.
func (s *Server) commit(records, envs <-chan *pending) {
	// One batch is answered while the next commits, and one more waits.
	done := make(chan *finished, 1)
	finishing := make(chan struct{})
	go func() {
		defer close(finishing)
		for f := range done {
			s.finish(f)
		}
	}()
	defer func() { close(done); <-finishing }()
	in := &commitQueue{s: s, records: records, envs: envs}
	for {
		p, ok := in.next()
		if !ok {
			return
		}
		batch := in.gather(p)
		start := time.Now()
		f := s.commitBatch(batch)
		s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
		if f.err != nil {
			s.log.Error("commit failed", "items", len(batch), "err", f.err)
		} else if n := countEnvelopes(batch); n > 0 {
			// A batch of audit records alone (the start record, a
			// connection's) is not a batch of envelopes.
			s.metrics.batchSize.Observe(float64(n))
			s.metrics.stored.Add(float64(len(f.fresh)))
		}
		done <- f
	}
}

func countEnvelopes(batch []*pending) int {
	n := 0
	for _, p := range batch {
		if p.envelope() {
			n++
		}
	}
	return n
}

// commitQueue is what the committer takes its batches from: the audit
// records of events, and the envelopes in position order, each of which
// gives back its slot (sequence.go) as it is taken.
type commitQueue struct {
	s             *Server
	records, envs <-chan *pending // nil once closed
}

// next waits for the next item, and reports false once both queues are
// closed and empty.
func (q *commitQueue) next() (*pending, bool) {
	for q.records != nil || q.envs != nil {
		select {
		case p, ok := <-q.records:
			if !ok {
				q.records = nil
				continue
			}
			return p, true
		case p, ok := <-q.envs:
			if !ok {
				q.envs = nil
				continue
			}
			q.s.envSlots.Release(1)
			return p, true
		}
	}
	return nil, false
}

// poll takes an item that is waiting, if any, without waiting.
func (q *commitQueue) poll() (*pending, bool) {
	select {
	case p, ok := <-q.envs:
		if ok {
			q.s.envSlots.Release(1)
			return p, true
		}
		q.envs = nil
	default:
	}
	select {
	case p, ok := <-q.records:
		if ok {
			return p, true
		}
		q.records = nil
	default:
	}
	return nil, false
}

// gather makes a batch of p and what else is waiting, up to maxBatch. A
// batch of audit records alone lingers for more (linger).
func (q *commitQueue) gather(p *pending) []*pending {
	batch := make([]*pending, 1, maxBatch)
	batch[0] = p
	for len(batch) < maxBatch {
		p, ok := q.poll()
		if !ok {
			break
		}
		batch = append(batch, p)
	}
	if !slices.ContainsFunc(batch, (*pending).envelope) {
		batch = q.linger(batch)
	}
	return batch
}

// auditLinger is how long a batch of audit records alone (connections,
// refusals) waits for more before it commits. Nobody waits for those
// records, and every commit costs a disk flush and a signed checkpoint:
// under a flood of new connections, one commit every few milliseconds
// instead of one per connection or two. An envelope ends the wait.
const auditLinger = 5 * time.Millisecond

// linger adds to batch what arrives within auditLinger, until an
// envelope arrives, the batch is full or the queues are closed.
func (q *commitQueue) linger(batch []*pending) []*pending {
	t := time.NewTimer(auditLinger)
	defer t.Stop()
	for len(batch) < maxBatch && (q.records != nil || q.envs != nil) {
		select {
		case p, ok := <-q.records:
			if !ok {
				q.records = nil
				continue
			}
			batch = append(batch, p)
			if p.envelope() {
				return batch
			}
		case p, ok := <-q.envs:
			if !ok {
				q.envs = nil
				continue
			}
			q.s.envSlots.Release(1)
			return append(batch, p)
		case <-t.C:
			return batch
		}
	}
	return batch
}

// finished is a batch that committed, or failed to, on its way to its
// senders.
type finished struct {
	batch []*pending
	res   []committed // each item's answer, but for its audit receipt
	fresh []store.Record
	err   error
	// The audit records of the batch: the log's size and signed
	// checkpoint after the commit, the records, and the batch item of
	// each (-1 for one that is not a publish).
	size   int64
	signed []byte
	arecs  []*audit.Record
	aowner []int
}

// finish answers the senders of a committed batch, with the audit receipt
// of each new envelope, then forwards the new envelopes to the mesh.
func (s *Server) finish(f *finished) {
	if f.err != nil {
		for _, p := range f.batch {
			p.done <- committed{err: f.err}
		}
		return
	}
	if len(f.arecs) > 0 {
		first := f.size - int64(len(f.arecs))
		// The batch's proofs in one pass: they share most of their
		// hashes. The next batch may be appending meanwhile; the proofs
		// read only hashes of this tree, which are committed.
		proofs, err := s.audit.ProveBatch(f.size, first, s.auditReader)
		if err != nil {
			s.log.Error("audit: inclusion proofs", "first", first, "size", f.size, "err", err)
		}
		for k, i := range f.aowner {
			if proofs != nil && i >= 0 {
				f.res[i].audited = &auditedAt{index: first + int64(k), size: f.size, signed: f.signed, record: f.arecs[k], proof: proofs[k]}
			}
		}
	}
	for i, p := range f.batch {
		p.done <- f.res[i]
	}
	if s.bridge != nil {
		for _, r := range f.fresh {
			if r.Via != viaMesh {
				s.bridge.Forward(r)
			}
		}
	}
}

// settle tells the sequencer that the late envelopes of a batch that
// failed will not go live, and ends the subscriptions if early ones did.
func (s *Server) settle(batch []*pending) {
	var late []*pending
	early := false
	for _, p := range batch {
		switch {
		case !p.envelope():
		case p.early:
			early = true
		default:
			late = append(late, p)
		}
	}
	if early {
		s.hub.fail()
	}
	s.seq.settled(late)
}

// commitBatch writes one batch in one transaction and returns the answer
// to each item, without receipts, and the envelopes that are new.
func (s *Server) commitBatch(batch []*pending) *finished {
	f := &finished{batch: batch}
	// Not the server's context: what was accepted is committed even
	// while the relay shuts down.
	ctx := context.Background()
	b, err := s.st.Begin(ctx)
	if err != nil {
		s.settle(batch)
		f.err = err
		return f
	}
	res, fresh, err := s.appendEnvelopes(ctx, b, batch)
	if err != nil {
		b.Rollback()
		s.settle(batch)
		f.err = err
		return f
	}
	now := s.now().UnixMilli()
	var (
		arecs  []*audit.Record
		aowner []int
		first  int64
		signed []byte
	)
	if s.audit != nil {
		arecs, aowner = auditRecords(batch, res, now)
	}
	if len(arecs) > 0 {
		if first, signed, err = s.appendAudit(b, arecs); err != nil {
			s.hub.fail()
			f.err = err
			return f
		}
	}
	if err := b.Commit(); err != nil {
		if len(arecs) > 0 {
			s.audit.Abort()
		}
		s.hub.fail()
		f.err = err
		return f
	}
	if len(arecs) > 0 {
		s.audit.Commit()
	}
	s.hub.committed(fresh)

	for i := range res {
		res[i].time = now
	}
	f.res, f.fresh = res, fresh
	f.size, f.signed, f.arecs, f.aowner = first+int64(len(arecs)), signed, arecs, aowner
	return f
}

// appendEnvelopes inserts the batch's envelopes in b, and returns each
// item's answer and the envelopes that are new. The late ones among them
// (sequence.go) go to the live subscriptions now that the store has
// decided, before the audit records, the commit and the disk flush;
// Committed frames follow the flush. If the transaction fails after, what
// went out is not stored: every subscription starts again from its last
// committed envelope. If the insert fails, the caller rolls back and
// settles the batch.
func (s *Server) appendEnvelopes(ctx context.Context, b Batch, batch []*pending) ([]committed, []store.Record, error) {
	res := make([]committed, len(batch))
	var (
		recs  []store.Record
		owner []int // recs[j] is batch[owner[j]]'s
	)
	for i, p := range batch {
		if p.envelope() {
			recs = append(recs, p.rec)
			owner = append(owner, i)
		}
	}
	if len(recs) == 0 {
		return res, nil, nil
	}
	out, err := b.Append(ctx, recs)
	if err != nil {
		return nil, nil, err
	}
	var (
		fresh []store.Record
		late  []*pending     // the envelopes that go live after their insert
		live  []store.Record // those of them that are new
		lost  bool           // an early envelope is not stored after all
	)
	for j, o := range out {
		p := batch[owner[j]]
		res[owner[j]].app = o
		if !p.early {
			late = append(late, p)
		}
		switch {
		case o.Result == store.Stored:
			r := recs[j]
			r.Pos = o.Pos
			fresh = append(fresh, r)
			if !p.early {
				live = append(live, r)
			}
		case p.early:
			lost = true
			s.log.Error("an envelope sent live as new is not stored", "id", p.rec.ID, "result", o.Result)
		}
	}
	if lost {
		s.hub.fail()
	}
	// No yield to the subscriptions woken here: the new envelopes of a
	// publisher the sequencer knows went live before the committer saw
	// them, from the publisher's goroutine; the late ones (resends,
	// envelopes of pairs it does not know, or queued behind one) are
	// written when the scheduler runs their subscriptions, on the other
	// core or when the committer waits for the disk.
	s.metrics.liveLate.Add(float64(len(live)))
	s.hub.deliver(live)
	s.seq.settled(late)
	return res, fresh, nil
}

// auditRecords makes the audit records of a batch committed at now (Unix
// ms): each event's, a record of each new envelope and of each
// equivocation, and one of each client's publish of an envelope stored
// before; none for a duplicate from the mesh. aowner[k] is the batch item
// whose receipt arecs[k] makes, -1 for none.
func auditRecords(batch []*pending, res []committed, now int64) (arecs []*audit.Record, aowner []int) {
	for i, p := range batch {
		switch {
		case !p.envelope():
			arecs = append(arecs, p.audit)
			aowner = append(aowner, -1)
		case res[i].app.Result == store.Stored,
			// A client's publish of an envelope the relay had: from the
			// mesh first (another relay of a federation carried it here
			// before the client's own publish came), or from this client
			// before (its acknowledgement was lost). Recorded as a publish
			// on this path, so that its acknowledgement carries a receipt
			// the client can check: the log then has one record of each
			// path the envelope came by.
			res[i].app.Result == store.Duplicate && p.rec.Via != viaMesh:
			arecs = append(arecs, publishRecord(p, audit.KindPublish, now))
			aowner = append(aowner, i)
		case res[i].app.Result == store.Equivocation:
			r := publishRecord(p, audit.KindPublishRefused, now)
			r.Code, r.Detail = wire.CodeEquivocation, "another envelope has this sender, room and sequence number"
			arecs = append(arecs, r)
			aowner = append(aowner, -1) // a refusal: no receipt
		}
	}
	return arecs, aowner
}

// publishRecord is the audit record of kind of the envelope p.
func publishRecord(p *pending, kind audit.Kind, now int64) *audit.Record {
	path := audit.PathRelay
	if p.rec.Via == viaMesh {
		path = audit.PathMesh
	}
	r := &audit.Record{Kind: kind, Time: now, PolicyVersion: p.policy, Identity: p.rec.Env.Sender,
		Message: p.rec.ID, Size: uint32(len(p.rec.Raw)), Path: path, Room: p.rec.Env.Room}
	// What a change of a private room's member list did, to whom: the
	// audit log is where an operator looks. A client that checks its
	// receipt rebuilds the same text (audit.MemberDetail).
	r.Detail = audit.MemberDetail(p.rec.Env)
	return r
}

// appendAudit appends arecs to the audit log in b and seals it with a
// signed checkpoint; it returns the index of the first record and the
// checkpoint. If it fails, it has rolled b back.
func (s *Server) appendAudit(b Batch, arecs []*audit.Record) (first int64, signed []byte, err error) {
	if first, err = s.audit.Append(b, arecs); err != nil {
		b.Rollback()
		return 0, nil, err
	}
	if signed, err = s.audit.Seal(b); err != nil {
		b.Rollback()
		s.audit.Abort()
		return 0, nil, err
	}
	return first, signed, nil
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/parleychat/parley/audit"
)

// The relay's audit log: records, the tree's stored hashes and the signed
// checkpoints, written by the audit package in the transactions of the
// events they record (Batch implements audit.Tx).

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// A row holds the records idx to idx+n-1 of the log (one commit's): their
// encodings one after another, and the tree hashes they complete, in the
// order tlog stores them. tlog stores, for record r, its leaf hash (level
// 0) and one hash for each level L at which r is the last leaf of a
// complete subtree, and the stored indexes of consecutive records are
// consecutive: so the stored hash x lives in the row of the record that
// completes it, at x minus the stored index of the row's first leaf.

// holder returns the record whose row holds stored hash x: the last leaf
// of the subtree whose hash it is.
func holder(x int64) int64 {
	level, m := tlog.SplitStoredHashIndex(x)
	return (m+1)<<level - 1
}

// auditRow is one row of audit_records.
type auditRow struct {
	idx, n int64
	data   []byte
	hashes []byte
}

func (r *auditRow) holds(rec int64) bool { return rec >= r.idx && rec < r.idx+r.n }

// rowOf reads the row that holds record rec, or nil if there is none.
func rowOf(ctx context.Context, q queryer, rec int64) (*auditRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT idx, n, hashes FROM audit_records WHERE idx <= ? ORDER BY idx DESC LIMIT 1`, rec)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	var r auditRow
	if err := rows.Scan(&r.idx, &r.n, &r.hashes); err != nil {
		return nil, err
	}
	if !r.holds(rec) {
		return nil, nil
	}
	return &r, rows.Err()
}

func readHashes(ctx context.Context, q queryer, indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var read []*auditRow // the rows read so far: a few, usually one
	for i, x := range indexes {
		rec := holder(x)
		var row *auditRow
		for _, r := range read {
			if r.holds(rec) {
				row = r
				break
			}
		}
		if row == nil {
			var err error
			if row, err = rowOf(ctx, q, rec); err != nil {
				return nil, fmt.Errorf("store: audit hashes: %w", err)
			}
			if row == nil {
				return nil, fmt.Errorf("store: audit hash %d (of record %d) is missing", x, rec)
			}
			read = append(read, row)
		}
		off := x - tlog.StoredHashIndex(0, row.idx)
		if int64(len(row.hashes)) < (off+1)*tlog.HashSize {
			return nil, fmt.Errorf("store: audit hash %d (of record %d) is missing", x, rec)
		}
		out[i] = tlog.Hash(row.hashes[off*tlog.HashSize : (off+1)*tlog.HashSize])
	}
	return out, nil
}

// auditStmts are the audit log's writes, prepared once.
type auditStmts struct {
	records    *sql.Stmt
	checkpoint *sql.Stmt
}

const (
	insertAudit      = `INSERT INTO audit_records (idx, n, data, hashes) VALUES (?, ?, ?, ?)`
	insertCheckpoint = `INSERT INTO audit_checkpoints (size, note) VALUES (?, ?)
	ON CONFLICT (size) DO UPDATE SET note = excluded.note`
)

func prepareAudit(db *sql.DB) (auditStmts, error) {
	var a auditStmts
	var err error
	if a.records, err = db.Prepare(insertAudit); err != nil {
		return auditStmts{}, err
	}
	if a.checkpoint, err = db.Prepare(insertCheckpoint); err != nil {
		a.close()
		return auditStmts{}, err
	}
	return a, nil
}

func (a *auditStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{a.records, a.checkpoint} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// ReadAuditHashes implements audit.Tx.
func (b *Batch) ReadAuditHashes(indexes []int64) ([]tlog.Hash, error) {
	return readHashes(context.Background(), b.tx, indexes)
}

// PutAuditRecords implements audit.Tx: the records, consecutive, go into
// one row. Each record's hashes must be the ones tlog.StoredHashes gives
// for it, so that the row's hashes are consecutive from its first leaf
// hash's stored index.
func (b *Batch) PutAuditRecords(rows []audit.Row) error {
	if len(rows) == 0 {
		return nil
	}
	first := rows[0].Index
	size, count := 0, 0
	for _, r := range rows {
		size += len(r.Data)
		count += len(r.Hashes)
	}
	data := make([]byte, 0, size)
	hashes := make([]byte, 0, count*tlog.HashSize)
	for i, r := range rows {
		if r.Index != first+int64(i) {
			return fmt.Errorf("store: audit record %d follows %d", r.Index, first+int64(i)-1)
		}
		if n, err := audit.RecordLen(r.Data); err != nil || n != len(r.Data) {
			return fmt.Errorf("store: audit record %d: not one record", r.Index)
		}
		from, to := tlog.StoredHashIndex(0, r.Index), tlog.StoredHashIndex(0, r.Index+1)
		if int64(len(r.Hashes)) != to-from {
			return fmt.Errorf("store: audit record %d: %d hashes, want %d", r.Index, len(r.Hashes), to-from)
		}
		for j, h := range r.Hashes {
			if h.Index != from+int64(j) {
				return fmt.Errorf("store: audit record %d: hash %d is not the record's", r.Index, h.Index)
			}
			hashes = append(hashes, h.Hash[:]...)
		}
		data = append(data, r.Data...)
	}
	if b.audit.records == nil {
		if b.s.audit.records == nil {
			return errNotRelay
		}
		b.audit.records = b.tx.Stmt(b.s.audit.records)
	}
	if _, err := b.audit.records.Exec(first, len(rows), data, hashes); err != nil {
		return fmt.Errorf("store: audit records %d to %d: %w", first, first+int64(len(rows))-1, err)
	}
	return nil
}

// PutCheckpoint implements audit.Tx.
func (b *Batch) PutCheckpoint(size int64, signed []byte) error {
	if b.audit.checkpoint == nil {
		if b.s.audit.checkpoint == nil {
			return errNotRelay
		}
		b.audit.checkpoint = b.tx.Stmt(b.s.audit.checkpoint)
	}
	if _, err := b.audit.checkpoint.Exec(size, signed); err != nil {
		return fmt.Errorf("store: checkpoint %d: %w", size, err)
	}
	return nil
}

// ReadAuditHashes implements audit.Reader on committed data.
func (s *Store) ReadAuditHashes(indexes []int64) ([]tlog.Hash, error) {
	return readHashes(context.Background(), s.r, indexes)
}

// AuditSize is the number of records in the audit log.
func (s *Store) AuditSize(ctx context.Context) (int64, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, `SELECT idx + n FROM audit_records ORDER BY idx DESC LIMIT 1`).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: audit size: %w", err)
	}
	return n, nil
}

// LatestCheckpoint returns the signed checkpoint of the largest tree, or
// nil if there is none.
func (s *Store) LatestCheckpoint(ctx context.Context) ([]byte, error) {
	var note []byte
	err := s.r.QueryRowContext(ctx, `SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: newest checkpoint: %w", err)
	}
	return note, nil
}

// Checkpoints returns every signed checkpoint, the smallest tree first.
func (s *Store) Checkpoints(ctx context.Context) ([][]byte, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT note FROM audit_checkpoints ORDER BY size`)
	if err != nil {
		return nil, fmt.Errorf("store: checkpoints: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var n []byte
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("store: checkpoints: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// AuditEntries returns the records with index >= from, at most limit,
// in index order, each with its stored leaf hash.
func (s *Store) AuditEntries(ctx context.Context, from int64, limit int) ([]audit.Entry, error) {
	// The row that holds record from, and the rows after it.
	rows, err := s.r.QueryContext(ctx, `SELECT idx, n, data, hashes FROM audit_records
		WHERE idx >= coalesce((SELECT max(idx) FROM audit_records WHERE idx <= ?), ?) ORDER BY idx`, from, from)
	if err != nil {
		return nil, fmt.Errorf("store: audit records: %w", err)
	}
	defer rows.Close()
	var out []audit.Entry
	for len(out) < limit && rows.Next() {
		var r auditRow
		if err := rows.Scan(&r.idx, &r.n, &r.data, &r.hashes); err != nil {
			return nil, fmt.Errorf("store: audit records: %w", err)
		}
		out = r.entries(out, from, limit)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit records: %w", err)
	}
	return out, nil
}

// entries appends to out the records of the row from index from on, until
// out holds limit, each with the hashes stored for it. A damaged row still
// gives each of its records an entry, which then does not check out: the
// bytes of a record that does not delimit, or that trail the row's last,
// go with that record, and a hash missing from the row is a zero hash.
func (r *auditRow) entries(out []audit.Entry, from int64, limit int) []audit.Entry {
	base := tlog.StoredHashIndex(0, r.idx)
	data := r.data
	for j := int64(0); j < r.n && len(out) < limit; j++ {
		i := r.idx + j
		e := audit.Entry{Index: i}
		if k, err := audit.RecordLen(data); err == nil && j < r.n-1 {
			e.Data, data = data[:k], data[k:]
		} else {
			e.Data, data = data, nil
		}
		lo, hi := tlog.StoredHashIndex(0, i)-base, tlog.StoredHashIndex(0, i+1)-base
		for x := lo; x < hi; x++ {
			if (x+1)*tlog.HashSize > int64(len(r.hashes)) {
				e.Stored = append(e.Stored, tlog.Hash{}) // cannot match
				break
			}
			e.Stored = append(e.Stored, tlog.Hash(r.hashes[x*tlog.HashSize:(x+1)*tlog.HashSize]))
		}
		if j == r.n-1 && int64(len(r.hashes)) > hi*tlog.HashSize {
			e.Stored = append(e.Stored, tlog.Hash{}) // more hashes than records: cannot match
		}
		if (lo+1)*tlog.HashSize <= int64(len(r.hashes)) {
			leaf := e.Stored[0]
			e.Leaf = &leaf
		}
		if i >= from {
			out = append(out, e)
		}
	}
	return out
}

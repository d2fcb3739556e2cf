package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/parleychat/parley/audit"
)

// The relay's audit log: records, the tree's stored hashes and the signed
// checkpoints, written by the audit package in the transactions of the
// events they record (Batch implements audit.Tx).

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Each record's row holds the tree hashes it completes: tlog stores, for
// record n, its leaf hash (level 0) and one hash for each level L at which
// n is the last leaf of a complete subtree. So the stored hash of level L,
// node m lives in the row of record (m+1)<<L - 1, at offset L.
func hashRow(index int64) (record int64, offset int) {
	level, m := tlog.SplitStoredHashIndex(index)
	return (m+1)<<level - 1, level
}

func readHashes(ctx context.Context, q queryer, indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		return nil, nil
	}
	args := make([]any, len(indexes))
	for i, x := range indexes {
		args[i], _ = hashRow(x)
	}
	rows, err := q.QueryContext(ctx, `SELECT idx, hashes FROM audit_records WHERE idx IN (?`+strings.Repeat(",?", len(indexes)-1)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: audit hashes: %w", err)
	}
	defer rows.Close()
	got := make(map[int64][]byte, len(indexes))
	for rows.Next() {
		var (
			idx int64
			h   []byte
		)
		if err := rows.Scan(&idx, &h); err != nil {
			return nil, fmt.Errorf("store: audit hashes: %w", err)
		}
		got[idx] = h
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit hashes: %w", err)
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		rec, off := hashRow(x)
		hs := got[rec]
		if len(hs) < (off+1)*tlog.HashSize {
			return nil, fmt.Errorf("store: audit hash %d (record %d, level %d) is missing", x, rec, off)
		}
		out[i] = tlog.Hash(hs[off*tlog.HashSize : (off+1)*tlog.HashSize])
	}
	return out, nil
}

// auditStmts are the audit log's writes, prepared once. The records go in
// 1, 2, 4, ... 64 a statement: a commit's records take a few statements
// rather than one each, which was most of what they cost.
type auditStmts struct {
	records    [7]*sql.Stmt // records[k] inserts 1<<k records
	checkpoint *sql.Stmt
}

// insertAudit returns the statement that inserts n records.
func insertAudit(n int) string {
	return `INSERT INTO audit_records (idx, data, hashes) VALUES (?, ?, ?)` + strings.Repeat(", (?, ?, ?)", n-1)
}

const insertCheckpoint = `INSERT INTO audit_checkpoints (size, note) VALUES (?, ?)
	ON CONFLICT (size) DO UPDATE SET note = excluded.note`

func prepareAudit(db *sql.DB) (auditStmts, error) {
	var a auditStmts
	var err error
	for k := range a.records {
		if a.records[k], err = db.Prepare(insertAudit(1 << k)); err != nil {
			a.close()
			return auditStmts{}, err
		}
	}
	if a.checkpoint, err = db.Prepare(insertCheckpoint); err != nil {
		a.close()
		return auditStmts{}, err
	}
	return a, nil
}

func (a *auditStmts) close() error {
	var errs []error
	for _, st := range append(a.records[:], a.checkpoint) {
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

// PutAuditRecords implements audit.Tx. Each row's hashes must be the ones
// tlog.StoredHashes gives for its record: consecutive from its leaf
// hash's index.
func (b *Batch) PutAuditRecords(rows []audit.Row) error {
	total := 0
	for _, r := range rows {
		total += len(r.Hashes)
	}
	blobs := make([]byte, 0, total*tlog.HashSize) // every row's hashes, in one array
	args := make([]any, 0, 3*min(len(rows), 1<<(len(b.audit.records)-1)))
	for len(rows) > 0 {
		k := min(bits.Len(uint(len(rows)))-1, len(b.audit.records)-1)
		n := 1 << k
		args = args[:0]
		for _, r := range rows[:n] {
			at := len(blobs)
			for i, h := range r.Hashes {
				if h.Index != tlog.StoredHashIndex(0, r.Index)+int64(i) {
					return fmt.Errorf("store: audit record %d: hash %d is not the record's", r.Index, h.Index)
				}
				blobs = append(blobs, h.Hash[:]...)
			}
			args = append(args, r.Index, r.Data, blobs[at:len(blobs):len(blobs)])
		}
		if b.audit.records[k] == nil {
			b.audit.records[k] = b.tx.Stmt(b.s.audit.records[k])
		}
		if _, err := b.audit.records[k].Exec(args...); err != nil {
			return fmt.Errorf("store: audit records %d to %d: %w", rows[0].Index, rows[n-1].Index, err)
		}
		rows = rows[n:]
	}
	return nil
}

// PutCheckpoint implements audit.Tx.
func (b *Batch) PutCheckpoint(size int64, signed []byte) error {
	if b.audit.checkpoint == nil {
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
	var n sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT max(idx) FROM audit_records`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: audit size: %w", err)
	}
	if !n.Valid {
		return 0, nil
	}
	return n.Int64 + 1, nil
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
	rows, err := s.r.QueryContext(ctx, `SELECT idx, data, hashes FROM audit_records WHERE idx >= ? ORDER BY idx LIMIT ?`, from, limit)
	if err != nil {
		return nil, fmt.Errorf("store: audit records: %w", err)
	}
	defer rows.Close()
	var out []audit.Entry
	for rows.Next() {
		var (
			e  audit.Entry
			hs []byte
		)
		if err := rows.Scan(&e.Index, &e.Data, &hs); err != nil {
			return nil, fmt.Errorf("store: audit records: %w", err)
		}
		if len(hs) >= tlog.HashSize {
			leaf := tlog.Hash(hs[:tlog.HashSize])
			e.Leaf = &leaf
		}
		for i := 0; i+tlog.HashSize <= len(hs); i += tlog.HashSize {
			e.Stored = append(e.Stored, tlog.Hash(hs[i:i+tlog.HashSize]))
		}
		if len(hs)%tlog.HashSize != 0 {
			e.Stored = append(e.Stored, tlog.Hash{}) // cannot match: a damaged row
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit records: %w", err)
	}
	return out, nil
}

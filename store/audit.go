package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

const insertAudit = `INSERT INTO audit_records (idx, data, hashes) VALUES (?, ?, ?)`

// ReadAuditHashes implements audit.Tx.
func (b *Batch) ReadAuditHashes(indexes []int64) ([]tlog.Hash, error) {
	return readHashes(context.Background(), b.tx, indexes)
}

// PutAuditRecord implements audit.Tx.
// The hashes must be the ones tlog.StoredHashes gives for the record:
// consecutive from its leaf hash's index.
func (b *Batch) PutAuditRecord(index int64, data []byte, hashes []audit.StoredHash) error {
	blob := make([]byte, 0, len(hashes)*tlog.HashSize)
	for i, h := range hashes {
		if h.Index != tlog.StoredHashIndex(0, index)+int64(i) {
			return fmt.Errorf("store: audit record %d: hash %d is not the record's", index, h.Index)
		}
		blob = append(blob, h.Hash[:]...)
	}
	if b.audit == nil {
		b.audit = b.tx.Stmt(b.s.auditInsert)
	}
	if _, err := b.audit.Exec(index, data, blob); err != nil {
		return fmt.Errorf("store: audit record %d: %w", index, err)
	}
	return nil
}

// PutCheckpoint implements audit.Tx.
func (b *Batch) PutCheckpoint(size int64, signed []byte) error {
	_, err := b.tx.Exec(`INSERT INTO audit_checkpoints (size, note) VALUES (?, ?)
		ON CONFLICT (size) DO UPDATE SET note = excluded.note`, size, signed)
	if err != nil {
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

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

func readHashes(ctx context.Context, q queryer, indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		return nil, nil
	}
	args := make([]any, len(indexes))
	for i, x := range indexes {
		args[i] = x
	}
	rows, err := q.QueryContext(ctx, `SELECT idx, hash FROM audit_hashes WHERE idx IN (?`+strings.Repeat(",?", len(indexes)-1)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: audit hashes: %w", err)
	}
	defer rows.Close()
	got := make(map[int64]tlog.Hash, len(indexes))
	for rows.Next() {
		var (
			idx int64
			h   []byte
		)
		if err := rows.Scan(&idx, &h); err != nil {
			return nil, fmt.Errorf("store: audit hashes: %w", err)
		}
		if len(h) != tlog.HashSize {
			return nil, fmt.Errorf("store: audit hash %d has %d bytes", idx, len(h))
		}
		got[idx] = tlog.Hash(h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit hashes: %w", err)
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := got[x]
		if !ok {
			return nil, fmt.Errorf("store: audit hash %d is missing", x)
		}
		out[i] = h
	}
	return out, nil
}

// ReadAuditHashes implements audit.Tx.
func (b *Batch) ReadAuditHashes(indexes []int64) ([]tlog.Hash, error) {
	return readHashes(context.Background(), b.tx, indexes)
}

// PutAuditRecord implements audit.Tx.
func (b *Batch) PutAuditRecord(index int64, data []byte, hashes []audit.StoredHash) error {
	if _, err := b.tx.Exec(`INSERT INTO audit_records (idx, data) VALUES (?, ?)`, index, data); err != nil {
		return fmt.Errorf("store: audit record %d: %w", index, err)
	}
	for _, h := range hashes {
		if _, err := b.tx.Exec(`INSERT INTO audit_hashes (idx, hash) VALUES (?, ?)`, h.Index, h.Hash[:]); err != nil {
			return fmt.Errorf("store: audit hash %d: %w", h.Index, err)
		}
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
// in index order, each with its stored leaf hash when there is one.
func (s *Store) AuditEntries(ctx context.Context, from int64, limit int) ([]audit.Entry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT idx, data FROM audit_records WHERE idx >= ? ORDER BY idx LIMIT ?`, from, limit)
	if err != nil {
		return nil, fmt.Errorf("store: audit records: %w", err)
	}
	defer rows.Close()
	var out []audit.Entry
	for rows.Next() {
		var e audit.Entry
		if err := rows.Scan(&e.Index, &e.Data); err != nil {
			return nil, fmt.Errorf("store: audit records: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit records: %w", err)
	}
	idx := make([]int64, len(out))
	for i, e := range out {
		idx[i] = tlog.StoredHashIndex(0, e.Index)
	}
	for start := 0; start < len(idx); start += 500 {
		end := min(start+500, len(idx))
		hs, err := readHashesLoose(ctx, s.r, idx[start:end])
		if err != nil {
			return nil, err
		}
		for i := start; i < end; i++ {
			if h, ok := hs[idx[i]]; ok {
				out[i].Leaf = &h
			}
		}
	}
	return out, nil
}

// readHashesLoose reads the hashes that are there.
func readHashesLoose(ctx context.Context, q queryer, indexes []int64) (map[int64]tlog.Hash, error) {
	got := map[int64]tlog.Hash{}
	if len(indexes) == 0 {
		return got, nil
	}
	args := make([]any, len(indexes))
	for i, x := range indexes {
		args[i] = x
	}
	rows, err := q.QueryContext(ctx, `SELECT idx, hash FROM audit_hashes WHERE idx IN (?`+strings.Repeat(",?", len(indexes)-1)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: audit hashes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			idx int64
			h   []byte
		)
		if err := rows.Scan(&idx, &h); err != nil {
			return nil, fmt.Errorf("store: audit hashes: %w", err)
		}
		if len(h) == tlog.HashSize {
			got[idx] = tlog.Hash(h)
		}
	}
	return got, rows.Err()
}

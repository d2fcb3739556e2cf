package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Invite is a stored invite. Its token is not stored, only its hash.
type Invite struct {
	Hash    [32]byte // SHA-256 of the token
	Note    string
	Expires time.Time
	Uses    int // redemptions left
}

// Invites returns every stored invite, used up and expired ones included,
// by expiry.
func (s *Store) Invites(ctx context.Context) ([]Invite, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT hash, note, expires, uses FROM relay_invites ORDER BY expires, hash`)
	if err != nil {
		return nil, fmt.Errorf("store: invites: %w", err)
	}
	defer rows.Close()
	var out []Invite
	for rows.Next() {
		var (
			inv     Invite
			hash    []byte
			expires int64
		)
		if err := rows.Scan(&hash, &inv.Note, &expires, &inv.Uses); err != nil {
			return nil, fmt.Errorf("store: invites: %w", err)
		}
		copy(inv.Hash[:], hash)
		inv.Expires = time.UnixMilli(expires)
		out = append(out, inv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: invites: %w", err)
	}
	return out, nil
}

// RevokeInvite deletes the invite whose token hashes to hash, a policy
// change (event revoke-invite, with note). It reports whether there was
// one; with none, nothing changes.
func (s *Store) RevokeInvite(ctx context.Context, hash [32]byte, note string) (uint64, bool, error) {
	v, err := s.policyChange(ctx, PolicyEvent{Action: "revoke-invite", Note: note}, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM relay_invites WHERE hash = ?`, hash[:])
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errNoChange
		}
		return nil
	})
	if err == errNoChange {
		v, err = s.PolicyVersion(ctx)
		return v, false, err
	}
	return v, err == nil, err
}

package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/parleychat/parley/identity"
)

// The relay's policy data: who is allowed and who is banned (changed by
// the operator's commands), invite tokens, and the policy version, which
// grows with every change so that every decision can name the policy it
// applied.

// ACL lists.
const (
	ListAllow = "allow"
	ListBan   = "ban"
)

// ACLEntry is one identity on an access list.
type ACLEntry struct {
	List  string
	Key   identity.PublicKey
	Note  string
	Added time.Time
}

// ErrBadInvite: the invite token is unknown, used up or expired.
var ErrBadInvite = errors.New("store: invite token is unknown, used up or expired")

func checkList(list string) error {
	if list != ListAllow && list != ListBan {
		return fmt.Errorf("store: unknown access list %q", list)
	}
	return nil
}

// ACL returns every entry of every access list.
func (s *Store) ACL(ctx context.Context) ([]ACLEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT list, key, note, added FROM relay_acl ORDER BY list, added, key`)
	if err != nil {
		return nil, fmt.Errorf("store: access lists: %w", err)
	}
	defer rows.Close()
	var out []ACLEntry
	for rows.Next() {
		var (
			e     ACLEntry
			key   []byte
			added int64
		)
		if err := rows.Scan(&e.List, &key, &e.Note, &added); err != nil {
			return nil, fmt.Errorf("store: access lists: %w", err)
		}
		if e.Key, err = identity.PublicKeyFromBytes(key); err != nil {
			return nil, fmt.Errorf("store: access lists: stored key: %w", err)
		}
		e.Added = time.UnixMilli(added)
		out = append(out, e)
	}
	return out, rows.Err()
}

// PolicyEvent says what a policy change was, for the hook that records it.
type PolicyEvent struct {
	Action string // allow, deny, ban, unban, invite, redeem, config
	Key    identity.PublicKey
	Note   string
}

// PolicyHook runs inside the transaction of every policy change, after
// the change and the new version are written: the relay appends the
// change's audit record there. done is called with whether the
// transaction committed.
type PolicyHook func(b *Batch, version uint64, ev PolicyEvent) (done func(committed bool), err error)

// SetPolicyHook sets the hook; call it before any policy change.
func (s *Store) SetPolicyHook(h PolicyHook) { s.policyHook = h }

// AddACL puts key on list (replacing its note if it is there) and returns
// the new policy version.
func (s *Store) AddACL(ctx context.Context, list string, key identity.PublicKey, note string, now time.Time) (uint64, error) {
	if err := checkList(list); err != nil {
		return 0, err
	}
	action := map[string]string{ListAllow: "allow", ListBan: "ban"}[list]
	return s.policyChange(ctx, PolicyEvent{Action: action, Key: key, Note: note}, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO relay_acl (list, key, note, added) VALUES (?, ?, ?, ?)
			ON CONFLICT (list, key) DO UPDATE SET note = excluded.note`, list, key.Bytes(), note, now.UnixMilli())
		return err
	})
}

// RemoveACL takes key off list. It returns the new policy version, and
// false if key was not on the list (then nothing changed).
func (s *Store) RemoveACL(ctx context.Context, list string, key identity.PublicKey) (uint64, bool, error) {
	if err := checkList(list); err != nil {
		return 0, false, err
	}
	var removed bool
	action := map[string]string{ListAllow: "deny", ListBan: "unban"}[list]
	v, err := s.policyChange(ctx, PolicyEvent{Action: action, Key: key}, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM relay_acl WHERE list = ? AND key = ?`, list, key.Bytes())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		removed = n > 0
		if !removed {
			return errNoChange
		}
		return err
	})
	if errors.Is(err, errNoChange) {
		v, err = s.PolicyVersion(ctx)
	}
	return v, removed, err
}

// AddInvite stores an invite: the SHA-256 hash of its token, valid until
// expires for uses redemptions.
func (s *Store) AddInvite(ctx context.Context, hash [32]byte, note string, expires time.Time, uses int) (uint64, error) {
	if uses < 1 {
		return 0, fmt.Errorf("store: invite with %d uses", uses)
	}
	return s.policyChange(ctx, PolicyEvent{Action: "invite", Note: note}, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO relay_invites (hash, note, expires, uses) VALUES (?, ?, ?, ?)`,
			hash[:], note, expires.UnixMilli(), uses)
		return err
	})
}

// RedeemInvite uses the invite whose token hashes to hash: key joins the
// allow list, in the same transaction. It returns ErrBadInvite for an
// unknown, used-up or expired invite.
func (s *Store) RedeemInvite(ctx context.Context, hash [32]byte, key identity.PublicKey, now time.Time) (uint64, error) {
	return s.policyChange(ctx, PolicyEvent{Action: "redeem", Key: key}, func(tx *sql.Tx) error {
		var (
			note    string
			expires int64
			uses    int
		)
		err := tx.QueryRowContext(ctx, `SELECT note, expires, uses FROM relay_invites WHERE hash = ?`, hash[:]).Scan(&note, &expires, &uses)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && (uses < 1 || now.UnixMilli() >= expires)) {
			return ErrBadInvite
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE relay_invites SET uses = uses - 1 WHERE hash = ?`, hash[:]); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO relay_acl (list, key, note, added) VALUES (?, ?, ?, ?)
			ON CONFLICT (list, key) DO NOTHING`, ListAllow, key.Bytes(), "invite: "+note, now.UnixMilli())
		return err
	})
}

// PolicyVersion returns the policy version: 0 until the first change.
func (s *Store) PolicyVersion(ctx context.Context) (uint64, error) {
	return policyVersion(ctx, s.r.QueryRowContext)
}

// NotePolicyConfig records the hash of the policy part of the relay's
// configuration; when it differs from the one recorded, that is a policy
// change and the version grows. It returns the version.
func (s *Store) NotePolicyConfig(ctx context.Context, hash []byte) (uint64, error) {
	v, err := s.policyChange(ctx, PolicyEvent{Action: "config", Note: "the policy in the config file changed"}, func(tx *sql.Tx) error {
		var old []byte
		err := tx.QueryRowContext(ctx, `SELECT v FROM relay_meta WHERE k = 'policy_config'`).Scan(&old)
		if err == nil && bytes.Equal(old, hash) {
			return errNoChange
		}
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO relay_meta (k, v) VALUES ('policy_config', ?)
			ON CONFLICT (k) DO UPDATE SET v = excluded.v`, hash)
		return err
	})
	if errors.Is(err, errNoChange) {
		return s.PolicyVersion(ctx)
	}
	return v, err
}

var errNoChange = errors.New("no change")

type queryRow func(ctx context.Context, query string, args ...any) *sql.Row

func policyVersion(ctx context.Context, q queryRow) (uint64, error) {
	var b []byte
	err := q(ctx, `SELECT v FROM relay_meta WHERE k = 'policy_version'`).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: policy version: %w", err)
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("store: policy version: stored value of %d bytes", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// policyChange runs change and raises the policy version in one
// transaction, and returns the new version. When change returns an error
// (errNoChange included) nothing is written.
func (s *Store) policyChange(ctx context.Context, ev PolicyEvent, change func(*sql.Tx) error) (v uint64, err error) {
	// A Batch, for the hook: what it appends is the batch's.
	b, err := s.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("store: policy change: %w", err)
	}
	defer b.Rollback()
	tx := b.tx
	if err := change(tx); err != nil {
		if errors.Is(err, errNoChange) || errors.Is(err, ErrBadInvite) {
			return 0, err
		}
		return 0, fmt.Errorf("store: policy change: %w", err)
	}
	v, err = policyVersion(ctx, tx.QueryRowContext)
	if err != nil {
		return 0, err
	}
	v++
	_, err = tx.ExecContext(ctx, `INSERT INTO relay_meta (k, v) VALUES ('policy_version', ?)
		ON CONFLICT (k) DO UPDATE SET v = excluded.v`, binary.BigEndian.AppendUint64(nil, v))
	if err != nil {
		return 0, fmt.Errorf("store: policy change: %w", err)
	}
	if s.policyHook != nil {
		var done func(bool)
		done, err = s.policyHook(b, v, ev)
		if done != nil {
			// err is the function's result: the commit's, below.
			defer func() { done(err == nil) }()
		}
		if err != nil {
			return 0, fmt.Errorf("store: policy change: %w", err)
		}
	}
	if err = b.Commit(); err != nil {
		return 0, fmt.Errorf("store: policy change: %w", err)
	}
	return v, nil
}

// Key packages: the newest end-to-end encryption key package of each
// identity, which the relay serves to anyone who asks, so that someone
// can encrypt to a person before they share a room. The store does not
// parse packages (package crypto/keypackage does, in the relay): it keeps
// the bytes with the fields it orders them by. Nothing of a package is
// secret.

// ErrStaleKeyPackage: PutKeyPackage was given a package that is not newer
// than the one stored for its identity.
var ErrStaleKeyPackage = errors.New("store: the key package is not newer than the one stored")

// PutKeyPackage stores raw, the encoded key package of key made at created
// and expiring at expires (Unix seconds, the package's own fields), as
// key's newest, in place of the one stored, if it is newer than that one:
// made later, or in the same second with the larger SHA-256 of its
// encoding (keypackage.Package.Newer). Otherwise it returns
// ErrStaleKeyPackage and changes nothing. Storing the very package stored
// already is a success, so that a client may send it again when the
// answer was lost. The rule is applied in the statement that writes, so
// that two puts at once cannot both win.
//
// One package per identity for now: a package of another device of key
// replaces the one stored like any other. Several devices will need one
// per (identity, device).
func (s *Store) PutKeyPackage(ctx context.Context, key identity.PublicKey, created, expires int64, raw []byte) error {
	id := sha256.Sum256(raw)
	res, err := s.w.ExecContext(ctx, `INSERT INTO relay_key_packages (identity, created, expires, id, raw) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (identity) DO UPDATE SET created = excluded.created, expires = excluded.expires, id = excluded.id, raw = excluded.raw
		WHERE excluded.created > relay_key_packages.created
			OR (excluded.created = relay_key_packages.created AND excluded.id >= relay_key_packages.id)`,
		key.Bytes(), created, expires, id[:], raw)
	if err != nil {
		return fmt.Errorf("store: put key package: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: put key package: %w", err)
	}
	if n == 0 {
		return ErrStaleKeyPackage
	}
	return nil
}

// KeyPackages returns the stored key packages of keys that have one not
// expired at now (its expiry after now), in the order of keys; a key
// without one is left out, and a key named twice is answered once.
func (s *Store) KeyPackages(ctx context.Context, keys []identity.PublicKey, now time.Time) ([][]byte, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(keys)+1)
	args = append(args, now.Unix())
	for _, k := range keys {
		args = append(args, k.Bytes())
	}
	q := `SELECT identity, raw FROM relay_key_packages WHERE expires > ? AND identity IN (?` + strings.Repeat(", ?", len(keys)-1) + `)`
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: key packages: %w", err)
	}
	defer rows.Close()
	found := map[[32]byte][]byte{}
	for rows.Next() {
		var key, raw []byte
		if err := rows.Scan(&key, &raw); err != nil {
			return nil, fmt.Errorf("store: key packages: %w", err)
		}
		if len(key) == 32 {
			found[[32]byte(key)] = raw
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: key packages: %w", err)
	}
	out := make([][]byte, 0, len(found))
	for _, k := range keys {
		if raw, ok := found[k.Array()]; ok {
			out = append(out, raw)
			delete(found, k.Array())
		}
	}
	return out, nil
}

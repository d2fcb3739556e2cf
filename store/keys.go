package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// The chat client's keys part: what end-to-end encryption keeps (package
// keyring decides what). Secrets are overwritten where they stood when
// they are erased: the client's database runs with secure_delete.

var schemaKeys = schema{"keys", []string{
	`CREATE TABLE keys_own (
		id      BLOB PRIMARY KEY,  -- SHA-256 of the package's encoding
		created INTEGER NOT NULL,  -- Unix s
		expires INTEGER NOT NULL,  -- Unix s
		raw     BLOB NOT NULL,     -- the signed package
		private BLOB NOT NULL      -- its HPKE private key: erased with the row
	) WITHOUT ROWID;
	CREATE TABLE keys_meta (
		k TEXT PRIMARY KEY,
		v BLOB NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE keys_packages (
		identity BLOB PRIMARY KEY, -- whose: the latest package known of each person
		created  INTEGER NOT NULL,
		expires  INTEGER NOT NULL,
		raw      BLOB NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE keys_announced (
		room    TEXT PRIMARY KEY,  -- a private room where we announced
		package BLOB NOT NULL      -- the ID of the package announced there last
	) WITHOUT ROWID;
	CREATE TABLE keys_sending (
		room  TEXT PRIMARY KEY,    -- our current sender key in each private room
		state BLOB NOT NULL        -- its epoch, chain and recipients (package keyring)
	) WITHOUT ROWID;
	CREATE TABLE keys_chains (
		room   TEXT NOT NULL,
		sender BLOB NOT NULL,
		epoch  BLOB NOT NULL,
		state  BLOB NOT NULL,      -- the receiving chain: ratchet.Receiver
		since  INTEGER NOT NULL,   -- when it came, Unix s: old chains are erased
		PRIMARY KEY (room, sender, epoch)
	) WITHOUT ROWID;
	-- A rowid table: rows are appended in arrival order, as the
	-- envelopes are, and only the index of IDs takes random inserts
	-- (a table clustered by ID wrote half as much again to disk in a
	-- catch-up).
	CREATE TABLE keys_opened (
		id     BLOB NOT NULL UNIQUE, -- a sealed message
		status INTEGER NOT NULL,     -- 1 opened, 2 waiting for its key, 3 never opens
		room   TEXT NOT NULL,        -- waiting: what it waits for (else empty)
		sender BLOB NOT NULL,
		epoch  BLOB NOT NULL,
		nick   TEXT NOT NULL,        -- opened: the text
		body   TEXT NOT NULL,        -- opened: the text; never opens: why
		raw    BLOB NOT NULL         -- waiting: the envelope, to open when its key comes; else empty
	);
	CREATE INDEX keys_opened_waiting ON keys_opened(room, sender, epoch) WHERE status = 2;
	-- The text of an opened message, under its envelope's row, as the
	-- search index keeps its words: appended in order, no index of IDs
	-- to write (keys_opened keeps one that is not stored yet, and those
	-- waiting or never to open). It goes when its envelope goes.
	CREATE TABLE keys_text (
		pos  INTEGER PRIMARY KEY, -- the envelope's rowid
		nick TEXT NOT NULL,
		body TEXT NOT NULL
	);
	CREATE TRIGGER keys_text_delete AFTER DELETE ON envelopes
		BEGIN DELETE FROM keys_text WHERE pos = old.rowid; END;`,
}}

// Sealed is what the store knows of a sealed message.
type Sealed struct {
	ID     protocol.ID
	Status SealedStatus
	Room   string
	Sender identity.PublicKey
	Epoch  protocol.Epoch
	// Nick and Body are the text of an opened message; Body says why of
	// one that never opens.
	Nick, Body string
	// Raw is the envelope of a message waiting for its key.
	Raw []byte
}

// SealedStatus is where a sealed message stands.
type SealedStatus int

// The states of a sealed message.
const (
	SealedOpened SealedStatus = 1 + iota
	SealedWaiting
	SealedNever
)

// OwnPackage is one of our key packages, with its private key.
type OwnPackage struct {
	ID               [32]byte
	Created, Expires int64
	Raw, Private     []byte
}

// OwnPackages returns our key packages, the newest first.
func (s *Store) OwnPackages(ctx context.Context) ([]OwnPackage, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, created, expires, raw, private FROM keys_own ORDER BY created DESC`)
	if err != nil {
		return nil, fmt.Errorf("store: own key packages: %w", err)
	}
	defer rows.Close()
	var out []OwnPackage
	for rows.Next() {
		var p OwnPackage
		var id []byte
		if err := rows.Scan(&id, &p.Created, &p.Expires, &p.Raw, &p.Private); err != nil {
			return nil, fmt.Errorf("store: own key packages: %w", err)
		}
		copy(p.ID[:], id)
		out = append(out, p)
	}
	return out, rows.Err()
}

// AddOwnPackage keeps a new key package of ours and erases the private
// keys of those expired before dropBefore (Unix s).
func (s *Store) AddOwnPackage(ctx context.Context, p OwnPackage, dropBefore int64) error {
	return s.keysTx(ctx, "add own key package", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO keys_own (id, created, expires, raw, private) VALUES (?, ?, ?, ?, ?)`,
			p.ID[:], p.Created, p.Expires, p.Raw, p.Private); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM keys_own WHERE expires < ?`, dropBefore)
		return err
	})
}

// EraseOld erases our key packages that expired before packagesBefore
// and the receiving chains that came before chainsBefore (Unix s): what
// they would open is past, and keeping them is keeping keys.
func (s *Store) EraseOld(ctx context.Context, packagesBefore, chainsBefore int64) error {
	return s.keysTx(ctx, "erase old keys", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM keys_own WHERE expires < ?`, packagesBefore); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM keys_chains WHERE since < ?`, chainsBefore)
		return err
	})
}

// KeysMeta returns a value of the keys part, and false if it is not set.
func (s *Store) KeysMeta(ctx context.Context, k string) ([]byte, bool, error) {
	var v []byte
	switch err := s.r.QueryRowContext(ctx, `SELECT v FROM keys_meta WHERE k = ?`, k).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("store: keys meta %s: %w", k, err)
	}
	return v, true, nil
}

// SetKeysMeta sets a value of the keys part.
func (s *Store) SetKeysMeta(ctx context.Context, k string, v []byte) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO keys_meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v`, k, v)
	if err != nil {
		return fmt.Errorf("store: keys meta %s: %w", k, err)
	}
	return nil
}

// Package returns the latest key package known of who, and false if none
// is.
func (s *Store) Package(ctx context.Context, who identity.PublicKey) ([]byte, bool, error) {
	var raw []byte
	switch err := s.r.QueryRowContext(ctx, `SELECT raw FROM keys_packages WHERE identity = ?`, who.Bytes()).Scan(&raw); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("store: key package of %s: %w", who.ShortFingerprint(), err)
	}
	return raw, true, nil
}

// Package returns the latest key package known of who, in the batch's
// transaction.
func (b *Batch) Package(ctx context.Context, who identity.PublicKey) ([]byte, bool, error) {
	var raw []byte
	switch err := b.tx.QueryRowContext(ctx, `SELECT raw FROM keys_packages WHERE identity = ?`, who.Bytes()).Scan(&raw); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("store: key package of %s: %w", who.ShortFingerprint(), err)
	}
	return raw, true, nil
}

// PutPackage keeps raw as who's latest key package, in the batch's
// transaction; the caller has checked that it replaces the one kept
// (keypackage.Package.Newer).
func (b *Batch) PutPackage(ctx context.Context, who identity.PublicKey, created, expires int64, raw []byte) error {
	_, err := b.tx.ExecContext(ctx, `INSERT INTO keys_packages (identity, created, expires, raw) VALUES (?, ?, ?, ?)
		ON CONFLICT (identity) DO UPDATE SET created = excluded.created, expires = excluded.expires, raw = excluded.raw`,
		who.Bytes(), created, expires, raw)
	if err != nil {
		return fmt.Errorf("store: key package of %s: %w", who.ShortFingerprint(), err)
	}
	return nil
}

// Announced returns the ID of the package we last announced in room.
func (s *Store) Announced(ctx context.Context, room string) ([32]byte, error) {
	var id [32]byte
	var b []byte
	switch err := s.r.QueryRowContext(ctx, `SELECT package FROM keys_announced WHERE room = ?`, room).Scan(&b); {
	case errors.Is(err, sql.ErrNoRows):
		return id, nil
	case err != nil:
		return id, fmt.Errorf("store: announced in %s: %w", room, err)
	}
	copy(id[:], b)
	return id, nil
}

// SetAnnounced notes that we announced package id in room.
func (s *Store) SetAnnounced(ctx context.Context, room string, id [32]byte) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO keys_announced (room, package) VALUES (?, ?)
		ON CONFLICT (room) DO UPDATE SET package = excluded.package`, room, id[:])
	if err != nil {
		return fmt.Errorf("store: announced in %s: %w", room, err)
	}
	return nil
}

// SendingKey returns our sender key's state in room, and false if we
// have none.
func (s *Store) SendingKey(ctx context.Context, room string) ([]byte, bool, error) {
	var st []byte
	switch err := s.r.QueryRowContext(ctx, `SELECT state FROM keys_sending WHERE room = ?`, room).Scan(&st); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("store: sender key in %s: %w", room, err)
	}
	return st, true, nil
}

// SetSendingKey replaces our sender key's state in room: the old chain
// key is overwritten.
func (s *Store) SetSendingKey(ctx context.Context, room string, state []byte) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO keys_sending (room, state) VALUES (?, ?)
		ON CONFLICT (room) DO UPDATE SET state = excluded.state`, room, state)
	if err != nil {
		return fmt.Errorf("store: sender key in %s: %w", room, err)
	}
	return nil
}

// keysStmts are the statements a catch-up runs for each sealed message,
// prepared once: parsing them again for every message cost a fifth of a
// sealed catch-up.
type keysStmts struct {
	chain, setChain, sealed, setSealed *sql.Stmt
	text, setText, unwait              *sql.Stmt
}

func prepareKeys(db *sql.DB) (keysStmts, error) {
	var x keysStmts
	for _, p := range []struct {
		st    **sql.Stmt
		query string
	}{
		{&x.chain, `SELECT state FROM keys_chains WHERE room = ? AND sender = ? AND epoch = ?`},
		{&x.setChain, `INSERT INTO keys_chains (room, sender, epoch, state, since) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (room, sender, epoch) DO UPDATE SET state = excluded.state`},
		{&x.sealed, sealedQuery + ` WHERE id = ?`},
		{&x.setSealed, `INSERT INTO keys_opened (id, status, room, sender, epoch, nick, body, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET status = excluded.status, nick = excluded.nick, body = excluded.body, raw = excluded.raw
			WHERE keys_opened.status != 1`},
		{&x.text, `SELECT nick, body FROM keys_text WHERE pos = ?`},
		{&x.setText, `INSERT OR REPLACE INTO keys_text (pos, nick, body) VALUES (?, ?, ?)`},
		{&x.unwait, `DELETE FROM keys_opened WHERE id = ?`},
	} {
		st, err := db.Prepare(p.query)
		if err != nil {
			x.close()
			return keysStmts{}, fmt.Errorf("prepare the keys' statements: %w", err)
		}
		*p.st = st
	}
	return x, nil
}

// prepare binds the store's statements, of, to tx, once.
func (x *keysStmts) prepare(ctx context.Context, tx *sql.Tx, of *keysStmts) {
	if x.setSealed != nil {
		return
	}
	x.chain, x.setChain = tx.StmtContext(ctx, of.chain), tx.StmtContext(ctx, of.setChain)
	x.sealed, x.setSealed = tx.StmtContext(ctx, of.sealed), tx.StmtContext(ctx, of.setSealed)
	x.text = tx.StmtContext(ctx, of.text)
	x.setText, x.unwait = tx.StmtContext(ctx, of.setText), tx.StmtContext(ctx, of.unwait)
}

func (x *keysStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{x.chain, x.setChain, x.sealed, x.setSealed, x.text, x.setText, x.unwait} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// Chain returns the receiving chain of sender's epoch in room, in the
// batch's transaction, and false if there is none.
func (b *Batch) Chain(ctx context.Context, room string, sender identity.PublicKey, epoch protocol.Epoch) ([]byte, bool, error) {
	b.keys.prepare(ctx, b.tx, &b.s.keys)
	var st []byte
	switch err := b.keys.chain.QueryRowContext(ctx, room, sender.Bytes(), epoch[:]).Scan(&st); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("store: chain of %s in %s: %w", sender.ShortFingerprint(), room, err)
	}
	return st, true, nil
}

// SetChain replaces the receiving chain of sender's epoch in room; now
// (Unix s) is when a new one came.
func (b *Batch) SetChain(ctx context.Context, room string, sender identity.PublicKey, epoch protocol.Epoch, state []byte, now int64) error {
	b.keys.prepare(ctx, b.tx, &b.s.keys)
	_, err := b.keys.setChain.ExecContext(ctx, room, sender.Bytes(), epoch[:], state, now)
	if err != nil {
		return fmt.Errorf("store: chain of %s in %s: %w", sender.ShortFingerprint(), room, err)
	}
	return nil
}

// SetSealed records where sealed message m stands, in the batch's
// transaction; an opened message stays opened. Only a waiting one keeps
// its room, sender and epoch (what it waits for) and its envelope.
func (b *Batch) SetSealed(ctx context.Context, m Sealed) error {
	if m.Status != SealedWaiting {
		m.Room, m.Sender, m.Epoch, m.Raw = "", identity.PublicKey{}, protocol.Epoch{}, nil
	}
	if m.Raw == nil {
		m.Raw = []byte{}
	}
	var sender, epoch []byte
	if m.Status == SealedWaiting {
		sender, epoch = m.Sender.Bytes(), m.Epoch[:]
	}
	b.keys.prepare(ctx, b.tx, &b.s.keys)
	_, err := b.keys.setSealed.ExecContext(ctx, m.ID[:], int(m.Status), m.Room, orEmpty(sender), orEmpty(epoch), m.Nick, m.Body, m.Raw)
	if err != nil {
		return fmt.Errorf("store: sealed message %s: %w", m.ID, err)
	}
	return nil
}

// PutOpened keeps the text of sealed message id, opened, in the batch's
// transaction: under its envelope's row if the envelope is stored (the
// mesh node stores what it delivered a moment later), else in
// keys_opened. waited says it was kept waiting for its key: that row
// goes.
func (b *Batch) PutOpened(ctx context.Context, id protocol.ID, nick, body string, waited bool) error {
	b.keys.prepare(ctx, b.tx, &b.s.keys)
	pos, ok, err := b.s.position(ctx, b.tx, id)
	switch {
	case err != nil:
		return fmt.Errorf("store: opened message %s: %w", id, err)
	case !ok:
		return b.SetSealed(ctx, Sealed{ID: id, Status: SealedOpened, Nick: nick, Body: body})
	}
	if _, err := b.keys.setText.ExecContext(ctx, pos, nick, body); err != nil {
		return fmt.Errorf("store: opened message %s: %w", id, err)
	}
	if waited {
		if _, err := b.keys.unwait.ExecContext(ctx, id[:]); err != nil {
			return fmt.Errorf("store: opened message %s: %w", id, err)
		}
	}
	return nil
}

// Sealed returns what the store knows of sealed message id, in the
// batch's transaction.
func (b *Batch) Sealed(ctx context.Context, id protocol.ID) (Sealed, bool, error) {
	b.keys.prepare(ctx, b.tx, &b.s.keys)
	m, ok, err := scanSealed(b.keys.sealed.QueryRowContext(ctx, id[:]))
	if ok || err != nil {
		return m, ok, err
	}
	pos, ok, err := b.s.position(ctx, b.tx, id)
	if err != nil || !ok {
		return Sealed{}, false, wrapErr(err, "store: sealed message %s", id)
	}
	return openedText(id, b.keys.text.QueryRowContext(ctx, pos))
}

// Sealed returns what the store knows of sealed message id.
func (s *Store) Sealed(ctx context.Context, id protocol.ID) (Sealed, bool, error) {
	m, ok, err := scanSealed(s.r.QueryRowContext(ctx, sealedQuery+` WHERE id = ?`, id[:]))
	if ok || err != nil {
		return m, ok, err
	}
	pos, ok, err := s.position(ctx, s.r, id)
	if err != nil || !ok {
		return Sealed{}, false, wrapErr(err, "store: sealed message %s", id)
	}
	return openedText(id, s.r.QueryRowContext(ctx, `SELECT nick, body FROM keys_text WHERE pos = ?`, pos))
}

// openedText reads an opened message's text kept under its envelope's
// row, which the query text selects.
func openedText(id protocol.ID, text *sql.Row) (Sealed, bool, error) {
	m := Sealed{ID: id, Status: SealedOpened}
	switch err := text.Scan(&m.Nick, &m.Body); {
	case errors.Is(err, sql.ErrNoRows):
		return Sealed{}, false, nil
	case err != nil:
		return Sealed{}, false, fmt.Errorf("store: sealed message %s: %w", id, err)
	}
	return m, true, nil
}

// WaitingFor returns the sealed messages waiting for sender's key epoch
// in room, in the batch's transaction.
func (b *Batch) WaitingFor(ctx context.Context, room string, sender identity.PublicKey, epoch protocol.Epoch) ([]Sealed, error) {
	rows, err := b.tx.QueryContext(ctx, sealedQuery+` WHERE room = ? AND sender = ? AND epoch = ? AND status = 2`,
		room, sender.Bytes(), epoch[:])
	if err != nil {
		return nil, fmt.Errorf("store: messages waiting for a key: %w", err)
	}
	defer rows.Close()
	var out []Sealed
	for rows.Next() {
		m, _, err := scanSealed(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

const sealedQuery = `SELECT id, status, room, sender, epoch, nick, body, raw FROM keys_opened`

func orEmpty(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func scanSealed(row interface{ Scan(...any) error }) (Sealed, bool, error) {
	var (
		m                Sealed
		id, sender, epoc []byte
	)
	switch err := row.Scan(&id, &m.Status, &m.Room, &sender, &epoc, &m.Nick, &m.Body, &m.Raw); {
	case errors.Is(err, sql.ErrNoRows):
		return Sealed{}, false, nil
	case err != nil:
		return Sealed{}, false, fmt.Errorf("store: sealed message: %w", err)
	}
	copy(m.ID[:], id)
	copy(m.Epoch[:], epoc)
	if len(sender) > 0 {
		pk, err := identity.PublicKeyFromBytes(sender)
		if err != nil {
			return Sealed{}, false, fmt.Errorf("store: sealed message: %w", err)
		}
		m.Sender = pk
	}
	return m, true, nil
}

// keysTx runs f in a transaction of the writer.
func (s *Store) keysTx(ctx context.Context, what string, f func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	return nil
}

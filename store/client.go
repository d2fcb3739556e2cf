package store

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/parleychat/parley/protocol"
)

// The chat client's part of the store: the full-text index of messages,
// the rooms joined, where each relay subscription stands, and the newest
// audit checkpoint of each relay.

// Search makes the store a chat client's: it keeps a full-text index of
// messages, for Store.Search, which IndexText fills, and notes what the
// mesh node stores as unshown (clientTriggers). The relay, which never
// searches or shows, does not pay for either.
func Search() Option { return func(o *options) { o.search = true } }

// clientTriggers note each envelope that the mesh node stores (via mesh or
// sync) as unshown, in the transaction that stores it. The mesh node
// hands a message to the client before its group commit, and the client
// notes what it shows in its own transactions: without this, a message
// stored by the node but never merged by the client (the client closing,
// or killed, a moment after the node's commit) would be stored and never
// shown, and no path would bring it again.
const clientTriggers = `CREATE TRIGGER IF NOT EXISTS client_unshown_on_store AFTER INSERT ON envelopes
	WHEN new.via IN ('mesh', 'sync') BEGIN
	INSERT OR IGNORE INTO client_unshown (id, room) VALUES (new.id, new.room); END;`

// IndexText adds a stored envelope's text to the full-text index, in the
// batch's transaction. The store never reads payloads: the client
// decodes (and, in private rooms, decrypts) them and hands the text here.
// It reports false if no envelope with this ID is stored (yet), and does
// nothing in a store opened without Search. Indexing one twice is
// indexing it once.
func (b *Batch) IndexText(ctx context.Context, id protocol.ID, nick, body string) (bool, error) {
	if !b.s.search {
		return true, nil
	}
	b.index.prepare(ctx, b.tx, &b.s.index)
	pos, ok, err := b.s.position(ctx, b.tx, id)
	if err != nil || !ok {
		return false, wrapErr(err, "store: index %s", id)
	}
	// Whether it is indexed is asked apart from the insert: an INSERT
	// that selects from the index opens a statement journal, and FTS5
	// writes its pending terms to disk at each one, which made indexing
	// a catch-up six times as slow as storing it.
	switch err := b.index.indexed.QueryRowContext(ctx, pos).Scan(new(int)); {
	case err == nil:
		return true, nil
	case !errors.Is(err, sql.ErrNoRows):
		return false, fmt.Errorf("store: index %s: %w", id, err)
	}
	if _, err := b.index.insert.ExecContext(ctx, pos, nick, body); err != nil {
		return false, fmt.Errorf("store: index %s: %w", id, err)
	}
	return true, nil
}

// IndexText is Batch.IndexText in a transaction of its own. An ID that
// the directory does not hold is neither stored nor in an open batch: it
// is not found without a transaction, or a wait for the writer. (The
// chat client tries the search entry of a message shown from the mesh
// again at every merge until the node stores it.)
func (s *Store) IndexText(ctx context.Context, id protocol.ID, nick, body string) (bool, error) {
	if !s.search {
		return true, nil
	}
	if maybe, err := s.mayHold(ctx, id); err != nil || !maybe {
		return false, wrapErr(err, "store: index %s", id)
	}
	b, err := s.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer b.Rollback()
	ok, err := b.IndexText(ctx, id, nick, body)
	if err != nil || !ok {
		return ok, err
	}
	return true, b.Commit()
}

// indexStmts are the text index's statements: prepared once on the store,
// and bound to a batch's transaction on first use.
type indexStmts struct {
	indexed *sql.Stmt // whether a rowid is in the index
	insert  *sql.Stmt
}

func prepareIndex(db *sql.DB) (indexStmts, error) {
	var x indexStmts
	for _, p := range []struct {
		st    **sql.Stmt
		query string
	}{
		{&x.indexed, `SELECT 1 FROM envelope_text WHERE rowid = ?`},
		{&x.insert, `INSERT INTO envelope_text (rowid, nick, body) VALUES (?, ?, ?)`},
	} {
		st, err := db.Prepare(p.query)
		if err != nil {
			x.close()
			return indexStmts{}, fmt.Errorf("prepare the text index: %w", err)
		}
		*p.st = st
	}
	return x, nil
}

// prepare binds the store's statements, of, to tx, once.
func (x *indexStmts) prepare(ctx context.Context, tx *sql.Tx, of *indexStmts) {
	if x.insert != nil {
		return
	}
	x.indexed = tx.StmtContext(ctx, of.indexed)
	x.insert = tx.StmtContext(ctx, of.insert)
}

func (x *indexStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{x.indexed, x.insert} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// Search returns the last limit envelopes of room whose text or nickname
// holds every word of query, in display order (as History). The query is
// plain words: quotes and operators are searched for as text, so no query
// is ever a syntax error. Only a store opened with Search has an index.
func (s *Store) Search(ctx context.Context, room, query string, limit int) ([]Record, error) {
	match := ftsQuery(query)
	if match == "" {
		return s.History(ctx, room, limit)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT rowid, raw, via, received FROM (
		SELECT e.rowid, e.raw, e.via, e.received, e.lamport, e.time, e.id
		FROM envelope_text t JOIN envelopes e ON e.rowid = t.rowid
		WHERE envelope_text MATCH ? AND e.room = ?
		ORDER BY e.lamport DESC, e.time DESC, e.id DESC LIMIT ?) ORDER BY lamport, time, id`, match, room, limit)
	if err != nil {
		return nil, fmt.Errorf("store: search %s: %w", room, err)
	}
	return scan(rows)
}

// ftsQuery makes an FTS5 query of plain words: each becomes a quoted
// string (a quote inside doubled), and the strings must all match.
// Control characters, which no indexed text holds (protocol.Text refuses
// them) and which end an FTS5 string early (NUL), are dropped.
func ftsQuery(q string) string {
	q = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(q, " "))
	var terms []string
	for _, w := range strings.Fields(q) {
		terms = append(terms, `"`+strings.ReplaceAll(w, `"`, `""`)+`"`)
	}
	return strings.Join(terms, " ")
}

// AddVia notes that the envelope with ID id also arrived by path via
// (mesh, sync, relay). The paths are kept comma-separated, each once.
// It reports false if no envelope has that ID (yet).
func (s *Store) AddVia(ctx context.Context, id protocol.ID, via string) (bool, error) {
	where, args, maybe, err := s.whereID(ctx, id)
	if err != nil || !maybe {
		return false, wrapErr(err, "store: note path %s of %s", via, id)
	}
	var n int
	// The ?s of where are numbered from 2, after ?1.
	err = s.w.QueryRowContext(ctx, `UPDATE envelopes SET via = CASE
		WHEN instr(',' || via || ',', ',' || ?1 || ',') = 0 THEN via || ',' || ?1 ELSE via END`+
		where+` RETURNING 1`, append([]any{via}, args...)...).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: note path %s of %s: %w", via, id, err)
	}
	return true, nil
}

// AddRoom adds room to the list of joined rooms.
func (s *Store) AddRoom(ctx context.Context, room string, now time.Time) error {
	if _, err := s.w.ExecContext(ctx, `INSERT OR IGNORE INTO client_rooms (name, joined) VALUES (?, ?)`,
		room, now.UnixMilli()); err != nil {
		return fmt.Errorf("store: add room %s: %w", room, err)
	}
	return nil
}

// RemoveRoom takes room off the list of joined rooms. Its messages stay.
func (s *Store) RemoveRoom(ctx context.Context, room string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM client_rooms WHERE name = ?`, room); err != nil {
		return fmt.Errorf("store: remove room %s: %w", room, err)
	}
	return nil
}

// Rooms returns the joined rooms by name.
func (s *Store) Rooms(ctx context.Context) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name FROM client_rooms ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: rooms: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("store: rooms: %w", err)
		}
		out = append(out, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: rooms: %w", err)
	}
	return out, nil
}

// RelayCursor returns the ID of the last envelope of room that the relay
// named relay delivered, or the zero ID if it never did.
func (s *Store) RelayCursor(ctx context.Context, relay, room string) (protocol.ID, error) {
	var b []byte
	err := s.r.QueryRowContext(ctx, `SELECT cursor FROM client_relay_cursors WHERE relay = ? AND room = ?`,
		relay, room).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return protocol.ID{}, nil
	}
	if err != nil {
		return protocol.ID{}, fmt.Errorf("store: relay cursor of %s: %w", room, err)
	}
	if len(b) != len(protocol.ID{}) {
		return protocol.ID{}, fmt.Errorf("store: relay cursor of %s is %d bytes", room, len(b))
	}
	return protocol.ID(b), nil
}

// SetRelayCursor records the last envelope of room that relay delivered.
func (s *Store) SetRelayCursor(ctx context.Context, relay, room string, id protocol.ID) error {
	if _, err := s.w.ExecContext(ctx, `INSERT INTO client_relay_cursors (relay, room, cursor) VALUES (?, ?, ?)
		ON CONFLICT (relay, room) DO UPDATE SET cursor = excluded.cursor`, relay, room, id[:]); err != nil {
		return fmt.Errorf("store: set relay cursor of %s: %w", room, err)
	}
	return nil
}

// RelayCheckpoint returns the newest signed audit checkpoint kept for
// relay, or nil.
func (s *Store) RelayCheckpoint(ctx context.Context, relay string) ([]byte, error) {
	var b []byte
	err := s.r.QueryRowContext(ctx, `SELECT note FROM client_checkpoints WHERE relay = ?`, relay).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: audit checkpoint of %s: %w", relay, err)
	}
	return b, nil
}

// KeptCheckpoint is the newest audit checkpoint kept for one relay.
type KeptCheckpoint struct {
	Relay string // the relay's key fingerprint
	Note  []byte // the relay's signed checkpoint
}

// RelayCheckpoints returns the checkpoint kept for each relay, by relay.
func (s *Store) RelayCheckpoints(ctx context.Context) ([]KeptCheckpoint, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT relay, note FROM client_checkpoints ORDER BY relay`)
	if err != nil {
		return nil, fmt.Errorf("store: audit checkpoints: %w", err)
	}
	defer rows.Close()
	var kept []KeptCheckpoint
	for rows.Next() {
		var k KeptCheckpoint
		if err := rows.Scan(&k.Relay, &k.Note); err != nil {
			return nil, fmt.Errorf("store: audit checkpoints: %w", err)
		}
		kept = append(kept, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit checkpoints: %w", err)
	}
	return kept, nil
}

// SetRelayCheckpoint keeps note as relay's newest audit checkpoint. The
// caller has checked that it is consistent with the one kept before.
func (s *Store) SetRelayCheckpoint(ctx context.Context, relay string, note []byte) error {
	if _, err := s.w.ExecContext(ctx, `INSERT INTO client_checkpoints (relay, note) VALUES (?, ?)
		ON CONFLICT (relay) DO UPDATE SET note = excluded.note`, relay, note); err != nil {
		return fmt.Errorf("store: keep audit checkpoint of %s: %w", relay, err)
	}
	return nil
}

// RelayTransport returns the transport ("quic" or "tcp") that last
// reached relay, "" if none did.
func (s *Store) RelayTransport(ctx context.Context, relay string) (string, error) {
	var t string
	err := s.r.QueryRowContext(ctx, `SELECT transport FROM client_relay_transport WHERE relay = ?`, relay).Scan(&t)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: transport of relay %s: %w", relay, err)
	}
	return t, nil
}

// SetRelayTransport keeps the transport that reached relay.
func (s *Store) SetRelayTransport(ctx context.Context, relay, transport string) error {
	if _, err := s.w.ExecContext(ctx, `INSERT INTO client_relay_transport (relay, transport) VALUES (?, ?)
		ON CONFLICT (relay) DO UPDATE SET transport = excluded.transport`, relay, transport); err != nil {
		return fmt.Errorf("store: keep transport of relay %s: %w", relay, err)
	}
	return nil
}

// Receipt is a relay's proof that it stored one of our envelopes: its
// position, and the index of its record in the relay's audit log with the
// signed checkpoint that the record was proved included in.
type Receipt struct {
	Relay      string // the relay's key fingerprint
	Pos        uint64
	Index      uint64
	Checkpoint []byte
}

// PutReceipt keeps a relay's receipt of envelope id (one per relay).
func (s *Store) PutReceipt(ctx context.Context, id protocol.ID, r Receipt) error {
	if _, err := s.w.ExecContext(ctx, `INSERT OR REPLACE INTO client_receipts (id, relay, pos, idx, note) VALUES (?, ?, ?, ?, ?)`,
		id[:], r.Relay, int64(r.Pos), int64(r.Index), r.Checkpoint); err != nil {
		return fmt.Errorf("store: keep receipt of %s: %w", id, err)
	}
	return nil
}

// Receipts returns the receipts kept for envelope id, one per relay that
// acknowledged it, by relay fingerprint.
func (s *Store) Receipts(ctx context.Context, id protocol.ID) ([]Receipt, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT relay, pos, idx, note FROM client_receipts WHERE id = ? ORDER BY relay`, id[:])
	if err != nil {
		return nil, fmt.Errorf("store: receipts of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var (
			r          Receipt
			pos, index int64
		)
		if err := rows.Scan(&r.Relay, &pos, &index, &r.Checkpoint); err != nil {
			return nil, fmt.Errorf("store: receipts of %s: %w", id, err)
		}
		r.Pos, r.Index = uint64(pos), uint64(index)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: receipts of %s: %w", id, err)
	}
	return out, nil
}

// AddUnshown notes messages of room that the person has not been shown
// yet: they are shown when the room is next joined if the process ends
// before it showed them.
func (s *Store) AddUnshown(ctx context.Context, room string, ids []protocol.ID) error {
	return s.inTx(ctx, "note unshown messages", `INSERT OR IGNORE INTO client_unshown (id, room) VALUES (?, ?)`,
		func(stmt *sql.Stmt) error {
			for _, id := range ids {
				if _, err := stmt.ExecContext(ctx, id[:], room); err != nil {
					return err
				}
			}
			return nil
		})
}

// RemoveUnshown notes that these messages were shown.
func (s *Store) RemoveUnshown(ctx context.Context, ids []protocol.ID) error {
	return s.inTx(ctx, "note shown messages", `DELETE FROM client_unshown WHERE id = ?`,
		func(stmt *sql.Stmt) error {
			for _, id := range ids {
				if _, err := stmt.ExecContext(ctx, id[:]); err != nil {
					return err
				}
			}
			return nil
		})
}

// Unshown returns the stored messages of room not shown yet, in display
// order.
func (s *Store) Unshown(ctx context.Context, room string) ([]Record, error) {
	recs, err := s.noted(ctx, `SELECT id FROM client_unshown WHERE room = ?`, room)
	if err != nil {
		return nil, fmt.Errorf("store: unshown messages of %s: %w", room, err)
	}
	slices.SortFunc(recs, func(a, b Record) int {
		return cmp.Or(cmp.Compare(a.Env.Lamport, b.Env.Lamport), cmp.Compare(a.Env.Time, b.Env.Time), bytes.Compare(a.ID[:], b.ID[:]))
	})
	return recs, nil
}

// noted returns the stored envelopes whose IDs query selects from one of
// the client's notes (unshown, outbox): those are kept by ID, and read
// one by one through the ID directory, not joined to the envelopes on
// the ID, which has no index (ids.go).
func (s *Store) noted(ctx context.Context, query string, args ...any) ([]Record, error) {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var ids []protocol.ID
	for rows.Next() {
		var id []byte
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		if len(id) != len(protocol.ID{}) {
			rows.Close()
			return nil, fmt.Errorf("a note of an ID of %d bytes", len(id))
		}
		ids = append(ids, protocol.ID(id))
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return s.byIDs(ctx, ids)
}

// inTx runs one prepared statement many times in one transaction.
func (s *Store) inTx(ctx context.Context, what, query string, run func(*sql.Stmt) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, query)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	defer stmt.Close()
	if err := run(stmt); err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	return nil
}

// AddUnshown is Store.AddUnshown in the batch's transaction.
func (b *Batch) AddUnshown(ctx context.Context, room string, ids []protocol.ID) error {
	for _, id := range ids {
		if _, err := b.tx.ExecContext(ctx, `INSERT OR IGNORE INTO client_unshown (id, room) VALUES (?, ?)`, id[:], room); err != nil {
			return fmt.Errorf("store: note unshown messages: %w", err)
		}
	}
	return nil
}

// SetRelayCursor is Store.SetRelayCursor in the batch's transaction: the
// cursor moves in the transaction that stores what it points at.
func (b *Batch) SetRelayCursor(ctx context.Context, relay, room string, id protocol.ID) error {
	if _, err := b.tx.ExecContext(ctx, `INSERT INTO client_relay_cursors (relay, room, cursor) VALUES (?, ?, ?)
		ON CONFLICT (relay, room) DO UPDATE SET cursor = excluded.cursor`, relay, room, id[:]); err != nil {
		return fmt.Errorf("store: set relay cursor of %s: %w", room, err)
	}
	return nil
}

// AddOutbox puts our envelope id in the outbox, in the batch's
// transaction: it is sent again until a path confirms it.
func (b *Batch) AddOutbox(ctx context.Context, room string, id protocol.ID) error {
	if _, err := b.tx.ExecContext(ctx, `INSERT OR IGNORE INTO client_outbox (id, room) VALUES (?, ?)`, id[:], room); err != nil {
		return fmt.Errorf("store: outbox: %w", err)
	}
	return nil
}

// RemoveOutbox takes id out of the outbox: a path confirmed it.
func (s *Store) RemoveOutbox(ctx context.Context, id protocol.ID) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM client_outbox WHERE id = ?`, id[:]); err != nil {
		return fmt.Errorf("store: outbox: %w", err)
	}
	return nil
}

// Outbox returns our envelopes of room that no path has confirmed, in the
// order they were made.
func (s *Store) Outbox(ctx context.Context, room string) ([]Record, error) {
	recs, err := s.noted(ctx, `SELECT id FROM client_outbox WHERE room = ?`, room)
	if err != nil {
		return nil, fmt.Errorf("store: outbox of %s: %w", room, err)
	}
	slices.SortFunc(recs, func(a, b Record) int { return cmp.Compare(a.Env.Seq, b.Env.Seq) })
	return recs, nil
}

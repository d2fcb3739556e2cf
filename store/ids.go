package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/parleychat/parley/protocol"
)

// A store finds envelopes by ID through a directory in memory, not
// through an SQL index on envelopes(id).
//
// Why: the IDs are SHA-256 hashes, so every insert into an index on them
// lands on a random leaf: one more page read, one more page in the
// write-ahead log at the commit and one more random page copied at the
// checkpoint, per envelope. A relay holding 10 million envelopes took
// publishes at half the rate of a fresh one, and no page cache, map or
// checkpoint setting changed that (docs/performance.md, "A growing
// store"). It costs small stores too: a commit of 256 envelopes into a
// chat client's store of 100,000 wrote about 290 pages of that index
// alone, against about 60 for everything else (a catch-up page). Finding
// an envelope by ID (Has, Get, Position) is all the index was for;
// telling a duplicate apart needs none, since the same ID is the same
// bytes and so the same (sender, room, seq), which is unique and appends
// per sender.
//
// So the stores drop the index, and keep instead envelope_ids, a table of
// (position, first 8 bytes of the ID) in position order, written in the
// envelope's transaction and deleted with it by a trigger: it appends, as
// the envelopes do, and it is read whole on first use (about 150 MB at 10
// million envelopes) into a hash map of about 30 bytes an envelope. A
// lookup reads the candidate rows by position and compares the whole ID,
// so a prefix two IDs share costs a read, never a wrong answer. The chat
// client's own tables keyed by ID (unshown, outbox) are read one ID at a
// time through the directory, not joined to envelopes on the ID.
var schemaIDs = schema{"envelope_ids", []string{
	`CREATE TABLE envelope_ids (
		pos INTEGER PRIMARY KEY, -- the envelope's rowid
		idp BLOB NOT NULL        -- the first 8 bytes of its ID
	);
	CREATE TRIGGER envelope_ids_delete AFTER DELETE ON envelopes
		BEGIN DELETE FROM envelope_ids WHERE pos = old.rowid; END;
	-- From here a program that does not write envelope_ids refuses the store.
	PRAGMA user_version = ` + strconv.Itoa(idsVersion) + `;`,
}}

// idsVersion is the user_version of a database whose envelopes have no
// index on the ID: a program from before this directory would insert
// with ON CONFLICT (id) and fail, so it refuses the store instead, as
// "newer than this program".
const idsVersion = partsVersion + 1

// dropIDIndex fills envelope_ids from the index that envelopes.id's inline
// UNIQUE made, and drops the index, without rebuilding the table: SQLite will not drop such an
// index, but with writable_schema it can be renamed into an ordinary
// CREATE UNIQUE INDEX on the same pages (the two are stored alike), which
// can. The table's SQL loses its UNIQUE. On a store of 10 million
// envelopes this takes seconds, where a copy of the table would take
// minutes and twice the disk. It does nothing when the index is gone.
func dropIDIndex(db *sql.DB) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var auto string
	switch err := tx.QueryRow(`SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'envelopes'
		AND name LIKE 'sqlite_autoindex_envelopes_%'`).Scan(&auto); {
	case err == sql.ErrNoRows:
		return nil
	case err != nil:
		return err
	}
	var cols []string
	rows, err := tx.Query(`SELECT name FROM pragma_index_info(?)`, auto)
	if err != nil {
		return err
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return err
		}
		cols = append(cols, c)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	var table string
	if err := tx.QueryRow(`SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'envelopes'`).Scan(&table); err != nil {
		return err
	}
	const unique, plain = "id       BLOB NOT NULL UNIQUE,", "id       BLOB NOT NULL,"
	if len(cols) != 1 || cols[0] != "id" || strings.Count(table, unique) != 1 || strings.Count(table, "UNIQUE") != 1 {
		return fmt.Errorf("envelopes: index %s on %v, table %q: not the schema this program knows", auto, cols, table)
	}
	// The envelopes stored so far go into envelope_ids, read from the index
	// about to go (it holds every ID and position, at a twentieth of the
	// table's size) and sorted by position, so that envelope_ids appends.
	if _, err := tx.Exec(`INSERT INTO envelope_ids (pos, idp)
		SELECT rowid, substr(id, 1, 8) FROM envelopes INDEXED BY "` + auto + `" ORDER BY rowid`); err != nil {
		return fmt.Errorf("envelopes: their IDs into envelope_ids: %w", err)
	}
	var cookie int
	if err := tx.QueryRow(`PRAGMA schema_version`).Scan(&cookie); err != nil {
		return err
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`PRAGMA writable_schema = ON`, nil},
		{`UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = 'envelopes'`, []any{strings.Replace(table, unique, plain, 1)}},
		{`UPDATE sqlite_schema SET name = 'envelopes_id', sql = 'CREATE UNIQUE INDEX envelopes_id ON envelopes(id)' WHERE name = ?`, []any{auto}},
		// The connection reads the schema again when its cookie moves.
		{fmt.Sprintf(`PRAGMA schema_version = %d`, cookie+1), nil},
		{`PRAGMA writable_schema = OFF`, nil},
		{`DROP INDEX envelopes_id`, nil},
	} {
		if _, err := tx.Exec(q.sql, q.args...); err != nil {
			return fmt.Errorf("envelopes: drop the ID index: %w", err)
		}
	}
	return tx.Commit()
}

// adoptRelayIDs moves the rows of relay_ids, the directory's table as
// the builds between v0.20.0 and the next release named it (relay stores
// only), into envelope_ids, and drops it: without this, a store made by
// one of them would open with an empty directory and find nothing. It
// does nothing when there is no relay_ids.
func adoptRelayIDs(db *sql.DB) error {
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'relay_ids'`).Scan(&n); err != nil || n == 0 {
		return err
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{
		`INSERT OR IGNORE INTO envelope_ids (pos, idp) SELECT pos, idp FROM relay_ids`,
		`DROP TRIGGER IF EXISTS relay_ids_delete`,
		`DROP TABLE relay_ids`,
		`DELETE FROM schema_versions WHERE name = 'relay_ids'`,
	} {
		if _, err := tx.Exec(q); err != nil {
			return fmt.Errorf("envelopes: relay_ids into envelope_ids: %w", err)
		}
	}
	return tx.Commit()
}

// idsDone returns ErrOldSchema if the database still has what the
// migration to the directory takes away (the ID index, relay_ids).
func idsDone(db *sql.DB) error {
	var left string
	err := db.QueryRow(`SELECT name FROM sqlite_schema WHERE (type = 'index' AND tbl_name = 'envelopes'
		AND name LIKE 'sqlite_autoindex_envelopes_%') OR (type = 'table' AND name = 'relay_ids')`).Scan(&left)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%w: it still has %s", ErrOldSchema, left)
}

// idDirectory maps the first 8 bytes of each stored envelope's ID to its
// position. It is read from envelope_ids on first use (or LoadIDs), so that
// a command that opens the store for something else (the audit log, an
// access list) does not read it. It is safe for concurrent use.
type idDirectory struct {
	db     *sql.DB // where to read it from
	mu     sync.RWMutex
	loaded bool
	pos    map[uint64]int64   // the first position under a prefix
	more   map[uint64][]int64 // the others, when IDs share a prefix (rare)
}

// idPrefix is the directory's key of id.
func idPrefix(id []byte) uint64 { return binary.BigEndian.Uint64(id[:8]) }

func newIDDirectory(db *sql.DB) *idDirectory {
	return &idDirectory{db: db, pos: map[uint64]int64{}, more: map[uint64][]int64{}}
}

// load reads envelope_ids whole, once. It holds the lock from before it
// reads: a commit's entries that it does not read wait for it (addAll,
// removeAll), and those of a commit before it are read, or added twice,
// which does nothing.
func (d *idDirectory) load(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.loaded {
		return nil
	}
	if err := d.read(ctx); err != nil {
		d.pos, d.more = map[uint64]int64{}, map[uint64][]int64{}
		return fmt.Errorf("read the envelope IDs: %w", err)
	}
	d.loaded = true
	return nil
}

func (d *idDirectory) read(ctx context.Context) error {
	var n int
	if err := d.db.QueryRowContext(ctx, `SELECT count(*) FROM envelope_ids`).Scan(&n); err != nil {
		return err
	}
	d.pos = make(map[uint64]int64, n)
	rows, err := d.db.QueryContext(ctx, `SELECT pos, idp FROM envelope_ids`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var (
		pos int64
		idp sql.RawBytes // not copied: it is read at once
	)
	for rows.Next() {
		if err := rows.Scan(&pos, &idp); err != nil {
			return err
		}
		if len(idp) != 8 {
			return fmt.Errorf("position %d has a prefix of %d bytes", pos, len(idp))
		}
		d.add(idPrefix(idp), pos)
	}
	return rows.Err()
}

// idEntry is one envelope of the directory.
type idEntry struct {
	prefix uint64
	pos    int64
}

// addAll adds the entries, once their transaction committed; before the
// directory is read, it leaves them to the reading.
func (d *idDirectory) addAll(es []idEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.loaded {
		return
	}
	for _, e := range es {
		d.add(e.prefix, e.pos)
	}
}

func (d *idDirectory) add(prefix uint64, pos int64) {
	first, ok := d.pos[prefix]
	switch {
	case !ok:
		d.pos[prefix] = pos
	case first != pos && indexOf(d.more[prefix], pos) < 0:
		d.more[prefix] = append(d.more[prefix], pos)
	}
}

// removeAll removes the entries, once their deletion committed; before
// the directory is read, it does nothing.
func (d *idDirectory) removeAll(es []idEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.loaded {
		return
	}
	for _, e := range es {
		d.remove(e.prefix, e.pos)
	}
}

func (d *idDirectory) remove(prefix uint64, pos int64) {
	others := d.more[prefix]
	if first, ok := d.pos[prefix]; ok && first == pos {
		if len(others) == 0 {
			delete(d.pos, prefix)
			return
		}
		d.pos[prefix], others = others[0], others[1:]
	} else if i := indexOf(others, pos); i >= 0 {
		others = append(others[:i:i], others[i+1:]...)
	}
	if len(others) == 0 {
		delete(d.more, prefix)
	} else {
		d.more[prefix] = others
	}
}

func indexOf(s []int64, v int64) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// candidates returns the positions of the envelopes whose ID may be id,
// reading the directory first if it was not.
func (d *idDirectory) candidates(ctx context.Context, id protocol.ID) ([]int64, error) {
	if err := d.load(ctx); err != nil {
		return nil, err
	}
	p := idPrefix(id[:])
	d.mu.RLock()
	defer d.mu.RUnlock()
	first, ok := d.pos[p]
	if !ok {
		return nil, nil
	}
	return append([]int64{first}, d.more[p]...), nil
}

// len returns how many envelopes the directory holds.
func (d *idDirectory) len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := len(d.pos)
	for _, m := range d.more {
		n += len(m)
	}
	return n
}

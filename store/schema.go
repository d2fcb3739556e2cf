package store

import (
	"database/sql"
	"errors"
	"fmt"
	"slices"
)

// The database holds the parts of the products that use it, each with its
// migrations, applied once, in order: the envelopes, which every product
// has; the relay's (policy, audit log); the chat client's (search index,
// rooms, cursors, outbox). A chat home's database has no relay tables, and
// a relay's no client tables. Each part's version is a row of
// schema_versions.
type schema struct {
	name       string
	migrations []string
}

var schemaEnvelopes = schema{"envelopes", []string{
	// A rowid table, not WITHOUT ROWID: rows are a few hundred bytes, and
	// appending them in rowid order beats inserting them at random places
	// of a table clustered by a hash.
	`CREATE TABLE envelopes (
		id       BLOB NOT NULL UNIQUE, -- SHA-256 of raw
		room     TEXT NOT NULL,
		sender   BLOB NOT NULL,      -- Ed25519 public key
		seq      INTEGER NOT NULL,
		lamport  INTEGER NOT NULL,
		time     INTEGER NOT NULL,   -- sender's clock, Unix ms
		prev     BLOB NOT NULL,      -- ID of the sender's previous envelope in the room, or zeros
		raw      BLOB NOT NULL,      -- the envelope exactly as signed
		via      TEXT NOT NULL,      -- how it first arrived: local, mesh, sync, relay
		received INTEGER NOT NULL    -- receiver's clock, Unix ms
	);
	CREATE UNIQUE INDEX envelopes_stream ON envelopes(sender, room, seq);
	CREATE INDEX envelopes_room_time ON envelopes(room, time, id);
	CREATE INDEX envelopes_received ON envelopes(received);
	CREATE TABLE equivocations (
		first_id BLOB PRIMARY KEY,   -- the envelope stored under that (sender, room, seq)
		second   BLOB NOT NULL,      -- the first other envelope seen under it, raw: one is proof enough
		seen     INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE seq_reservations (
		room     TEXT PRIMARY KEY,
		reserved INTEGER NOT NULL
	) WITHOUT ROWID;`,
	// A room's envelopes in commit order (the index holds the rowid):
	// relay subscriptions read from a cursor with it. Only the relay
	// reads it; migrate drops it from a store without the relay's part.
	`CREATE INDEX envelopes_room ON envelopes(room);`,
	// The member-list changes of private rooms (kind 2, the envelope's
	// second byte), in resolution order: a room's list is read whole at
	// start, never by scanning its messages. Retention keeps them.
	`CREATE INDEX envelopes_changes ON envelopes(room, lamport, id) WHERE substr(raw, 2, 1) = x'02';`,
}}

var schemaRelay = schema{"relay", []string{
	// The relay's access lists, invites and policy version (relay.go).
	`CREATE TABLE relay_acl (
		list  TEXT NOT NULL,    -- allow or ban
		key   BLOB NOT NULL,    -- Ed25519 public key
		note  TEXT NOT NULL,
		added INTEGER NOT NULL, -- Unix ms
		PRIMARY KEY (list, key)
	) WITHOUT ROWID;
	CREATE TABLE relay_invites (
		hash    BLOB PRIMARY KEY, -- SHA-256 of the token: the token itself is never stored
		note    TEXT NOT NULL,
		expires INTEGER NOT NULL, -- Unix ms
		uses    INTEGER NOT NULL  -- redemptions left
	) WITHOUT ROWID;
	CREATE TABLE relay_meta (
		k TEXT PRIMARY KEY,
		v BLOB NOT NULL
	) WITHOUT ROWID;`,
	// The relay's audit log (audit.go).
	`CREATE TABLE audit_records (
		idx    INTEGER PRIMARY KEY, -- the record's index in the log, from 0
		data   BLOB NOT NULL,       -- audit.Record, encoded
		hashes BLOB NOT NULL        -- the tree hashes this record completes, level 0 (its leaf hash) first
	);
	CREATE TABLE audit_checkpoints (
		size INTEGER PRIMARY KEY, -- the tree size it signs
		note BLOB NOT NULL        -- the signed note
	);`,
	// A row of audit_records holds n records, idx to idx+n-1: their
	// encodings one after another, and their tree hashes one after
	// another. A relay writes one row per commit (audit.go); the rows
	// written before hold one record each.
	`ALTER TABLE audit_records ADD COLUMN n INTEGER NOT NULL DEFAULT 1;`,
	// The newest key package of each identity (relay.go), which the relay
	// serves so that someone can encrypt to a person before they share a
	// room. One row per identity for now: the latest package of any of
	// its devices. Several devices will need one row per (identity,
	// device). A rowid table: a row is about 1.4 KB.
	`CREATE TABLE relay_key_packages (
		identity BLOB PRIMARY KEY, -- Ed25519 public key: the package's signer
		created  INTEGER NOT NULL, -- the package's, Unix s
		expires  INTEGER NOT NULL, -- the package's, Unix s
		id       BLOB NOT NULL,    -- SHA-256 of raw: which of two made in one second wins
		raw      BLOB NOT NULL     -- the encoded package, as signed
	);`,
}}

var schemaClient = schema{"client", []string{
	// The chat client's full-text index, rooms, relay cursors and kept
	// audit checkpoints (client.go). The index is contentless: its rowid
	// is the envelope's, and the text stays only in the envelope.
	`CREATE VIRTUAL TABLE envelope_text USING fts5(nick, body,
		content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2');
	CREATE TRIGGER envelope_text_delete AFTER DELETE ON envelopes
		BEGIN DELETE FROM envelope_text WHERE rowid = old.rowid; END;
	CREATE TABLE client_rooms (
		name   TEXT PRIMARY KEY,
		joined INTEGER NOT NULL -- Unix ms
	) WITHOUT ROWID;
	CREATE TABLE client_relay_cursors (
		relay  TEXT NOT NULL, -- the relay's key fingerprint
		room   TEXT NOT NULL,
		cursor BLOB NOT NULL, -- the ID of the last envelope the relay delivered
		PRIMARY KEY (relay, room)
	) WITHOUT ROWID;
	CREATE TABLE client_checkpoints (
		relay TEXT PRIMARY KEY, -- the relay's key fingerprint
		note  BLOB NOT NULL     -- its newest signed audit checkpoint seen
	) WITHOUT ROWID;
	CREATE TABLE client_unshown (
		id   BLOB PRIMARY KEY, -- a message of someone else, stored or about to be, not yet shown
		room TEXT NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX client_unshown_room ON client_unshown(room);
	CREATE TABLE client_outbox (
		id   BLOB PRIMARY KEY, -- our envelope that no path has confirmed yet
		room TEXT NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE client_receipts (
		id    BLOB PRIMARY KEY, -- our envelope
		relay TEXT NOT NULL,    -- the relay's key fingerprint
		pos   INTEGER NOT NULL, -- its position in the relay's log of envelopes
		idx   INTEGER NOT NULL, -- its record's index in the relay's audit log
		note  BLOB NOT NULL     -- the signed checkpoint the inclusion proof was checked against
	) WITHOUT ROWID;`,
	// A room's envelopes in display order (Lamport clock, then time,
	// then ID): the last page of a room's history, and the page before
	// a message, are index range reads, not a sort of the whole room.
	`CREATE INDEX client_display_order ON envelopes(room, lamport, time, id);`,
	// The transport (quic or tcp) that last reached each relay, tried
	// first the next time (client.go).
	`CREATE TABLE client_relay_transport (
		relay     TEXT PRIMARY KEY, -- the relay's key fingerprint
		transport TEXT NOT NULL
	) WITHOUT ROWID;`,
	// A receipt per relay that acknowledged our envelope (a client may
	// use several relays), not one per envelope.
	`CREATE TABLE client_receipts_new (
		id    BLOB NOT NULL,
		relay TEXT NOT NULL,
		pos   INTEGER NOT NULL,
		idx   INTEGER NOT NULL,
		note  BLOB NOT NULL,
		PRIMARY KEY (id, relay)
	) WITHOUT ROWID;
	INSERT INTO client_receipts_new SELECT id, relay, pos, idx, note FROM client_receipts;
	DROP TABLE client_receipts;
	ALTER TABLE client_receipts_new RENAME TO client_receipts;`,
}}

// legacyVersion is the user_version of a database from before the parts
// (one list of six migrations for every product), and what it means for
// each part: how many of its migrations it had applied.
func legacyParts(v int) map[string]int {
	n := func(ok bool) int {
		if ok {
			return 1
		}
		return 0
	}
	return map[string]int{
		"envelopes": min(v, 2),
		"relay":     n(v >= 3) + n(v >= 4) + n(v >= 6),
		"client":    n(v >= 5),
	}
}

// partsVersion is the user_version a database with parts has: above any
// version of the single list, so that a program from before refuses it
// ("newer than this program") rather than take a part as done.
const partsVersion = 1000

// hasPart reports whether parts has part.
func hasPart(parts []schema, part schema) bool {
	return slices.ContainsFunc(parts, func(p schema) bool { return p.name == part.name })
}

// ErrOldSchema: a database opened AsIs needs a migration first.
var ErrOldSchema = errors.New("store: the database is from an older version of this program")

// migrate brings the database's parts up to date, the envelopes' first.
func migrate(db *sql.DB, parts []schema) error { return migrateOr(db, parts, false) }

// migrateOr is migrate, or with asIs a check that nothing needs
// migrating (ErrOldSchema): a program that opens a database in use by
// another, perhaps older, must not change its schema under it.
func migrateOr(db *sql.DB, parts []schema, asIs bool) error {
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS schema_versions (
		name    TEXT PRIMARY KEY,
		version INTEGER NOT NULL
	) WITHOUT ROWID`); err != nil {
		return err
	}
	done, err := partVersions(db)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if done[p.name] > len(p.migrations) {
			return fmt.Errorf("schema of part %s is at version %d, newer than this program (%d)", p.name, done[p.name], len(p.migrations))
		}
		if asIs && done[p.name] < len(p.migrations) {
			return fmt.Errorf("%w: part %s is at version %d of %d", ErrOldSchema, p.name, done[p.name], len(p.migrations))
		}
		for i := done[p.name]; i < len(p.migrations); i++ {
			if err := apply(db, p.name, i+1, p.migrations[i]); err != nil {
				return err
			}
		}
	}
	if asIs {
		if hasPart(parts, schemaIDs) {
			return idsDone(db)
		}
		return nil
	}
	if !hasPart(parts, schemaRelay) {
		// envelopes_room serves the relay's subscriptions alone
		// (Store.After); a chat client's or a mesh node's store would
		// write it for every envelope and never read it. Not a
		// migration: the schema's versions do not change, so a program
		// from before still opens the store (its queries do not need
		// the index either).
		if _, err := db.Exec(`DROP INDEX IF EXISTS envelopes_room`); err != nil {
			return fmt.Errorf("drop the relay's index envelopes_room: %w", err)
		}
	}
	version := partsVersion
	if hasPart(parts, schemaIDs) {
		if err := adoptRelayIDs(db); err != nil {
			return err
		}
		if err := dropIDIndex(db); err != nil {
			return err
		}
		version = idsVersion
	}
	_, err = db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, version))
	return err
}

// partVersions returns each part's version, converting a database from
// before the parts once.
func partVersions(db *sql.DB) (map[string]int, error) {
	var legacy int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&legacy); err != nil {
		return nil, err
	}
	if legacy > 6 && legacy != partsVersion && legacy != idsVersion {
		return nil, fmt.Errorf("schema version %d is newer than this program", legacy)
	}
	if legacy > 0 && legacy < partsVersion {
		for name, v := range legacyParts(legacy) {
			if _, err := db.Exec(`INSERT OR IGNORE INTO schema_versions (name, version) VALUES (?, ?)`, name, v); err != nil {
				return nil, err
			}
		}
	}
	rows, err := db.Query(`SELECT name, version FROM schema_versions`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	done := map[string]int{}
	for rows.Next() {
		var name string
		var v int
		if err := rows.Scan(&name, &v); err != nil {
			return nil, err
		}
		done[name] = v
	}
	return done, rows.Err()
}

// apply runs migration n of a part and records it, in one transaction.
func apply(db *sql.DB, part string, n int, migration string) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(migration); err != nil {
		return fmt.Errorf("migration %d of %s: %w", n, part, err)
	}
	if _, err := tx.Exec(`INSERT INTO schema_versions (name, version) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET version = excluded.version`, part, n); err != nil {
		return err
	}
	return tx.Commit()
}

// errNotRelay: a relay's part is used on a database opened without it.
var errNotRelay = errors.New("store: the database has no relay part (not opened with store.Relay)")

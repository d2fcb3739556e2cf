// Package store is Parley's embedded persistence on SQLite (modernc.org/sqlite,
// pure Go): the envelopes a peer has accepted, which serve history, catch-up
// sync and the replay guard's state after a restart, and the sender's
// reserved sequence numbers.
//
// The database is one file in WAL mode. Envelopes are written with
// synchronous=NORMAL: a committed batch survives the process crashing at
// any point, and a power cut can lose the last batches, which catch-up sync
// restores from other peers; nothing acknowledges them to anyone.
// Sequence reservations, whose loss could make a number be used twice, are
// written with synchronous=FULL. Several processes can read the database at
// once, and operators can inspect it with the sqlite3 tool. Put writes many
// envelopes in one transaction, which is how callers get group commit.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrNotFound: no envelope has the asked-for ID.
var ErrNotFound = errors.New("store: not found")

// Store is an open database. It is safe for concurrent use.
type Store struct {
	w      *sql.DB      // one connection: SQLite has one writer at a time
	r      *sql.DB      // readers, concurrent with the writer under WAL
	insert *sql.Stmt    // the envelope insert, prepared once
	ids    *idDirectory // the directory of envelope IDs (ids.go)
	addID  *sql.Stmt    // its row of each new envelope, prepared once
	audit  auditStmts   // the audit log's writes, prepared once
	index  indexStmts   // the text index's, prepared once (Search)
	keys   keysStmts    // the sealed messages' and chains', prepared once (Search)
	// writing is held by the one Batch or deletion at a time (lockWrites).
	writing chan struct{}
	sync    string // the synchronous pragma of envelope commits
	search  bool   // index the text of new envelopes (Search)

	policyHook PolicyHook
}

// Option changes how Open opens a database.
type Option func(*options)

type options struct {
	asIs   bool // AsIs
	sync   string
	search bool  // the chat client's part (Search)
	relay  bool  // the relay's part (Relay)
	wal    int   // wal_autocheckpoint, in pages; 0: SQLite's 1,000
	cache  int64 // the writer's page cache, in bytes; 0: SQLite's 2 MB
	mmap   int64 // mmap_size of every connection, in bytes; 0: none
}

// Relay makes the store a relay's: its part of the database (policy,
// audit log) is there, and the chat client's is not. A store opened with
// neither Relay nor Search has both, for tools and tests.
func Relay() Option { return func(o *options) { o.relay = true } }

// parts are the parts of the database the options ask for.
func (o options) parts() []schema {
	switch {
	case o.search && !o.relay:
		return []schema{schemaEnvelopes, schemaIDs, schemaClient, schemaKeys}
	case o.relay && !o.search:
		return []schema{schemaEnvelopes, schemaIDs, schemaRelay}
	}
	return []schema{schemaEnvelopes, schemaIDs, schemaRelay, schemaClient, schemaKeys}
}

// AsIs opens the database without migrating it: if it needs a
// migration, Open fails with ErrOldSchema. For a command that opens a
// store while a program of another version may be using it (the relay's
// audit commands): its schema must not change under that program.
func AsIs() Option { return func(o *options) { o.asIs = true } }

// Durable makes every commit wait for the disk (synchronous=FULL): a
// committed envelope survives a power cut. The relay, which acknowledges
// what it commits, opens its store this way.
func Durable() Option { return func(o *options) { o.sync = "FULL" } }

// CheckpointEvery lets the write-ahead log grow to pages pages (of 4 KiB)
// before SQLite copies it into the database, instead of 1,000. Under a
// steady stream of inserts into a large index (the message IDs are
// hashes: every insert lands on a random page), each copy writes every
// page changed since the last; copying less often writes a page changed
// by many commits once. The relay, which takes publishes all day, opens
// its store with 10,000 (a log of up to about 40 MiB).
func CheckpointEvery(pages int) Option { return func(o *options) { o.wal = pages } }

// CacheSize gives the writer's connection a page cache of bytes (rounded
// down to KiB) instead of SQLite's 2 MB. The writer reads the index pages
// each insert lands on; in a large store the message-ID index (random
// keys) outgrows the default cache, and each insert reads a leaf from
// the OS. The readers keep the default. 0 keeps the default.
func CacheSize(bytes int64) Option { return func(o *options) { o.cache = bytes } }

// MmapSize lets every connection read up to bytes of the database file
// through a memory map (PRAGMA mmap_size) instead of read calls. SQLite
// caps it at its compile-time limit. 0, the default, maps nothing.
func MmapSize(bytes int64) Option { return func(o *options) { o.mmap = bytes } }

// pragmas are the per-connection settings of the options, beside the
// ones every connection has; writer says whether the connection is the
// writer's.
func (o options) pragmas(writer bool) []string {
	var out []string
	if o.wal > 0 {
		out = append(out, fmt.Sprintf("wal_autocheckpoint(%d)", o.wal))
	}
	if writer && o.cache >= 1024 {
		// A negative cache_size is in KiB rather than pages.
		out = append(out, fmt.Sprintf("cache_size(%d)", -(o.cache/1024)))
	}
	if o.mmap > 0 {
		out = append(out, fmt.Sprintf("mmap_size(%d)", o.mmap))
	}
	return out
}

// Open opens or creates the database at path and brings its schema up to
// date.
func Open(path string, opts ...Option) (*Store, error) {
	o := options{sync: "NORMAL"}
	for _, opt := range opts {
		opt(&o)
	}
	// The database holds people's messages: readable by its owner only
	// (SQLite gives the -wal and -shm files the same mode).
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	s, err := openStore(path, o)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return s, nil
}

// openStore opens the writer, brings the schema up to date, prepares the
// statements and opens the readers.
func openStore(path string, o options) (*Store, error) {
	w, err := sql.Open("sqlite", o.dsn(path, true, ""))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	s := &Store{w: w, sync: o.sync, search: o.search, writing: make(chan struct{}, 1)}
	parts := o.parts()
	if err := migrateOr(w, parts, o.asIs); err != nil {
		w.Close()
		return nil, err
	}
	if err := s.prepare(parts); err != nil {
		s.closeStmts()
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", o.dsn(path, false, "query_only(1)"))
	if err != nil {
		s.closeStmts()
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(4)
	s.r = r
	s.ids = newIDDirectory(r)
	return s, nil
}

// dsn is the data source name of a connection to the database at path:
// the writer's, or a reader's with extra, a pragma, added.
func (o options) dsn(path string, writer bool, extra string) string {
	v := url.Values{}
	// temp_store(MEMORY): a statement that fires a trigger (a chat
	// client's unshown note on each envelope the mesh node stores)
	// keeps a statement journal, in a temporary file by default: a
	// write to disk for every envelope stored, which halved the
	// speed of a catch-up over the mesh.
	for _, p := range []string{"journal_mode(WAL)", "synchronous(" + o.sync + ")", "busy_timeout(10000)", "foreign_keys(1)", "temp_store(MEMORY)"} {
		v.Add("_pragma", p)
	}
	for _, p := range o.pragmas(writer) {
		v.Add("_pragma", p)
	}
	if o.search {
		// The chat client keeps secrets it must erase (end-to-end
		// keys): what it deletes is overwritten, not only freed.
		v.Add("_pragma", "secure_delete(1)")
		// And the write-ahead log, which holds the pages as they
		// were, is cut back to nothing each time it starts over.
		v.Add("_pragma", "journal_size_limit(0)")
	}
	if extra != "" {
		v.Add("_pragma", extra)
	}
	return "file:" + path + "?" + v.Encode()
}

// prepare prepares the writer's statements for the parts the database
// has. On an error, what it prepared is left for closeStmts.
func (s *Store) prepare(parts []schema) error {
	var err error
	if s.search {
		if _, err := s.w.Exec(clientTriggers); err != nil {
			return err
		}
		if s.index, err = prepareIndex(s.w); err != nil {
			return err
		}
	}
	if hasPart(parts, schemaKeys) {
		if s.keys, err = prepareKeys(s.w); err != nil {
			return err
		}
	}
	if s.addID, err = s.w.Prepare(`INSERT INTO envelope_ids (pos, idp) VALUES (?, ?)`); err != nil {
		return err
	}
	if s.insert, err = s.w.Prepare(insertEnvelope); err != nil {
		return err
	}
	// Without the relay's part there is no audit log: its statements
	// are not prepared, and its methods say so (errNotRelay).
	if hasPart(parts, schemaRelay) {
		if s.audit, err = prepareAudit(s.w); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error {
	return errors.Join(s.closeStmts(), s.r.Close(), s.w.Close())
}

// closeStmts closes the writer's prepared statements.
func (s *Store) closeStmts() error {
	return errors.Join(closeStmt(s.insert), closeStmt(s.addID), s.audit.close(), s.index.close(), s.keys.close())
}

// closeStmt closes st, if there is one.
func closeStmt(st *sql.Stmt) error {
	if st == nil {
		return nil
	}
	return st.Close()
}

// Record is one stored envelope.
type Record struct {
	ID       protocol.ID
	Env      *protocol.Envelope
	Raw      []byte
	Via      string
	Received time.Time
	// Pos is the envelope's position in this store: it grows with every
	// new envelope, so a room's envelopes in Pos order are in the order
	// they were committed (the relay's log order). Append stores a record
	// whose Pos is above 0 at that position (the relay gives positions
	// itself, before the insert); with 0 the store takes the next one.
	Pos int64
}

// Result says what Put did with one record.
type Result int

const (
	// Stored: the envelope is new and now on disk.
	Stored Result = iota + 1
	// Duplicate: the envelope was stored before.
	Duplicate
	// Equivocation: another envelope with the same sender, room and
	// sequence number is stored; this one was recorded as evidence only.
	Equivocation
)

// A NULL rowid is the next one. A taken (sender, room, seq) makes the
// insert do nothing: a taken ID is one, since the ID is the hash of the
// bytes that hold them (there is no index on the ID: ids.go). A taken
// rowid is an error.
const insertEnvelope = `INSERT INTO envelopes
	(rowid, id, room, sender, seq, lamport, time, prev, raw, via, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (sender, room, seq) DO NOTHING`

// Put stores the records in one transaction and reports, per record,
// whether it was new. It returns once the transaction is on disk.
func (s *Store) Put(ctx context.Context, recs ...Record) ([]Result, error) {
	out, err := s.Append(ctx, recs)
	if err != nil {
		return nil, err
	}
	res := make([]Result, len(out))
	for i, o := range out {
		res[i] = o.Result
	}
	return res, nil
}

// Appended is what Append did with one record.
type Appended struct {
	Result Result
	// Pos is the stored envelope's position: of the new one when Stored,
	// of the one stored before when Duplicate, 0 for an Equivocation.
	Pos int64
}

// Append stores the records in one transaction, as Put does, and also
// reports the position each one has.
func (s *Store) Append(ctx context.Context, recs []Record) ([]Appended, error) {
	b, err := s.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer b.Rollback()
	res, err := b.Append(ctx, recs)
	if err != nil {
		return nil, err
	}
	return res, b.Commit()
}

// Batch is an open write transaction of envelopes: what it appends has
// its position at once, and is on disk (and visible to readers) after
// Commit. The relay hands new envelopes to live subscribers between the
// two, so that delivery does not wait for the disk. There is one Batch at
// a time: Begin waits for the one before to end.
//
// What a batch appends goes into the ID directory at once, before the
// commit: a lookup reads the row too, and does not see it until then (or
// sees it in the batch's own transaction). So there is no moment after
// the commit when an envelope is stored and not found. A batch that
// rolls back takes its entries out before the next batch can begin.
type Batch struct {
	s      *Store
	tx     *sql.Tx
	insert *sql.Stmt
	addID  *sql.Stmt  // the envelope's row of envelope_ids
	ids    []idEntry  // what it added to the directory
	ended  bool       // committed or rolled back
	audit  auditStmts // each made on first use
	index  indexStmts // each made on first use
	keys   keysStmts  // likewise
}

// Begin starts a Batch.
func (s *Store) Begin(ctx context.Context) (*Batch, error) {
	if err := s.lockWrites(ctx); err != nil {
		return nil, fmt.Errorf("store: begin: %w", err)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		s.unlockWrites()
		return nil, fmt.Errorf("store: begin: %w", err)
	}
	return &Batch{s: s, tx: tx, insert: tx.StmtContext(ctx, s.insert), addID: tx.StmtContext(ctx, s.addID)}, nil
}

// lockWrites waits for the writes that change the directory (a Batch, a
// deletion) to be this caller's alone: from before its transaction to
// after the directory has its outcome. (The one connection to write
// would serialise the transactions, but not what comes after them.)
func (s *Store) lockWrites(ctx context.Context) error {
	select {
	case s.writing <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) unlockWrites() { <-s.writing }

// Commit makes the batch durable (as the store's synchronous setting
// says) and visible.
func (b *Batch) Commit() error {
	if b.ended {
		return fmt.Errorf("store: commit: %w", sql.ErrTxDone)
	}
	b.ended = true
	defer b.s.unlockWrites()
	b.close()
	if err := b.tx.Commit(); err != nil {
		b.s.ids.removeAll(b.ids)
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

func (b *Batch) close() {
	b.insert.Close()
	closeStmt(b.addID)
	b.audit.close()
	b.index.close()
	b.keys.close()
}

// Rollback drops the batch; after Commit it does nothing.
func (b *Batch) Rollback() {
	if b.ended {
		return
	}
	b.ended = true
	defer b.s.unlockWrites()
	b.close()
	b.s.ids.removeAll(b.ids)
	b.tx.Rollback()
}

// Append adds the records to the batch and reports, per record, whether
// it is new and its position.
func (b *Batch) Append(ctx context.Context, recs []Record) ([]Appended, error) {
	// The directory is read before the batch adds to it: read after, it
	// could miss what this batch commits.
	if err := b.s.ids.load(ctx); err != nil {
		return nil, fmt.Errorf("store: put: %w", err)
	}
	res := make([]Appended, len(recs))
	tx, insert := b.tx, b.insert
	// The common case, a new envelope, is one statement: the insert is
	// ignored if the ID or the (sender, room, seq) is taken, and only then
	// does a second look tell a duplicate from an equivocation.
	for i, r := range recs {
		var at any // NULL: the next position
		if r.Pos > 0 {
			at = r.Pos
		}
		out, err := insert.ExecContext(ctx, at, r.ID[:], r.Env.Room, r.Env.Sender.Bytes(), int64(r.Env.Seq), int64(r.Env.Lamport),
			r.Env.Time, r.Env.Prev[:], r.Raw, r.Via, r.Received.UnixMilli())
		if err != nil {
			return nil, fmt.Errorf("store: put %s: %w", r.ID, err)
		}
		if n, err := out.RowsAffected(); err != nil {
			return nil, fmt.Errorf("store: put %s: %w", r.ID, err)
		} else if n == 1 {
			pos, err := out.LastInsertId()
			if err == nil {
				err = b.noteID(ctx, r.ID, pos)
			}
			if err != nil {
				return nil, fmt.Errorf("store: put %s: %w", r.ID, err)
			}
			res[i] = Appended{Stored, pos}
			continue
		}
		var (
			existing []byte
			pos      int64
		)
		err = tx.QueryRowContext(ctx, `SELECT id, rowid FROM envelopes WHERE sender = ? AND room = ? AND seq = ?`,
			r.Env.Sender.Bytes(), r.Env.Room, int64(r.Env.Seq)).Scan(&existing, &pos)
		switch {
		case err != nil:
			return nil, fmt.Errorf("store: put %s: %w", r.ID, err)
		case protocol.ID(existing) == r.ID:
			res[i] = Appended{Duplicate, pos}
		default:
			_, err = tx.ExecContext(ctx, `INSERT OR IGNORE INTO equivocations (first_id, second, seen) VALUES (?, ?, ?)`,
				existing, r.Raw, r.Received.UnixMilli())
			if err != nil {
				return nil, fmt.Errorf("store: put %s: %w", r.ID, err)
			}
			res[i] = Appended{Result: Equivocation}
		}
	}
	return res, nil
}

// noteID writes the new envelope's row of the store's ID directory, and
// adds it to the directory.
func (b *Batch) noteID(ctx context.Context, id protocol.ID, pos int64) error {
	if _, err := b.addID.ExecContext(ctx, pos, id[:8]); err != nil {
		return err
	}
	e := idEntry{idPrefix(id[:]), pos}
	b.ids = append(b.ids, e)
	b.s.ids.addAll([]idEntry{e})
	return nil
}

// PutEquivocation records second (raw) as proof that the sender of the
// envelope first signed another with the same number, without touching
// the envelopes: first is the one the caller accepted, which may not be
// committed yet. (Put of the second envelope would take the slot if it
// committed before the first.) The first proof for first is kept.
func (s *Store) PutEquivocation(ctx context.Context, first protocol.ID, second []byte, seen time.Time) error {
	_, err := s.w.ExecContext(ctx, `INSERT OR IGNORE INTO equivocations (first_id, second, seen) VALUES (?, ?, ?)`,
		first[:], second, seen.UnixMilli())
	if err != nil {
		return fmt.Errorf("store: put equivocation of %s: %w", first, err)
	}
	return nil
}

// Has reports whether the envelope with ID id is stored.
func (s *Store) Has(ctx context.Context, id protocol.ID) (bool, error) {
	_, ok, err := s.position(ctx, s.r, id)
	if err != nil {
		return false, fmt.Errorf("store: has %s: %w", id, err)
	}
	return ok, nil
}

// Missing returns those of ids that are not stored, in their order. The
// directory answers for most at once, without a statement.
func (s *Store) Missing(ctx context.Context, ids []protocol.ID) ([]protocol.ID, error) {
	var missing []protocol.ID
	for _, id := range ids {
		if ok, err := s.Has(ctx, id); err != nil {
			return nil, err
		} else if !ok {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// Get returns the envelope with ID id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id protocol.ID) (Record, error) {
	where, args, maybe, err := s.whereID(ctx, id)
	if err != nil {
		return Record{}, fmt.Errorf("store: get %s: %w", id, err)
	}
	if !maybe {
		return Record{}, fmt.Errorf("%w: envelope %s", ErrNotFound, id)
	}
	return s.one(ctx, "envelope "+id.String(), `SELECT rowid, raw, via, received FROM envelopes`+where, args...)
}

// mayHold reports whether an envelope with ID id may be stored, or be
// in an open batch: false when the store's directory (ids.go) knows
// there is none, at no cost but a map lookup.
func (s *Store) mayHold(ctx context.Context, id protocol.ID) (bool, error) {
	pos, err := s.ids.candidates(ctx, id)
	return len(pos) > 0, err
}

// whereID returns the WHERE clause, with its arguments, that selects the
// envelope with ID id, and false when it may not be stored (mayHold).
// The clause names the positions the directory gives and checks the
// whole ID on the rows.
func (s *Store) whereID(ctx context.Context, id protocol.ID) (string, []any, bool, error) {
	pos, err := s.ids.candidates(ctx, id)
	if err != nil || len(pos) == 0 {
		return "", nil, false, err
	}
	args := make([]any, 0, len(pos)+1)
	for _, p := range pos {
		args = append(args, p)
	}
	return ` WHERE rowid IN (?` + strings.Repeat(`, ?`, len(pos)-1) + `) AND id = ?`, append(args, id[:]), true, nil
}

// querier is a reader's pool or a transaction.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// position returns the position of the envelope with ID id, as q sees
// the store, and false if there is none.
func (s *Store) position(ctx context.Context, q querier, id protocol.ID) (int64, bool, error) {
	where, args, maybe, err := s.whereID(ctx, id)
	if err != nil || !maybe {
		return 0, false, err
	}
	var pos int64
	switch err := q.QueryRowContext(ctx, `SELECT rowid FROM envelopes`+where, args...).Scan(&pos); {
	case errors.Is(err, sql.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	return pos, true, nil
}

// byIDs returns the stored envelopes of ids, in no order; those not
// stored are left out.
func (s *Store) byIDs(ctx context.Context, ids []protocol.ID) ([]Record, error) {
	var recs []Record
	for _, id := range ids {
		r, err := s.Get(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case err != nil:
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// LoadIDs reads the store's directory of envelope IDs (ids.go) now,
// rather than at the first lookup by ID. The relay reads it before it
// serves: about 12 s and 300 MB at 10 million envelopes
// (docs/performance.md).
func (s *Store) LoadIDs(ctx context.Context) error {
	if err := s.ids.load(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// one returns the first record a query selects, or ErrNotFound naming what.
func (s *Store) one(ctx context.Context, what, query string, args ...any) (Record, error) {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return Record{}, fmt.Errorf("store: %s: %w", what, err)
	}
	recs, err := scan(rows)
	if err != nil {
		return Record{}, err
	}
	if len(recs) == 0 {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	return recs[0], nil
}

// AtSeq returns the ID of sender's envelope with number seq in room, and
// whether there is one.
func (s *Store) AtSeq(ctx context.Context, sender identity.PublicKey, room string, seq uint64) (protocol.ID, bool, error) {
	var b []byte
	err := s.r.QueryRowContext(ctx, `SELECT id FROM envelopes WHERE sender = ? AND room = ? AND seq = ?`,
		sender.Bytes(), room, int64(seq)).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return protocol.ID{}, false, nil
	}
	if err != nil {
		return protocol.ID{}, false, fmt.Errorf("store: envelope %d of %s in %s: %w", seq, sender.ShortFingerprint(), room, err)
	}
	return protocol.ID(b), true, nil
}

// Cursor is a position in a room's envelopes ordered by (time, ID).
type Cursor struct {
	Time int64
	ID   protocol.ID
}

// Range returns up to limit envelopes of room with since <= time < until,
// after the cursor (exclusive; a zero cursor starts at since), ordered by
// (time, ID): the page order of catch-up sync.
func (s *Store) Range(ctx context.Context, room string, since, until int64, after Cursor, limit int) ([]Record, error) {
	// The zero cursor is "from since" even when since is negative (as
	// Time 0 it would skip the times from since to 0).
	if after.Time < since || after == (Cursor{}) {
		after = Cursor{Time: since}
	}
	rows, err := s.r.QueryContext(ctx, `SELECT rowid, raw, via, received FROM envelopes
		WHERE room = ? AND time < ? AND (time > ? OR (time = ? AND id > ?))
		ORDER BY time, id LIMIT ?`,
		room, until, after.Time, after.Time, after.ID[:], limit)
	if err != nil {
		return nil, fmt.Errorf("store: range of %s: %w", room, err)
	}
	return scan(rows)
}

// LastPos returns the highest position stored, 0 if there is none.
func (s *Store) LastPos(ctx context.Context) (int64, error) {
	var pos int64
	if err := s.r.QueryRowContext(ctx, `SELECT coalesce(max(rowid), 0) FROM envelopes`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("store: last position: %w", err)
	}
	return pos, nil
}

// A Head is the highest sequence number stored of one sender in one room.
type Head struct {
	Sender identity.PublicKey
	Room   string
	Seq    uint64
}

// Heads calls f with the head of each (sender, room) stored, at most limit
// of them, and reports whether that was all of them.
func (s *Store) Heads(ctx context.Context, limit int, f func(Head)) (all bool, err error) {
	rows, err := s.r.QueryContext(ctx, `SELECT sender, room, max(seq) FROM envelopes GROUP BY sender, room LIMIT ?`, limit+1)
	if err != nil {
		return false, fmt.Errorf("store: heads: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		if n == limit {
			return false, nil
		}
		var (
			sender []byte
			h      Head
			seq    int64
		)
		if err := rows.Scan(&sender, &h.Room, &seq); err != nil {
			return false, fmt.Errorf("store: heads: %w", err)
		}
		if h.Sender, err = identity.PublicKeyFromBytes(sender); err != nil {
			return false, fmt.Errorf("store: heads: %w", err)
		}
		h.Seq = uint64(seq)
		f(h)
		n++
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("store: heads: %w", err)
	}
	return true, nil
}

// After returns up to limit envelopes of room with a position above pos,
// in position order: the order they were committed.
func (s *Store) After(ctx context.Context, room string, pos int64, limit int) ([]Record, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT rowid, raw, via, received FROM envelopes
		WHERE room = ? AND rowid > ? ORDER BY rowid LIMIT ?`, room, pos, limit)
	if err != nil {
		return nil, fmt.Errorf("store: %s after %d: %w", room, pos, err)
	}
	return scan(rows)
}

// Position returns the room and position of the envelope with ID id, or
// ErrNotFound.
func (s *Store) Position(ctx context.Context, id protocol.ID) (string, int64, error) {
	var (
		room string
		pos  int64
	)
	where, args, maybe, err := s.whereID(ctx, id)
	if err != nil {
		return "", 0, fmt.Errorf("store: position of %s: %w", id, err)
	}
	if !maybe {
		return "", 0, fmt.Errorf("%w: envelope %s", ErrNotFound, id)
	}
	err = s.r.QueryRowContext(ctx, `SELECT room, rowid FROM envelopes`+where, args...).Scan(&room, &pos)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, fmt.Errorf("%w: envelope %s", ErrNotFound, id)
	}
	if err != nil {
		return "", 0, fmt.Errorf("store: position of %s: %w", id, err)
	}
	return room, pos, nil
}

// History returns the last limit envelopes of room in display order:
// Lamport clock, then time, then ID.
func (s *Store) History(ctx context.Context, room string, limit int) ([]Record, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT rowid, raw, via, received FROM (
		SELECT rowid, raw, via, received, lamport, time, id FROM envelopes WHERE room = ?
		ORDER BY lamport DESC, time DESC, id DESC LIMIT ?) ORDER BY lamport, time, id`, room, limit)
	if err != nil {
		return nil, fmt.Errorf("store: history of %s: %w", room, err)
	}
	return scan(rows)
}

// HistoryBefore returns, in display order, the last limit envelopes of
// room that come before the one of Lamport clock lamport, time t (Unix
// ms) and ID id in that order: the page of history above it.
func (s *Store) HistoryBefore(ctx context.Context, room string, lamport uint64, t int64, id protocol.ID, limit int) ([]Record, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT rowid, raw, via, received FROM (
		SELECT rowid, raw, via, received, lamport, time, id FROM envelopes
		WHERE room = ? AND (lamport, time, id) < (?, ?, ?)
		ORDER BY lamport DESC, time DESC, id DESC LIMIT ?) ORDER BY lamport, time, id`,
		room, int64(lamport), t, id[:], limit)
	if err != nil {
		return nil, fmt.Errorf("store: history of %s before %s: %w", room, id, err)
	}
	return scan(rows)
}

// Last returns the envelope with the highest sequence number that sender
// has in room, or ErrNotFound: where the sender's hash chain continues.
func (s *Store) Last(ctx context.Context, sender identity.PublicKey, room string) (Record, error) {
	return s.one(ctx, fmt.Sprintf("last envelope of %s in %s", sender.ShortFingerprint(), room),
		`SELECT rowid, raw, via, received FROM envelopes WHERE sender = ? AND room = ? ORDER BY seq DESC LIMIT 1`,
		sender.Bytes(), room)
}

// Before returns sender's envelope in room with the highest sequence number
// below seq, or ErrNotFound.
func (s *Store) Before(ctx context.Context, sender identity.PublicKey, room string, seq uint64) (Record, error) {
	return s.one(ctx, fmt.Sprintf("envelope of %s in %s before %d", sender.ShortFingerprint(), room, seq),
		`SELECT rowid, raw, via, received FROM envelopes WHERE sender = ? AND room = ? AND seq < ? ORDER BY seq DESC LIMIT 1`,
		sender.Bytes(), room, int64(seq))
}

// MaxLamport returns the highest Lamport clock stored in room, 0 if none.
func (s *Store) MaxLamport(ctx context.Context, room string) (uint64, error) {
	var n sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT max(lamport) FROM envelopes WHERE room = ?`, room).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: Lamport clock of %s: %w", room, err)
	}
	return uint64(n.Int64), nil
}

// LastReceived returns when the newest envelope of room was received, by
// the receiver's clock; the zero time if the room has none.
func (s *Store) LastReceived(ctx context.Context, room string) (time.Time, error) {
	var n sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT max(received) FROM envelopes WHERE room = ?`, room).Scan(&n); err != nil {
		return time.Time{}, fmt.Errorf("store: last received in %s: %w", room, err)
	}
	if !n.Valid {
		return time.Time{}, nil
	}
	return time.UnixMilli(n.Int64), nil
}

// IDs returns the IDs of up to limit envelopes of room with
// since <= time < until, the earliest first.
func (s *Store) IDs(ctx context.Context, room string, since, until int64, limit int) ([]protocol.ID, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM envelopes WHERE room = ? AND time >= ? AND time < ?
		ORDER BY time, id LIMIT ?`, room, since, until, limit)
	if err != nil {
		return nil, fmt.Errorf("store: IDs of %s: %w", room, err)
	}
	defer rows.Close()
	var ids []protocol.ID
	for rows.Next() {
		var b sql.RawBytes // the driver's bytes, copied once, into ids
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("store: IDs of %s: %w", room, err)
		}
		if len(b) != len(protocol.ID{}) {
			return nil, fmt.Errorf("store: IDs of %s: a stored ID of %d bytes", room, len(b))
		}
		ids = append(ids, protocol.ID(b))
	}
	return ids, rows.Err()
}

// A Stamp tells whether a room's envelopes in a range of time have
// changed since it was taken: how many there are, and the highest
// position among them. An envelope added to the range raises Max, since
// a new envelope's position is above every stored one's and positions
// are never reused (Prune keeps the newest envelope); one taken away
// lowers Count, or Max. So two stamps of a range are equal only if it
// holds the same envelopes, and a summary of its IDs (anti-entropy's)
// can be kept with the stamp and used again while the stamp is the same.
// That holds while nothing renumbers positions: no VACUUM, which may
// renumber the rowids of a table like envelopes (whose positions relay
// subscribers hold as cursors, too).
type Stamp struct {
	Count int
	Max   int64 // 0 when Count is 0
}

// Stamp returns the stamp of room's envelopes with since <= time < until,
// counting at most limit of them: a Count of limit means that many or
// more, and its Max is only of those counted.
func (s *Store) Stamp(ctx context.Context, room string, since, until int64, limit int) (Stamp, error) {
	var st Stamp
	err := s.r.QueryRowContext(ctx, stampQuery, room, since, until, limit).Scan(&st.Count, &st.Max)
	if err != nil {
		return Stamp{}, fmt.Errorf("store: stamp of %s: %w", room, err)
	}
	return st, nil
}

// stampQuery reads a Stamp from the index on (room, time, id), which
// holds each envelope's position: no row of the table is read.
const stampQuery = `SELECT count(*), coalesce(max(pos), 0) FROM (
	SELECT rowid AS pos FROM envelopes WHERE room = ? AND time >= ? AND time < ? LIMIT ?)`

// RestoreReplay feeds the replay guard the newest protocol.WindowSize
// envelopes of every (sender, room) stream, so that after a restart the
// guard knows every stored envelope that its window covers.
func (s *Store) RestoreReplay(ctx context.Context, g *protocol.ReplayGuard) error {
	rows, err := s.r.QueryContext(ctx, `SELECT raw FROM (
		SELECT raw, sender, room, seq, row_number() OVER (PARTITION BY sender, room ORDER BY seq DESC) AS n
		FROM envelopes) WHERE n <= ? ORDER BY sender, room, seq`, protocol.WindowSize)
	if err != nil {
		return fmt.Errorf("store: restore replay state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return fmt.Errorf("store: restore replay state: %w", err)
		}
		e, err := protocol.Parse(raw)
		if err != nil {
			return fmt.Errorf("store: restore replay state: stored envelope: %w", err)
		}
		if err := g.Check(e, protocol.IDOf(raw), protocol.History); err != nil && !errors.Is(err, protocol.ErrReplay) {
			return fmt.Errorf("store: restore replay state: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: restore replay state: %w", err)
	}
	return nil
}

// isChange selects the member-list changes of private rooms (kind 2, the
// envelope's second byte), as the index envelopes_changes does; notChange
// the rest. Retention never deletes a change: without its whole log, a
// private room has no member list.
const (
	isChange  = "substr(raw, 2, 1) = x'02'"
	notChange = "substr(raw, 2, 1) != x'02'"
)

// Changes returns the member-list changes of private room room in
// resolution order (Lamport clock, then ID).
func (s *Store) Changes(ctx context.Context, room string) ([]Record, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT rowid, raw, via, received FROM envelopes
		WHERE room = ? AND `+isChange+` ORDER BY lamport, id`, room)
	if err != nil {
		return nil, fmt.Errorf("store: member list of %s: %w", room, err)
	}
	return scan(rows)
}

// pruneChunk is the most envelopes one transaction of retention deletes.
// The store has one writer: a relay's committer waits while a chunk is
// deleted, so each is short, and publishes go on between them.
const pruneChunk = 2000

// Prune deletes the envelopes received before cutoff and returns how many.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int64, error) {
	// The newest envelope stays, so that positions never go back to 1 and
	// a position is never reused. The old envelopes are found with the
	// index on received: with "rowid <" SQLite would otherwise walk the
	// table in rowid order, reading every envelope stored (seconds for a
	// million, on the writer's one connection) to delete none.
	n, err := s.pruneChunks(ctx, pruneOld, cutoff.UnixMilli())
	if err != nil {
		return n, fmt.Errorf("store: prune: %w", err)
	}
	return n, nil
}

// pruneOld deletes up to a number of envelopes received before a time,
// but for the newest envelope and the member-list changes.
const pruneOld = `DELETE FROM envelopes WHERE rowid IN (
	SELECT rowid FROM envelopes INDEXED BY envelopes_received WHERE received < ?
	AND +rowid < (SELECT max(rowid) FROM envelopes) AND ` + notChange + ` LIMIT ?)`

// pruneChunks runs del, a DELETE whose last parameter is how many
// envelopes it may delete, with args and pruneChunk, until it deletes
// fewer than that, each time in a transaction of its own. It returns how
// many it deleted in all.
func (s *Store) pruneChunks(ctx context.Context, del string, args ...any) (int64, error) {
	args = append(args, pruneChunk)
	var total int64
	for {
		n, err := s.deleteOnce(ctx, del, args...)
		if err != nil {
			return total, err
		}
		total += n
		if n < pruneChunk {
			return total, nil
		}
	}
}

// deleteOnce runs del, a DELETE of envelopes, in a transaction of its
// own, and returns how many it deleted. With the store's ID directory it
// takes the deleted envelopes out of it, once that is committed.
func (s *Store) deleteOnce(ctx context.Context, del string, args ...any) (int64, error) {
	if err := s.lockWrites(ctx); err != nil {
		return 0, err
	}
	defer s.unlockWrites()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, del+` RETURNING rowid, id`, args...)
	if err != nil {
		return 0, err
	}
	var gone []idEntry
	for rows.Next() {
		var (
			pos int64
			id  []byte
		)
		if err := rows.Scan(&pos, &id); err != nil {
			rows.Close()
			return 0, err
		}
		if len(id) < 8 {
			rows.Close()
			return 0, fmt.Errorf("envelope at %d has an ID of %d bytes", pos, len(id))
		}
		gone = append(gone, idEntry{idPrefix(id), pos})
	}
	if err := rows.Close(); err != nil {
		return 0, err
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	s.ids.removeAll(gone)
	return int64(len(gone)), nil
}

// PruneBytes deletes the oldest envelopes until the rest hold at most
// max bytes, and returns how many it deleted. The newest one always
// stays, and so does every envelope received at or after keepAfter.
func (s *Store) PruneBytes(ctx context.Context, max int64, keepAfter time.Time) (int64, error) {
	var cut sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT max(rowid) FROM (
		SELECT rowid, sum(length(raw)) OVER (ORDER BY rowid DESC) AS kept FROM envelopes)
		WHERE kept > ?`, max).Scan(&cut)
	if err != nil {
		return 0, fmt.Errorf("store: prune to %d bytes: %w", max, err)
	}
	if !cut.Valid {
		return 0, nil
	}
	n, err := s.pruneChunks(ctx, `DELETE FROM envelopes WHERE rowid IN (
		SELECT rowid FROM envelopes WHERE rowid <= ? AND received < ?
		AND rowid < (SELECT max(rowid) FROM envelopes) AND `+notChange+` ORDER BY rowid LIMIT ?)`,
		cut.Int64, keepAfter.UnixMilli())
	if err != nil {
		return n, fmt.Errorf("store: prune to %d bytes: %w", max, err)
	}
	return n, nil
}

// Reserved implements protocol.SeqReservations.
func (s *Store) Reserved(room string) (uint64, error) {
	var n int64
	err := s.w.QueryRow(`SELECT reserved FROM seq_reservations WHERE room = ?`, room).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: reserved sequence numbers of %s: %w", room, err)
	}
	return uint64(n), nil
}

// Reserve implements protocol.SeqReservations: it returns once the
// reservation is committed. It never lowers a reservation.
func (s *Store) Reserve(room string, n uint64) error {
	if n > protocol.MaxCounter {
		return fmt.Errorf("store: reserve %d in %s: above the largest sequence number", n, room)
	}
	// A reservation must survive a power cut, or a number could be used
	// twice: this one transaction is synced to disk (synchronous=FULL)
	// on the writer's one connection, held for it.
	ctx := context.Background()
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store: reserve sequence numbers of %s: %w", room, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = FULL`); err != nil {
		return fmt.Errorf("store: reserve sequence numbers of %s: %w", room, err)
	}
	defer conn.ExecContext(ctx, `PRAGMA synchronous = `+s.sync)
	_, err = conn.ExecContext(ctx, `INSERT INTO seq_reservations (room, reserved) VALUES (?, ?)
		ON CONFLICT (room) DO UPDATE SET reserved = max(reserved, excluded.reserved)`, room, int64(n))
	if err != nil {
		return fmt.Errorf("store: reserve sequence numbers of %s: %w", room, err)
	}
	return nil
}

func scan(rows *sql.Rows) ([]Record, error) {
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var (
			r        Record
			received int64
		)
		if err := rows.Scan(&r.Pos, &r.Raw, &r.Via, &received); err != nil {
			return nil, fmt.Errorf("store: read: %w", err)
		}
		e, err := protocol.Parse(r.Raw)
		if err != nil {
			return nil, fmt.Errorf("store: stored envelope does not parse: %w", err)
		}
		r.Env, r.ID, r.Received = e, protocol.IDOf(r.Raw), time.UnixMilli(received)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: read: %w", err)
	}
	return out, nil
}

// wrapErr is err with what was being done said before it, or nil when err
// is nil.
func wrapErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

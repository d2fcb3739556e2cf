package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/lockfile"
	"github.com/parleychat/parley/store"
)

// The audit commands read the data folder's store directly: they work
// while the relay runs (SQLite readers do not block its writer) and while
// it is stopped.

// openAuditStore opens the store in dir for the audit commands. While a
// relay runs on dir, the store is opened as it is (store.AsIs): that relay
// may be of an older version than this command, and its schema must not
// change under it (a store that needs migrating is refused, with a word
// to restart the relay).
func openAuditStore(dir string, running bool) (*store.Store, identity.PublicKey, error) {
	key, err := LoadKey(dir)
	if err != nil {
		return nil, identity.PublicKey{}, err
	}
	opts := []store.Option{store.Durable()}
	if running {
		opts = append(opts, store.AsIs())
	}
	st, err := openStore(dir, DBFile, opts...)
	if errors.Is(err, store.ErrOldSchema) {
		return nil, identity.PublicKey{}, fmt.Errorf("relay: the relay running on %s is of an older version than this command; restart it with this one first: %w", dir, err)
	}
	if err != nil {
		return nil, identity.PublicKey{}, err
	}
	return st, key.Public(), nil
}

// relayRuns reports whether a relay holds the lock of the data folder dir
// (or the lock cannot be taken, which is treated alike).
func relayRuns(dir string) bool {
	lock, err := lockfile.Acquire(filepath.Join(dir, LockFile))
	if err != nil {
		return true
	}
	lock.Release()
	return false
}

// auditPage is how many records the commands read at a time.
const auditPage = 10000

func allEntries(ctx context.Context, st *store.Store) ([]audit.Entry, error) {
	var all []audit.Entry
	for {
		page, err := st.AuditEntries(ctx, int64(len(all)), auditPage)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < auditPage {
			return all, nil
		}
	}
}

// AuditVerify checks the whole audit log of the relay in dir against its
// signed checkpoints; a *audit.Problem names the first bad record.
func AuditVerify(ctx context.Context, dir string) (audit.Result, error) {
	// A stopped relay has a checkpoint over every record (a commit
	// writes both; serve refuses a log that has more): only while a relay
	// runs, holding the data folder's lock, may records lie beyond the
	// newest checkpoint. Held here, the lock keeps a relay from starting
	// meanwhile.
	lock, lockErr := lockfile.Acquire(filepath.Join(dir, LockFile))
	if lockErr == nil {
		defer lock.Release()
	}
	running := lockErr != nil
	st, relay, err := openAuditStore(dir, running)
	if err != nil {
		return audit.Result{}, err
	}
	defer st.Close()
	// The checkpoints first, then the records: on a running relay,
	// records committed in between are beyond the newest checkpoint read,
	// and left for the next run (it appends all the time).
	cps, err := st.Checkpoints(ctx)
	if err != nil {
		return audit.Result{}, err
	}
	entries, err := allEntries(ctx, st)
	if err != nil {
		return audit.Result{}, err
	}
	var newest int64
	for _, c := range cps {
		if cp, err := audit.Open(c, relay); err == nil && cp.Size > newest {
			newest = cp.Size
		}
	}
	for running && len(entries) > 0 && entries[len(entries)-1].Index >= newest && int64(len(entries)) > newest {
		entries = entries[:len(entries)-1]
	}
	return audit.Verify(relay, entries, cps)
}

// AuditFilter selects records for AuditShow.
type AuditFilter struct {
	Since    time.Time
	Identity string // fingerprint
	Room     string
	Kind     audit.Kind // 0: any
	Limit    int        // 0: all
}

// AuditShow returns the records of the log in dir that pass f, oldest first.
func AuditShow(ctx context.Context, dir string, f AuditFilter) ([]audit.View, error) {
	st, _, err := openAuditStore(dir, relayRuns(dir))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var out []audit.View
	for from := int64(0); ; {
		page, err := st.AuditEntries(ctx, from, auditPage)
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			r, err := audit.ParseRecord(e.Data)
			if err != nil {
				return nil, fmt.Errorf("audit: record %d: %w (run relay audit verify)", e.Index, err)
			}
			switch {
			case r.Time < f.Since.UnixMilli(),
				f.Identity != "" && (r.Identity.IsZero() || r.Identity.Fingerprint() != f.Identity),
				f.Room != "" && r.Room != f.Room,
				f.Kind != 0 && r.Kind != f.Kind:
				continue
			}
			out = append(out, r.View(e.Index))
			if f.Limit > 0 && len(out) > f.Limit {
				out = out[1:] // the newest Limit
			}
		}
		if len(page) < auditPage {
			return out, nil
		}
		from = page[len(page)-1].Index + 1
	}
}

// Export is an audit log written to a file: enough to verify it anywhere,
// with the relay's public key and nothing else.
type Export struct {
	Relay       string        `json:"relay"` // ed25519:..., the key that signs the checkpoints
	Origin      string        `json:"origin"`
	Checkpoints []string      `json:"checkpoints"` // signed notes, base64
	Records     []ExportEntry `json:"records"`
}

// ExportEntry is one record of an Export.
type ExportEntry struct {
	Index int64  `json:"index"`
	Data  string `json:"data"` // the encoded record, base64
}

// AuditExport writes the log of the relay in dir, with its checkpoints, to w.
func AuditExport(ctx context.Context, dir string, w io.Writer) (int, error) {
	st, relay, err := openAuditStore(dir, relayRuns(dir))
	if err != nil {
		return 0, err
	}
	defer st.Close()
	// The checkpoints first: records appended meanwhile are then beyond
	// the newest checkpoint read, and left out below.
	cps, err := st.Checkpoints(ctx)
	if err != nil {
		return 0, err
	}
	entries, err := allEntries(ctx, st)
	if err != nil {
		return 0, err
	}
	ex := Export{Relay: relay.String(), Origin: audit.Origin(relay)}
	var newest int64
	for _, c := range cps {
		ex.Checkpoints = append(ex.Checkpoints, base64.StdEncoding.EncodeToString(c))
		if cp, err := audit.Open(c, relay); err == nil && cp.Size > newest {
			newest = cp.Size
		}
	}
	for _, e := range entries {
		if e.Index >= newest {
			break
		}
		ex.Records = append(ex.Records, ExportEntry{Index: e.Index, Data: base64.StdEncoding.EncodeToString(e.Data)})
	}
	enc := json.NewEncoder(w)
	return len(ex.Records), enc.Encode(ex)
}

// ErrNotExport: the file given to VerifyExport is not an audit export.
var ErrNotExport = errors.New("audit: not an audit export (relay audit export writes them)")

// VerifyExport checks an exported log against the relay's key, with no
// access to the relay.
func VerifyExport(r io.Reader, relay identity.PublicKey) (audit.Result, error) {
	var ex Export
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ex); err != nil {
		return audit.Result{}, fmt.Errorf("%w: %w", ErrNotExport, err)
	}
	if dec.More() {
		return audit.Result{}, fmt.Errorf("%w: more after the export's JSON object", ErrNotExport)
	}
	if ex.Relay == "" || ex.Origin == "" {
		return audit.Result{}, fmt.Errorf("%w: it names no relay or origin", ErrNotExport)
	}
	if len(ex.Checkpoints) == 0 {
		// Even an empty log's export: with no signed checkpoint there is
		// nothing the relay vouched for, and nothing to verify.
		return audit.Result{}, &audit.Problem{Index: -1, Reason: fmt.Sprintf("the export holds no signed checkpoint (and %d records): nothing the relay signed to check it against", len(ex.Records))}
	}
	cps := make([][]byte, len(ex.Checkpoints))
	for i, c := range ex.Checkpoints {
		b, err := base64.StdEncoding.DecodeString(c)
		if err != nil {
			return audit.Result{}, &audit.Problem{Index: -1, Reason: fmt.Sprintf("checkpoint %d is not base64", i)}
		}
		cps[i] = b
	}
	entries := make([]audit.Entry, len(ex.Records))
	for i, e := range ex.Records {
		b, err := base64.StdEncoding.DecodeString(e.Data)
		if err != nil {
			return audit.Result{}, &audit.Problem{Index: e.Index, Reason: "not base64"}
		}
		entries[i] = audit.Entry{Index: e.Index, Data: b}
	}
	return audit.Verify(relay, entries, cps)
}

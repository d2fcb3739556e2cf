package audit

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// ErrSecurity: the relay showed an audit receipt or checkpoint that does
// not check out, or a log inconsistent with one it showed before: it
// forked or rewrote its log. This is a security error, for the person to
// see, never a failure to retry. Every detection goes through
// Witness.Fail, which makes it final.
var ErrSecurity = errors.New("relay: SECURITY: the relay's audit log does not check out")

// A Witness holds one relay to its audit log, for a client: it checks
// each publish's receipt (a checkpoint signed by the relay, a record of
// exactly that publish, its inclusion proof), queues the checkpoints seen
// for consistency checks against each other and the one kept, and keeps
// the newest one proved, for the next session to hold the relay to. It
// does no I/O: the client asks the relay for consistency proofs and hands
// them to Check. It is safe for concurrent use.
//
// The first security error it finds is sticky and final, as in
// x/mod/sumdb: from then on every check fails with it.
type Witness struct {
	mu       sync.Mutex
	relay    identity.PublicKey // the key checkpoints are signed with; set by SetRelay
	kept     *Checkpoint        // proved consistent with every one before
	keptNote []byte
	keptRaw  []byte      // a kept note not opened yet: the relay's key is not known yet
	lastSeen *Checkpoint // the last one queued
	pending  []Seen      // seen, not proved yet
	err      error       // the security error found, final

	proofs ProofChecker // the receipts' inclusion proofs, under their own lock

	// The last checkpoint opened, and its note: receipts of one commit
	// share it, and its signature is checked once.
	openMu     sync.Mutex
	lastNote   []byte
	lastOpened Checkpoint
	opener     *Opener
	openerKey  identity.PublicKey
}

// Seen is a signed checkpoint seen, opened.
type Seen struct {
	Checkpoint Checkpoint
	Note       []byte
}

// NewWitness returns a witness that holds the relay to kept, the newest
// signed checkpoint of this relay that an earlier session kept (nil: none).
// It is opened once the relay's key is known (SetRelay).
func NewWitness(kept []byte) *Witness { return &Witness{keptRaw: kept} }

// SetRelay gives the key the relay proved. A kept checkpoint that is not
// the relay's is an error (ErrCheckpoint): the application kept another
// relay's, or a damaged one.
func (w *Witness) SetRelay(key identity.PublicKey) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.relay = key
	if w.keptRaw == nil {
		return nil
	}
	cp, err := Open(w.keptRaw, key)
	if err != nil {
		return fmt.Errorf("audit: the kept checkpoint: %w", err)
	}
	w.kept, w.keptNote, w.keptRaw = &cp, w.keptRaw, nil
	return nil
}

// Fail is the one funnel of security errors: it makes err, which must
// wrap ErrSecurity, the witness's final error, unless one was found
// before, and returns the final one.
func (w *Witness) Fail(err error) error {
	if !errors.Is(err, ErrSecurity) {
		err = fmt.Errorf("%w: %w", ErrSecurity, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// Err returns the security error found, if any.
func (w *Witness) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Checkpoint returns the newest signed checkpoint proved consistent with
// every one seen before, for the application to keep; nil before the
// first.
func (w *Witness) Checkpoint() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.keptRaw != nil {
		return w.keptRaw
	}
	return w.keptNote
}

// Kept returns the checkpoint kept, if there is one.
func (w *Witness) Kept() (Seen, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.kept == nil {
		return Seen{}, false
	}
	return Seen{*w.kept, w.keptNote}, true
}

// Receipt is what a relay's acknowledgement of a publish says of its
// audit record.
type Receipt struct {
	Index         uint64     // the record's index in the log
	Time          int64      // the record's time field
	PolicyVersion uint64     // the record's policy version field
	Checkpoint    []byte     // the signed checkpoint of the commit
	Proof         [][32]byte // the record's inclusion proof in its tree
}

// CheckReceipt checks the receipt of a publish of raw, acknowledged with
// id: a checkpoint signed by the relay, a record of exactly this publish,
// and the proof that the record is in the checkpoint's tree; then it
// queues the checkpoint for its consistency check (Take, Check). A nil
// receipt is an error for a publish stored new by a relay that gave
// receipts before. It returns the final error once one was found.
func (w *Witness) CheckReceipt(id protocol.ID, stored bool, r *Receipt, raw []byte) error {
	if err := w.Err(); err != nil {
		return err
	}
	if r == nil {
		if _, kept := w.Kept(); kept && stored {
			return w.Fail(errors.New("an acknowledgement without its audit receipt from a relay that gave them before"))
		}
		return nil
	}
	cp, err := w.open(r.Checkpoint)
	if err != nil {
		return w.Fail(err)
	}
	// The record of this publish, as the relay must have written it:
	// only its time and policy version come from the relay.
	room, sender, err := protocol.Addressing(raw)
	if err != nil {
		return err // not the relay's doing: the bytes are ours
	}
	var detail string
	if len(raw) > 1 && protocol.Kind(raw[1]) == protocol.KindMember {
		env, err := protocol.Parse(raw)
		if err != nil {
			return err
		}
		detail = MemberDetail(env)
	}
	var buf [256]byte // a publish record is at most 157 bytes, but a member change's
	record, err := (&Record{Kind: KindPublish, Time: r.Time, PolicyVersion: r.PolicyVersion, Identity: sender,
		Message: id, Size: uint32(len(raw)), Path: PathRelay, Room: room, Detail: detail}).AppendBinary(buf[:0])
	if err != nil {
		return w.Fail(fmt.Errorf("receipt: %w", err))
	}
	if int64(r.Index) >= cp.Size {
		return w.Fail(fmt.Errorf("record %d is outside the checkpoint's %d records", r.Index, cp.Size))
	}
	if err := w.proofs.CheckHashes(r.Proof, cp.Size, cp.Root, int64(r.Index), tlog.RecordHash(record)); err != nil {
		return w.Fail(fmt.Errorf("record %d is not in the signed tree: %w", r.Index, err))
	}
	w.observe(cp, r.Checkpoint)
	return nil
}

// open opens a signed checkpoint, remembering the last one: the
// acknowledgements of one commit share it, and its signature is checked
// once.
func (w *Witness) open(note []byte) (Checkpoint, error) {
	last := func() (Checkpoint, bool) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.lastOpened, w.lastNote != nil && bytes.Equal(w.lastNote, note)
	}
	if cp, ok := last(); ok {
		return cp, nil
	}
	// The acknowledgements of one commit arrive together: one of them
	// checks the signature, the others wait for it.
	w.openMu.Lock()
	defer w.openMu.Unlock()
	if cp, ok := last(); ok {
		return cp, nil
	}
	w.mu.Lock()
	key := w.relay
	w.mu.Unlock()
	if w.opener == nil || !w.openerKey.Equal(key) {
		o, err := NewOpener(key)
		if err != nil {
			return Checkpoint{}, err
		}
		w.opener, w.openerKey = o, key
	}
	cp, err := w.opener.Open(note)
	if err != nil {
		return cp, err
	}
	w.mu.Lock()
	w.lastNote, w.lastOpened = note, cp
	w.mu.Unlock()
	return cp, nil
}

// MaxPending bounds the checkpoints waiting for their consistency check:
// past it, Pending reports true, and the client should wait for the
// checks before it publishes more.
const MaxPending = 256

// observe queues a checkpoint whose signature and receipt checked out.
func (w *Witness) observe(cp Checkpoint, note []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lastSeen != nil && w.lastSeen.Size == cp.Size && w.lastSeen.Root == cp.Root {
		return // the same checkpoint as the last: checked or queued
	}
	w.lastSeen = &cp
	w.pending = append(w.pending, Seen{cp, note})
}

// Pending reports how many checkpoints wait for their consistency check.
func (w *Witness) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// Take takes the checkpoints waiting for their consistency check.
func (w *Witness) Take() []Seen {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := w.pending
	w.pending = nil
	return seen
}

// PutBack puts checkpoints taken back in front of the queue: their check
// could not be done (no connection), and waits for the next try.
func (w *Witness) PutBack(seen []Seen) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = slices.Concat(seen, w.pending)
}

// Queue queues checkpoints for a consistency check, as CheckReceipt does:
// for tests, and for a client that learns checkpoints otherwise.
func (w *Witness) Queue(seen ...Seen) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = append(w.pending, seen...)
}

// Keep makes s the checkpoint kept, proved or not: for tests.
func (w *Witness) Keep(s Seen) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.kept, w.keptNote = &s.Checkpoint, s.Note
}

// A Prover asks the relay for proofs that its log of newSize records
// extends each of its logs of the sizes in olds (tlog.TreeProof), in
// that order. An error that wraps ErrSecurity is the relay's refusal to
// prove what it signed; any other is a failure to ask (try again later).
type Prover func(newSize int64, olds []int64) ([]tlog.TreeProof, error)

// Check proves every checkpoint in seen, and the one kept, consistent
// with the newest of them, with proofs from prove, and keeps that one.
// An error wrapping ErrSecurity is final (Fail); any other is prove's,
// and the checkpoints can be checked again later (PutBack).
func (w *Witness) Check(seen []Seen, prove Prover) error {
	if err := w.Err(); err != nil {
		return err
	}
	if kept, ok := w.Kept(); ok {
		// Clip: seen may be a part of a longer list, whose next
		// element append would overwrite.
		seen = append(slices.Clip(seen), kept)
	}
	if len(seen) == 0 {
		return nil
	}
	newest := seen[0]
	for _, s := range seen[1:] {
		if s.Checkpoint.Size > newest.Checkpoint.Size {
			newest = s
		}
	}
	var olds []Seen
	for _, s := range seen {
		switch {
		case s.Checkpoint.Size == newest.Checkpoint.Size && s.Checkpoint.Root != newest.Checkpoint.Root:
			return w.Fail(fmt.Errorf("two different logs of %d records (a fork)", s.Checkpoint.Size))
		case s.Checkpoint.Size < newest.Checkpoint.Size:
			olds = append(olds, s)
		}
	}
	if len(olds) > 0 {
		sizes := make([]int64, len(olds))
		for i, o := range olds {
			sizes[i] = o.Checkpoint.Size
		}
		proofs, err := prove(newest.Checkpoint.Size, sizes)
		if errors.Is(err, ErrSecurity) {
			return w.Fail(err)
		}
		if err != nil {
			return err
		}
		if len(proofs) != len(olds) {
			return w.Fail(fmt.Errorf("%d consistency proofs for %d asked", len(proofs), len(olds)))
		}
		for i, o := range olds {
			if err := tlog.CheckTree(proofs[i], newest.Checkpoint.Size, newest.Checkpoint.Root, o.Checkpoint.Size, o.Checkpoint.Root); err != nil {
				return w.Fail(fmt.Errorf("the log of %d records does not extend the log of %d records it showed: %w",
					newest.Checkpoint.Size, o.Checkpoint.Size, err))
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.kept == nil || newest.Checkpoint.Size > w.kept.Size {
		cp := newest.Checkpoint
		w.kept, w.keptNote = &cp, newest.Note
	}
	return nil
}

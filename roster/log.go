package roster

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// Errors that callers branch on with errors.Is. An error from this package
// wraps exactly one of them.
var (
	// ErrRefused: no state of the room could let this change or post count
	// (not a change of this room, a parent that was refused, an author
	// with no admin role among the change's ancestors, a sender who is
	// not a member). The peer that sent it is at fault; a relay answers
	// with wire.CodeNotMember.
	ErrRefused = errors.New("roster: refused")
	// ErrWaiting: the change or post names a change not known yet. Hold
	// it (bounded) and offer it again when that change arrives. The zero
	// ID stands for "an admin role not known yet", which a join whose
	// issuer is not known as an admin waits for: offer it again after
	// any change that makes an admin.
	ErrWaiting = errors.New("roster: waiting for an earlier change")
	// ErrRemoved: the post's sender was a member at the head it names
	// but was removed before it was made, or was removed before that
	// head. A peer that had not heard of the removal forwarded it in
	// good faith: refuse it, do not punish the forwarder.
	ErrRemoved = errors.New("roster: sender removed")
)

// Member is one person on a room's member list, as resolved.
type Member struct {
	Key   identity.PublicKey
	Admin bool
	// Since is the change that (last) made them a member.
	Since protocol.ID

	periods  []period  // of membership, in order; the last open while a member
	removals []*change // every removal of them by someone allowed to, in order
}

// period is one stretch of membership, by places in the order.
type period struct {
	added, removedAt int // removedAt is -1 while open
	removedTime      int64
}

func (m *Member) current() bool {
	return len(m.periods) > 0 && m.periods[len(m.periods)-1].removedAt < 0
}

// Invite is an invite as the member list knows it: recorded by its
// issuer (OpInvite), used by joins, or revoked.
type Invite struct {
	Key     identity.PublicKey
	Issuer  identity.PublicKey
	Expires int64 // Unix seconds
	Uses    int
	Used    int
	Revoked bool
}

// change is one accepted change of the log.
type change struct {
	id    protocol.ID
	env   *protocol.Envelope
	c     *protocol.Change
	clock uint64 // its place in the graph: above every parent's (see doc.go)
	pos   int    // its place in the order
}

// Log is one private room's member list: the changes accepted so far and
// the state they resolve to. It is safe for concurrent use.
type Log struct {
	room string

	mu      sync.RWMutex
	changes map[protocol.ID]*change
	order   []*change // by (clock, time, ID)
	heads   map[protocol.ID]bool
	granted map[identity.PublicKey]bool // made an admin by some known change
	refused map[protocol.ID]bool        // changes refused: a change naming one is refused too
	genesis *change
	// The revocations of each invite and the removals and demotions of
	// each person, whatever their place: they void the joins they did
	// not see (joinVoid).
	revokes, demotions map[identity.PublicKey][]*change
	joinsBy            map[identity.PublicKey]bool // issuers and invite keys that joins used
	// rank is each admin's seniority: 0 for the creator, else the
	// lowest clock of a change that made them an admin. A removal by a
	// senior admin voids the removed admin's changes it did not see
	// (outranked).
	rank     map[identity.PublicKey]uint64
	authored map[identity.PublicKey]bool    // made an admin's change
	latest   map[identity.PublicKey]*change // the latest change that shows their role (own, or adding them)
	st       state
	dirty    bool // st must be resolved again from the start
}

// state is what the changes in order resolve to.
type state struct {
	name    string
	members map[identity.PublicKey]*Member
	invites map[identity.PublicKey]*Invite
}

// maxRefused bounds the memory of refused changes.
const maxRefused = 4096

// NewLog returns the empty log of private room room.
func NewLog(room string) *Log {
	return &Log{room: room, changes: make(map[protocol.ID]*change), heads: make(map[protocol.ID]bool),
		granted: make(map[identity.PublicKey]bool), refused: make(map[protocol.ID]bool),
		revokes: make(map[identity.PublicKey][]*change), demotions: make(map[identity.PublicKey][]*change),
		joinsBy: make(map[identity.PublicKey]bool),
		rank:    make(map[identity.PublicKey]uint64), authored: make(map[identity.PublicKey]bool),
		latest: make(map[identity.PublicKey]*change), st: newState()}
}

func newState() state {
	return state{members: make(map[identity.PublicKey]*Member), invites: make(map[identity.PublicKey]*Invite)}
}

// Room returns the room's ID.
func (l *Log) Room() string { return l.room }

func (l *Log) parse(env *protocol.Envelope) (*protocol.Change, error) {
	if env.Kind != protocol.KindMember || env.Room != l.room {
		return nil, fmt.Errorf("%w: %s envelope of room %s is not a change of %s", ErrRefused, env.Kind, env.Room, l.room)
	}
	c, err := protocol.ParseChange(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return c, nil
}

// Check judges a verified KindMember envelope as Add would, without
// adding it: nil if Add would take it (or has), else the IDs it waits for
// with an error wrapping ErrWaiting, or an error wrapping ErrRefused. A
// validator checks first and adds once the replay guard has passed it.
func (l *Log) Check(env *protocol.Envelope, id protocol.ID) ([]protocol.ID, error) {
	c, err := l.parse(env)
	if err != nil {
		return nil, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if _, ok := l.changes[id]; ok {
		return nil, nil
	}
	return l.admissible(env, c)
}

// Add adds a verified KindMember envelope of the room (its signature and
// payload checked: protocol.CheckPayload) to the log. It returns the IDs
// the change waits for with an error wrapping ErrWaiting, or an error
// wrapping ErrRefused. Adding a change twice is not an error.
func (l *Log) Add(env *protocol.Envelope, id protocol.ID) (missing []protocol.ID, err error) {
	c, err := l.parse(env)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.changes[id]; ok {
		return nil, nil
	}
	if missing, err := l.admissible(env, c); err != nil {
		if errors.Is(err, ErrRefused) {
			if len(l.refused) >= maxRefused {
				clear(l.refused)
			}
			l.refused[id] = true
		}
		return missing, err
	}
	ch := &change{id: id, env: env, c: c, clock: l.clockOf(c)}
	l.changes[id] = ch
	for _, p := range c.Parents {
		delete(l.heads, p)
	}
	l.heads[id] = true
	l.index(ch)
	l.insert(ch)
	return nil, nil
}

// clockOf is a new change's clock: one above its parents' and, for a
// join, above its invite's, which is the issuer's clock when it signed.
// The graph sets it, not the signer, so nobody can freeze the list by
// dating a change at the end of time.
func (l *Log) clockOf(c *protocol.Change) uint64 {
	var top uint64
	if c.Op == protocol.OpJoin {
		top = c.Cap.Lamport
	}
	for _, p := range c.Parents {
		top = max(top, l.changes[p].clock)
	}
	return top + 1
}

// index records what a change means beyond its place: the admins it
// makes, the invites it revokes, the people it removes or demotes, the
// invites joins use. It runs under mu.
func (l *Log) index(ch *change) {
	env, c := ch.env, ch.c
	l.noteLatest(env.Sender, ch)
	switch c.Op {
	case protocol.OpCreate:
		l.granted[env.Sender] = true
		l.rank[env.Sender] = 0
		if l.genesis == nil || compare(ch, l.genesis) < 0 {
			l.genesis = ch
		}
	case protocol.OpDirect:
		// A direct room has no admins: nobody may change its list.
		if l.genesis == nil || compare(ch, l.genesis) < 0 {
			l.genesis = ch
		}
	case protocol.OpAdd:
		l.noteLatest(c.Target, ch)
	case protocol.OpAdmin:
		l.granted[c.Target] = true
		l.noteLatest(c.Target, ch)
		if r, ok := l.rank[c.Target]; !ok || ch.clock < r {
			l.rank[c.Target] = ch.clock
			l.dirty = l.dirty || len(l.demotions[c.Target]) > 0 || l.authored[c.Target]
		}
	case protocol.OpRevoke:
		l.revokes[c.Target] = append(l.revokes[c.Target], ch)
		l.dirty = l.dirty || l.joinsBy[c.Target]
	case protocol.OpRemove, protocol.OpUnadmin:
		l.demotions[c.Target] = append(l.demotions[c.Target], ch)
		l.dirty = l.dirty || l.joinsBy[c.Target] || l.authored[c.Target]
	case protocol.OpJoin:
		l.joinsBy[c.Cap.Issuer], l.joinsBy[c.Cap.Key] = true, true
	}
	if adminOp(env, c) {
		l.authored[env.Sender] = true
	}
}

// noteLatest remembers ch as the latest change that shows key's role, if
// it sorts after the one remembered.
func (l *Log) noteLatest(key identity.PublicKey, ch *change) {
	if old := l.latest[key]; old == nil || compare(old, ch) < 0 {
		l.latest[key] = ch
	}
}

// adminOp reports whether c is a change only an admin may make.
func adminOp(env *protocol.Envelope, c *protocol.Change) bool {
	return c.Op != protocol.OpCreate && c.Op != protocol.OpJoin && c.Op != protocol.OpDirect && !selfChange(env, c)
}

// admissible checks what does not depend on the order: the parents, and
// whether the author could ever be allowed the change, judged by the
// change's own ancestors so that every peer judges it alike, whatever
// else it knows. It runs under mu.
func (l *Log) admissible(env *protocol.Envelope, c *protocol.Change) ([]protocol.ID, error) {
	var missing []protocol.ID
	for _, p := range c.Parents {
		if l.refused[p] {
			return nil, fmt.Errorf("%w: %s change names refused change %s as its parent", ErrRefused, c.Op, p)
		}
		if _, ok := l.changes[p]; !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return missing, fmt.Errorf("%w: %d parent(s) of a %s change not known yet", ErrWaiting, len(missing), c.Op)
	}
	for _, p := range c.Parents {
		if l.changes[p].c.Op == protocol.OpDirect {
			return nil, fmt.Errorf("%w: %s change in direct room %s, whose list never changes", ErrRefused, c.Op, l.room)
		}
	}
	switch {
	case c.Op == protocol.OpCreate, c.Op == protocol.OpDirect:
		return nil, nil
	case c.Op == protocol.OpJoin:
		if c.Cap.Lamport > protocol.MaxCounter {
			return nil, fmt.Errorf("%w: invite's clock %d is above %d", ErrRefused, c.Cap.Lamport, uint64(protocol.MaxCounter))
		}
		// A joiner knows nothing of the room but its invite: its own
		// join is the first change its log holds, and resolves once the
		// rest arrives. Where the room is known, a join waits until its
		// issuer is known as an admin; one that never is expires.
		if l.genesis != nil && !l.granted[c.Cap.Issuer] {
			return []protocol.ID{{}}, fmt.Errorf("%w: invite issued by %s, not known as an admin of %s", ErrWaiting, c.Cap.Issuer.ShortFingerprint(), l.room)
		}
		// A join that cannot count (revoked, used up) is kept all the
		// same: whether it counts depends on the order, and a peer that
		// dropped what another kept would refuse the changes that name
		// it. An expired one is refused by its bytes (CheckChange).
		return nil, nil
	case selfChange(env, c):
		if !l.evidence(c.Parents, env.Sender, memberEvidence) {
			return nil, fmt.Errorf("%w: %s of %s, who is not a member among the change's ancestors", ErrRefused, c.Op, env.Sender.ShortFingerprint())
		}
		return nil, nil
	}
	if !l.evidence(c.Parents, env.Sender, adminEvidence) {
		return nil, fmt.Errorf("%w: %s by %s, not an admin among the change's ancestors", ErrRefused, c.Op, env.Sender.ShortFingerprint())
	}
	return nil, nil
}

// selfChange reports whether c is its author leaving or stepping down,
// which any member may do.
func selfChange(env *protocol.Envelope, c *protocol.Change) bool {
	return (c.Op == protocol.OpRemove || c.Op == protocol.OpUnadmin) && c.Target == env.Sender
}

// adminEvidence reports whether change ch shows that key was made an
// admin: it made them one, or they made an admin's change (which was
// admitted only with such evidence before it).
func adminEvidence(ch *change, key identity.PublicKey) bool {
	switch c := ch.c; {
	case c.Op == protocol.OpCreate:
		return ch.env.Sender == key
	case c.Op == protocol.OpAdmin && c.Target == key:
		return true
	case c.Op == protocol.OpJoin, c.Op == protocol.OpDirect, selfChange(ch.env, c):
		return false
	}
	return ch.env.Sender == key
}

// memberEvidence reports whether change ch shows that key was a member:
// it added them, or they made it.
func memberEvidence(ch *change, key identity.PublicKey) bool {
	switch c := ch.c; c.Op {
	case protocol.OpAdd, protocol.OpAdmin, protocol.OpDirect:
		if c.Target == key {
			return true
		}
	}
	return ch.env.Sender == key
}

// evidence reports whether a change among parents and their ancestors
// satisfies is for key. An honest author's evidence is near: usually
// their own previous change.
func (l *Log) evidence(parents []protocol.ID, key identity.PublicKey, is func(*change, identity.PublicKey) bool) bool {
	for _, p := range parents { // the usual case, without a search
		if ch := l.changes[p]; ch != nil && is(ch, key) {
			return true
		}
	}
	stack := slices.Clone(parents)
	visited := make(map[protocol.ID]bool)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		ch := l.changes[id]
		if ch == nil || visited[id] {
			continue
		}
		if is(ch, key) {
			return true
		}
		visited[id] = true
		stack = append(stack, ch.c.Parents...)
	}
	return false
}

func compare(a, b *change) int {
	return cmp.Or(cmp.Compare(a.clock, b.clock), cmp.Compare(a.env.Time, b.env.Time), bytes.Compare(a.id[:], b.id[:]))
}

// insert adds ch to the order and resolves it: in one step when it sorts
// last (a change made after every one known, the usual case) and voids no
// join already applied; otherwise the order is sorted and the state
// resolved again from the start at the next look (resolve), once for
// however many changes came meanwhile (a page of sync).
func (l *Log) insert(ch *change) {
	last := len(l.order) == 0 || compare(l.order[len(l.order)-1], ch) < 0
	l.order = append(l.order, ch)
	if last && !l.dirty {
		ch.pos = len(l.order) - 1
		l.apply(ch)
		return
	}
	l.dirty = true
}

// resolve sorts the order and applies every change again, if the state
// needs it. It runs under mu (write).
func (l *Log) resolve() {
	if !l.dirty {
		return
	}
	slices.SortFunc(l.order, compare)
	l.st = newState()
	for i, c := range l.order {
		c.pos = i
		l.apply(c)
	}
	l.dirty = false
}

// rlock locks the log for reading with its state resolved, and returns
// the unlock: a read lock when the state is resolved already, else the
// write lock under which it was resolved (so that no Add can slip in
// between resolving and reading).
func (l *Log) rlock() (unlock func()) {
	l.mu.RLock()
	if !l.dirty {
		return l.mu.RUnlock
	}
	l.mu.RUnlock()
	l.mu.Lock()
	l.resolve()
	return l.mu.Unlock
}

// apply applies one change, in order, to the state: the rules of the
// package comment.
func (l *Log) apply(ch *change) {
	st, env, c := &l.st, ch.env, ch.c
	author := st.members[env.Sender]
	admin := author != nil && author.current() && author.Admin && !l.outranked(ch)
	switch c.Op {
	case protocol.OpCreate:
		if len(st.members) == 0 && ch == l.genesis {
			st.name = c.Name
			st.add(env.Sender, ch).Admin = true
		}
	case protocol.OpDirect:
		if len(st.members) == 0 && ch == l.genesis {
			st.add(env.Sender, ch)
			st.add(c.Target, ch)
		}
	case protocol.OpAdd:
		if admin && !l.removalUnseen(c.Target, ch) {
			st.add(c.Target, ch)
		}
	case protocol.OpJoin:
		if l.joinVoid(ch) == "" {
			st.invite(c.Cap.Key, c.Cap.Issuer).Used++
			st.add(env.Sender, ch)
		}
	case protocol.OpRemove:
		m := st.members[c.Target]
		if m == nil || !(admin || c.Target == env.Sender) {
			break
		}
		m.removals = append(m.removals, ch)
		if m.current() {
			p := &m.periods[len(m.periods)-1]
			p.removedAt, p.removedTime = ch.pos, env.Time
			m.Admin = false
		}
	case protocol.OpAdmin:
		if m := st.members[c.Target]; admin && m != nil && m.current() {
			m.Admin = true
		}
	case protocol.OpUnadmin:
		if m := st.members[c.Target]; m != nil && m.current() && (admin || c.Target == env.Sender) {
			m.Admin = false
		}
	case protocol.OpRename:
		if admin {
			st.name = c.Name
		}
	case protocol.OpInvite:
		if admin {
			inv := st.invite(c.Target, env.Sender)
			inv.Expires, inv.Uses = int64(c.Expires), int(c.Uses)
		}
	case protocol.OpRevoke:
		if admin {
			st.invite(c.Target, identity.PublicKey{}).Revoked = true
		}
	}
}

// outranked reports whether an admin's change ch is void because a more
// senior admin removed or demoted its author without seeing it (the
// removal is not its ancestor, nor it the removal's), wherever each
// sorts: a removed admin who names old parents, pretending not to have
// seen the removal, gets a clock that sorts before it, and must not
// thereby keep acting as an admin. Seniority settles it: the creator
// outranks everyone, an admin made earlier one made later.
func (l *Log) outranked(ch *change) bool {
	author := ch.env.Sender
	if !adminOp(ch.env, ch.c) || len(l.demotions[author]) == 0 {
		return false
	}
	mine, ok := l.rank[author]
	if !ok {
		return false
	}
	for _, r := range l.demotions[author] {
		theirs, ok := l.rank[r.env.Sender]
		if r == ch || !ok || theirs >= mine || r.env.Sender == author {
			continue
		}
		if !l.ancestor(r, ch) && !l.ancestor(ch, r) {
			return true
		}
	}
	return false
}

// joinVoid says why a join, at its place in the order, does not make its
// author a member, or "" if it does: the issuer must be an admin there,
// the invite valid when the join was made, not revoked or used up, not
// signed before the joiner's removal; and no revocation of the invite,
// and no removal or demotion of its issuer after it signed, may have been
// made without seeing the join, wherever they sort (a joiner knows only
// the invite's clock, so its join sorts early).
func (l *Log) joinVoid(ch *change) string {
	st, env, c := &l.st, ch.env, ch.c
	issuer := st.members[c.Cap.Issuer]
	switch inv := st.invites[c.Cap.Key]; {
	case issuer == nil || !issuer.current() || !issuer.Admin:
		return "its issuer " + c.Cap.Issuer.ShortFingerprint() + " is not an admin of the room"
	case env.Time/1000 >= int64(c.Cap.Expires):
		return "the invite had expired"
	case inv != nil && inv.Revoked:
		return "the invite was revoked"
	case inv != nil && inv.Used >= int(c.Cap.Uses):
		return fmt.Sprintf("the invite is used up (%d of %d)", inv.Used, c.Cap.Uses)
	}
	for _, r := range l.revokes[c.Cap.Key] {
		if l.allowed(r) && !l.ancestor(ch, r) {
			return "the invite was revoked"
		}
	}
	for _, r := range l.demotions[c.Cap.Issuer] {
		if r.clock >= c.Cap.Lamport && l.allowed(r) && !l.ancestor(ch, r) {
			return "its issuer " + c.Cap.Issuer.ShortFingerprint() + " was removed or stepped down"
		}
	}
	if m := st.members[env.Sender]; m != nil {
		if m.current() {
			return "already a member" // the use is not spent
		}
		for _, r := range m.removals {
			if r.clock >= c.Cap.Lamport {
				return "the invite was made before the joiner's removal" // remove beats add
			}
		}
	}
	return ""
}

// allowed reports whether a revocation, removal or demotion could have
// been made by its author: admins, or the person themselves. Its place
// in the order does not matter here; that it was admitted with evidence
// of the author's role (admissible) is what counts.
func (l *Log) allowed(r *change) bool {
	return r.c.Op != protocol.OpRevoke || l.granted[r.env.Sender]
}

func (st *state) add(key identity.PublicKey, ch *change) *Member {
	m := st.members[key]
	if m == nil {
		m = &Member{Key: key}
		st.members[key] = m
	}
	if !m.current() {
		m.periods = append(m.periods, period{added: ch.pos, removedAt: -1})
		m.Since = ch.id
	}
	return m
}

func (st *state) invite(key, issuer identity.PublicKey) *Invite {
	inv := st.invites[key]
	if inv == nil {
		inv = &Invite{Key: key, Issuer: issuer}
		st.invites[key] = inv
	}
	if inv.Issuer.IsZero() {
		inv.Issuer = issuer
	}
	return inv
}

// removalUnseen reports whether a removal of target earlier in the order
// is not an ancestor of ch: an add that did not see a removal does not
// undo it, even when another removal came between.
func (l *Log) removalUnseen(target identity.PublicKey, ch *change) bool {
	m := l.st.members[target]
	if m == nil {
		return false
	}
	for _, r := range m.removals {
		if !l.ancestor(r, ch) {
			return true
		}
	}
	return false
}

// ancestor reports whether a is an ancestor of b. The search prunes
// changes whose clock is not above a's: none of them can have a as an
// ancestor.
func (l *Log) ancestor(a, b *change) bool {
	if slices.Contains(b.c.Parents, a.id) { // the usual case, without a search
		return true
	}
	stack := slices.Clone(b.c.Parents)
	visited := make(map[protocol.ID]bool)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if id == a.id {
			return true
		}
		c := l.changes[id]
		if visited[id] || c == nil || c.clock <= a.clock {
			continue
		}
		visited[id] = true
		stack = append(stack, c.c.Parents...)
	}
	return false
}

// Admit judges a post by sender, naming member-list head, made at time t
// (Unix ms): nil if it may be shown, an error wrapping ErrWaiting if the
// head is not known yet, ErrRefused otherwise. See the package comment.
func (l *Log) Admit(sender identity.PublicKey, head protocol.ID, t int64) error {
	defer l.rlock()()
	h, ok := l.changes[head]
	if !ok {
		return fmt.Errorf("%w: post names member-list head %s", ErrWaiting, head)
	}
	m := l.st.members[sender]
	if m == nil {
		return fmt.Errorf("%w: %s is not a member of %s", ErrRefused, sender.ShortFingerprint(), l.room)
	}
	removed := false
	for _, p := range m.periods {
		if p.added > h.pos {
			continue
		}
		if p.removedAt < 0 || (h.pos < p.removedAt && t < p.removedTime) {
			return nil
		}
		removed = true
	}
	if removed {
		return fmt.Errorf("%w: %s was removed from %s before this post", ErrRemoved, sender.ShortFingerprint(), l.room)
	}
	return fmt.Errorf("%w: %s was not a member of %s at the head its post names", ErrRefused, sender.ShortFingerprint(), l.room)
}

// Judge judges a verified envelope of the room as a receiver does before
// it keeps it: a change as Check does (without adding it), a post as
// Admit does. It returns nil, or the ID waited for with an error
// wrapping ErrWaiting, or an error wrapping ErrRemoved or ErrRefused.
func (l *Log) Judge(env *protocol.Envelope, id protocol.ID) (protocol.ID, error) {
	switch env.Kind {
	case protocol.KindMember:
		missing, err := l.Check(env, id)
		if len(missing) > 0 {
			return missing[0], err
		}
		return protocol.ID{}, err
	case protocol.KindPost, protocol.KindKeyPackage, protocol.KindKeys, protocol.KindSealed:
		head, err := protocol.HeadOf(env)
		if err != nil {
			return protocol.ID{}, fmt.Errorf("%w: %v", ErrRefused, err)
		}
		return head, l.Admit(env.Sender, head, env.Time)
	}
	return protocol.ID{}, fmt.Errorf("%w: %s envelope in a private room", ErrRefused, env.Kind)
}

// MemberSince returns the change that made key a member (the last time),
// and false if key is not a member now. A post names it as its head: a
// peer that holds the head holds the change that let its sender in, so
// two peers judge the post alike whatever else each has seen.
func (l *Log) MemberSince(key identity.PublicKey) (protocol.ID, bool) {
	defer l.rlock()()
	m := l.st.members[key]
	if m == nil || !m.current() {
		return protocol.ID{}, false
	}
	return m.Since, true
}

// Known reports whether key has ever been a member, as far as the log
// knows.
func (l *Log) Known(key identity.PublicKey) bool {
	defer l.rlock()()
	return l.st.members[key] != nil
}

// IsMember reports whether key is a member now.
func (l *Log) IsMember(key identity.PublicKey) bool {
	defer l.rlock()()
	m := l.st.members[key]
	return m != nil && m.current()
}

// IsAdmin reports whether key is an admin now.
func (l *Log) IsAdmin(key identity.PublicKey) bool {
	defer l.rlock()()
	m := l.st.members[key]
	return m != nil && m.current() && m.Admin
}

// Has reports whether the change with ID id is in the log.
func (l *Log) Has(id protocol.ID) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	_, ok := l.changes[id]
	return ok
}

// Len returns how many changes the log holds.
func (l *Log) Len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.order)
}

// Head returns the last change in the order: what a post names. It is
// zero while the log is empty.
func (l *Log) Head() protocol.ID {
	defer l.rlock()()
	if len(l.order) == 0 {
		return protocol.ID{}
	}
	return l.order[len(l.order)-1].id
}

// Clock returns the highest clock of the log's changes: an invite signed
// now carries it, so that its joins sort after every change its issuer
// had seen.
func (l *Log) Clock() uint64 {
	defer l.rlock()()
	if len(l.order) == 0 {
		return 0
	}
	return l.order[len(l.order)-1].clock
}

// Parents returns what a new change names: the heads of the graph (the
// changes no other names), in ascending order of ID, at most
// protocol.MaxParents of them (the latest in the order), and the highest
// clock among them.
func (l *Log) Parents() ([]protocol.ID, uint64) { return l.ParentsFor(identity.PublicKey{}) }

// ParentsFor is Parents for a change by author: when there are more heads
// than a change may name, one place goes to the latest change that shows
// the author's role (their own, or the one that added them), so that the
// change carries its evidence (a crowd of joins, each a head, would
// otherwise hide it).
func (l *Log) ParentsFor(author identity.PublicKey) ([]protocol.ID, uint64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	heads := make([]*change, 0, len(l.heads))
	for id := range l.heads {
		heads = append(heads, l.changes[id])
	}
	slices.SortFunc(heads, compare)
	if len(heads) > protocol.MaxParents {
		heads = heads[len(heads)-protocol.MaxParents:]
		if own := l.latest[author]; own != nil && !slices.Contains(heads, own) {
			heads[0] = own
		}
	}
	var (
		ids []protocol.ID
		top uint64
	)
	for _, h := range heads {
		ids = append(ids, h.id)
		top = max(top, h.clock)
	}
	slices.SortFunc(ids, func(a, b protocol.ID) int { return bytes.Compare(a[:], b[:]) })
	return ids, top
}

// Name returns the room's display name; empty before its first change.
func (l *Log) Name() string {
	defer l.rlock()()
	return l.st.name
}

// Creator returns the key of the room's creator, and false before the
// room's first change is known.
func (l *Log) Creator() (identity.PublicKey, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.genesis == nil {
		return identity.PublicKey{}, false
	}
	return l.genesis.env.Sender, true
}

// Direct returns, for a direct room (started by protocol.OpDirect), the
// other person than key; false for any other room, or before its first
// change is known.
func (l *Log) Direct(key identity.PublicKey) (identity.PublicKey, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.genesis == nil || l.genesis.c.Op != protocol.OpDirect {
		return identity.PublicKey{}, false
	}
	if a, b := l.genesis.env.Sender, l.genesis.c.Target; a != key {
		return a, true
	} else {
		return b, true
	}
}

// Members returns the current members, admins first, then by key.
func (l *Log) Members() []Member {
	defer l.rlock()()
	var out []Member
	for _, m := range l.st.members {
		if m.current() {
			out = append(out, Member{Key: m.Key, Admin: m.Admin, Since: m.Since})
		}
	}
	slices.SortFunc(out, func(a, b Member) int {
		if a.Admin != b.Admin {
			if a.Admin {
				return -1
			}
			return 1
		}
		return bytes.Compare(a.Key.Bytes(), b.Key.Bytes())
	})
	return out
}

// Invites returns the invites the log knows, by key.
func (l *Log) Invites() []Invite {
	defer l.rlock()()
	out := make([]Invite, 0, len(l.st.invites))
	for _, inv := range l.st.invites {
		out = append(out, *inv)
	}
	slices.SortFunc(out, func(a, b Invite) int { return bytes.Compare(a.Key.Bytes(), b.Key.Bytes()) })
	return out
}

// JoinEffect tells whether a verified join (OpJoin) that Check accepts
// would make its author a member if it were added now: nil, or an error
// wrapping ErrRefused that says why not (used up, revoked, expired, an
// issuer no longer admin). A relay answers a join with it, so that the
// joiner learns at once; mesh peers do not refuse such a join, since
// with changes they have not seen yet it might count (Add keeps it, and
// the order decides).
func (l *Log) JoinEffect(env *protocol.Envelope, id protocol.ID) error {
	c, err := l.parse(env)
	if err != nil {
		return err
	}
	if c.Op != protocol.OpJoin {
		return fmt.Errorf("%w: a %s change, not a join", ErrRefused, c.Op)
	}
	defer l.rlock()()
	if l.genesis == nil {
		return fmt.Errorf("%w: the room %s is not known here", ErrRefused, l.room)
	}
	// A scratch copy of the log, with the join in its place: the join may
	// sort before changes known already, which then see it.
	s := &Log{room: l.room, changes: make(map[protocol.ID]*change, len(l.changes)+1), granted: l.granted,
		revokes: l.revokes, demotions: l.demotions, rank: l.rank, authored: l.authored, st: newState()}
	for id, ch := range l.changes {
		cp := *ch
		s.changes[id] = &cp
	}
	s.genesis = s.changes[l.genesis.id]
	s.order = make([]*change, 0, len(l.order)+1)
	for _, ch := range l.order {
		s.order = append(s.order, s.changes[ch.id])
	}
	j, ok := s.changes[id]
	if !ok {
		j = &change{id: id, env: env, c: c, clock: l.clockOf(c)}
		s.changes[id] = j
		i, _ := slices.BinarySearchFunc(s.order, j, compare)
		s.order = slices.Insert(s.order, i, j)
	}
	var why string
	for i, ch := range s.order {
		ch.pos = i
		if ch == j {
			why = s.joinVoid(ch)
		}
		s.apply(ch)
	}
	if why != "" {
		return fmt.Errorf("%w: the join of %s does not count: %s", ErrRefused, env.Sender.ShortFingerprint(), why)
	}
	if m := s.st.members[env.Sender]; m == nil || !m.current() {
		return fmt.Errorf("%w: the join of %s is undone by a later change", ErrRefused, env.Sender.ShortFingerprint())
	}
	return nil
}

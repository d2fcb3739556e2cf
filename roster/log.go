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
	// (not a change of this room, a wrong parent, an author who was never
	// an admin, a sender who is not a member). The peer that sent it is
	// at fault; a relay answers with wire.CodeNotMember.
	ErrRefused = errors.New("roster: refused")
	// ErrWaiting: the change or post names a change not known yet. Hold
	// it (bounded) and offer it again when that change arrives.
	ErrWaiting = errors.New("roster: waiting for an earlier change")
)

// Member is one person on a room's member list, as resolved.
type Member struct {
	Key   identity.PublicKey
	Admin bool
	// Since is the change that (last) made them a member.
	Since protocol.ID
	added int // place in the order of that change

	removed     bool
	removedAt   int   // place of the removal
	removedTime int64 // signed time of the removal, Unix ms
	removedBy   protocol.ID
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
	id  protocol.ID
	env *protocol.Envelope
	c   *protocol.Change
	pos int // place in the order
}

// Log is one private room's member list: the changes accepted so far and
// the state they resolve to. It is safe for concurrent use.
type Log struct {
	room string

	mu      sync.RWMutex
	changes map[protocol.ID]*change
	order   []*change // by (Lamport, ID)
	heads   map[protocol.ID]bool
	granted map[identity.PublicKey]bool // ever made admin by a known change
	genesis *change
	st      state
}

// state is what the changes in order resolve to.
type state struct {
	name    string
	members map[identity.PublicKey]*Member
	invites map[identity.PublicKey]*Invite
}

// NewLog returns the empty log of private room room.
func NewLog(room string) *Log {
	return &Log{room: room, changes: make(map[protocol.ID]*change), heads: make(map[protocol.ID]bool),
		granted: make(map[identity.PublicKey]bool), st: newState()}
}

func newState() state {
	return state{members: make(map[identity.PublicKey]*Member), invites: make(map[identity.PublicKey]*Invite)}
}

// Room returns the room's ID.
func (l *Log) Room() string { return l.room }

// Add adds a verified KindMember envelope of the room (its signature and
// payload checked: protocol.CheckPayload) to the log and resolves the
// member list again. It returns the IDs the change waits for with an
// error wrapping ErrWaiting, or an error wrapping ErrRefused. Adding a
// change twice is not an error.
func (l *Log) Add(env *protocol.Envelope, id protocol.ID) (missing []protocol.ID, err error) {
	if env.Kind != protocol.KindMember || env.Room != l.room {
		return nil, fmt.Errorf("%w: %s envelope of room %s is not a change of %s", ErrRefused, env.Kind, env.Room, l.room)
	}
	c, err := protocol.ParseChange(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.changes[id]; ok {
		return nil, nil
	}
	if missing, err := l.admissible(env, c); err != nil {
		return missing, err
	}
	ch := &change{id: id, env: env, c: c}
	l.changes[id] = ch
	for _, p := range c.Parents {
		delete(l.heads, p)
	}
	l.heads[id] = true
	switch c.Op {
	case protocol.OpCreate:
		l.granted[env.Sender] = true
		if l.genesis == nil || less(ch, l.genesis) {
			l.genesis = ch
		}
	case protocol.OpAdmin:
		l.granted[c.Target] = true
	}
	l.insert(ch)
	return nil, nil
}

// Check judges a verified KindMember envelope as Add would, without
// adding it: nil if Add would take it (or has), else the IDs it waits for
// with an error wrapping ErrWaiting, or an error wrapping ErrRefused. A
// validator checks first and adds once the replay guard has passed it.
func (l *Log) Check(env *protocol.Envelope, id protocol.ID) ([]protocol.ID, error) {
	if env.Kind != protocol.KindMember || env.Room != l.room {
		return nil, fmt.Errorf("%w: %s envelope of room %s is not a change of %s", ErrRefused, env.Kind, env.Room, l.room)
	}
	c, err := protocol.ParseChange(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if _, ok := l.changes[id]; ok {
		return nil, nil
	}
	return l.admissible(env, c)
}

// admissible checks what does not depend on the order: the parents, and
// whether the author could ever be allowed the change. It runs under mu.
func (l *Log) admissible(env *protocol.Envelope, c *protocol.Change) ([]protocol.ID, error) {
	var missing []protocol.ID
	for _, p := range c.Parents {
		pc, ok := l.changes[p]
		if !ok {
			missing = append(missing, p)
			continue
		}
		if pc.env.Lamport >= env.Lamport {
			return nil, fmt.Errorf("%w: change's Lamport clock %d is not after its parent %s's %d", ErrRefused, env.Lamport, p, pc.env.Lamport)
		}
	}
	if len(missing) > 0 {
		return missing, fmt.Errorf("%w: %d parent(s) of a %s change not known yet", ErrWaiting, len(missing), c.Op)
	}
	switch c.Op {
	case protocol.OpCreate, protocol.OpRemove, protocol.OpUnadmin:
		if c.Op == protocol.OpCreate || c.Target == env.Sender {
			return nil, nil // creating; leaving; stepping down
		}
	case protocol.OpJoin:
		// A joiner knows nothing of the room but its invite: its own
		// join is the first change its log holds, and resolves once the
		// rest arrives. Where the room is known, an issuer who was never
		// an admin makes the join worthless.
		if l.genesis != nil && !l.granted[c.Cap.Issuer] {
			return nil, fmt.Errorf("%w: invite issued by %s, never an admin of %s", ErrRefused, c.Cap.Issuer.ShortFingerprint(), l.room)
		}
		return nil, nil
	}
	if !l.granted[env.Sender] {
		return nil, fmt.Errorf("%w: %s by %s, never an admin of %s", ErrRefused, c.Op, env.Sender.ShortFingerprint(), l.room)
	}
	return nil, nil
}

func less(a, b *change) bool { return compare(a, b) < 0 }

func compare(a, b *change) int {
	return order(a.env, b.env, a.id, b.id)
}

// order is the resolution order: Lamport clock, then signed time, then
// ID. Time settles changes of one clock value, such as the joins of one
// invite, whose joiners all knew only the invite's clock: the first made
// comes first, so a later joiner cannot take an earlier one's place
// (but by dating their join back, within the live skew).
func order(a, b *protocol.Envelope, aid, bid protocol.ID) int {
	return cmp.Or(cmp.Compare(a.Lamport, b.Lamport), cmp.Compare(a.Time, b.Time), bytes.Compare(aid[:], bid[:]))
}

// insert puts ch in its place in the order and resolves the state: in one
// step when it sorts last (a change made after every one known, the
// usual case), from the start otherwise.
func (l *Log) insert(ch *change) {
	i, _ := slices.BinarySearchFunc(l.order, ch, compare)
	l.order = slices.Insert(l.order, i, ch)
	if i == len(l.order)-1 {
		ch.pos = i
		l.apply(ch)
		return
	}
	l.st = newState()
	for j, c := range l.order {
		c.pos = j
		l.apply(c)
	}
}

// apply applies one change, in order, to the state: the rules of the
// package comment.
func (l *Log) apply(ch *change) {
	st, env, c := &l.st, ch.env, ch.c
	author := st.members[env.Sender]
	admin := author != nil && !author.removed && author.Admin
	switch c.Op {
	case protocol.OpCreate:
		if len(st.members) == 0 && ch == l.genesis {
			st.name = c.Name
			st.members[env.Sender] = &Member{Key: env.Sender, Admin: true, Since: ch.id, added: ch.pos}
		}
	case protocol.OpAdd:
		if admin && !l.removalUnseen(c.Target, ch) {
			st.add(c.Target, ch)
		}
	case protocol.OpJoin:
		if l.joinVoid(ch) == "" {
			inv := st.invite(c.Cap.Key, c.Cap.Issuer)
			inv.Used++
			st.add(env.Sender, ch)
		}
	case protocol.OpRemove:
		if m := st.members[c.Target]; m != nil && !m.removed && (admin || c.Target == env.Sender) {
			m.removed, m.Admin = true, false
			m.removedAt, m.removedTime, m.removedBy = ch.pos, env.Time, ch.id
		}
	case protocol.OpAdmin:
		if m := st.members[c.Target]; admin && m != nil && !m.removed {
			m.Admin = true
		}
	case protocol.OpUnadmin:
		if m := st.members[c.Target]; m != nil && !m.removed && (admin || c.Target == env.Sender) {
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

// joinVoid says why a join, at its place in the order, does not make its
// author a member, or "" if it does: the issuer must be an admin there,
// the invite valid when the join was made, not revoked or used up, and
// not signed before the joiner's removal.
func (l *Log) joinVoid(ch *change) string {
	st, env, c := &l.st, ch.env, ch.c
	issuer := st.members[c.Cap.Issuer]
	switch inv := st.invites[c.Cap.Key]; {
	case issuer == nil || issuer.removed || !issuer.Admin:
		return "its issuer " + c.Cap.Issuer.ShortFingerprint() + " is not an admin of the room"
	case env.Time/1000 >= int64(c.Cap.Expires):
		return "the invite had expired"
	case inv != nil && inv.Revoked:
		return "the invite was revoked"
	case inv != nil && inv.Used >= int(c.Cap.Uses):
		return fmt.Sprintf("the invite is used up (%d of %d)", inv.Used, c.Cap.Uses)
	}
	if m := st.members[env.Sender]; m != nil {
		if !m.removed {
			return "already a member" // the use is not spent
		}
		if r := l.changes[m.removedBy]; r != nil && r.env.Lamport >= c.Cap.Lamport {
			return "the invite was made before the joiner's removal" // remove beats add
		}
	}
	return ""
}

// JoinEffect tells whether a verified join (OpJoin) that Check accepts
// would make its author a member if it were added now: nil, or an error
// wrapping ErrRefused that says why not (used up, revoked, expired, an
// issuer no longer admin). A relay answers a join with it, so that the
// joiner learns at once; mesh peers do not refuse such a join, since
// with changes they have not seen yet it might count (Add keeps it, and
// the order decides).
func (l *Log) JoinEffect(env *protocol.Envelope, id protocol.ID) error {
	c, err := protocol.ParseChange(env.Payload)
	if err != nil || c.Op != protocol.OpJoin {
		return fmt.Errorf("%w: not a join", ErrRefused)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.genesis == nil {
		return fmt.Errorf("%w: the room %s is not known here", ErrRefused, l.room)
	}
	// A scratch copy of the log, with the join in its place: the join may
	// sort before changes known already, which then see it.
	s := &Log{room: l.room, changes: make(map[protocol.ID]*change, len(l.changes)+1), genesis: l.genesis}
	for id, ch := range l.changes {
		cp := *ch
		s.changes[id] = &cp
	}
	s.genesis = s.changes[l.genesis.id]
	s.order = make([]*change, 0, len(l.order)+1)
	for _, ch := range l.order {
		s.order = append(s.order, s.changes[ch.id])
	}
	j := &change{id: id, env: env, c: c}
	if _, ok := s.changes[id]; !ok {
		s.changes[id] = j
		i, _ := slices.BinarySearchFunc(s.order, j, compare)
		s.order = slices.Insert(s.order, i, j)
	}
	s.st = newState()
	var why string
	for i, ch := range s.order {
		ch.pos = i
		if ch.id == id {
			why = s.joinVoid(ch)
		}
		s.apply(ch)
	}
	if why != "" {
		return fmt.Errorf("%w: the join of %s does not count: %s", ErrRefused, env.Sender.ShortFingerprint(), why)
	}
	if m := s.st.members[env.Sender]; m == nil || m.removed {
		return fmt.Errorf("%w: the join of %s is undone by a later change", ErrRefused, env.Sender.ShortFingerprint())
	}
	return nil
}

func (st *state) add(key identity.PublicKey, ch *change) {
	if m := st.members[key]; m != nil && !m.removed {
		return
	}
	st.members[key] = &Member{Key: key, Since: ch.id, added: ch.pos}
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

// removalUnseen reports whether target was removed by a change earlier in
// the order that is not an ancestor of ch: an add that did not see the
// removal does not undo it.
func (l *Log) removalUnseen(target identity.PublicKey, ch *change) bool {
	m := l.st.members[target]
	if m == nil || !m.removed {
		return false
	}
	r := l.changes[m.removedBy]
	return r != nil && !l.ancestor(r, ch)
}

// ancestor reports whether a is an ancestor of b. The search prunes
// changes whose clock is not above a's: none of them can have a as an
// ancestor.
func (l *Log) ancestor(a, b *change) bool {
	stack := slices.Clone(b.c.Parents)
	visited := make(map[protocol.ID]bool)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if id == a.id {
			return true
		}
		c := l.changes[id]
		if visited[id] || c == nil || c.env.Lamport <= a.env.Lamport {
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
	l.mu.RLock()
	defer l.mu.RUnlock()
	h, ok := l.changes[head]
	if !ok {
		return fmt.Errorf("%w: post names member-list head %s", ErrWaiting, head)
	}
	m := l.st.members[sender]
	switch {
	case m == nil || m.added > h.pos:
		return fmt.Errorf("%w: %s was not a member of %s at the head its post names", ErrRefused, sender.ShortFingerprint(), l.room)
	case m.removed && (m.removedAt <= h.pos || t >= m.removedTime):
		return fmt.Errorf("%w: %s was removed from %s before this post", ErrRefused, sender.ShortFingerprint(), l.room)
	}
	return nil
}

// IsMember reports whether key is a member now.
func (l *Log) IsMember(key identity.PublicKey) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	m := l.st.members[key]
	return m != nil && !m.removed
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
	l.mu.RLock()
	defer l.mu.RUnlock()
	if len(l.order) == 0 {
		return protocol.ID{}
	}
	return l.order[len(l.order)-1].id
}

// Parents returns what a new change names: the heads of the graph (the
// changes no other names), in ascending order, at most
// protocol.MaxParents of them (the latest in the order), and the highest
// Lamport clock among them, which the new change's must exceed.
func (l *Log) Parents() ([]protocol.ID, uint64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	heads := make([]*change, 0, len(l.heads))
	for id := range l.heads {
		heads = append(heads, l.changes[id])
	}
	slices.SortFunc(heads, compare)
	if len(heads) > protocol.MaxParents {
		heads = heads[len(heads)-protocol.MaxParents:]
	}
	var (
		ids []protocol.ID
		top uint64
	)
	for _, h := range heads {
		ids = append(ids, h.id)
		top = max(top, h.env.Lamport)
	}
	slices.SortFunc(ids, func(a, b protocol.ID) int { return bytes.Compare(a[:], b[:]) })
	return ids, top
}

// Name returns the room's display name; empty before its first change.
func (l *Log) Name() string {
	l.mu.RLock()
	defer l.mu.RUnlock()
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

// Members returns the current members, admins first, then by key.
func (l *Log) Members() []Member {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []Member
	for _, m := range l.st.members {
		if !m.removed {
			out = append(out, *m)
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

// IsAdmin reports whether key is an admin now.
func (l *Log) IsAdmin(key identity.PublicKey) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	m := l.st.members[key]
	return m != nil && !m.removed && m.Admin
}

// Invites returns the invites the log knows, by key.
func (l *Log) Invites() []Invite {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]Invite, 0, len(l.st.invites))
	for _, inv := range l.st.invites {
		out = append(out, *inv)
	}
	slices.SortFunc(out, func(a, b Invite) int { return bytes.Compare(a.Key.Bytes(), b.Key.Bytes()) })
	return out
}

package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// Policy decides who may connect, read and post. Its rules come from the
// config file (mode, admins, room rules) and from the store (allow and ban
// lists, invites); every change raises its version, and every decision
// names the version it applied.
type Policy struct {
	st   *store.Store
	mode wire.PolicyMode
	now  func() time.Time

	mu      sync.RWMutex
	version uint64
	admins  map[string]bool // by fingerprint
	allowed map[string]bool
	banned  map[string]bool
	rooms   map[string]roomRule
}

type roomRule struct{ read, post map[string]bool }

func set(fps []string) map[string]bool {
	m := make(map[string]bool, len(fps))
	for _, fp := range fps {
		m[fp] = true
	}
	return m
}

// NewPolicy loads the policy of cfg and of the store, raising the version
// if cfg's policy differs from the one last recorded.
func NewPolicy(ctx context.Context, cfg PolicyConfig, st *store.Store, now func() time.Time) (*Policy, error) {
	mode, err := wire.ParsePolicyMode(cfg.Mode)
	if err != nil {
		return nil, err
	}
	c := Config{Policy: cfg}
	version, err := st.NotePolicyConfig(ctx, c.policyHash())
	if err != nil {
		return nil, err
	}
	p := &Policy{st: st, mode: mode, now: now, version: version, admins: set(cfg.Admins), rooms: map[string]roomRule{}}
	for room, r := range cfg.Rooms {
		p.rooms[room] = roomRule{read: set(r.Read), post: set(r.Post)}
	}
	if err := p.reload(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Policy) reload(ctx context.Context) error {
	acl, err := p.st.ACL(ctx)
	if err != nil {
		return err
	}
	v, err := p.st.PolicyVersion(ctx)
	if err != nil {
		return err
	}
	allowed, banned := map[string]bool{}, map[string]bool{}
	for _, e := range acl {
		switch e.List {
		case store.ListAllow:
			allowed[e.Key.Fingerprint()] = true
		case store.ListBan:
			banned[e.Key.Fingerprint()] = true
		}
	}
	p.mu.Lock()
	p.allowed, p.banned, p.version = allowed, banned, v
	p.mu.Unlock()
	return nil
}

// Decision is the answer to one question asked of the policy.
type Decision struct {
	Allow   bool
	Code    wire.ErrorCode // why not, when not
	Reason  string
	Version uint64 // the policy version that decided
}

func (d Decision) Err() error {
	if d.Allow {
		return nil
	}
	return &wire.RelayError{Code: d.Code, Message: fmt.Sprintf("%s (policy version %d)", d.Reason, d.Version)}
}

// Mode is how the relay admits identities.
func (p *Policy) Mode() wire.PolicyMode {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.mode
}

// SetConfig replaces the part of the policy that the config file holds
// (mode, admins, room rules), as a reload of the config does. A change
// raises the policy version and, with the audit log on, is recorded
// (store.NotePolicyConfig); the caller then applies it to the open
// connections (Server.Enforce). It reports whether anything changed.
func (p *Policy) SetConfig(ctx context.Context, cfg PolicyConfig) (bool, error) {
	mode, err := wire.ParsePolicyMode(cfg.Mode)
	if err != nil {
		return false, err
	}
	before := p.Version()
	c := Config{Policy: cfg}
	if _, err := p.st.NotePolicyConfig(ctx, c.policyHash()); err != nil {
		return false, err
	}
	rooms := map[string]roomRule{}
	for room, r := range cfg.Rooms {
		rooms[room] = roomRule{read: set(r.Read), post: set(r.Post)}
	}
	p.mu.Lock()
	p.mode, p.admins, p.rooms = mode, set(cfg.Admins), rooms
	p.mu.Unlock()
	if err := p.reload(ctx); err != nil {
		return false, err
	}
	return p.Version() != before, nil
}

// Version is the policy version now.
func (p *Policy) Version() uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.version
}

// Admin reports whether id is an admin.
func (p *Policy) Admin(id identity.PublicKey) bool { return p.admin(id.Fingerprint()) }

func (p *Policy) admin(fp string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.admins[fp]
}

// Connect decides whether id may use the relay. In invite mode an identity
// not yet allowed may still redeem an invite: Connect says no, with
// CodeNotAllowed, and the server lets that connection only redeem.
func (p *Policy) Connect(id identity.PublicKey) Decision { return p.connect(id.Fingerprint()) }

// connect is Connect for the identity with fingerprint fp.
func (p *Policy) connect(fp string) Decision {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d := Decision{Version: p.version}
	switch {
	case p.admins[fp]:
		d.Allow, d.Reason = true, "admin"
	case p.banned[fp]:
		d.Code, d.Reason = wire.CodeBanned, fmt.Sprintf("identity %s is banned from this relay", fp)
	case p.mode == wire.PolicyOpen:
		d.Allow, d.Reason = true, "open relay"
	case p.allowed[fp]:
		d.Allow, d.Reason = true, "on the allow list"
	case p.mode == wire.PolicyInvite:
		d.Code, d.Reason = wire.CodeNotAllowed, fmt.Sprintf("identity %s is not on this relay's allow list; redeem an invite to join", fp)
	default:
		d.Code, d.Reason = wire.CodeNotAllowed, fmt.Sprintf("identity %s is not on this relay's allow list", fp)
	}
	return d
}

// Read decides whether id may read room.
func (p *Policy) Read(id identity.PublicKey, room string) Decision {
	return p.room(id.Fingerprint(), room, "read", func(r roomRule) map[string]bool { return r.read })
}

// Post decides whether id may post in room.
func (p *Policy) Post(id identity.PublicKey, room string) Decision {
	return p.room(id.Fingerprint(), room, "post", func(r roomRule) map[string]bool { return r.post })
}

// post is Post for the identity with fingerprint fp.
func (p *Policy) post(fp, room string) Decision {
	return p.room(fp, room, "post", func(r roomRule) map[string]bool { return r.post })
}

func (p *Policy) room(fp, room, what string, list func(roomRule) map[string]bool) Decision {
	if d := p.connect(fp); !d.Allow {
		return d
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	d := Decision{Version: p.version, Allow: true, Reason: "room is open to " + what}
	if r, ok := p.rooms[room]; ok && len(list(r)) > 0 {
		switch {
		case p.admins[fp]:
			d.Reason = "admin"
		case list(r)[fp]:
			d.Reason = "on the room's " + what + " list"
		default:
			d.Allow, d.Code = false, wire.CodeForbidden
			d.Reason = fmt.Sprintf("identity %s may not %s in room %s", fp, what, room)
		}
	}
	return d
}

// Allow puts id on the allow list.
func (p *Policy) Allow(ctx context.Context, id identity.PublicKey, note string) (uint64, error) {
	if _, err := p.st.AddACL(ctx, store.ListAllow, id, note, p.now()); err != nil {
		return 0, err
	}
	err := p.reload(ctx)
	return p.Version(), err
}

// Deny takes id off the allow list; it reports whether id was on it.
func (p *Policy) Deny(ctx context.Context, id identity.PublicKey) (bool, error) {
	_, removed, err := p.st.RemoveACL(ctx, store.ListAllow, id)
	if err != nil {
		return false, err
	}
	return removed, p.reload(ctx)
}

// Ban bans id; an admin cannot be banned.
func (p *Policy) Ban(ctx context.Context, id identity.PublicKey, note string) error {
	if p.Admin(id) {
		return fmt.Errorf("relay: %s is an admin (config policy.admins) and cannot be banned", id.Fingerprint())
	}
	if _, err := p.st.AddACL(ctx, store.ListBan, id, note, p.now()); err != nil {
		return err
	}
	return p.reload(ctx)
}

// Unban lifts a ban; it reports whether id was banned.
func (p *Policy) Unban(ctx context.Context, id identity.PublicKey) (bool, error) {
	_, removed, err := p.st.RemoveACL(ctx, store.ListBan, id)
	if err != nil {
		return false, err
	}
	return removed, p.reload(ctx)
}

// InvitePrefix starts every invite token.
const InvitePrefix = "parley-invite-"

// NewInvite makes an invite token valid for ttl and uses redemptions and
// stores its hash. The token is shown once; the relay keeps only the hash.
func NewInvite(ctx context.Context, st *store.Store, note string, ttl time.Duration, uses int, now time.Time) (string, error) {
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	token := InvitePrefix + base64.RawURLEncoding.EncodeToString(b[:])
	if _, err := st.AddInvite(ctx, sha256.Sum256([]byte(token)), note, now.Add(ttl), uses); err != nil {
		return "", err
	}
	return token, nil
}

// Redeem uses an invite token for id, which joins the allow list.
func (p *Policy) Redeem(ctx context.Context, id identity.PublicKey, token string) error {
	switch d := p.Connect(id); {
	case d.Allow:
		return nil // admitted already: the invite stays for someone else
	case d.Code == wire.CodeBanned:
		return d.Err() // no invite lifts a ban
	}
	if !strings.HasPrefix(token, InvitePrefix) || len(token) > wire.MaxInviteToken {
		return &wire.RelayError{Code: wire.CodeNotAllowed, Message: "not an invite token"}
	}
	_, err := p.st.RedeemInvite(ctx, sha256.Sum256([]byte(token)), id, p.now())
	if errors.Is(err, store.ErrBadInvite) {
		return &wire.RelayError{Code: wire.CodeNotAllowed, Message: "the invite is unknown, used up or expired"}
	}
	if err != nil {
		return err
	}
	return p.reload(ctx)
}

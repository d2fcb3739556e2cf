package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/lockfile"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/store"
)

// Admin commands (allow, deny, ban, unban, invite, acl) change the policy.
// On a running relay they go through its admin socket, a Unix socket of
// mode 0600 in the data folder, so the relay applies them at once; on a
// stopped relay they change the store in the data folder directly.

// AdminRequest is one admin command: a JSON object on one line.
type AdminRequest struct {
	Cmd  string `json:"cmd"`            // allow, deny, ban, unban, invite, acl, reload
	Key  string `json:"key,omitempty"`  // ed25519:... or SHA256:... for allow, deny, ban, unban
	Note string `json:"note,omitempty"` // why, for the operator's records
	TTL  string `json:"ttl,omitempty"`  // invite: how long it is valid ("168h")
	Uses int    `json:"uses,omitempty"` // invite: how many may redeem it
	// Invite is the token or the ID of the invite to revoke
	// (invite-revoke).
	Invite string `json:"invite,omitempty"`
}

// AdminResponse is the answer, a JSON object on one line.
type AdminResponse struct {
	Error         string        `json:"error,omitempty"`
	Message       string        `json:"message,omitempty"`
	PolicyVersion uint64        `json:"policy_version"`
	Token         string        `json:"token,omitempty"` // invite
	Entries       []ACLEntry    `json:"entries,omitempty"`
	Invites       []InviteEntry `json:"invites,omitempty"` // invite-list
	Running       bool          `json:"running"`           // answered by a running relay
}

// ACLEntry is one identity on an access list, as acl lists it.
type ACLEntry struct {
	List        string    `json:"list"`
	Key         string    `json:"key"`
	Fingerprint string    `json:"fingerprint"`
	Note        string    `json:"note"`
	Added       time.Time `json:"added"`
}

// InviteEntry is one stored invite, as invite list lists it. Its token
// is not stored; ID names it (the start of the token's hash).
type InviteEntry struct {
	ID      string    `json:"id"`
	Note    string    `json:"note"`
	Expires time.Time `json:"expires"`
	Uses    int       `json:"uses"` // redemptions left
	State   string    `json:"state"`
}

// inviteIDLen is the length of an invite's ID: hex digits of its token's
// hash. A shorter prefix, of at least minInviteID, names it too.
const (
	inviteIDLen = 16
	minInviteID = 6
)

// InviteID is the ID of the invite of token: what invite list shows.
func InviteID(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])[:inviteIDLen]
}

// findInvite finds the invite a token or an ID (or a prefix of one)
// names.
func findInvite(ctx context.Context, st *store.Store, s string) (store.Invite, error) {
	if strings.HasPrefix(s, InvitePrefix) {
		h := sha256.Sum256([]byte(s))
		s = hex.EncodeToString(h[:])
	}
	s = strings.ToLower(s)
	if len(s) < minInviteID {
		return store.Invite{}, fmt.Errorf("invite revoke: %q: give the token (%s...) or its ID, as invite list shows it", s, InvitePrefix)
	}
	all, err := st.Invites(ctx)
	if err != nil {
		return store.Invite{}, err
	}
	var found []store.Invite
	for _, inv := range all {
		if strings.HasPrefix(hex.EncodeToString(inv.Hash[:]), s) {
			found = append(found, inv)
		}
	}
	switch len(found) {
	case 0:
		return store.Invite{}, fmt.Errorf("invite revoke: no invite %s (relay invite list shows them)", s[:min(len(s), inviteIDLen)])
	case 1:
		return found[0], nil
	}
	return store.Invite{}, fmt.Errorf("invite revoke: %s names %d invites; give more of the ID", s, len(found))
}

// apply carries out one admin command on a policy.
func apply(ctx context.Context, p *Policy, req AdminRequest) AdminResponse {
	switch req.Cmd {
	case "allow", "deny", "ban", "unban":
		key, err := resolveKey(ctx, p.st, req.Key)
		if err != nil {
			return adminFailure(p, fmt.Errorf("%s: %w", req.Cmd, err))
		}
		return applyToKey(ctx, p, req, key)
	case "invite":
		return createInvite(ctx, p, req)
	case "invite-list":
		return listInvites(ctx, p)
	case "invite-revoke":
		return revokeInvite(ctx, p, req.Invite)
	case "acl":
		return listACL(ctx, p)
	}
	return adminFailure(p, fmt.Errorf("unknown admin command %q", req.Cmd))
}

// adminFailure is the answer to an admin command that failed with err.
func adminFailure(p *Policy, err error) AdminResponse {
	return AdminResponse{Error: err.Error(), PolicyVersion: p.Version()}
}

// applyToKey carries out allow, deny, ban or unban of key.
func applyToKey(ctx context.Context, p *Policy, req AdminRequest, key identity.PublicKey) AdminResponse {
	said := func(msg string) AdminResponse {
		return AdminResponse{Message: key.Fingerprint() + msg, PolicyVersion: p.Version()}
	}
	switch req.Cmd {
	case "allow":
		if _, err := p.Allow(ctx, key, req.Note); err != nil {
			return adminFailure(p, err)
		}
		return said(" is on the allow list")
	case "deny":
		was, err := p.Deny(ctx, key)
		if err != nil {
			return adminFailure(p, err)
		}
		if !was {
			return said(" was not on the allow list")
		}
		return said(" is off the allow list")
	case "ban":
		if err := p.Ban(ctx, key, req.Note); err != nil {
			return adminFailure(p, err)
		}
		return said(" is banned")
	default: // unban
		was, err := p.Unban(ctx, key)
		if err != nil {
			return adminFailure(p, err)
		}
		if !was {
			return said(" was not banned")
		}
		return said(" is no longer banned")
	}
}

// createInvite makes an invite token valid for req.TTL (a week if not
// given) and req.Uses redemptions (one if not given).
func createInvite(ctx context.Context, p *Policy, req AdminRequest) AdminResponse {
	ttl := 7 * 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return adminFailure(p, fmt.Errorf("invite: ttl %q is not a positive duration", req.TTL))
		}
		ttl = d
	}
	uses := req.Uses
	if uses == 0 {
		uses = 1
	}
	if uses < 1 {
		return adminFailure(p, fmt.Errorf("invite: %d uses", uses))
	}
	token, err := NewInvite(ctx, p.st, req.Note, ttl, uses, p.now())
	if err != nil {
		return adminFailure(p, err)
	}
	if err := p.reload(ctx); err != nil {
		return adminFailure(p, err)
	}
	return AdminResponse{Token: token, Message: fmt.Sprintf("%s valid for %s, %d use(s)", InviteID(token), ttl, uses), PolicyVersion: p.Version()}
}

// listInvites lists every invite with its state: valid, used up or expired.
func listInvites(ctx context.Context, p *Policy) AdminResponse {
	all, err := p.st.Invites(ctx)
	if err != nil {
		return adminFailure(p, err)
	}
	out := AdminResponse{PolicyVersion: p.Version(), Invites: []InviteEntry{}}
	now := p.now()
	for _, inv := range all {
		state := "valid"
		switch {
		case inv.Uses < 1:
			state = "used up"
		case !now.Before(inv.Expires):
			state = "expired"
		}
		out.Invites = append(out.Invites, InviteEntry{ID: hex.EncodeToString(inv.Hash[:])[:inviteIDLen], Note: inv.Note, Expires: inv.Expires, Uses: inv.Uses, State: state})
	}
	return out
}

// revokeInvite revokes the invite named by its token or ID (findInvite).
func revokeInvite(ctx context.Context, p *Policy, name string) AdminResponse {
	inv, err := findInvite(ctx, p.st, name)
	if err != nil {
		return adminFailure(p, err)
	}
	id := hex.EncodeToString(inv.Hash[:])[:inviteIDLen]
	note := id
	if inv.Note != "" {
		note += ": " + inv.Note
	}
	if _, _, err := p.st.RevokeInvite(ctx, inv.Hash, note); err != nil {
		return adminFailure(p, err)
	}
	if err := p.reload(ctx); err != nil {
		return adminFailure(p, err)
	}
	return AdminResponse{Message: "invite " + id + " is revoked", PolicyVersion: p.Version()}
}

// listACL lists every entry of every access list.
func listACL(ctx context.Context, p *Policy) AdminResponse {
	acl, err := p.st.ACL(ctx)
	if err != nil {
		return adminFailure(p, err)
	}
	out := AdminResponse{PolicyVersion: p.Version(), Entries: []ACLEntry{}}
	for _, e := range acl {
		out.Entries = append(out.Entries, ACLEntry{List: e.List, Key: e.Key.String(), Fingerprint: e.Key.Fingerprint(), Note: e.Note, Added: e.Added})
	}
	return out
}

// ErrUnknownFingerprint: an admin command named an identity by a
// fingerprint of a key the relay has never seen.
var ErrUnknownFingerprint = errors.New("no identity with this fingerprint is known to this relay")

// resolveKey reads the identity an admin command names: its public key
// (ed25519:..., as chat id prints it) or its fingerprint (SHA256:..., as
// the relay's logs, refusals and audit records print it). A fingerprint
// is looked up in the allow and ban lists, then in the audit log (every
// connection and refusal is recorded with the key), newest first.
func resolveKey(ctx context.Context, st *store.Store, s string) (identity.PublicKey, error) {
	if !strings.HasPrefix(s, fingerprintPrefix) {
		k, err := identity.ParsePublicKey(s)
		if err != nil {
			return k, fmt.Errorf("%w (give the public key that chat id prints, ed25519:..., or its fingerprint, SHA256:...)", err)
		}
		return k, nil
	}
	if _, err := relay.ParseAddr(s + "@h:1"); err != nil {
		return identity.PublicKey{}, fmt.Errorf("%q is not a key fingerprint (SHA256: and 43 characters of base64)", s)
	}
	acl, err := st.ACL(ctx)
	if err != nil {
		return identity.PublicKey{}, err
	}
	for _, e := range acl {
		if e.Key.Fingerprint() == s {
			return e.Key, nil
		}
	}
	size, err := st.AuditSize(ctx)
	if err != nil {
		return identity.PublicKey{}, err
	}
	for end := size; end > 0; {
		from := max(0, end-auditPage)
		page, err := st.AuditEntries(ctx, from, int(end-from))
		if err != nil {
			return identity.PublicKey{}, err
		}
		for i := len(page) - 1; i >= 0; i-- {
			r, err := audit.ParseRecord(page[i].Data)
			if err == nil && !r.Identity.IsZero() && r.Identity.Fingerprint() == s {
				return r.Identity, nil
			}
		}
		end = from
	}
	return identity.PublicKey{}, fmt.Errorf("%w: %s is not on the allow or ban list and not in the audit log; give its public key (ed25519:..., as chat id prints it)", ErrUnknownFingerprint, s)
}

const fingerprintPrefix = "SHA256:"

// Reload applies cfg, the config file read again, to the running relay:
// the policy part (mode, admins, room rules) at once, to open connections
// too, and the limits for what is decided from now on (setLimits). It is
// recorded in the audit log (an admin record naming what asked for it,
// by, after the config change's own record when the policy changed).
// The other settings are read at start only (startOnly): Reload names
// those that differ. A file that does not validate changes nothing.
func (s *Server) Reload(ctx context.Context, cfg Config, by string) AdminResponse {
	if err := cfg.Validate(); err != nil {
		return AdminResponse{Error: fmt.Sprintf("reload: %v; nothing changed", err), PolicyVersion: s.policy.Version()}
	}
	later := s.startOnly(cfg)
	changed, err := s.policy.SetConfig(ctx, cfg.Policy)
	if err != nil {
		return AdminResponse{Error: fmt.Sprintf("reload: %v", err), PolicyVersion: s.policy.Version()}
	}
	s.Enforce()
	var did []string
	if changed {
		did = append(did, "the policy changed")
	}
	lim := cfg.Limits
	lim.Skew = s.lim().Skew
	limitsChanged := lim != *s.lim()
	if limitsChanged {
		s.setLimits(lim)
		did = append(did, "the limits changed")
	}
	msg := "nothing changed"
	if len(did) > 0 {
		msg = strings.Join(did, ", ")
	}
	if len(later) > 0 {
		msg += "; at the next start: " + strings.Join(later, ", ")
	}
	v := s.policy.Version()
	s.record(ctx, &audit.Record{Kind: audit.KindAdmin, PolicyVersion: v, Detail: fmt.Sprintf("reload (%s): %s", by, msg)})
	s.log.Info("config reloaded", "by", by, "policy_changed", changed, "limits_changed", limitsChanged,
		"policy", s.policy.Mode().String(), "policy_version", v, "at_next_start", later)
	return AdminResponse{Message: "reloaded: " + msg, PolicyVersion: v}
}

// startOnly names the settings of cfg that differ from those the relay
// started with and that only a restart applies: the addresses, the mesh,
// retention, auditing, the store's settings and limits.skew (the relay's mesh node and its
// retention keep the skew they started with, and must agree with the
// relay's own).
func (s *Server) startOnly(cfg Config) []string {
	var d []string
	for _, c := range []struct {
		name string
		same bool
	}{
		{"listen", cfg.Listen == s.cfg.Listen},
		{"listen_tcp", cfg.ListenTCP == s.cfg.ListenTCP},
		{"advertise", cfg.Advertise == s.cfg.Advertise},
		{"p2p_listen", slices.Equal(cfg.P2PListen, s.cfg.P2PListen)},
		{"bootstrap", slices.Equal(cfg.Bootstrap, s.cfg.Bootstrap)},
		{"mdns", cfg.MDNS == s.cfg.MDNS},
		{"admin", cfg.Admin == s.cfg.Admin},
		{"limits.skew", cfg.Limits.Skew == s.cfg.Limits.Skew},
		{"retention", cfg.Retention == s.cfg.Retention},
		{"audit", cfg.Audit == s.cfg.Audit},
		{"store", cfg.Store == s.cfg.Store},
		{"circuit", cfg.Circuit == s.cfg.Circuit},
		{"federation", slices.Equal(cfg.Federation.Relays, s.cfg.Federation.Relays) && slices.Equal(cfg.Federation.Rooms, s.cfg.Federation.Rooms)},
	} {
		if !c.same {
			d = append(d, c.name)
		}
	}
	return d
}

// ServeAdmin answers admin commands on a Unix socket at path (mode 0600)
// until ctx ends. reload, if not nil, reads the config file again and
// applies it (Reload), for the reload command.
func (s *Server) ServeAdmin(ctx context.Context, path string, reload func(context.Context) AdminResponse) error {
	os.Remove(path) // a socket left by a relay that was killed
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("relay: admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("relay: admin socket: %w", err)
	}
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			break
		}
		wg.Go(func() {
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			var req AdminRequest
			if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&req); err != nil {
				json.NewEncoder(conn).Encode(AdminResponse{Error: "bad request: " + err.Error()})
				return
			}
			var resp AdminResponse
			switch {
			case req.Cmd == "reload" && reload != nil:
				resp = reload(ctx)
			case req.Cmd == "reload":
				resp = AdminResponse{Error: "reload: this relay cannot reload its config"}
			default:
				resp = apply(ctx, s.policy, req)
			}
			resp.Running = true
			if resp.Error == "" {
				s.Enforce()
			}
			if resp.Error == "" {
				s.log.Info("admin command", "cmd", req.Cmd, "key", req.Key, "note", req.Note, "policy_version", resp.PolicyVersion)
			}
			json.NewEncoder(conn).Encode(resp)
		})
	}
	wg.Wait()
	os.Remove(path)
	return nil
}

// RunAdmin carries out an admin command on the relay in dir: through the
// running relay's socket, or on the data folder when no relay runs.
func RunAdmin(ctx context.Context, dir string, req AdminRequest) (AdminResponse, error) {
	conn, err := net.DialTimeout("unix", filepath.Join(dir, SocketFile), 5*time.Second)
	if err == nil {
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(15 * time.Second))
		if err := json.NewEncoder(conn).Encode(req); err != nil {
			return AdminResponse{}, fmt.Errorf("relay: admin socket: %w", err)
		}
		var resp AdminResponse
		if err := json.NewDecoder(conn).Decode(&resp); err != nil {
			return AdminResponse{}, fmt.Errorf("relay: admin socket: %w", err)
		}
		return resp, nil
	}
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ECONNREFUSED) {
		return AdminResponse{}, fmt.Errorf("relay: admin socket: %w", err)
	}
	if req.Cmd == "reload" {
		return AdminResponse{}, fmt.Errorf("relay: reload: no relay runs on %s (a relay reads its config when it starts)", dir)
	}
	// No admin socket. Holding the data folder's lock tells that no relay
	// runs (one that starts meanwhile is refused until the command is
	// done), so the change cannot go unseen by a running relay.
	cfg, err := LoadDirConfig(dir)
	if err != nil {
		return AdminResponse{}, err
	}
	lock, err := lockfile.Acquire(filepath.Join(dir, LockFile))
	if err != nil {
		return AdminResponse{}, fmt.Errorf("relay: a relay runs on %s but its admin socket does not answer (is it still starting?): %w", dir, err)
	}
	defer lock.Release()
	st, err := openStore(dir, DBFile, store.Durable())
	if err != nil {
		return AdminResponse{}, err
	}
	defer st.Close()
	if cfg.Audit.Enabled {
		// The change is recorded in the audit log, as on a running relay.
		key, err := LoadKey(dir)
		if err != nil {
			return AdminResponse{}, err
		}
		if _, err := OpenAudit(ctx, key, st); err != nil {
			return AdminResponse{}, err
		}
	}
	p, err := NewPolicy(ctx, cfg.Policy, st, time.Now)
	if err != nil {
		return AdminResponse{}, err
	}
	return apply(ctx, p, req), nil
}

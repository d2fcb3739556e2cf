package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/roster"
)

// room is "chat room SUBCOMMAND ...": private rooms and their members.
func (c *cli) roomCommand(args []string) int {
	if len(args) == 0 || args[0] == "--help" || args[0] == "-h" {
		return c.command("help", []string{"room"})
	}
	sub, args := args[0], args[1:]
	fs := c.flags("room " + sub)
	asJSON := fs.Bool("json", false, "JSON output")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	var uses *int
	var expires *time.Duration
	if sub == "invite" {
		uses = fs.Int("uses", 1, "how many people the code lets in")
		expires = fs.Duration("expires", 7*24*time.Hour, "how long the code is good for")
	}
	want := map[string]int{"create": 1, "invite": 1, "invites": 1, "revoke": 2, "leave": 1, "remove": 2,
		"members": 1, "admin": 2, "unadmin": 2, "rename": 2}
	n, ok := want[sub]
	if !ok {
		return c.usageError(fmt.Errorf("unknown room command %q", sub))
	}
	if err := c.parse(fs, args, n); err != nil {
		return c.usageError(err)
	}
	if err := positive(*timeout); err != nil {
		return c.usageError(err)
	}
	ctx, cl, done, err := c.timedSession(*timeout, sub == "members" || sub == "invites")
	if err != nil {
		return c.fail(err)
	}
	defer done()
	if sub == "create" {
		return c.roomCreate(ctx, cl, c.args[0], *asJSON)
	}
	room, err := cl.ResolveRoom(ctx, c.args[0])
	if err != nil {
		return c.fail(err)
	}
	rc := roomCmd{cli: c, cl: cl, ctx: ctx, room: room, asJSON: *asJSON}
	switch sub {
	case "invite":
		err = rc.invite(*uses, *expires)
	case "invites":
		err = rc.invites()
	case "revoke":
		err = rc.revoke(c.args[1])
	case "leave":
		err = cl.Leave(ctx, room)
	case "remove", "admin", "unadmin":
		err = rc.member(sub, c.args[1])
	case "members":
		err = rc.members()
	case "rename":
		_, err = cl.Rename(ctx, room, c.args[1])
	}
	if err != nil {
		return c.fail(ranOut(ctx, *timeout, err))
	}
	if err := cl.Close(); err != nil {
		return c.fail(err)
	}
	return exitOK
}

// roomCmd is one "chat room" command on an open session.
type roomCmd struct {
	*cli
	cl     *client.Client
	ctx    context.Context
	room   string
	asJSON bool
}

func (c *cli) roomCreate(ctx context.Context, cl *client.Client, name string, asJSON bool) int {
	room, _, err := cl.CreateRoom(ctx, name)
	if err != nil && room == "" {
		return c.fail(err)
	}
	if asJSON {
		c.printJSON(map[string]any{"room": room, "name": name, "delivered": err == nil})
	} else {
		fmt.Fprintf(c.stdout, "%s\t%s\n", room, name)
	}
	if err != nil {
		// Created and kept here; no path took it yet.
		return c.fail(fmt.Errorf("room %s created here: %w", room, err))
	}
	return exitOK
}

func (rc roomCmd) invite(uses int, expires time.Duration) error {
	if uses < 1 || uses > 65535 {
		return fmt.Errorf("--uses %d: allow 1 to 65535", uses)
	}
	code, err := rc.cl.Invite(rc.ctx, rc.room, uses, expires)
	if err != nil {
		return err
	}
	if rc.asJSON {
		rc.printJSON(map[string]any{"code": code.String(), "room": rc.room, "invite": code.Cap.Key.Fingerprint(),
			"uses": uses, "expires": code.Expires().UTC()})
		return nil
	}
	fmt.Fprintln(rc.stdout, code.String())
	return nil
}

type inviteJSON struct {
	Invite  string    `json:"invite"`
	Issuer  string    `json:"issuer"`
	Expires time.Time `json:"expires"`
	Uses    int       `json:"uses"`
	Used    int       `json:"used"`
	State   string    `json:"state"`
}

func (rc roomCmd) invites() error {
	list, err := rc.cl.Invites(rc.ctx, rc.room)
	if err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(rc.stdout, 0, 0, 2, ' ', 0)
	if !rc.asJSON {
		fmt.Fprintln(tw, "INVITE\tISSUER\tEXPIRES\tUSED\tSTATE")
	}
	for _, inv := range list {
		state := "open"
		switch {
		case inv.Revoked:
			state = "revoked"
		case inv.Uses > 0 && inv.Used >= inv.Uses:
			state = "used up"
		case inv.Expires > 0 && now.Unix() >= inv.Expires:
			state = "expired"
		}
		exp := time.Unix(inv.Expires, 0).UTC()
		if rc.asJSON {
			rc.printJSON(inviteJSON{inv.Key.Fingerprint(), inv.Issuer.Fingerprint(), exp, inv.Uses, inv.Used, state})
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%s\t%s\n", inv.Key.ShortFingerprint(), inv.Issuer.ShortFingerprint(),
			exp.Format(time.RFC3339), inv.Used, strconv.Itoa(inv.Uses), state)
	}
	return tw.Flush()
}

func (rc roomCmd) revoke(prefix string) error {
	list, err := rc.cl.Invites(rc.ctx, rc.room)
	if err != nil {
		return err
	}
	key, err := pick(list, func(inv roster.Invite) identity.PublicKey { return inv.Key }, prefix, "invite")
	if err != nil {
		return err
	}
	_, err = rc.cl.Revoke(rc.ctx, rc.room, key)
	return err
}

// member is remove, admin and unadmin of the member whose fingerprint
// starts with prefix.
func (rc roomCmd) member(sub, prefix string) error {
	members, err := rc.cl.Members(rc.ctx, rc.room)
	if err != nil {
		return err
	}
	key, err := pick(members, func(m client.RoomMember) identity.PublicKey { return m.Key }, prefix, "member")
	if err != nil {
		return err
	}
	switch sub {
	case "remove":
		_, err = rc.cl.Remove(rc.ctx, rc.room, key)
	default:
		_, err = rc.cl.SetAdmin(rc.ctx, rc.room, key, sub == "admin")
	}
	return err
}

// pick returns the key of the one item whose key's fingerprint
// (SHA256:...) starts with prefix (the "SHA256:" may be left out).
func pick[T any](items []T, keyOf func(T) identity.PublicKey, prefix, what string) (identity.PublicKey, error) {
	if !strings.HasPrefix(prefix, "SHA256:") {
		prefix = "SHA256:" + prefix
	}
	if len(prefix) < len("SHA256:")+identity.MinFingerprintPrefix {
		return identity.PublicKey{}, fmt.Errorf("%q: give at least %d characters of the fingerprint", prefix, identity.MinFingerprintPrefix)
	}
	var found []identity.PublicKey
	for _, it := range items {
		if k := keyOf(it); strings.HasPrefix(k.Fingerprint(), prefix) {
			found = append(found, k)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return identity.PublicKey{}, fmt.Errorf("%w: no %s's fingerprint starts with %s", client.ErrNotMember, what, prefix)
	}
	return identity.PublicKey{}, fmt.Errorf("%s: %d %ss' fingerprints start with it; give more of it", prefix, len(found), what)
}

type memberJSON struct {
	Fingerprint string             `json:"fingerprint"`
	PublicKey   identity.PublicKey `json:"public_key"`
	Nick        string             `json:"nick,omitempty"`
	Admin       bool               `json:"admin"`
	Trust       string             `json:"trust"`
	Self        bool               `json:"self,omitempty"`
}

func (rc roomCmd) members() error {
	members, err := rc.cl.Members(rc.ctx, rc.room)
	if err != nil {
		return err
	}
	if len(members) == 0 {
		return fmt.Errorf("%w: %s: no member list here yet", client.ErrNotMember, rc.room)
	}
	tw := tabwriter.NewWriter(rc.stdout, 0, 0, 2, ' ', 0)
	for _, m := range members {
		trust := m.Trust.String()
		if m.Self {
			trust = "you"
		}
		if rc.asJSON {
			rc.printJSON(memberJSON{m.Key.Fingerprint(), m.Key, m.Nick, m.Admin, trust, m.Self})
			continue
		}
		role := "member"
		if m.Admin {
			role = "admin"
		}
		nick := m.Nick
		if nick == "" {
			nick = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Key.Fingerprint(), nick, role, trust)
	}
	return tw.Flush()
}

// join is "chat join CODE": join the private room of an invite code.
func (c *cli) join(args []string) int {
	fs := c.flags("join")
	asJSON := fs.Bool("json", false, "JSON output")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	ctx, cl, done, code := c.parsedSession(func() error { return c.parse(fs, args, 1) }, timeout)
	if cl == nil {
		return code
	}
	defer done()
	room, err := cl.JoinCode(ctx, c.args[0])
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = ranOut(ctx, *timeout, err)
		}
		return c.fail(err)
	}
	name := cl.RoomName(room)
	if *asJSON {
		c.printJSON(map[string]any{"room": room, "name": name})
	} else {
		fmt.Fprintf(c.stdout, "%s\t%s\n", room, name)
	}
	if err := cl.Close(); err != nil {
		return c.fail(err)
	}
	return exitOK
}

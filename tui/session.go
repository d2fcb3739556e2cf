package tui

import (
	"context"
	"time"

	"github.com/parleychat/parley/client"
)

// Session is what the UI needs of a client session; *client.Client is
// one. Every method but Events may block on the store or the network: the
// UI calls them from commands, never from Update.
type Session interface {
	Events() <-chan client.Event
	Post(ctx context.Context, room, text string) (client.ID, error)
	Join(ctx context.Context, room string) error
	Leave(ctx context.Context, room string) error
	History(ctx context.Context, room, query string, limit int) ([]client.Message, error)
	HistoryBefore(ctx context.Context, room string, before client.Message, limit int) ([]client.Message, error)
	Rooms(ctx context.Context) ([]string, error)
	Shown(ids ...client.ID)
	RoomPeers(room string) []string
	Contacts() []client.Contact
	Verify(prefix string) (client.Contact, error)
	SetNick(nick string) error
	CreateRoom(ctx context.Context, name string) (string, client.Sent, error)
	Invite(ctx context.Context, room string, uses int, ttl time.Duration) (*client.InviteCode, error)
	JoinCode(ctx context.Context, code string) (string, error)
	RoomName(room string) string
	Person(text string) (client.PublicKey, error)
	Direct(ctx context.Context, who client.PublicKey) (string, error)
}

var _ Session = (*client.Client)(nil)

// Options say what the UI shows around the session.
type Options struct {
	// Room is the room to open on; if empty, the first joined room, or
	// lobby.
	Room string
	// Fingerprint is our identity's fingerprint (SHA256:...).
	Fingerprint string
	// PeerID is our mesh peer ID, for the member list.
	PeerID string
	// Key is our identity's public key: we are a member of the rooms we
	// speak in.
	Key client.PublicKey
	// Nick is our nickname now.
	Nick string
	// Mode is auto, p2p or relay.
	Mode string
	// Relays are the relays' addresses (FINGERPRINT@HOST:PORT), if any.
	Relays []string
	// FirstRun asks for a nickname, with Nick as the default, and shows
	// how to share the fingerprint.
	FirstRun bool
	// Bell rings the terminal bell on a mention of our nickname and on
	// a security alarm.
	Bell bool
	// HistoryLimit is how many messages of a room are loaded when it is
	// opened; more come as the person scrolls to the top. If zero, 500.
	HistoryLimit int

	// Now is the clock of the messages we post; nil: time.Now.
	Now func() time.Time
	// Location is the time zone times show in; nil: the local one.
	Location *time.Location
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o Options) location() *time.Location {
	if o.Location != nil {
		return o.Location
	}
	return time.Local
}

func (o Options) historyLimit() int {
	if o.HistoryLimit > 0 {
		return o.HistoryLimit
	}
	return 500
}

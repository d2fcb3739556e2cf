package tui

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/roster"
)

// fakeSession is a Session in memory: the tests hand it events and read
// what the UI asked of it.
type fakeSession struct {
	events chan client.Event

	mu       sync.Mutex
	rooms    []string
	history  map[string][]client.Message
	posts    []string // room: text
	shown    int
	nick     string
	contacts []client.Contact
	peers    map[string][]string
	left     []string
	postErr  error
	private  string // the name of the private room made or joined
}

func newFake() *fakeSession {
	return &fakeSession{events: make(chan client.Event, 4096), history: map[string][]client.Message{}, peers: map[string][]string{}}
}

func (f *fakeSession) Events() <-chan client.Event { return f.events }

func (f *fakeSession) Post(_ context.Context, room, text string) (client.ID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.postErr != nil {
		return client.ID{}, f.postErr
	}
	f.posts = append(f.posts, room+": "+text)
	return postID(len(f.posts), room, text), nil
}

// postID is the ID the fake gives the n-th post.
func postID(n int, room, text string) client.ID {
	return client.ID(sha256.Sum256([]byte(fmt.Sprint(n, room, text))))
}

func (f *fakeSession) Join(_ context.Context, room string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.rooms, room) {
		f.rooms = append(f.rooms, room)
	}
	return nil
}

func (f *fakeSession) Leave(_ context.Context, room string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left = append(f.left, room)
	f.rooms = slices.DeleteFunc(f.rooms, func(r string) bool { return r == room })
	return nil
}

func (f *fakeSession) History(_ context.Context, room, query string, limit int) ([]client.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []client.Message
	for _, m := range f.history[room] {
		if query == "" || strings.Contains(m.Text, query) {
			out = append(out, m)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

func (f *fakeSession) HistoryBefore(_ context.Context, room string, before client.Message, limit int) ([]client.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	all := f.history[room]
	i := slices.IndexFunc(all, func(m client.Message) bool { return m.ID == before.ID })
	if i < 0 {
		return nil, fmt.Errorf("no message %s in %s", before.ID, room)
	}
	return slices.Clone(all[max(0, i-limit):i]), nil
}

func (f *fakeSession) Rooms(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rooms), nil
}

func (f *fakeSession) Shown(ids ...client.ID) {
	f.mu.Lock()
	f.shown += len(ids)
	f.mu.Unlock()
}

func (f *fakeSession) RoomPeers(room string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peers[room]
}

func (f *fakeSession) Contacts() []client.Contact {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.contacts)
}

func (f *fakeSession) Verify(prefix string) (client.Contact, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, ct := range f.contacts {
		if strings.HasPrefix(ct.Key.Fingerprint(), prefix) {
			f.contacts[i].Verified = true
			return f.contacts[i], nil
		}
	}
	return client.Contact{}, fmt.Errorf("no contact %s", prefix)
}

func (f *fakeSession) SetNick(nick string) error {
	if err := identity.ValidNick(nick); err != nil {
		return err
	}
	f.mu.Lock()
	f.nick = nick
	f.mu.Unlock()
	return nil
}

func (f *fakeSession) postsMade() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.posts)
}

// person is a sender of the tests: a fixed key, so that fingerprints
// and nickname colours are the same in every run.
type person struct {
	nick  string
	key   identity.PublicKey
	trust client.Trust
}

func newPerson(t testing.TB, nick string, seed byte) person {
	t.Helper()
	k, err := identity.PrivateKeyFromSeed(bytesOf(seed, 32))
	if err != nil {
		t.Fatal(err)
	}
	return person{nick, k.Public(), client.TrustKnown}
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// t0 is the time of the tests' first message.
var t0 = time.Date(2026, 12, 4, 9, 30, 0, 0, time.UTC)

// msg is message n of p in room, at t0 plus n minutes.
func (p person) msg(room string, n int, text string) client.Message {
	return client.Message{
		ID:      client.ID(sha256.Sum256([]byte(fmt.Sprint(p.nick, room, n, text)))),
		Room:    room,
		Sender:  p.key,
		Nick:    p.nick,
		Lamport: uint64(n),
		Time:    t0.Add(time.Duration(n) * time.Minute),
		Text:    text,
		Via:     client.ViaMesh,
		Trust:   client.TrustKnown,
	}
}

// testOptions are the options of the tests' UIs: fixed clock and zone.
func testOptions() Options {
	return Options{
		Room:        "lobby",
		Fingerprint: "SHA256:TESTtestTESTtestTESTtestTESTtestTESTtest123",
		Nick:        "me",
		Mode:        "auto",
		Relays:      []string{"SHA256:relayKEYrelayKEYrelayKEYrelayKEYrelayKEY12@127.0.0.1:4433"},
		Now:         func() time.Time { return t0.Add(time.Hour) },
		Location:    time.UTC,
	}
}

// fakePrivate is the ID of the private room the fake makes and joins.
const fakePrivate = "p:abcdefghijklmnopqrstuvwxyz234567"

func (f *fakeSession) CreateRoom(_ context.Context, name string) (string, client.Sent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.private = name
	return fakePrivate, client.Sent{}, nil
}

func (f *fakeSession) Invite(_ context.Context, room string, uses int, ttl time.Duration) (*client.InviteCode, error) {
	key, err := identity.PrivateKeyFromSeed(make([]byte, 32))
	if err != nil {
		return nil, err
	}
	return roster.NewCode(rand.Reader, key, room, 1, time.Now().Add(ttl), uses)
}

func (f *fakeSession) JoinCode(_ context.Context, code string) (string, error) {
	c, err := roster.ParseCode(code)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.private = "joined"
	return c.Room, nil
}

func (f *fakeSession) RoomName(room string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if room == fakePrivate && f.private != "" {
		return f.private
	}
	return room
}

// Person takes a contact's nickname or a key, as the client does.
func (f *fakeSession) Person(text string) (client.PublicKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.contacts {
		if c.Nick == text {
			return c.Key, nil
		}
	}
	return identity.ParsePublicKey(text)
}

// fakeDirect is the ID of the direct room the fake starts.
const fakeDirect = "p:directdirectdirectdirectdirect22"

func (f *fakeSession) Direct(_ context.Context, who client.PublicKey) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rooms = append(f.rooms, fakeDirect)
	return fakeDirect, nil
}

package tui

// Benchmarks of issue 17: the UI stays responsive with a very long room
// history, and typing does not lag while another room is busy.
//
//	go test -run '^$' -bench . -benchtime 1x -count 3 ./tui/
//
// A frame is what the program does on its event loop for one tea.Msg:
// Update, then View (which is Render and the terminal's settings); the
// bubbletea Program calls View after every Update. The commands Update
// returns run synchronously between frames and are not timed: the
// program runs them on other goroutines (they stand for the store and
// the network). The event reader the model starts after each eventsMsg
// is not run: the benchmarks hand the model its event batches themselves.
// Nothing sleeps and nothing touches the network; the inputs are the same
// in every run (a seeded generator), only the times measured vary.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/identity"
)

const (
	benchHistory = 100_000 // messages stored in the big room
	benchWidth   = 120     // the window: wide enough for the member list
	benchHeight  = 40
)

// benchSession is a Session in memory with fixed rooms and a stored
// history per room; the rest answers at once and does nothing.
type benchSession struct {
	rooms   []string
	history map[string][]client.Message
	posts   int
}

func (s *benchSession) Events() <-chan client.Event { return nil }

func (s *benchSession) Post(_ context.Context, room, text string) (client.ID, error) {
	s.posts++
	return client.ID(sha256.Sum256(fmt.Append(nil, "post", s.posts, room, text))), nil
}

func (s *benchSession) Join(context.Context, string) error  { return nil }
func (s *benchSession) Leave(context.Context, string) error { return nil }

// History returns the last limit messages of room, in a new slice as the
// store does (query is not used by these benchmarks).
func (s *benchSession) History(_ context.Context, room, _ string, limit int) ([]client.Message, error) {
	h := s.history[room]
	if limit > 0 && len(h) > limit {
		h = h[len(h)-limit:]
	}
	return slices.Clone(h), nil
}

// HistoryBefore returns the last limit messages of room before before,
// in a new slice as the store does.
func (s *benchSession) HistoryBefore(_ context.Context, room string, before client.Message, limit int) ([]client.Message, error) {
	h := s.history[room]
	i := slices.IndexFunc(h, func(m client.Message) bool { return m.ID == before.ID })
	if i < 0 {
		return nil, fmt.Errorf("bench: no message %s", before.ID)
	}
	return slices.Clone(h[max(0, i-limit):i]), nil
}

func (s *benchSession) Rooms(context.Context) ([]string, error) { return slices.Clone(s.rooms), nil }
func (s *benchSession) Shown(...client.ID)                      {}
func (s *benchSession) RoomPeers(string) []string               { return nil }
func (s *benchSession) Contacts() []client.Contact              { return nil }
func (s *benchSession) Verify(string) (client.Contact, error)   { return client.Contact{}, nil }
func (s *benchSession) SetNick(string) error                    { return nil }

// benchSender is a sender of the generated messages: a real identity key.
type benchSender struct {
	nick  string
	key   identity.PublicKey
	trust client.Trust
	own   bool
	n     uint64 // Lamport number of their last message
}

// benchSenders are five people, one of them us (our messages from
// another device, or sent earlier from this one).
func benchSenders(b *testing.B) []*benchSender {
	b.Helper()
	people := []*benchSender{
		{nick: "alice", trust: client.TrustVerified},
		{nick: "bob", trust: client.TrustKnown},
		{nick: "carol", trust: client.TrustKnown},
		{nick: "dmitri", trust: client.TrustNew},
		{nick: "me", own: true},
	}
	for i, p := range people {
		seed := sha256.Sum256([]byte("parley bench " + p.nick))
		k, err := identity.PrivateKeyFromSeed(seed[:])
		if err != nil {
			b.Fatal(err)
		}
		people[i].key = k.Public()
	}
	return people
}

var benchWords = strings.Fields(`the a to of and in is it you that for on
	with this be are was have not but at what so if we they can will
	relay mesh key room message history sync peer verify fingerprint
	tomorrow meeting release build test deploy coffee lunch later maybe
	yes no thanks great sounds good look here there https://example.org/x
	ok done fixed broken again why because`)

// benchText is a message of varied length: mostly a line or two, now and
// then a long one, a long word (a link) or several lines.
func benchText(rng *rand.Rand) string {
	var n int
	switch p := rng.IntN(100); {
	case p < 60:
		n = 2 + rng.IntN(12) // a short line
	case p < 90:
		n = 12 + rng.IntN(40) // a few rows
	case p < 98:
		n = 50 + rng.IntN(150) // a paragraph
	default:
		n = 200 + rng.IntN(300) // a wall of text
	}
	var b strings.Builder
	for i := range n {
		if i > 0 {
			if rng.IntN(40) == 0 {
				b.WriteByte('\n')
			} else {
				b.WriteByte(' ')
			}
		}
		if rng.IntN(200) == 0 {
			b.WriteString("https://example.org/" + strings.Repeat("long-path/", 1+rng.IntN(20)))
			continue
		}
		b.WriteString(benchWords[rng.IntN(len(benchWords))])
	}
	return b.String()
}

// benchMessages makes n messages of room, oldest first, ten seconds
// apart, from the senders taken at random.
func benchMessages(room string, n int, people []*benchSender, rng *rand.Rand, start time.Time) []client.Message {
	out := make([]client.Message, n)
	for i := range out {
		p := people[rng.IntN(len(people))]
		p.n++
		var id [8]byte
		binary.BigEndian.PutUint64(id[:], uint64(i))
		out[i] = client.Message{
			ID:      client.ID(sha256.Sum256(append([]byte(room), id[:]...))),
			Room:    room,
			Sender:  p.key,
			Nick:    p.nick,
			Lamport: p.n,
			Time:    start.Add(time.Duration(i) * 10 * time.Second),
			Text:    benchText(rng),
			Via:     client.ViaMesh,
			Trust:   p.trust,
			Own:     p.own,
		}
		if p.own {
			out[i].Trust = 0
		}
	}
	return out
}

var benchT0 = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

func benchOptions() Options {
	return Options{
		Room:        "big",
		Fingerprint: "SHA256:BENCHbenchBENCHbenchBENCHbenchBENCHbench123",
		Nick:        "me",
		Mode:        "auto",
		Now:         func() time.Time { return benchT0.Add(365 * 24 * time.Hour) },
		Location:    time.UTC,
	}
}

// benchFrames times frames: each message goes through Update and View,
// and the messages of the commands Update returns follow, in order.
type benchFrames struct {
	m     *Model
	times []time.Duration
}

// drive answers msg and every message its commands lead to, and returns
// the time of msg's own frame.
func (f *benchFrames) drive(msg tea.Msg) time.Duration {
	var first time.Duration
	queue := []tea.Msg{msg}
	for i := 0; i < len(queue); i++ {
		d, cmd := f.frame(queue[i])
		if i == 0 {
			first = d
		}
		queue = append(queue, benchRun(cmd)...)
	}
	return first
}

// frame is one Update and View, timed.
func (f *benchFrames) frame(msg tea.Msg) (time.Duration, tea.Cmd) {
	start := time.Now()
	_, cmd := f.m.Update(msg)
	v := f.m.View()
	d := time.Since(start)
	if v.Content == "" {
		panic("bench: empty screen")
	}
	f.times = append(f.times, d)
	return d, cmd
}

// benchRun runs cmd, and the commands of a batch, at once: the messages
// they return.
func benchRun(cmd tea.Cmd) []tea.Msg {
	if cmd == nil {
		return nil
	}
	switch msg := cmd().(type) {
	case nil:
		return nil
	case tea.BatchMsg:
		var out []tea.Msg
		for _, c := range msg {
			out = append(out, benchRun(c)...)
		}
		return out
	default:
		return []tea.Msg{msg}
	}
}

// benchQuantile is the q-quantile of ds (nearest rank); ds is sorted.
func benchQuantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(float64(len(ds))*q+0.999999) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func benchMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchHeapInUse is the heap in use after a collection, in MB.
func benchHeapInUse() float64 {
	runtime.GC()
	runtime.GC()
	var st runtime.MemStats
	runtime.ReadMemStats(&st)
	return float64(st.HeapInuse) / (1 << 20)
}

// BenchmarkHistory100k opens a room of 100,000 stored messages (the
// default 500 load), shows it, then presses Home: the view goes to the
// top of what the room holds, and each page of 1,000 older messages
// (HistoryBefore) that arrives takes it on to the top again and asks for
// the next, until the oldest is at the top of the pane. Then End, back
// to the newest. Every frame on the way is timed: the window size, the
// rooms, the join, each page of history taken, each key.
//
// Metrics: ms/frame-max and ms/frame-p99 over all the frames of all
// iterations (about 105 an iteration);
// ms/frame-key-max the slowest Home or End alone; MB-heap the heap in
// use after GC with the model holding the whole room (the session's own
// 100,000 messages, which a real session keeps in SQLite, included);
// MB-heap-model the model's share.
func BenchmarkHistory100k(b *testing.B) {
	rng := rand.New(rand.NewPCG(17, 1))
	people := benchSenders(b)
	s := &benchSession{rooms: []string{"big"}, history: map[string][]client.Message{
		"big": benchMessages("big", benchHistory, people, rng, benchT0),
	}}
	base := benchHeapInUse()
	var all, keys []time.Duration
	var heap, heapModel float64
	b.ResetTimer()
	for range b.N {
		m := New(context.Background(), s, benchOptions())
		f := &benchFrames{m: m}
		f.drive(tea.WindowSizeMsg{Width: benchWidth, Height: benchHeight})
		for _, msg := range benchRun(m.openRooms()) {
			f.drive(msg)
		}
		r := m.room()
		if len(r.byID) != 500 {
			b.Fatalf("opened with %d messages, want 500", len(r.byID))
		}
		for range 1000 { // more than enough presses, whatever the pages
			keys = append(keys, f.drive(tea.KeyPressMsg{Code: tea.KeyHome}))
			if r.complete && r.atTop() {
				break
			}
		}
		if !r.complete || !r.atTop() || len(r.byID) != benchHistory {
			b.Fatalf("after Home: %d messages, complete %v, at top %v", len(r.byID), r.complete, r.atTop())
		}
		if !strings.Contains(m.Render(), "more below") {
			b.Fatal("the top of the room does not say there is more below")
		}
		keys = append(keys, f.drive(tea.KeyPressMsg{Code: tea.KeyEnd}))
		if r.anchor != -1 {
			b.Fatal("End did not come back to the newest")
		}
		all = append(all, f.times...)
		b.StopTimer()
		h := benchHeapInUse()
		heap, heapModel = max(heap, h), max(heapModel, h-base)
		runtime.KeepAlive(m)
		b.StartTimer()
	}
	slices.Sort(all)
	slices.Sort(keys)
	b.ReportMetric(benchMs(all[len(all)-1]), "ms/frame-max")
	b.ReportMetric(benchMs(benchQuantile(all, 0.99)), "ms/frame-p99")
	b.ReportMetric(benchMs(keys[len(keys)-1]), "ms/frame-key-max")
	b.ReportMetric(heap, "MB-heap")
	b.ReportMetric(heapModel, "MB-heap-model")
}

// BenchmarkTypingWhileBusy types in one room while another receives
// 1,000 messages a second. Typing is 10 keys a second, so 100 messages
// arrive between two keys. The simulation is, for each key, first the
// 100 messages of the busy room that the session handed out in the
// 100 ms before it, as eventsMsg batches (each a frame), then the key: a
// tea.KeyPressMsg with Text "a". Every 40 keys an Enter sends the line
// (its frames are not counted among the keys'). How many messages a
// batch holds depends on how far the UI is behind (the event reader
// takes all that wait, up to 512): batch1 is a UI that keeps up (100
// batches of 1 message, each with its View), batch100 one that found
// them all waiting (1 batch of 100). A run types 100 keys: 10,000
// messages in 10 seconds of simulated time. The room shown holds 2,000
// messages of history (500 loaded).
//
// Metrics: ms/key-p99 and ms/key-max are the key's frame (Update then
// View): the time from the key press to its redrawn screen when the
// loop is free (the p99 of 100 keys is the second slowest). ms/key-
// queued-p99 adds the frame of the events batch before the key: the
// time when the key comes just as that batch is taken. busy-% is the
// share of the simulated time the event loop spent on frames: at 100%
// the UI falls behind and every key waits.
func BenchmarkTypingWhileBusy(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch%d", batch), func(b *testing.B) {
			benchTyping(b, batch)
		})
	}
}

func benchTyping(b *testing.B, batch int) {
	const (
		keys       = 100
		perKey     = 100 // 1,000 messages/s ÷ 10 keys/s
		sendEvery  = 40
		background = "busy"
	)
	rng := rand.New(rand.NewPCG(17, 2))
	people := benchSenders(b)
	s := &benchSession{rooms: []string{"lobby", background}, history: map[string][]client.Message{
		"lobby": benchMessages("lobby", 2_000, people, rng, benchT0),
	}}
	incoming := benchMessages(background, keys*perKey, people[:4], rng, benchT0)
	opt := benchOptions()
	opt.Room = "lobby"
	var keyTimes, queued []time.Duration
	var busy time.Duration
	b.ResetTimer()
	for range b.N {
		m := New(context.Background(), s, opt)
		f := &benchFrames{m: m}
		f.drive(tea.WindowSizeMsg{Width: benchWidth, Height: benchHeight})
		for _, msg := range benchRun(m.openRooms()) {
			f.drive(msg)
		}
		if m.room().name != "lobby" || len(m.room().byID) != 500 {
			b.Fatalf("opened on #%s with %d messages", m.room().name, len(m.room().byID))
		}
		f.times = f.times[:0]
		next := 0
		for k := range keys {
			var last time.Duration
			for range perKey / batch {
				evs := make(eventsMsg, 0, batch)
				for _, msg := range incoming[next : next+batch] {
					evs = append(evs, &client.MessageEvent{Message: msg})
				}
				next += batch
				// The command is the event reader: not run (see the top).
				last, _ = f.frame(evs)
			}
			d := f.drive(tea.KeyPressMsg{Code: 'a', Text: "a"})
			keyTimes = append(keyTimes, d)
			queued = append(queued, last+d)
			if (k+1)%sendEvery == 0 {
				f.drive(tea.KeyPressMsg{Code: tea.KeyEnter})
			}
		}
		bg := m.rooms[m.find(background)]
		if len(bg.byID) != keys*perKey || bg.unread != keys*perKey {
			b.Fatalf("#%s holds %d messages, %d unread", background, len(bg.byID), bg.unread)
		}
		if s.posts != keys/sendEvery {
			b.Fatalf("%d lines sent, want %d", s.posts, keys/sendEvery)
		}
		for _, d := range f.times {
			busy += d
		}
	}
	slices.Sort(keyTimes)
	slices.Sort(queued)
	simulated := time.Duration(b.N*keys) * 100 * time.Millisecond
	b.ReportMetric(benchMs(benchQuantile(keyTimes, 0.99)), "ms/key-p99")
	b.ReportMetric(benchMs(keyTimes[len(keyTimes)-1]), "ms/key-max")
	b.ReportMetric(benchMs(benchQuantile(queued, 0.99)), "ms/key-queued-p99")
	b.ReportMetric(100*float64(busy)/float64(simulated), "busy-%")
}

func (s *benchSession) CreateRoom(context.Context, string) (string, client.Sent, error) {
	return "", client.Sent{}, nil
}

func (s *benchSession) Invite(context.Context, string, int, time.Duration) (*client.InviteCode, error) {
	return nil, nil
}

func (s *benchSession) JoinCode(context.Context, string) (string, error) { return "", nil }

func (s *benchSession) RoomName(room string) string { return room }
func (s *benchSession) Person(text string) (client.PublicKey, error) {
	return client.PublicKey{}, errors.New("no people in a benchmark")
}
func (s *benchSession) Direct(context.Context, client.PublicKey) (string, error) {
	return "", errors.New("no direct rooms in a benchmark")
}

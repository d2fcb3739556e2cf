package tui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/roster"
)

// The model tests drive Update by hand: step runs the commands it returns
// at once, in order, as the program would (but the reading of events,
// which the tests do themselves with events).

func newModel(t *testing.T, f *fakeSession, opt Options) *Model {
	t.Helper()
	m := New(context.Background(), f, opt)
	step(t, m, tea.WindowSizeMsg{Width: 100, Height: 30})
	run(t, m, m.openRooms())
	return m
}

func step(t *testing.T, m *Model, msg tea.Msg) {
	t.Helper()
	_, cmd := m.Update(msg)
	run(t, m, cmd)
}

func run(t *testing.T, m *Model, cmd tea.Cmd) {
	t.Helper()
	if cmd == nil {
		return
	}
	switch msg := cmd().(type) {
	case tea.BatchMsg:
		for _, c := range msg {
			run(t, m, c)
		}
	case nil:
	default:
		step(t, m, msg)
	}
}

// events hands the model events as the session would.
func events(m *Model, evs ...client.Event) { m.Update(eventsMsg(evs)) }

func typeText(t *testing.T, m *Model, s string) {
	t.Helper()
	for _, r := range s {
		step(t, m, tea.KeyPressMsg{Code: r, Text: string(r)})
	}
}

func press(t *testing.T, m *Model, code rune, mod tea.KeyMod) {
	t.Helper()
	step(t, m, tea.KeyPressMsg{Code: code, Mod: mod})
}

func enter(t *testing.T, m *Model, line string) {
	t.Helper()
	typeText(t, m, line)
	press(t, m, tea.KeyEnter, 0)
}

func screenText(m *Model) string { return ansi.Strip(m.Render()) }

func TestKeyMapIsComplete(t *testing.T) {
	km := DefaultKeyMap()
	seen := map[string]string{}
	help := ansi.Strip(strings.Join((&Model{keys: km, st: newStyles(), width: 150, height: 60}).helpRows(58), "\n"))
	for _, b := range km.bindings() {
		h := b.Help()
		if len(b.Keys()) == 0 || h.Key == "" || h.Desc == "" {
			t.Errorf("binding %q has no keys or no help", h.Key)
		}
		for _, k := range b.Keys() {
			if other, dup := seen[k]; dup {
				t.Errorf("key %s is bound to %q and %q", k, other, h.Desc)
			}
			seen[k] = h.Desc
		}
		if !strings.Contains(help, h.Key) || !strings.Contains(help, h.Desc) {
			t.Errorf("the help view does not show %q: %q", h.Key, h.Desc)
		}
	}
	for _, c := range commands() {
		if !strings.Contains(help, "/"+c.name) {
			t.Errorf("the help view does not show /%s", c.name)
		}
	}
}

func TestKeysDoWhatTheHelpSays(t *testing.T) {
	f := newFake()
	f.rooms = []string{"lobby", "den", "side"}
	m := newModel(t, f, testOptions())
	alice := newPerson(t, "alice", 1)
	if got := m.room().name; got != "lobby" {
		t.Fatalf("opened on #%s, want #lobby", got)
	}
	press(t, m, 'n', tea.ModCtrl)
	if got := m.room().name; got != "den" {
		t.Errorf("ctrl+n: #%s, want #den", got)
	}
	press(t, m, 'p', tea.ModCtrl)
	press(t, m, 'p', tea.ModCtrl)
	if got := m.room().name; got != "side" {
		t.Errorf("ctrl+p twice from #den: #%s, want #side", got)
	}
	press(t, m, '1', tea.ModAlt)
	if got := m.room().name; got != "lobby" {
		t.Errorf("alt+1: #%s, want #lobby", got)
	}
	events(m, &client.MessageEvent{Message: alice.msg("side", 1, "psst")})
	press(t, m, 'a', tea.ModAlt)
	if got := m.room().name; got != "side" {
		t.Errorf("alt+a: #%s, want #side (it has something new)", got)
	}
	if r := m.room(); r.unread != 0 {
		t.Errorf("#side shown, still %d unread", r.unread)
	}
	press(t, m, tea.KeyF1, 0)
	if m.screen != screenHelp || !strings.Contains(screenText(m), "Keys") {
		t.Errorf("f1 did not show the help")
	}
	press(t, m, tea.KeyEscape, 0)
	if m.screen != screenChat {
		t.Errorf("esc did not close the help")
	}
	typeText(t, m, "one")
	press(t, m, tea.KeyEnter, tea.ModAlt)
	typeText(t, m, "two")
	if got := m.input.String(); got != "one\ntwo" {
		t.Errorf("alt+enter: input %q, want a new line in it", got)
	}
	press(t, m, tea.KeyEnter, 0)
	if got := f.postsMade(); len(got) != 1 || got[0] != "side: one\ntwo" {
		t.Errorf("enter posted %q", got)
	}
	press(t, m, tea.KeyUp, 0)
	if got := m.input.String(); got != "one\ntwo" {
		t.Errorf("up: input %q, want the line sent", got)
	}
	press(t, m, tea.KeyDown, 0)
	if got := m.input.String(); got != "" {
		t.Errorf("down: input %q, want empty again", got)
	}
	if _, cmd := m.Update(tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl}); cmd == nil || !m.quitting {
		t.Errorf("ctrl+c did not quit")
	} else if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Errorf("ctrl+c did not quit")
	}
}

func TestSlashLinesAreNeverSent(t *testing.T) {
	f := newFake()
	m := newModel(t, f, testOptions())
	enter(t, m, "/jion den")
	enter(t, m, "/msg SHA256:x hi")
	enter(t, m, "//shrug")
	enter(t, m, "/join den")
	enter(t, m, "hello den")
	want := []string{"lobby: /shrug", "den: hello den"}
	if got := f.postsMade(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("posted %q, want %q", got, want)
	}
	lobby := m.rooms[m.find("lobby")]
	var notices []string
	for _, e := range lobby.entries {
		if e.msg == nil {
			notices = append(notices, e.notice)
		}
	}
	all := strings.Join(notices, "\n")
	for _, want := range []string{"no command /jion", "no direct room with SHA256:x"} {
		if !strings.Contains(all, want) {
			t.Errorf("no notice %q in #lobby: %q", want, all)
		}
	}
}

func TestCompletion(t *testing.T) {
	f := newFake()
	f.rooms = []string{"lobby", "london"}
	m := newModel(t, f, testOptions())
	events(m,
		&client.MessageEvent{Message: newPerson(t, "alice", 1).msg("lobby", 1, "hi")},
		&client.MessageEvent{Message: newPerson(t, "albert", 2).msg("lobby", 2, "yo")},
		&client.MessageEvent{Message: newPerson(t, "bob", 3).msg("lobby", 3, "hey")})
	for _, tc := range []struct {
		typed string
		tabs  int
		want  string
	}{
		{"/jo", 1, "/join"},
		{"/q", 1, "/quit"},
		{"/join lo", 1, "/join lobby"},
		{"/join lo", 2, "/join london"},
		{"/join lo", 3, "/join lobby"},
		{"see #lon", 1, "see #london"},
		{"bo", 1, "bob:"},
		{"al", 1, "albert:"},
		{"al", 2, "alice:"},
		{"thanks b", 1, "thanks bob"},
		{"thanks zed", 1, "thanks zed"},
	} {
		m.input.take()
		typeText(t, m, tc.typed)
		for range tc.tabs {
			press(t, m, tea.KeyTab, 0)
		}
		if got := m.input.String(); got != tc.want {
			t.Errorf("%q and %d tab: %q, want %q", tc.typed, tc.tabs, got, tc.want)
		}
	}
}

// A person reading back keeps their place while messages arrive, and
// sees how many are new below; End brings them back to the newest.
func TestScrollbackKeepsItsPlace(t *testing.T) {
	f := newFake()
	alice := newPerson(t, "alice", 1)
	for i := range 100 {
		f.history["lobby"] = append(f.history["lobby"], alice.msg("lobby", i, fmt.Sprintf("old %d", i)))
	}
	m := newModel(t, f, testOptions())
	r := m.room()
	if len(r.entries) != 100 || !strings.Contains(screenText(m), "old 99") {
		t.Fatalf("history not shown: %d entries", len(r.entries))
	}
	press(t, m, tea.KeyPgUp, 0)
	bottom := r.bottom()
	if bottom >= 99 {
		t.Fatalf("pgup: bottom entry %d, want above 99", bottom)
	}
	pane := func() string {
		rows := m.messageRows(r, m.paneWidth(), m.paneHeight())
		return ansi.Strip(strings.Join(rows[:len(rows)-1], "\n"))
	}
	before := pane()
	for i := range 5 {
		events(m, &client.MessageEvent{Message: alice.msg("lobby", 100+i, fmt.Sprintf("new %d", i))})
	}
	if r.bottom() != bottom {
		t.Errorf("arrivals moved the view: bottom %d, was %d", r.bottom(), bottom)
	}
	after := screenText(m)
	if !strings.Contains(after, "5 new below") {
		t.Errorf("no \"5 new below\":\n%s", after)
	}
	if strings.Contains(after, "new 4") {
		t.Errorf("a new message is in view while reading back:\n%s", after)
	}
	if pane() != before {
		t.Errorf("the messages in view changed:\n%s\nwas\n%s", pane(), before)
	}
	step(t, m, tea.MouseWheelMsg{Button: tea.MouseWheelUp})
	if r.bottom() != bottom-3 {
		t.Errorf("wheel up: bottom %d, want %d", r.bottom(), bottom-3)
	}
	press(t, m, tea.KeyEnd, 0)
	if r.anchor != -1 || r.newBelow != 0 || !strings.Contains(screenText(m), "new 4") {
		t.Errorf("end: anchor %d, %d new below, newest not shown", r.anchor, r.newBelow)
	}
	press(t, m, tea.KeyHome, 0)
	if !strings.Contains(screenText(m), "old 0") {
		t.Errorf("home: the oldest message is not shown")
	}
}

func TestDeliveryStates(t *testing.T) {
	ack := &client.Sent{}
	for _, tc := range []struct {
		name   string
		events []client.DeliveryEvent
		want   string
	}{
		{"nothing yet", nil, "sending"},
		{"mesh", []client.DeliveryEvent{{Path: client.ViaMesh, Sent: client.Sent{MeshPeer: "p1"}}}, "stored by 1 mesh peer"},
		{"mesh twice", []client.DeliveryEvent{{Path: client.ViaMesh, Sent: client.Sent{MeshPeer: "p1"}}, {Path: client.ViaMesh, Sent: client.Sent{MeshPeer: "p2"}}}, "stored by 2 mesh peers"},
		{"relay without receipt", []client.DeliveryEvent{{Path: client.ViaRelay, Sent: *ack}}, "relayed"},
		{"relay failed, mesh done", []client.DeliveryEvent{{Path: client.ViaRelay, Err: errors.New("down")}, {Path: client.ViaMesh, Done: true, Sent: client.Sent{MeshPeer: "p1"}}}, "stored by 1 mesh peer"},
		{"no path", []client.DeliveryEvent{{Path: client.ViaMesh, Err: errors.New("no peer"), Done: true, Sent: client.Sent{Failed: []error{errors.New("no peer in the room")}}}}, "not delivered yet (in the outbox)"},
		{"late", []client.DeliveryEvent{{Path: client.ViaMesh, Err: errors.New("no peer"), Done: true}, {Path: client.ViaMesh, Sent: client.Sent{MeshPeer: "p1"}, Done: true}}, "stored by 1 mesh peer"},
		{"two relays, any", []client.DeliveryEvent{relayAck("a", 1, false), relayAck("b", 1, true)}, "relayed by 2 relays, receipt checked"},
		// relay_ack all of two: one relay's acknowledgement is not delivery,
		// whatever the mesh says.
		{"all, one of two", []client.DeliveryEvent{{Path: client.ViaMesh, Sent: client.Sent{MeshPeer: "p1", Need: 2}}, relayAck("a", 2, false)},
			"stored by 1 mesh peer, relayed by 1 of the 2 relays needed"},
		{"all, one of two, done", []client.DeliveryEvent{relayAck("a", 2, false), {Path: client.ViaRelay, Relay: "b", Err: errors.New("down"), Done: true, Sent: client.Sent{Need: 2}}},
			"relayed by 1 of the 2 relays needed, not delivered yet (in the outbox)"},
		// The outbox's next attempt: the other relay acknowledges; the
		// first one's acknowledgement of the attempt before still counts.
		{"all, over two attempts", []client.DeliveryEvent{relayAck("a", 2, false), {Path: client.ViaRelay, Relay: "b", Err: errors.New("down"), Done: true, Sent: client.Sent{Need: 2}}, done(relayAck("b", 2, true))},
			"relayed by 2 of the 2 relays needed, receipt checked"},
		// A session after: the client counts a's receipt, kept, in the
		// attempt that b acknowledges.
		{"all, a's receipt kept", []client.DeliveryEvent{{Path: client.ViaRelay, Relay: "b", Done: true,
			Sent: client.Sent{Via: []string{client.ViaRelay}, Relays: []string{"a", "b"}, Need: 2}}},
			"relayed by 2 of the 2 relays needed"},
	} {
		var d delivery
		for i := range tc.events {
			d.apply(&tc.events[i])
		}
		if got := d.String(); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// relayAck is relay's acknowledgement of a message, of need relays
// needed, with a receipt or not.
func relayAck(relay string, need int, receipt bool) client.DeliveryEvent {
	sent := client.Sent{Via: []string{client.ViaRelay}, Relays: []string{relay}, Need: need, Ack: &wire.Ack{}}
	if receipt {
		sent.Ack.Receipt = &wire.Receipt{}
	}
	return client.DeliveryEvent{Path: client.ViaRelay, Relay: relay, Sent: sent}
}

func done(e client.DeliveryEvent) client.DeliveryEvent {
	e.Done = true
	return e
}

// Our message shows at once as sending, and its line changes in place as
// the paths report, also when a report comes before the post's ID.
func TestOwnMessageDeliveryInPlace(t *testing.T) {
	f := newFake()
	m := newModel(t, f, testOptions())
	typeText(t, m, "hello")
	_, cmd := m.Update(tea.KeyPressMsg{Code: tea.KeyEnter})
	if !strings.Contains(screenText(m), "⋯ sending") {
		t.Fatalf("not shown as sending:\n%s", screenText(m))
	}
	posted := cmd().(postedMsg)
	// The mesh confirms before Post has returned.
	events(m, &client.DeliveryEvent{Room: "lobby", Path: client.ViaMesh, Sent: client.Sent{ID: posted.id, MeshPeer: "p1"}})
	step(t, m, posted)
	if s := screenText(m); !strings.Contains(s, "⋯ stored by 1 mesh peer") || strings.Count(s, "hello") != 1 {
		t.Errorf("after the mesh confirmed:\n%s", s)
	}
}

func TestMentionRingsAndMarks(t *testing.T) {
	f := newFake()
	f.rooms = []string{"lobby", "den"}
	opt := testOptions()
	opt.Bell = true
	m := newModel(t, f, opt)
	alice := newPerson(t, "alice", 1)
	events(m, &client.MessageEvent{Message: alice.msg("den", 1, "lunch?")})
	events(m, &client.MessageEvent{Message: alice.msg("den", 2, "@me are you there")})
	events(m, &client.MessageEvent{Message: alice.msg("den", 3, "meme")})
	den := m.rooms[m.find("den")]
	if den.unread != 3 || !den.mention || m.bells != 1 {
		t.Errorf("#den: %d unread, mention %v, %d bells; want 3, true, 1", den.unread, den.mention, m.bells)
	}
	if !strings.Contains(screenText(m), "#den") || !strings.Contains(screenText(m), "3@") {
		t.Errorf("the room list does not mark the mention:\n%s", screenText(m))
	}
}

func TestPasteKeepsLinesInOneMessage(t *testing.T) {
	f := newFake()
	m := newModel(t, f, testOptions())
	step(t, m, tea.PasteMsg{Content: "line one\r\nline two\nline three"})
	press(t, m, tea.KeyEnter, 0)
	if got := f.postsMade(); len(got) != 1 || got[0] != "lobby: line one\nline two\nline three" {
		t.Errorf("posted %q, want one message of three lines", got)
	}
}

func TestSearchJumpsToTheMessage(t *testing.T) {
	f := newFake()
	alice := newPerson(t, "alice", 1)
	for i := range 300 {
		text := fmt.Sprintf("chatter %d", i)
		if i == 20 {
			text = "the door code is 4711"
		}
		f.history["lobby"] = append(f.history["lobby"], alice.msg("lobby", i, text))
	}
	opt := testOptions()
	opt.HistoryLimit = 100 // the message is older than what is loaded
	m := newModel(t, f, opt)
	enter(t, m, "/search door code")
	if m.screen != screenSearch || !strings.Contains(screenText(m), "the door code is 4711") {
		t.Fatalf("no search view:\n%s", screenText(m))
	}
	press(t, m, tea.KeyEnter, 0)
	if m.screen != screenChat {
		t.Fatalf("enter did not leave the search view")
	}
	r := m.room()
	if e := r.entries[r.bottom()]; e.msg == nil || e.msg.Text != "the door code is 4711" {
		t.Errorf("the view is not on the message found")
	}
	if !strings.Contains(screenText(m), "the door code is 4711") {
		t.Errorf("the message found is not on screen:\n%s", screenText(m))
	}
}

func TestPartAndJoin(t *testing.T) {
	f := newFake()
	f.rooms = []string{"lobby", "den"}
	m := newModel(t, f, testOptions())
	enter(t, m, "/part den")
	if m.find("den") >= 0 || len(f.left) != 1 {
		t.Errorf("/part den: rooms %v, left %v", m.rooms, f.left)
	}
	enter(t, m, "/join #den")
	if m.room().name != "den" {
		t.Errorf("/join #den shows #%s", m.room().name)
	}
}

func TestFirstRunAsksForANickname(t *testing.T) {
	f := newFake()
	opt := testOptions()
	opt.FirstRun, opt.Nick = true, "anon-2xvcqr"
	m := newModel(t, f, opt)
	if !strings.Contains(screenText(m), opt.Fingerprint) || m.input.String() != "anon-2xvcqr" {
		t.Fatalf("first run: fingerprint or default nickname missing:\n%s", screenText(m))
	}
	press(t, m, 'u', tea.ModCtrl)
	enter(t, m, "Not Valid")
	if m.screen != screenFirstRun || !strings.Contains(screenText(m), "invalid nickname") {
		t.Errorf("a refused nickname is not said on the first-run screen:\n%s", screenText(m))
	}
	press(t, m, 'u', tea.ModCtrl)
	enter(t, m, "zoe")
	if m.screen != screenChat || f.nick != "zoe" || m.nick != "zoe" {
		t.Errorf("after zoe: screen %v, session nick %q, shown %q", m.screen, f.nick, m.nick)
	}
	if len(f.postsMade()) != 0 {
		t.Errorf("the nickname was sent as a message: %q", f.postsMade())
	}
}

// We are in the member list of a room as soon as we speak in it.
func TestOwnPostMakesUsAMember(t *testing.T) {
	opt := testOptions()
	opt.Key = newPerson(t, "me", 5).key
	m := newModel(t, newFake(), opt)
	enter(t, m, "hello")
	mb, ok := m.room().members[opt.Key]
	if !ok || !mb.own || mb.nick != "me" {
		t.Fatalf("not a member after speaking: %+v", mb)
	}
	if !strings.Contains(screenText(m), "0 here, 1 seen") {
		t.Errorf("the member list does not count us:\n%s", screenText(m))
	}
}

// A private room: /create makes one and shows it by its name, /invite in
// it prints a code, /join with a code joins the code's room.
func TestPrivateRoomCommands(t *testing.T) {
	f := newFake()
	m := newModel(t, f, testOptions())
	enter(t, m, "/create Plans 2027")
	if m.room().name != fakePrivate || m.room().label() != "~Plans 2027" {
		t.Fatalf("/create shows %q (%s)", m.room().name, m.room().label())
	}
	if s := screenText(m); !strings.Contains(s, `created the private room "Plans 2027"`) || !strings.Contains(s, "~Plans 2027>") {
		t.Errorf("/create: the screen does not say so:\n%s", s)
	}
	enter(t, m, "/invite")
	var code string
	for _, e := range m.room().entries {
		if i := strings.Index(e.notice, "invite-"); i >= 0 {
			code = e.notice[i:]
		}
	}
	if _, err := roster.ParseCode(code); err != nil {
		t.Fatalf("/invite in a private room: no code in %q: %v", code, err)
	}
	enter(t, m, "/join lobby")
	enter(t, m, "/join "+code)
	if m.room().name != fakePrivate || f.private != "joined" {
		t.Errorf("/join CODE shows %q; session %q", m.room().name, f.private)
	}
	enter(t, m, "/join invite-notacode")
	if s := screenText(m); !strings.Contains(s, "could not join with the code") {
		t.Errorf("/join with a bad code: not said:\n%s", s)
	}
}

func TestPathsState(t *testing.T) {
	for _, c := range []struct {
		in   client.PathsEvent
		want string
	}{
		{client.PathsEvent{}, ""},
		{client.PathsEvent{Direct: 2}, "2 direct"},
		{client.PathsEvent{Direct: 1, HolePunched: 2, Circuit: 1}, "1 direct, 2 hole-punched, 1 circuit"},
		{client.PathsEvent{Circuit: 3}, "3 circuit"},
	} {
		if got := pathsState(c.in); got != c.want {
			t.Errorf("pathsState(%+v) = %q, want %q", c.in, got, c.want)
		}
	}
}

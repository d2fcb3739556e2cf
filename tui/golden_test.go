package tui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest/v2"
	"github.com/parleychat/parley/client"
)

// The golden tests run the UI as a program (teatest) at a fixed size,
// feed it the session's events, wait until the screen shows what they
// should, and compare the final screen, as text, with testdata/*.golden
// (go test ./tui -update writes them anew; read the diff before
// committing it).

// watched is the model with its latest screen kept for the test to read
// while the program runs.
type watched struct {
	*Model
	screen atomic.Pointer[string]
}

func (w *watched) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	_, cmd := w.Model.Update(msg)
	return w, cmd
}

func (w *watched) View() tea.View {
	v := w.Model.View()
	s := ansi.Strip(w.Model.Render())
	w.screen.Store(&s)
	return v
}

// ui starts the UI on f at width×height.
func ui(t *testing.T, f *fakeSession, opt Options, width, height int) (*teatest.TestModel, *watched) {
	t.Helper()
	w := &watched{Model: New(context.Background(), f, opt)}
	tm := teatest.NewTestModel(t, w, teatest.WithInitialTermSize(width, height))
	t.Cleanup(func() { tm.Quit() })
	return tm, w
}

// waitScreen waits until the screen holds every one of want.
func waitScreen(t *testing.T, w *watched, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := w.screen.Load()
		if s != nil && containsAll(*s, want) {
			return
		}
		if time.Now().After(deadline) {
			got := "(nothing drawn)"
			if s != nil {
				got = *s
			}
			t.Fatalf("the screen never showed %q:\n%s", want, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func containsAll(s string, want []string) bool {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// requireScreen compares the screen shown now with the test's golden
// file.
func requireScreen(t *testing.T, w *watched) {
	t.Helper()
	golden.RequireEqual(t, *w.screen.Load())
}

func TestGoldenFirstRun(t *testing.T) {
	opt := testOptions()
	opt.FirstRun, opt.Nick = true, "anon-2xvcqr"
	_, w := ui(t, newFake(), opt, 100, 24)
	waitScreen(t, w, "Welcome to Parley", "nickname> anon-2xvcqr")
	requireScreen(t, w)
}

// busyRoom is a room of three people with 60 messages of history.
func busyRoom(t *testing.T) (*fakeSession, []person) {
	f := newFake()
	f.rooms = []string{"lobby", "den"}
	people := []person{newPerson(t, "alice", 1), newPerson(t, "bob", 2), newPerson(t, "carol", 3)}
	people[1].trust = client.TrustVerified
	for i := range 60 {
		p := people[i%3]
		m := p.msg("lobby", i, fmt.Sprintf("message %d from %s about the plan for today", i, p.nick))
		if i%7 == 0 {
			m.Text += ", and a longer thought that needs more than one row of the pane to be read whole"
		}
		m.Trust = p.trust
		f.history["lobby"] = append(f.history["lobby"], m)
	}
	f.peers["lobby"] = []string{people[0].key.PeerID(), people[1].key.PeerID()}
	return f, people
}

func TestGoldenScrolledBackWithNewBelow(t *testing.T) {
	f, people := busyRoom(t)
	tm, w := ui(t, f, testOptions(), 100, 24)
	waitScreen(t, w, "message 59 from")
	tm.Send(tea.KeyPressMsg{Code: tea.KeyPgUp})
	waitScreen(t, w, "more below")
	for i := range 3 {
		f.events <- &client.MessageEvent{Message: people[i].msg("lobby", 60+i, fmt.Sprintf("new %d", i))}
	}
	waitScreen(t, w, "3 new below")
	requireScreen(t, w)
}

func TestGoldenKeyChanged(t *testing.T) {
	f, _ := busyRoom(t)
	impostor := newPerson(t, "bob", 9)
	m := impostor.msg("lobby", 70, "hi, it's bob on a new laptop, send me the files")
	m.Trust = client.TrustKeyChanged
	_, w := ui(t, f, testOptions(), 100, 24)
	waitScreen(t, w, "message 59 from")
	f.events <- &client.AlarmEvent{Kind: client.AlarmKeyChanged, Room: "lobby", Sender: impostor.key, Nick: "bob", ID: m.ID}
	f.events <- &client.MessageEvent{Message: m}
	waitScreen(t, w, "KEY CHANGED", "new laptop")
	requireScreen(t, w)
}

func TestGoldenDelivery(t *testing.T) {
	f, _ := busyRoom(t)
	tm, w := ui(t, f, testOptions(), 100, 24)
	waitScreen(t, w, "message 59 from")
	tm.Type("is anyone there?")
	tm.Send(tea.KeyPressMsg{Code: tea.KeyEnter})
	waitScreen(t, w, "⋯ sending")
	posts := waitPosts(t, f, 1)
	id := client.ID(postID(1, "lobby", "is anyone there?"))
	_ = posts
	f.events <- &client.DeliveryEvent{Room: "lobby", Path: client.ViaRelay, Err: errors.New("relay down"),
		Sent: client.Sent{ID: id}}
	f.events <- &client.DeliveryEvent{Room: "lobby", Path: client.ViaMesh, Err: errors.New("no peer"), Done: true,
		Sent: client.Sent{ID: id, Failed: []error{errors.New("relay: cannot reach the relay"), errors.New("mesh: no peer in the room")}}}
	t.Run("kept", func(t *testing.T) {
		waitScreen(t, w, "not delivered yet")
		requireScreen(t, w)
	})
	f.events <- &client.DeliveryEvent{Room: "lobby", Path: client.ViaMesh, Done: true, Sent: client.Sent{ID: id, MeshPeer: "p1", Via: []string{client.ViaMesh}}}
	t.Run("delivered", func(t *testing.T) {
		waitScreen(t, w, "stored by 1 mesh peer")
		requireScreen(t, w)
	})
}

func TestGoldenAuditAlarm(t *testing.T) {
	f, _ := busyRoom(t)
	_, w := ui(t, f, testOptions(), 100, 24)
	waitScreen(t, w, "message 59 from")
	f.events <- &client.RelayEvent{Connected: true, Transport: "quic", RTT: 12 * time.Millisecond}
	f.events <- &client.AlarmEvent{Kind: client.AlarmAuditLog, Err: errors.New("relay: audit log: the log of 16 records does not extend the log of 8")}
	waitScreen(t, w, "SECURITY", "rewriting")
	requireScreen(t, w)
}

func TestGoldenHelp(t *testing.T) {
	tm, w := ui(t, newFake(), testOptions(), 100, 40)
	waitScreen(t, w, "#lobby>")
	tm.Send(tea.KeyPressMsg{Code: tea.KeyF1})
	waitScreen(t, w, "Parley help")
	requireScreen(t, w)
}

func TestGoldenSmallest(t *testing.T) {
	f, _ := busyRoom(t)
	t.Run("60x15", func(t *testing.T) {
		_, w := ui(t, f, testOptions(), 60, 15)
		waitScreen(t, w, "message 59 from")
		requireScreen(t, w)
	})
	t.Run("59x15", func(t *testing.T) {
		_, w := ui(t, f, testOptions(), 59, 15)
		waitScreen(t, w, "needs at least 60x15")
		requireScreen(t, w)
	})
}

// waitPosts waits until the session has n posts.
func waitPosts(t *testing.T, f *fakeSession, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if p := f.postsMade(); len(p) >= n {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d posts in 30 s", n)
		}
	}
}

// With NO_COLOR set, the screen has no colour at all (bold and reverse
// stay: they are not colours). TTY_FORCE makes the test's output count
// as a 256-colour terminal, where the same run without NO_COLOR draws
// colours.
func TestNoColor(t *testing.T) {
	f, _ := busyRoom(t)
	w := &watched{Model: New(context.Background(), f, testOptions())}
	tm := teatest.NewTestModel(t, w, teatest.WithInitialTermSize(100, 24),
		teatest.WithProgramOptions(tea.WithEnvironment([]string{"NO_COLOR=1", "TERM=xterm-256color", "TTY_FORCE=1"})))
	waitScreen(t, w, "message 59 from")
	if err := tm.Quit(); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(tm.FinalOutput(t))
	if err != nil {
		t.Fatal(err)
	}
	if i := colourSGR.FindIndex(out); i != nil {
		t.Errorf("a colour with NO_COLOR set: %q", out[max(i[0]-20, 0):i[1]])
	}
}

// colourSGR matches an SGR sequence that sets a colour: 30-37, 38;...,
// 40-47, 48;..., 90-97, 100-107 as one of its parameters.
var colourSGR = regexp.MustCompile(`\x1b\[(?:[0-9;]*;)?(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:;[0-9;]*)?m`)

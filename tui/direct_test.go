package tui

import (
	"strings"
	"testing"

	"github.com/parleychat/parley/client"
)

func TestMsgOpensTheDirectRoomAndSends(t *testing.T) {
	f := newFake()
	bob := newPerson(t, "bob", 2)
	f.contacts = []client.Contact{{Nick: "bob", Key: bob.key}}
	m := newModel(t, f, testOptions())
	enter(t, m, "/msg bob hello bob")
	if got := m.room().name; got != fakeDirect {
		t.Errorf("after /msg the screen shows #%s, want the direct room", got)
	}
	if got := f.postsMade(); len(got) != 1 || got[0] != fakeDirect+": hello bob" {
		t.Errorf("posted %q, want the text in the direct room", got)
	}
	r := m.rooms[m.find(fakeDirect)]
	r.title = "@bob" // what the client names it
	if got := r.label(); got != "@bob" {
		t.Errorf("the direct room shows as %q, want @bob", got)
	}
	enter(t, m, "/msg")
	if !strings.Contains(screenText(m), "usage: /msg PERSON") {
		t.Errorf("/msg alone does not say how: %s", screenText(m))
	}
}

func TestSealedMessageWaitsThenOpens(t *testing.T) {
	f := newFake()
	m := newModel(t, f, testOptions())
	alice := newPerson(t, "alice", 1)
	msg := alice.msg("lobby", 1, "")
	msg.Nick, msg.Sealed, msg.Waiting = "", true, true
	events(m, &client.MessageEvent{Message: msg})
	screen := screenText(m)
	if !strings.Contains(screen, "[waiting for key]") || !strings.Contains(screen, alice.key.ShortFingerprint()) {
		t.Fatalf("a sealed message without its key shows as:\n%s", screen)
	}
	open := msg
	open.Nick, open.Text, open.Waiting = "alice", "the secret is out", false
	events(m, &client.OpenedEvent{Message: open})
	screen = screenText(m)
	if strings.Contains(screen, "waiting for key") || !strings.Contains(screen, "the secret is out") {
		t.Errorf("after its key came:\n%s", screen)
	}
	never := alice.msg("lobby", 2, "")
	never.Nick, never.Sealed, never.Never = "", true, "its sender key was not sealed to you"
	events(m, &client.MessageEvent{Message: never})
	if screen := screenText(m); !strings.Contains(screen, "[cannot be opened: its sender key was not sealed") {
		t.Errorf("a message that never opens shows as:\n%s", screen)
	}
}

func TestFoundRoomIsJoinedNotShown(t *testing.T) {
	f := newFake()
	m := newModel(t, f, testOptions())
	events(m, &client.RoomFoundEvent{Room: fakeDirect})
	if m.find(fakeDirect) < 0 {
		t.Fatal("a room found on the relay was not joined")
	}
	if got := m.room().name; got != "lobby" {
		t.Errorf("the screen moved to #%s; it stays where the person was", got)
	}
	if !strings.Contains(screenText(m), "you are in a private room this home had not joined") {
		t.Errorf("no notice of the room found:\n%s", screenText(m))
	}
}

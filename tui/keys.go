package tui

import (
	"charm.land/bubbles/v2/key"
)

// KeyMap is every key the UI answers to. It drives both Update and the
// help view, so that the help never lists a key that does nothing.
type KeyMap struct {
	Send        key.Binding
	Newline     key.Binding
	Complete    key.Binding
	HistoryPrev key.Binding
	HistoryNext key.Binding
	PageUp      key.Binding
	PageDown    key.Binding
	Top         key.Binding
	Bottom      key.Binding
	NextRoom    key.Binding
	PrevRoom    key.Binding
	RoomN       key.Binding
	Activity    key.Binding
	Redraw      key.Binding
	Help        key.Binding
	Close       key.Binding
	Quit        key.Binding
}

// DefaultKeyMap is the key map of the UI.
func DefaultKeyMap() KeyMap {
	return KeyMap{
		Send:        key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "send the line (or run the /command)")),
		Newline:     key.NewBinding(key.WithKeys("alt+enter", "ctrl+j"), key.WithHelp("alt+enter", "new line in the message")),
		Complete:    key.NewBinding(key.WithKeys("tab"), key.WithHelp("tab", "complete a command, room or nickname")),
		HistoryPrev: key.NewBinding(key.WithKeys("up"), key.WithHelp("↑", "previous line typed")),
		HistoryNext: key.NewBinding(key.WithKeys("down"), key.WithHelp("↓", "next line typed")),
		PageUp:      key.NewBinding(key.WithKeys("pgup"), key.WithHelp("pgup", "scroll back")),
		PageDown:    key.NewBinding(key.WithKeys("pgdown"), key.WithHelp("pgdn", "scroll forward")),
		Top:         key.NewBinding(key.WithKeys("home"), key.WithHelp("home", "oldest message")),
		Bottom:      key.NewBinding(key.WithKeys("end"), key.WithHelp("end", "newest message")),
		NextRoom:    key.NewBinding(key.WithKeys("ctrl+n"), key.WithHelp("ctrl+n", "next room")),
		PrevRoom:    key.NewBinding(key.WithKeys("ctrl+p"), key.WithHelp("ctrl+p", "previous room")),
		RoomN: key.NewBinding(key.WithKeys("alt+1", "alt+2", "alt+3", "alt+4", "alt+5", "alt+6", "alt+7", "alt+8", "alt+9"),
			key.WithHelp("alt+1..9", "room 1 to 9")),
		Activity: key.NewBinding(key.WithKeys("alt+a"), key.WithHelp("alt+a", "next room with something new")),
		Redraw:   key.NewBinding(key.WithKeys("ctrl+l"), key.WithHelp("ctrl+l", "redraw the screen")),
		Help:     key.NewBinding(key.WithKeys("f1"), key.WithHelp("f1, /help", "this help")),
		Close:    key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "close help or search")),
		Quit:     key.NewBinding(key.WithKeys("ctrl+c"), key.WithHelp("ctrl+c, /quit", "quit (unsent messages stay in the outbox)")),
	}
}

// bindings lists the key map in the order the help view shows it.
func (k KeyMap) bindings() []key.Binding {
	return []key.Binding{
		k.Send, k.Newline, k.Complete, k.HistoryPrev, k.HistoryNext,
		k.PageUp, k.PageDown, k.Top, k.Bottom,
		k.NextRoom, k.PrevRoom, k.RoomN, k.Activity,
		k.Redraw, k.Help, k.Close, k.Quit,
	}
}

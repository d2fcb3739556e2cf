// Package tui is Parley's terminal user interface: the chat screen that
// `chat` opens on a terminal. It shows what a client session hands out on
// its event stream (client.Client.Events) and acts through the session's
// methods; it imports client and nothing below it.
//
// A newcomer finds: the model and its messages in model.go, what a key
// does in keys.go (one KeyMap for the keys and the help view), the input
// line in input.go, the slash commands in commands.go, a room's
// scrollback in room.go, what became of our own messages in delivery.go,
// and how a screen is drawn in view.go.
package tui

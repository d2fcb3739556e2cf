package client

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/parleychat/parley/identity"
)

// Leaving a room takes it off the home folder's list; its history and
// its outbox stay, and joining again brings it back.
func TestLeave(t *testing.T) {
	c := openOffline(t)
	ctx := context.Background()
	for _, r := range []string{"den", "lobby"} {
		if err := c.Join(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	sent, _ := c.Send(ctx, "den", "kept") // no path: in the outbox
	if err := c.Leave(ctx, "den"); err != nil {
		t.Fatal(err)
	}
	if rooms, _ := c.Rooms(ctx); !slices.Equal(rooms, []string{"lobby"}) {
		t.Errorf("rooms after leaving den: %v", rooms)
	}
	if hist, err := c.History(ctx, "den", "", 10); err != nil || len(hist) != 1 || hist[0].ID != sent.ID {
		t.Errorf("den's history after leaving: %v, %v", hist, err)
	}
	if out, err := c.st.Outbox(ctx, "den"); err != nil || len(out) != 1 {
		t.Errorf("den's outbox after leaving: %d, %v", len(out), err)
	}
	if err := c.Join(ctx, "den"); err != nil {
		t.Fatal(err)
	}
	if rooms, _ := c.Rooms(ctx); !slices.Equal(rooms, []string{"den", "lobby"}) {
		t.Errorf("rooms after joining den again: %v", rooms)
	}
}

func TestSetNick(t *testing.T) {
	c := openOffline(t)
	if err := c.SetNick("Bad Nick"); !errors.Is(err, identity.ErrBadNick) {
		t.Errorf("SetNick(\"Bad Nick\"): %v, want ErrBadNick", err)
	}
	if err := c.SetNick("zoe"); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.Home().Config()
	if err != nil || cfg.Nick != "zoe" || c.Nick() != "zoe" {
		t.Errorf("after SetNick(zoe): config %q (%v), session %q", cfg.Nick, err, c.Nick())
	}
	sent, _ := c.Send(context.Background(), "r", "hi")
	if h, _ := c.History(context.Background(), "r", "", 1); len(h) != 1 || h[0].ID != sent.ID || h[0].Nick != "zoe" {
		t.Errorf("the next message carries %+v, want nick zoe", h)
	}
}

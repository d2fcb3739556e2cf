package tui

import (
	"context"
	"fmt"
	"io"

	tea "charm.land/bubbletea/v2"
)

// Run shows the UI on the terminal in and out until the person quits or
// ctx ends. The session stays open: the caller closes it, which leaves
// what was not delivered in the outbox.
func Run(ctx context.Context, s Session, opt Options, in io.Reader, out io.Writer) error {
	m := New(ctx, s, opt)
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out))
	if _, err := p.Run(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("tui: %w", err)
	}
	return nil
}

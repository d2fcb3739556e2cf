package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/parleychat/parley/tui"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// LogFile is where chat's terminal UI writes its logs, in the home
// folder: nothing is written to the terminal while the UI runs.
const LogFile = "chat.log"

// onTerminal reports whether chat talks to a person at a terminal.
func (c *cli) onTerminal() bool {
	out, ok := c.stdout.(*os.File)
	return ok && c.stdin != nil && term.IsTerminal(int(c.stdin.Fd())) && term.IsTerminal(int(out.Fd()))
}

// ui opens the terminal UI on room (empty: the rooms of the home
// folder, or lobby) until the person quits. What was not delivered stays
// in the outbox.
func (c *cli) ui(room string) int {
	if room != "" {
		if err := needRoom(room); err != nil {
			return c.usageError(err)
		}
	}
	logs, err := c.openLog()
	if err != nil {
		return c.fail(err)
	}
	defer logs.Close()
	c.logTo = logs
	// From here to the end of the UI, standard error is the log file:
	// put back before any error is shown.
	restore, err := quietStderr(logs)
	if err != nil {
		return c.fail(err)
	}
	defer restore()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	cl, err := c.session(ctx, false)
	if err != nil {
		restore()
		return c.fail(err)
	}
	h := cl.Home()
	cfg, err := c.config(h)
	if err != nil {
		cl.Close()
		restore()
		return c.fail(err)
	}
	pk := h.Key.Public()
	opt := tui.Options{Room: room, Fingerprint: pk.Fingerprint(), PeerID: pk.PeerID(), Key: pk, Nick: cl.Nick(),
		Mode: cfg.Mode, Relays: cfg.Relays, FirstRun: h.Created, Bell: cfg.Bell}
	runErr := tui.Run(ctx, cl, opt, c.stdin, c.stdout)
	auditErr := auditError(cl)
	closeErr := cl.Close()
	restore()
	switch {
	case auditErr != nil:
		return c.fail(auditErr)
	case runErr != nil:
		return c.fail(runErr)
	case closeErr != nil:
		return c.fail(closeErr)
	}
	return exitOK
}

// quietStderr sends what is written to the process's standard error
// (by libraries that log on their own, such as quic-go's warnings) to the
// log file while the UI draws the terminal, and returns the function that
// puts it back.
func quietStderr(logs *os.File) (restore func(), err error) {
	saved, err := unix.Dup(2)
	if err != nil {
		return nil, fmt.Errorf("standard error: %w", err)
	}
	if err := unix.Dup2(int(logs.Fd()), 2); err != nil {
		unix.Close(saved)
		return nil, fmt.Errorf("standard error: %w", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			unix.Dup2(saved, 2)
			unix.Close(saved)
		})
	}, nil
}

// openLog opens the UI's log file in the home folder, creating the
// folder on first use.
func (c *cli) openLog() (*os.File, error) {
	dir, err := c.homeDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("home folder: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, LogFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	return f, nil
}

// sessionLog is where a session logs: the UI's log file (info, or
// everything with --verbose), else standard error (errors, or everything
// with --verbose).
func (c *cli) sessionLog() *slog.Logger {
	level := slog.LevelError
	out := c.stderr
	if c.logTo != nil {
		level, out = slog.LevelInfo, c.logTo
	}
	if c.g.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
}

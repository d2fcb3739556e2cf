package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
)

// redeem redeems a relay's invite token: the relay puts the key on its
// allow list.
func (c *cli) redeem(args []string) int {
	fs := c.flags("redeem")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := c.parse(fs, args, 1); err != nil {
		return c.usageError(err)
	}
	h, err := c.open()
	if err != nil {
		return c.fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	addr, err := c.redeemWith(ctx, h, c.args[0])
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "Invite redeemed: the relay %s has you (%s) on its allow list.\n",
		addr, h.Key.Public().Fingerprint())
	return exitOK
}

// errNoRelayForInvite: an invite is redeemed with a relay, and none is set.
var errNoRelayForInvite = fmt.Errorf("%w: an invite is redeemed with a relay: give --relay FINGERPRINT@HOST:PORT, "+
	"or set relay in config.toml", client.ErrConfig)

// redeemWith redeems the invite token with the configured relay, and
// returns the relay's address.
func (c *cli) redeemWith(ctx context.Context, h *client.Home, token string) (relay.Addr, error) {
	cfg, err := c.config(h)
	if err != nil {
		return relay.Addr{}, err
	}
	if len(cfg.Relays) == 0 {
		return relay.Addr{}, errNoRelayForInvite
	}
	// An invite is one relay's: with several, the first one's.
	addr, err := relay.ParseAddr(cfg.Relays[0])
	if err != nil {
		return addr, fmt.Errorf("%w: %w", client.ErrConfig, err)
	}
	rc, err := relay.Dial(ctx, addr, h.Key, relay.ClientOptions{Log: c.logger()})
	if err != nil {
		return addr, relayError(addr, err)
	}
	defer rc.Close()
	if err := rc.Redeem(ctx, token); err != nil {
		return addr, relayError(addr, err)
	}
	return addr, nil
}

// relayError is err from the relay at addr, as the exit codes tell it: a
// relay that is not the one named, one that said no, or an audit error
// stay what they are; anything else is a relay that cannot be reached.
func relayError(addr relay.Addr, err error) error {
	var refused *wire.RelayError
	if errors.Is(err, relay.ErrWrongRelay) || errors.As(err, &refused) || errors.Is(err, relay.ErrAuditLog) {
		return err
	}
	return fmt.Errorf("%w %s: %w", client.ErrRelayUnreachable, addr, err)
}

// logger logs to standard error with --verbose, else nothing.
func (c *cli) logger() *slog.Logger {
	if !c.g.verbose {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

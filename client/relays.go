package client

import (
	"context"
	"errors"
	"sync"

	"github.com/parleychat/parley/relay"
)

// relaySet is the session's relays, in the order the config gives them.
// Each is a path of its own: a message goes to every one, comes from
// every one, and the merger shows it once. None is special: what one
// relay answers (the peers of a room, key packages, the private rooms we
// are in) is asked of each that is connected, since each knows only its
// own clients.
type relaySet []*relayPath

// openRelays starts the connection to each configured relay, together,
// and waits for the first tries (relayPath.firstTry) until one relay is
// connected or every try has ended: a relay that is down does not hold
// up a session that another relay serves. A relay with another key than
// its address names, or one that refuses us, fails the whole if its try
// ends before that: the config is wrong, and the person must hear of it;
// after it, the person hears of it as a RelayEvent.
func (c *Client) openRelays(ctx context.Context) (relaySet, error) {
	addrs, err := c.cfg.Relays.Addrs()
	if err != nil {
		return nil, err
	}
	var rs relaySet
	for _, a := range addrs {
		p, err := c.startRelay(ctx, a)
		if err != nil {
			rs.closeAll()
			return nil, err
		}
		rs = append(rs, p)
	}
	// The tries that outlast Open end with the session too: Close must
	// not wait for a relay whose host does not answer.
	tctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	var left sync.WaitGroup
	tries := make(chan error, len(rs))
	for _, p := range rs {
		left.Add(1)
		c.wg.Go(func() {
			defer left.Done()
			err := p.firstTry(tctx)
			tries <- err
			if err != nil {
				c.emit(&RelayEvent{Relay: p.addr.String(), Err: err})
			}
		})
	}
	c.wg.Go(func() {
		left.Wait()
		stop()
		cancel()
	})
	for range rs {
		if err := <-tries; err != nil {
			rs.closeAll()
			return nil, err
		}
		if rs.anyUp() {
			break
		}
	}
	return rs, nil
}

// closeAll closes each relay's connection at once (a session that does
// not open).
func (rs relaySet) closeAll() {
	for _, p := range rs {
		p.rc.Close()
	}
}

// anyUp reports whether a relay is connected.
func (rs relaySet) anyUp() bool { return rs.firstUp() != nil }

// connected returns the relays that are connected now.
func (rs relaySet) connected() []*relayPath {
	var out []*relayPath
	for _, p := range rs {
		if p.up() {
			out = append(out, p)
		}
	}
	return out
}

// firstUp returns the first relay that is connected, or nil.
func (rs relaySet) firstUp() *relayPath {
	for _, p := range rs {
		if p.up() {
			return p
		}
	}
	return nil
}

// err is nil if a relay is connected, else why none is.
func (rs relaySet) err() error {
	var errs []error
	for _, p := range rs {
		err := p.err()
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// auditErr returns the audit errors of the relays whose log fails its
// checks: one such relay is one too many.
func (rs relaySet) auditErr() error {
	var errs []error
	for _, p := range rs {
		if err := p.auditErr(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// awaitDown returns once no relay is connected, or ctx or done ends
// first: reports whether it was that.
func (rs relaySet) awaitDown(ctx context.Context, done <-chan struct{}) bool {
	for {
		p := rs.firstUp()
		if p == nil {
			return true
		}
		select {
		case <-p.whenDown():
		case <-done:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// settle finishes each relay's audit checks (relayPath.settle), together.
func (rs relaySet) settle(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range rs {
		wg.Go(func() { p.settle(ctx) })
	}
	wg.Wait()
}

// close closes each relay.
func (rs relaySet) close(ctx context.Context) error {
	var errs []error
	for _, p := range rs {
		errs = append(errs, p.close(ctx))
	}
	return errors.Join(errs...)
}

// Relay returns the first relay connection, or nil without a relay.
func (c *Client) Relay() *relay.Client {
	if len(c.relays) == 0 {
		return nil
	}
	return c.relays[0].rc
}

// Relays returns the relay connections, in the order of the config.
func (c *Client) Relays() []*relay.Client {
	out := make([]*relay.Client, len(c.relays))
	for i, p := range c.relays {
		out[i] = p.rc
	}
	return out
}

// AuditError returns the audit errors of the relays whose log fails its
// checks, or nil.
func (c *Client) AuditError() error { return c.relays.auditErr() }

// RelayError returns nil if a configured relay is connected now (or none
// is configured), else why none is.
func (c *Client) RelayError() error { return c.relays.err() }

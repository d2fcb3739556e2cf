package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
)

// Via is which transports a client may reach its relay over.
type Via uint8

const (
	// ViaAuto tries QUIC and TCP together and takes the first that
	// connects (happy eyeballs), starting with the one that worked
	// last: QUIC at first.
	ViaAuto Via = iota
	// ViaQUIC uses QUIC only.
	ViaQUIC
	// ViaTCP uses TCP with TLS only, for networks that block UDP.
	ViaTCP
)

func (v Via) String() string {
	switch v {
	case ViaAuto:
		return "auto"
	case ViaQUIC:
		return "quic"
	case ViaTCP:
		return "tcp"
	}
	return fmt.Sprintf("Via(%d)", uint8(v))
}

// ErrBadVia: not a transport a client can be told to use.
var ErrBadVia = errors.New("relay: transport is not quic, tcp or auto")

// ParseVia parses "auto", "quic" or "tcp"; "" is auto.
func ParseVia(s string) (Via, error) {
	switch s {
	case "", "auto":
		return ViaAuto, nil
	case "quic":
		return ViaQUIC, nil
	case "tcp":
		return ViaTCP, nil
	}
	return ViaAuto, fmt.Errorf("%w: %q", ErrBadVia, s)
}

// headStart is how long the first transport has to itself before the
// other starts too: long enough for a QUIC handshake on any path that
// passes UDP (RFC 8305 suggests 250 ms for its connection attempts), short
// enough that a network dropping UDP costs a person little.
const headStart = 300 * time.Millisecond

// dial connects to the relay over the transports the client may use.
func (c *Client) dial(ctx context.Context) (transport.Conn, error) {
	switch c.via {
	case ViaQUIC:
		return c.dialQUIC(ctx)
	case ViaTCP:
		return c.dialTCP(ctx)
	}
	first, second := c.dialQUIC, c.dialTCP
	kinds := [2]transport.Kind{transport.QUIC, transport.TCP}
	if transport.Kind(c.worked.Load()) == transport.TCP {
		first, second = second, first
		kinds[0], kinds[1] = kinds[1], kinds[0]
	}
	c.log.Debug("dialling relay", "relay", c.addr.String(), "first", kinds[0].String(), "then", kinds[1].String(), "after", headStart)
	return race(ctx, first, second, headStart)
}

func (c *Client) dialQUIC(ctx context.Context) (transport.Conn, error) {
	conn, err := dialOn(ctx, c.tr, c.addr.HostPort, c.tls, c.keepAlive)
	if err != nil {
		return nil, fmt.Errorf("over QUIC: %w", err)
	}
	return transport.FromQUIC(conn), nil
}

func (c *Client) dialTCP(ctx context.Context) (transport.Conn, error) {
	conn, err := transport.DialTCP(ctx, c.addr.HostPort, c.tls, transport.TCPOptions{KeepAlive: c.keepAlive})
	if err != nil {
		return nil, fmt.Errorf("over TCP: %w", err)
	}
	return conn, nil
}

type dialer func(context.Context) (transport.Conn, error)

type dialResult struct {
	conn transport.Conn
	err  error
	i    int // which attempt: 0 first, 1 second
}

// race runs first, and second after delay or as soon as first fails, and
// returns the first connection made; the other attempt is cancelled, and
// a connection it makes all the same is closed. If both fail, the error
// is a refusal by the relay if either was one (it would refuse the other
// way too), else both errors.
func race(ctx context.Context, first, second dialer, delay time.Duration) (transport.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan dialResult, 2)
	start := func(i int, d dialer) {
		go func() {
			conn, err := d(ctx)
			results <- dialResult{conn, err, i}
		}()
	}
	start(0, first)
	timer := time.NewTimer(delay)
	defer timer.Stop()
	started, pending := 1, 1
	var errs [2]error
	for pending > 0 {
		select {
		case <-timer.C:
		case r := <-results:
			pending--
			if r.err == nil {
				if pending > 0 {
					go closeLate(results)
				}
				return r.conn, nil
			}
			errs[r.i] = r.err
		}
		if started == 1 {
			start(1, second)
			started, pending = 2, pending+1
		}
	}
	return nil, raceError(errs[0], errs[1])
}

// closeLate waits for the attempt that lost a race, and closes the
// connection it made, if it made one after all.
func closeLate(results <-chan dialResult) {
	if r := <-results; r.conn != nil {
		r.conn.Close(wire.CodeOK, "")
	}
}

// raceError is the error of a race both attempts lost.
func raceError(first, second error) error {
	for _, err := range []error{first, second} {
		if permanent(err) {
			return err
		}
	}
	return fmt.Errorf("%w; %w", first, second)
}

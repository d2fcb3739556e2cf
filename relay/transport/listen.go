package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/parleychat/parley/relay/wire"
)

// ListenOptions are the relay's limits on TCP connections, read for each
// new one.
type ListenOptions struct {
	TCPOptions
	// HandshakeTimeout bounds the TLS handshake.
	HandshakeTimeout time.Duration
}

// maxHandshakes is the most TLS handshakes a listener runs at once; more
// connections wait in the kernel's backlog.
const maxHandshakes = 64

// TCPListener accepts relay connections over TCP: it runs their TLS
// handshakes, a few at a time and each within the handshake timeout, and
// hands over those that completed one speaking the relay protocol.
type TCPListener struct {
	ln    net.Listener
	conf  *tls.Config
	opts  func() ListenOptions
	ready chan *tcpConn
	ctx   context.Context // ends with Close
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu    sync.Mutex
	open  map[*tcpConn]struct{} // handed over and not closed, for Abort
	ended bool
}

// ListenTCP listens on addr. conf must require TLS 1.3 and a client
// certificate, and name the relay protocol's ALPNs.
func ListenTCP(addr string, conf *tls.Config, opts func() ListenOptions) (*TCPListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &TCPListener{ln: ln, conf: conf, opts: opts, ready: make(chan *tcpConn), open: map[*tcpConn]struct{}{}}
	l.ctx, l.stop = context.WithCancel(context.Background())
	l.wg.Go(l.acceptLoop)
	return l, nil
}

// Addr is the address the listener listens on.
func (l *TCPListener) Addr() net.Addr { return l.ln.Addr() }

func (l *TCPListener) acceptLoop() {
	slots := make(chan struct{}, maxHandshakes)
	for {
		select {
		case slots <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		nc, err := l.ln.Accept()
		if err != nil {
			<-slots
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // a transient failure (out of descriptors)
			}
			return
		}
		l.wg.Go(func() {
			defer func() { <-slots }()
			l.handshake(nc)
		})
	}
}

// handshake runs one connection's handshake and hands it over.
func (l *TCPListener) handshake(nc net.Conn) {
	o := l.opts()
	raw := &countingConn{Conn: nc}
	tc := tls.Server(raw, l.conf)
	ctx, cancel := context.WithTimeout(l.ctx, o.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if _, ok := wire.ParseALPN(tc.ConnectionState().NegotiatedProtocol); err != nil || !ok {
		// A client that offered no ALPN gets a handshake; it gets
		// nothing more. One that offered a relay version the relay
		// does not speak is refused with both versions by the relay
		// (wire.Versions.Refusal).
		tc.Close()
		return
	}
	c := newTCPConn(raw, tc, o.TCPOptions)
	c.onClose = l.forget
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		tc.Close()
		return
	}
	l.open[c] = struct{}{}
	l.mu.Unlock()
	select {
	case l.ready <- c:
	case <-l.ctx.Done():
		c.abort()
	}
}

func (l *TCPListener) forget(c *tcpConn) {
	l.mu.Lock()
	delete(l.open, c)
	l.mu.Unlock()
}

// Accept returns the next connection whose handshake completed.
func (l *TCPListener) Accept(ctx context.Context) (Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops accepting; connections handed over stay open.
func (l *TCPListener) Close() error {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return nil
	}
	l.ended = true
	l.stop()
	l.mu.Unlock()
	err := l.ln.Close()
	l.wg.Wait()
	return err
}

// Abort closes the listener and drops every connection it handed over,
// without a word to the clients.
func (l *TCPListener) Abort() {
	l.Close()
	l.mu.Lock()
	open := make([]*tcpConn, 0, len(l.open))
	for c := range l.open {
		open = append(open, c)
	}
	l.mu.Unlock()
	for _, c := range open {
		c.abort()
	}
}

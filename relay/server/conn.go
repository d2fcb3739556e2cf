package server

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
)

// A connection's admission: its client certificate, the per-address rate,
// the connection limit and the policy, then its streams.

// client is one authenticated connection.
type client struct {
	id       identity.PublicKey
	fp       string
	addr     net.Addr
	conn     transport.Conn
	admitted atomic.Bool // false: an invite-mode newcomer, which may only redeem
	log      *slog.Logger
	// streams counts the streams being served: their handlers, and the
	// subscriptions, which outlive theirs.
	streams sync.WaitGroup
}

func (s *Server) refuse(conn transport.Conn, log *slog.Logger, code wire.ErrorCode, msg string) {
	s.refuseAs(conn, log, identity.PublicKey{}, code, msg)
}

// refuseAs closes conn after authentication, recording the refusal.
func (s *Server) refuseAs(conn transport.Conn, log *slog.Logger, id identity.PublicKey, code wire.ErrorCode, msg string) {
	s.recordRefusal(context.Background(), hostOf(conn.RemoteAddr()), &audit.Record{Kind: audit.KindRefuse, PolicyVersion: s.policy.Version(), Identity: id,
		Addr: addrOf(conn.RemoteAddr()), Code: code, Detail: msg})
	s.metrics.refused.WithLabelValues(code.String()).Inc()
	log.Info("connection refused", "code", code.String(), "reason", msg)
	conn.Close(code, truncate(msg))
}

// serveConn admits a connection and serves its streams until it ends.
func (s *Server) serveConn(ctx context.Context, conn transport.Conn) {
	c, d, ok := s.admit(conn)
	if !ok {
		return
	}
	defer s.conns.release(c.fp, hostOf(c.addr))
	s.record(ctx, &audit.Record{Kind: audit.KindConnect, PolicyVersion: d.Version, Identity: c.id, Addr: addrOf(c.addr), Detail: d.Reason})
	s.metrics.connections.Inc()
	defer s.metrics.connections.Dec()
	s.clientsMu.Lock()
	s.clients[c] = struct{}{}
	s.clientsMu.Unlock()
	defer func() {
		s.clientsMu.Lock()
		delete(s.clients, c)
		s.clientsMu.Unlock()
	}()
	c.log.Debug("connected", "policy_version", d.Version, "decision", d.Reason)

	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			break
		}
		c.streams.Go(func() { s.serveStream(ctx, c, str) })
	}
	c.streams.Wait()
	if ctx.Err() != nil {
		conn.Close(wire.CodeShuttingDown, "the relay is shutting down")
		return
	}
	conn.Close(wire.CodeOK, "")
}

// admit checks a new connection: its relay protocol version, its
// certificate, its address's rate of
// new connections, the relay's connection limit and the policy. A
// connection it admits counts in s.conns (for its identity and its
// address too); one it refuses is closed, with
// the refusal recorded.
func (s *Server) admit(conn transport.Conn) (*client, Decision, bool) {
	addr := conn.RemoteAddr()
	log := s.log.With("addr", addr.String())
	state := conn.TLS()
	if msg, bad := s.versions.Refusal(state.NegotiatedProtocol); bad {
		s.refuse(conn, log, wire.CodeUnsupported, msg)
		return nil, Decision{}, false
	}
	if len(state.PeerCertificates) != 1 {
		s.refuse(conn, log, wire.CodeNotAllowed, "no client certificate")
		return nil, Decision{}, false
	}
	id, err := relay.CertIdentity(state.PeerCertificates[0])
	if err != nil { // the TLS config checked it already
		s.refuse(conn, log, wire.CodeNotAllowed, err.Error())
		return nil, Decision{}, false
	}
	c := &client{id: id, fp: id.Fingerprint(), addr: addr, conn: conn, log: log.With("identity", id.Fingerprint())}
	host := hostOf(addr)
	if !s.addrRate.allow(host, s.now()) {
		s.refuseAs(conn, c.log, id, wire.CodeRateLimited, "too many new connections from "+host)
		return nil, Decision{}, false
	}
	if ok, why := s.conns.take(c.fp, host, s.lim()); !ok {
		s.refuseAs(conn, c.log, id, wire.CodeTooMany, why)
		return nil, Decision{}, false
	}
	d := s.policy.Connect(id)
	switch {
	case d.Allow:
		c.admitted.Store(true)
	case d.Code == wire.CodeNotAllowed && s.policy.Mode() == wire.PolicyInvite:
		// May redeem an invite, nothing else.
	default:
		s.conns.release(c.fp, host)
		s.refuseAs(conn, c.log, id, d.Code, d.Err().(*wire.RelayError).Message)
		return nil, Decision{}, false
	}
	return c, d, true
}

// hostOf is the IP address of a client's address, what per-address
// limits count by.
func hostOf(addr net.Addr) string {
	switch a := addr.(type) {
	case *net.UDPAddr:
		return a.IP.String()
	case *net.TCPAddr:
		return a.IP.String()
	}
	return addr.String()
}

// Enforce applies the policy as it is now to the open connections: one
// whose identity may no longer connect (banned, taken off the allow list)
// is closed with the reason. The admin commands call it after a change.
// The connections are closed after the lock is let go: closing one sends
// its last packet and queues an audit record, which new connections
// should not wait for.
func (s *Server) Enforce() {
	type refusal struct {
		c *client
		d Decision
	}
	var out []refusal
	s.clientsMu.Lock()
	for c := range s.clients {
		d := s.policy.Connect(c.id)
		if !c.admitted.Load() && d.Code != wire.CodeBanned {
			continue // an invite-mode newcomer that may still redeem
		}
		if !d.Allow {
			c.admitted.Store(false)
			out = append(out, refusal{c, d})
		}
	}
	s.clientsMu.Unlock()
	for _, r := range out {
		s.refuseAs(r.c.conn, r.c.log, r.c.id, r.d.Code, r.d.Err().(*wire.RelayError).Message)
	}
}

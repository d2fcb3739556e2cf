package server

import (
	"context"
	"errors"
	"math"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// The requests a stream makes once and is answered: fetch a range or
// IDs, a room's mesh peers, the relay's info, the redeeming of an invite.

func (s *Server) fetchRange(ctx context.Context, c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParseFetchRange(body)
	if err != nil {
		return err
	}
	if d := s.policy.Read(c.id, m.Room); !d.Allow {
		return d.Err()
	}
	if protocol.IsPrivateRoom(m.Room) {
		if _, err := s.member(ctx, c.id, m.Room); err != nil {
			return err
		}
	}
	recs, err := s.st.Range(ctx, m.Room, m.Since, m.Until, store.Cursor{Time: m.Since, ID: m.After}, int(m.Limit)+1)
	if err != nil {
		return err
	}
	more := len(recs) > int(m.Limit)
	if more {
		recs = recs[:m.Limit]
	}
	for _, r := range recs {
		if err := fw.Raw(wire.FrameEnvelope, r.Raw); err != nil {
			return err
		}
	}
	return fw.Msg(wire.FrameEnd, &wire.End{More: more})
}

func (s *Server) fetchIDs(ctx context.Context, c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParseFetchIDs(body)
	if err != nil {
		return err
	}
	member := map[string]bool{} // private rooms asked about: is c a member?
	for _, id := range m.IDs {
		r, err := s.st.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if !s.policy.Read(c.id, r.Env.Room).Allow {
			continue // as if absent: which IDs exist in a closed room is not told
		}
		if room := r.Env.Room; protocol.IsPrivateRoom(room) {
			ok, asked := member[room]
			if !asked {
				_, err := s.member(ctx, c.id, room)
				var re *wire.RelayError
				if err != nil && !errors.As(err, &re) {
					return err
				}
				ok = err == nil
				member[room] = ok
			}
			if !ok {
				continue // as if absent, as in a closed room
			}
		}
		if err := fw.Raw(wire.FrameEnvelope, r.Raw); err != nil {
			return err
		}
	}
	return fw.Msg(wire.FrameEnd, &wire.End{})
}

func (s *Server) peers(c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParsePeersRequest(body)
	if err != nil {
		return err
	}
	if d := s.policy.Read(c.id, m.Room); !d.Allow {
		return d.Err()
	}
	if protocol.IsPrivateRoom(m.Room) {
		if _, err := s.member(context.Background(), c.id, m.Room); err != nil {
			// A non-member learns nobody's address, and the relay's node
			// does not join the room for them. (A newcomer asks before
			// its join lands: an empty answer, not an error.)
			return fw.Msg(wire.FramePeers, &wire.Peers{})
		}
	}
	var addrs []string
	if s.bridge != nil {
		s.bridge.Join(m.Room)
		addrs = s.bridge.Peers(m.Room)
	}
	if len(addrs) > wire.MaxPeerAddrs {
		addrs = addrs[:wire.MaxPeerAddrs]
	}
	return fw.Msg(wire.FramePeers, &wire.Peers{Addrs: addrs})
}

// Info describes this relay.
func (s *Server) Info() *wire.Info {
	l := s.lim()
	return &wire.Info{
		Versions:      []uint8{protocol.Version},
		MaxEnvelope:   uint32(l.MaxEnvelope),
		PublishRate:   uint32(math.Round(l.PublishRate)),
		PublishBurst:  uint32(l.PublishBurst),
		RetentionDays: uint32(math.Ceil(s.cfg.Retention.MaxAge.Hours() / 24)),
		Policy:        s.policy.Mode(),
		PolicyVersion: s.policy.Version(),
	}
}

func (s *Server) info(fw *wire.Writer, body []byte) error {
	if len(body) != 0 {
		return &wire.RelayError{Code: wire.CodeBadFrame, Message: "info request with a body"}
	}
	return fw.Msg(wire.FrameInfo, s.Info())
}

func (s *Server) redeem(ctx context.Context, c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParseRedeem(body)
	if err != nil {
		return err
	}
	if err := s.policy.Redeem(ctx, c.id, m.Token); err != nil {
		return err
	}
	c.log.Info("invite redeemed", "policy_version", s.policy.Version())
	c.admitted.Store(true)
	return fw.Raw(wire.FrameRedeemed, nil)
}

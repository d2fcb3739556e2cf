package sim

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// publisher publishes Rate messages a second until Duration is over, each
// from a random online person of a random room.
func (s *Sim) publisher(ctx context.Context, t0 time.Time) {
	rnd := rand.New(rand.NewPCG(s.cfg.Seed, 1))
	end := t0.Add(s.cfg.Duration)
	for k := 0; ; k++ {
		at := t0.Add(time.Duration(float64(k) / s.cfg.Rate * float64(time.Second)))
		if !at.Before(end) || !sleepUntil(ctx, at) {
			return
		}
		room := rnd.IntN(s.cfg.Rooms)
		sender, online, offline := s.pickSender(room, rnd)
		if sender == nil {
			continue
		}
		err := sender.publish(ctx, func(now time.Time) int {
			return s.ledger.publish(publication{room: room, sender: sender.i, at: now, online: online, offline: offline})
		})
		if err != nil && !errors.Is(err, errNotUp) {
			s.pubErrs.Add(1)
		}
	}
}

// pickSender picks an online person of room, and lists the room's other
// people online and offline.
func (s *Sim) pickSender(room int, rnd *rand.Rand) (sender *simPeer, online, offline []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.peers[:s.cfg.Peers] {
		if p.room != room {
			continue
		}
		if s.online[p.i] {
			online = append(online, p.i)
		} else {
			offline = append(offline, p.i)
		}
	}
	if len(online) == 0 {
		return nil, nil, nil
	}
	k := rnd.IntN(len(online))
	sender = s.peers[online[k]]
	online = append(online[:k:k], online[k+1:]...)
	return sender, online, offline
}

// churner makes ChurnPerMin of the people leave each minute, evenly
// spaced; each comes back after its offline spell, or at the end.
func (s *Sim) churner(ctx context.Context, t0 time.Time) {
	if s.cfg.ChurnPerMin == 0 {
		return
	}
	rnd := rand.New(rand.NewPCG(s.cfg.Seed, 2))
	interval := time.Duration(float64(time.Minute) / (s.cfg.ChurnPerMin * float64(s.cfg.Peers)))
	end := t0.Add(s.cfg.Duration)
	span := int64(s.cfg.OfflineMax - s.cfg.OfflineMin)
	for j := 0; ; j++ {
		at := t0.Add(interval/2 + time.Duration(j)*interval)
		if !at.Before(end) || !sleepUntil(ctx, at) {
			return
		}
		off := s.cfg.OfflineMin + time.Duration(rnd.Int64N(span+1))
		p := s.pickLeaver(rnd)
		if p == nil {
			continue
		}
		s.churn.Add(1)
		go s.leaveAndReturn(ctx, p, off)
	}
}

// pickLeaver picks an online person and marks it offline.
func (s *Sim) pickLeaver(rnd *rand.Rand) *simPeer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var up []int
	for i := range s.cfg.Peers {
		if s.online[i] {
			up = append(up, i)
		}
	}
	if len(up) == 0 {
		return nil
	}
	i := up[rnd.IntN(len(up))]
	s.online[i] = false
	return s.peers[i]
}

func (s *Sim) leaveAndReturn(ctx context.Context, p *simPeer, off time.Duration) {
	defer s.churn.Done()
	s.stopPeer(p)
	s.leaves.Add(1)
	t := time.NewTimer(off)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.end:
	case <-ctx.Done():
		return
	}
	if err := s.startPeer(p); err != nil {
		s.fail(err)
		return
	}
	s.returns.Add(1)
}

// killer stops relay 0 for good at KillRelayAt.
func (s *Sim) killer(ctx context.Context, t0 time.Time) {
	if s.cfg.KillRelayAt <= 0 || !sleepUntil(ctx, t0.Add(s.cfg.KillRelayAt)) {
		return
	}
	r := s.peers[s.cfg.Peers]
	s.mu.Lock()
	s.online[r.i] = false
	s.mu.Unlock()
	s.stopPeer(r)
}

// sampler samples every node's view of its room every SampleEvery.
func (s *Sim) sampler(ctx context.Context, t0 time.Time) {
	end := t0.Add(s.cfg.Duration)
	for at := t0.Add(s.cfg.SampleEvery); at.Before(end); at = at.Add(s.cfg.SampleEvery) {
		if !sleepUntil(ctx, at) {
			return
		}
		s.sampleViews()
	}
}

// sampleViews compares, for each online person, the peers its gossipsub
// lists in its room with those really online there (relays included).
func (s *Sim) sampleViews() {
	s.mu.Lock()
	live := make(map[string]bool) // peer ID -> online, with room below
	roomOf := make(map[string]int)
	truth := make([]int, s.cfg.Rooms)
	relays := 0
	var up []*simPeer
	for _, p := range s.peers {
		if !s.online[p.i] {
			continue
		}
		live[string(p.id)] = true
		roomOf[string(p.id)] = p.room
		if p.relay {
			relays++
		} else {
			truth[p.room]++
			up = append(up, p)
		}
	}
	s.mu.Unlock()
	for _, p := range up {
		p.mu.Lock()
		sess := p.sess
		p.mu.Unlock()
		if sess == nil {
			continue
		}
		known := sess.rooms[0].Peers()
		v := viewSample{known: len(known), truth: truth[p.room] - 1 + relays,
			conns: len(sess.node.Host().Network().Peers())}
		for _, q := range known {
			if live[string(q)] && (roomOf[string(q)] == p.room || roomOf[string(q)] == -1) {
				v.hit++
			}
		}
		s.ledger.sample(v)
	}
}

package server

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/mesh"
	"github.com/parleychat/parley/protocol"
)

// Finding relays. A relay announces itself on the DHT for each room it
// carries, so that a client can ask the DHT for a room's relays; and its
// mesh node answers mesh.RelayInfoProtocol with its client address and
// the keys of the relays it vouches for: those of its federation, which
// its operator named. A client uses a relay it finds only if it was
// given its key or a relay it was given vouches for it (client
// FindRelays): anyone can announce on a DHT.

const (
	// announceEvery is how often the relay announces its rooms again
	// (the DHT forgets a provider after some hours).
	announceEvery = 10 * time.Minute
	// announceRetryMin is the first pause after a round that failed
	// or found no room yet; it doubles up to announceEvery.
	announceRetryMin = time.Second
	// announceTimeout bounds the announcement of one room.
	announceTimeout = 30 * time.Second
	// maxAnnouncedRooms bounds the rooms announced in a round.
	maxAnnouncedRooms = 1000
)

// startAnnouncing serves the relay's info on its mesh node and announces
// the rooms the bridge carries until r.run ends (on r.wg).
func (r *relayRun) startAnnouncing(node *mesh.Node, bridge *MeshBridge, fed *federation) {
	log := r.log.With("part", "announce")
	var vouches []identity.PublicKey // in the config's order
	for _, ai := range fed.peers {
		if k, err := mesh.IdentityOf(ai.ID); err == nil {
			vouches = append(vouches, k)
		}
	}
	if len(vouches) > mesh.MaxRelayInfoVouch {
		log.Warn("more federation relays than a relay info holds; vouching for the first", "n", mesh.MaxRelayInfoVouch)
		vouches = vouches[:mesh.MaxRelayInfoVouch]
	}
	info := func() mesh.RelayInfo {
		return mesh.RelayInfo{Addr: r.sharedAddr().String(), Vouches: vouches}
	}
	if _, err := mesh.ServeRelayInfo(node.Host(), info); err != nil {
		log.Warn("relay info not served", "err", err)
	}
	r.wg.Go(func() { announceRooms(r.run, node, bridge, log) })
}

// announceRooms announces the rooms of bridge on node's DHT, every
// announceEvery, sooner after a round that failed, until ctx ends.
func announceRooms(ctx context.Context, node *mesh.Node, bridge *MeshBridge, log *slog.Logger) {
	pause := announceRetryMin
	for {
		if announceRound(ctx, node, bridge.joined(maxAnnouncedRooms), log) {
			pause = announceEvery
		} else {
			pause = min(2*pause, announceEvery)
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return
		}
	}
}

// announceRound announces each of rooms and reports whether there were
// rooms and every announcement succeeded.
func announceRound(ctx context.Context, node *mesh.Node, rooms []string, log *slog.Logger) bool {
	ok := len(rooms) > 0
	for _, room := range rooms {
		actx, cancel := context.WithTimeout(ctx, announceTimeout)
		err := node.Announce(actx, mesh.RelayKey(room))
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err != nil {
			log.Debug("room not announced; trying again", "room", room, "err", err)
			ok = false
		}
	}
	return ok
}

// joined is the public rooms the bridge carries, at most limit of them,
// sorted. A private room is not announced: its members know their relays,
// and nobody else needs to learn which relays carry it.
func (b *MeshBridge) joined(limit int) []string {
	b.mu.Lock()
	rooms := make([]string, 0, len(b.rooms))
	for room := range b.rooms {
		if !protocol.IsPrivateRoom(room) {
			rooms = append(rooms, room)
		}
	}
	b.mu.Unlock()
	slices.Sort(rooms)
	return rooms[:min(len(rooms), limit)]
}

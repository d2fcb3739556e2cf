package mesh

import (
	"context"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// TestRelayMaySyncPrivateRoom: a member's node lets the relay its person
// uses (Config.MaySync) catch up a private room, though the relay's node
// is no member; another non-member is still refused.
func TestRelayMaySyncPrivateRoom(t *testing.T) {
	keyA, keyRelay := testKey(t, 0), testKey(t, 5)
	room, nonce := newPrivateRoom(t, keyA)
	a := startPrivate(t, peerSpec{key: keyA, dir: t.TempDir()}, room, func(c *Config) {
		c.MaySync = func(k identity.PublicKey) bool { return k == keyRelay.Public() }
	})
	relayNode := startPrivate(t, peerSpec{key: keyRelay, dir: t.TempDir()}, room)
	outsider := startPrivate(t, newSpec(t, 6), room)
	connect(t, a.n, relayNode.n)
	connect(t, a.n, outsider.n)
	create := a.create(t, nonce)
	post := a.post(t, "said while the relay was away")

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	now := time.Now()
	if _, err := outsider.room.SyncFrom(ctx, a.n.ID(), 0, now.Add(time.Minute).UnixMilli()); err == nil {
		t.Errorf("a non-member caught up the private room")
	}
	waitFor(t, "the relay's node to catch up from the member", func() bool {
		_, err := relayNode.room.SyncFrom(ctx, a.n.ID(), 0, time.Now().Add(time.Minute).UnixMilli())
		return err == nil && relayNode.log().Has(create) && relayNode.rc.has(post)
	})
	for _, id := range []protocol.ID{create, post} {
		waitFor(t, "the relay's node to store what it caught up", func() bool {
			has, err := relayNode.n.store.Has(ctx, id)
			return err == nil && has
		})
	}
}

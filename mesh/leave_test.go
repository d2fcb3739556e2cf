package mesh

import (
	"context"
	"maps"
	"sync"
	"testing"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
)

// TestLeaveStoresWhatWasShown: an accept still under way as the room is
// left (its reader, or a sync on a caller's goroutine) may hand the
// envelope to the application after the writer's last commit. It must be
// stored all the same: otherwise sync brings it again after a restart,
// and the application is handed it twice (one way in which the churn
// simulation can count a message handed twice). One accepted after the
// room was left is refused, neither shown nor stored.
func TestLeaveStoresWhatWasShown(t *testing.T) {
	n := start(t, newSpec(t, 1))
	r := join(t, n, "leaving")
	author := &testkit.Author{Key: testKey(t, 2), Room: "leaving"}
	var its []inbound
	for i := range 64 {
		raw, id := author.Next(t, "said as the room was left "+string(rune('a'+i%26)))
		env, err := protocol.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		its = append(its, inbound{env: env, id: id, raw: raw, via: "sync"})
	}

	shown := map[protocol.ID]bool{}
	var mu sync.Mutex
	stop, reading := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(reading)
		for {
			select {
			case m := <-r.Messages():
				mu.Lock()
				shown[m.ID] = true
				mu.Unlock()
			case <-stop:
				return
			}
		}
	}()
	// The reader ends on every way out of the test, a failure's too.
	halt := sync.OnceFunc(func() { close(stop); <-reading })
	t.Cleanup(halt)
	// The room's context ends as Leave begins; these accepts run on in
	// that moment, while the writer makes its last commit, each choosing
	// at random between its channels and the ended context, as Go's
	// select does when both are ready.
	r.cancel()
	for _, it := range its[:48] {
		r.accept(it)
	}
	r.Leave()
	ctx := context.Background()
	stored := func(it inbound) bool {
		t.Helper()
		has, err := n.store.Has(ctx, it.id)
		if err != nil {
			t.Fatal(err)
		}
		return has
	}
	mu.Lock()
	shownNow := maps.Clone(shown)
	mu.Unlock()
	for i, it := range its[:48] {
		if shownNow[it.id] && !stored(it) {
			t.Errorf("envelope %d was shown, and is not stored after the room was left", i)
		}
	}
	if len(shownNow) == 0 {
		t.Fatal("nothing was shown: the test did not race the writer")
	}

	// After the room was left: refused, neither shown nor stored.
	for i, it := range its[48:] {
		if err := r.accept(it); err == nil {
			t.Errorf("envelope %d: an accept after the room was left succeeded", 48+i)
		}
	}
	halt()
	for i, it := range its[48:] {
		if has := stored(it); has || shown[it.id] {
			t.Errorf("envelope %d, after the room was left: stored %v, shown %v", 48+i, has, shown[it.id])
		}
	}
}

package roster

import (
	"testing"

	"github.com/parleychat/parley/protocol"
)

// A removed admin, after seeing the removal, makes changes naming old
// parents: their clock is below the removal's, so they sort before it.
func TestRemovedAdminBackdates(t *testing.T) {
	w, alice := newWorld(t)
	bob, carol, dave, mallory := w.actor("bob", 2), w.actor("carol", 3), w.actor("dave", 4), w.actor("mallory", 9)
	alice.do(add(bob))
	adm := alice.do(admin(bob))
	alice.do(add(carol))
	alice.do(add(dave))
	bob.syncFrom(alice)
	alice.do(remove(bob))
	bob.syncFrom(alice)
	// bob, removed, names only the change that made him admin.
	c := add(mallory)
	c.Parents = nil
	c.Parents = append(c.Parents, adm.id)
	bob.do(c)
	c2 := remove(alice)
	c2.Parents = append([]protocol.ID{}, adm.id)
	bob.do(c2)
	l := w.fresh(w.all...)
	t.Logf("members %v", w.members(l))
	if l.IsMember(mallory.pub) {
		t.Errorf("removed admin bob added mallory after his removal")
	}
	if !l.IsMember(alice.pub) {
		t.Errorf("removed admin bob removed alice (the creator) after his removal")
	}
	if l.IsMember(bob.pub) {
		t.Errorf("bob still member")
	}
}

package roster

import (
	"fmt"
	"testing"
	"time"
)

// An invite for 70: 70 people join, each a head of the graph (a join names
// no parent), more than a change may name. The admin's next change still
// names the change that shows their role, and counts.
func TestManyJoinsDoNotHideTheAdmin(t *testing.T) {
	w, alice := newWorld(t)
	bob := w.actor("bob", 2)
	code := alice.invite(70, t0.Add(time.Hour))
	for i := 0; i < 70; i++ {
		a := w.actor(fmt.Sprintf("j%d", i), byte(40+i))
		alice.receive(a.do(a.joinChange(code)))
	}
	if n := len(alice.log.Members()); n != 71 {
		t.Fatalf("%d members, want 71", n)
	}
	c := add(bob)
	lamport := alice.next(c)
	it := alice.sign(c, lamport)
	if _, err := alice.log.Add(it.env, it.id); err != nil {
		t.Errorf("the admin's add after 70 joins: %v", err)
	}
	if !alice.log.IsMember(bob.pub) {
		t.Errorf("bob not added")
	}
}

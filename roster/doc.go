// Package roster keeps the member lists of private rooms: it resolves a
// room's log of signed changes (protocol.Change) to the same member set
// on every peer and on the relay, whatever order the changes arrived in,
// and judges whether a post's sender may post. It also makes and reads
// invite codes. It does no I/O: the mesh, the relay and the client feed
// it envelopes they have verified and stored.
//
// # Resolution
//
// The changes of a room form a graph: each names the heads its author
// had seen (its parents), and its Lamport clock is above theirs. All
// changes are put in one order, by Lamport clock, then signed time, then
// ID, which puts every change after its parents; they are applied one by one in that
// order, each judged by the state the ones before it left. The same set
// of changes gives the same member set everywhere, since the order does
// not depend on when a change arrived.
//
// Concurrent changes (neither an ancestor of the other) take their place
// in that order. Two rules settle the cases people care about:
//
//   - Remove beats add: an add of someone whom an earlier change in the
//     order removed is void unless the removal is among the add's
//     ancestors (its author saw the removal and re-added them on
//     purpose). A removal after a concurrent add still removes. A join
//     with an invite signed before the removal (by Lamport clock) is
//     void the same way.
//   - A removed or demoted admin's changes that come after the removal in
//     the order are void: authority is judged at each change's place.
//
// A change is refused outright (its peer scored down) when no state could
// make it count: its author has never been made an admin by any change
// known (for admin operations), it names a parent that is not a change of
// the room, or its clock is not above its parents'. A change whose
// parents are not known yet waits for them.
//
// # Posts
//
// A post names the member-list head its sender had seen. It is admitted
// when that head is known, its sender was a member at that head's place
// in the order, and, if its sender has been removed since, it was made
// before the removal (by its signed time). A post naming an unknown head
// waits for it. A removed member can so still post, for as long as the
// live skew lets an envelope be dated back to before the removal, and no
// longer.
package roster

// Package roster keeps the member lists of private rooms: it resolves a
// room's log of signed changes (protocol.Change) to the same member set
// on every peer and on the relay, whatever order the changes arrived in,
// and judges whether a post's sender may post. It also makes and reads
// invite codes. It does no I/O: the mesh, the relay and the client feed
// it envelopes they have verified and stored.
//
// # Order
//
// The changes of a room form a graph: each names the heads its author
// had seen (its parents). Each change has a clock that the graph gives
// it, not its signer: one above the highest of its parents', and for a
// join, which names no parent (a newcomer knows nothing of the room),
// one above its invite's clock, which the issuer set to its own list's
// clock when it signed. All changes are put in one order, by that clock,
// then by signed time, then by ID; every change comes after its parents.
// They are applied one by one in that order, each judged by the state the
// ones before it left. The same set of changes gives the same member set
// everywhere, since the order does not depend on when a change arrived,
// and nobody can freeze the list by dating a change at the end of time.
//
// Concurrent changes (neither an ancestor of the other) take their place
// in that order; signed time settles those of one clock, such as two
// joins of one invite. Rules settle the cases people care about:
//
//   - Remove beats add: an add of someone whom any earlier change in the
//     order removed is void unless every such removal is among the add's
//     ancestors (its author saw the removals and re-added them on
//     purpose). A removal after a concurrent add still removes. A join
//     with an invite signed before the joiner's removal is void too.
//   - A removed or demoted admin's changes that come after the removal in
//     the order are void: authority is judged at each change's place.
//   - Seniority: the creator outranks every admin, and an admin made
//     earlier (by the clock of the change that made them one) outranks one
//     made later. A removal or demotion by a senior admin voids every
//     admin change of the removed one that it did not see and that did not
//     see it, wherever that change sorts: a removed admin cannot name old
//     parents, pretend not to have seen the removal, and so sort before it
//     (and, say, remove the creator). Of two admins who remove each other
//     at once, the senior stays.
//   - A revocation of an invite voids every join with it that it did not
//     see (that is not its ancestor), wherever the join sorts; so does a
//     removal or demotion of the invite's issuer made after the invite
//     was signed. Joins the revoker had seen stay.
//
// # Refused, and waiting
//
// A change is refused outright (its peer scored down) when no state could
// make it count, judged by its own ancestors so that every peer judges it
// alike: an admin's change whose author was not made an admin by any of
// its ancestors, a leave by someone no ancestor shows as a member, a
// change naming a refused change as its parent. (A change names up to 64
// heads; when there are more, one place goes to the author's own latest
// change, so that a crowd of joins, each a head, cannot hide their role.)
// A join that cannot count (its invite revoked or used up) is kept all
// the same, since whether it counts depends on the order; one made after
// its invite expired is refused by its bytes. A change whose parents
// are not known yet waits for them; a join whose issuer is not known as
// an admin yet waits for a change that makes one (ErrWaiting with the
// zero ID). Waiting is bounded (Waiting): what never resolves expires.
//
// # Posts
//
// A post names the member-list head its sender had seen. It is admitted
// when that head is known and a stretch of its sender's membership covers
// that head's place in the order: still a member, or removed later than
// the head and after the post was made (by its signed time). A post
// naming an unknown head waits for it. A removed member can so still
// post, for as long as the live skew lets an envelope be dated back to
// before the removal, and no longer.
package roster

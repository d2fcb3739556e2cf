// Package mesh is Parley's data plane: a libp2p host whose key is the
// person's identity key, gossipsub rooms whose validator checks every
// envelope once, discovery (mDNS, bootstrap peers, a Kademlia DHT on
// Parley's own protocol prefix, and peers handed in by a relay), and a
// catch-up sync protocol through which a peer that was away, or that sees a
// gap in a sender's hash chain, fetches what it missed from its neighbours.
//
// A message travels: Room.Publish signs an envelope and stores it, gossipsub
// carries it, each receiving node's validator (validate.go) parses, verifies
// and replay-checks it once, the node's writer (node.go) commits batches of
// accepted envelopes to the store, and only then hands them to the
// application on Room.Messages.
package mesh

// Package mesh is Parley's data plane: a libp2p host whose key is the
// person's identity key, gossipsub rooms whose validator checks every
// envelope once, discovery (mDNS, bootstrap peers, a Kademlia DHT on
// Parley's own protocol prefix, and peers handed in by a relay), and a
// catch-up sync protocol through which a peer that was away, or that sees a
// gap in a sender's hash chain, fetches what it missed from its neighbours.
// Peers behind NATs meet through circuit relays (circuit.go, relays.go),
// share their rooms over a relayed connection with the feed protocol
// (feed.go), and move to a direct connection by hole punching (paths.go
// reports which way each connection goes).
//
// A message travels: Room.Publish signs an envelope and stores it, gossipsub
// carries it, each receiving node's validator (validate.go) parses, verifies
// and replay-checks it once, the room (room.go) hands it to the application
// on Room.Messages, and the room's writer commits accepted envelopes to the
// store in batches right behind.
package mesh

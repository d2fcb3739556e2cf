// Package relay is the client of a Parley relay: what the chat client
// imports to reach one. It dials the relay over QUIC with mutual TLS
// (both ends prove their Ed25519 identity; the relay's key is pinned by
// its address, Addr), keeps the connection up in the background (Start),
// publishes envelopes and returns the relay's acknowledgement once they
// are on its disk, subscribes to rooms from a committed cursor across
// reconnections, and checks the relay's audit receipts and signed
// checkpoints, holding it to a log that never forks or is rewritten
// (ErrAuditLog).
//
// The frames it speaks are in relay/wire; the relay itself, which only
// cmd/relay links, is in relay/server.
package relay

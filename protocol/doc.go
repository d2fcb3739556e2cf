// Package protocol defines Parley's wire format: the signed envelope that
// carries every message on every path, its one canonical binary encoding and
// strict parser, and the replay guard, sequence allocator and Lamport clock
// that senders and receivers keep beside it.
//
// The package does no I/O. Durable state (the replay window, reserved
// sequence numbers) is handed to callers as bytes or through small
// interfaces, and time is injected, so every rule here is tested exactly.
//
// docs/protocol.md gives the byte layout, the signing input, the message ID
// and the replay rules.
package protocol

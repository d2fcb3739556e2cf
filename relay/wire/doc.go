// Package wire is the relay protocol's format: what a client and a relay
// say to each other over QUIC streams, and the Reader and Writer that
// carry it on a stream. The relay client (package relay) and the relay
// server both speak it; nothing here does I/O but through the io.Reader
// and io.Writer it is given.
//
// Every frame is a 1-byte type, a 4-byte big-endian body length and the
// body; each type's body layout is written beside its constant, and
// docs/relay-protocol.md gives every field's rules. The parsers are
// strict: a body has exactly one valid encoding, and trailing bytes,
// short fields, out-of-range values and unknown types are errors wrapping
// ErrBadFrame. A Reader checks a frame's length against its limit
// (MaxFrameBody at most) before it reads the body.
//
// The version is in the TLS application protocol, "parley-relay/N"
// (version.go): a wire-incompatible change gets a new one.
package wire

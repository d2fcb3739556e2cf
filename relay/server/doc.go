// Package server is the Parley relay: the QUIC listener and its streams
// (server.go), the sequencer that gives positions and sends new envelopes
// live before their commit (sequence.go), the committer that makes them
// durable with their audit records in one transaction and acknowledges
// after (commit.go), live delivery to subscribers (hub.go), policy
// (policy.go), the member lists of private rooms (private.go), the key
// packages it keeps and serves (keys.go), the admin socket (admin.go), the bridge into the mesh
// (bridge.go), the data folder and configuration (datadir.go, config.go),
// the audit commands (auditcmd.go) and the daemon (run.go).
//
// Only cmd/relay and tests import it; clients use package relay, and both
// speak relay/wire.
package server

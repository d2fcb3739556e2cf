// Package identity implements Parley identities: Ed25519 key pairs kept as
// OpenSSH private key files, their fingerprints and peer IDs, and the contact
// book that remembers which key each nickname was first seen with.
//
// A person is their key. Nicknames are labels that people choose for
// themselves; the contact book pins the first key seen under each nickname
// (trust on first use, as ssh's known_hosts does) and reports a different
// key under a known nickname as a key change, never accepting it silently.
package identity

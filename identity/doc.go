// Package identity implements Parley identities: Ed25519 key pairs kept as
// OpenSSH private key files, their fingerprints and peer IDs, and the contact
// book that remembers the keys seen and which of them were verified.
//
// A person is their key. Nicknames are labels that people choose for
// themselves, and two people may choose the same one. The contact book is
// keyed by public key: it remembers each key on first sight (trust on first
// use, as ssh's known_hosts does) with the nickname last seen with it, and
// marks the keys verified out of band. A key that is not verified and claims
// the nickname of a verified contact is reported as a key change, never
// accepted silently: Accept moves the verification to the new key.
package identity

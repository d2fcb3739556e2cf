// Package upgrade holds the tests that run the previous release of
// Parley beside this code: old and new peers in one room, old clients
// against a new relay and new clients against an old one, and the data
// folders an old release made opened by this one. The tests build both
// releases' commands; the previous release is the git tag (or, in a
// clone without tags, the commit) named in previous_test.go, built from
// this repository's own history. docs/protocol.md ("Versions and
// upgrades") says what each side does with what it does not understand.
package upgrade

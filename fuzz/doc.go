// Package fuzz holds Parley's fuzz targets: one for every parser of input
// that crosses a trust boundary (the wire, a file, a command line). Each
// asserts a property, not only the absence of a panic: what parses encodes
// back to exactly the input, and a signed envelope with any byte changed
// does not verify.
//
// Run every target for a while with
//
//	fuzz/run 60s
//
// and one with go test -run '^$' -fuzz '^FuzzEnvelope$' -fuzztime 60s ./fuzz.
// Seed corpora live in testdata/fuzz; go test ./... runs them as tests.
// FUZZ_KEEP=1 fuzz/run 30m keeps what a campaign found there, within a
// cap per target. docs/fuzzing.md lists the targets and their
// properties, and records the campaigns.
package fuzz

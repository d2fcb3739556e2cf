//go:build race

package mesh

// raceEnabled: the tests run under the race detector, and so does the
// helper the NAT traversal test builds (sharing the build cache with them).
const raceEnabled = true

//go:build race

package upgrade

// raceEnabled: the tests run under the race detector, and so do the
// commands they build (which then share the build cache with them).
const raceEnabled = true

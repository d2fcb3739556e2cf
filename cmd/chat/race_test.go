//go:build race

package main

// raceEnabled: the tests run under the race detector, and so does the
// relay they build (which then shares the build cache with them).
const raceEnabled = true

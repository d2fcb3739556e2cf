package testkit

import (
	"testing"

	"github.com/parleychat/parley/internal/freeport"
)

// FreeAddr returns a loopback HOST:PORT free on both UDP and TCP, for a
// server the test starts (or restarts) on it later: a relay listens on
// both with one number, a mesh node on UDP.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

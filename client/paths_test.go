package client

import (
	"testing"

	"github.com/parleychat/parley/mesh"
)

// TestCountPaths: a peer counts once, by its best connection.
func TestCountPaths(t *testing.T) {
	paths := []mesh.Path{
		{Peer: "a", Kind: mesh.PathCircuit},
		{Peer: "a", Kind: mesh.PathHolePunched}, // a's circuit was upgraded
		{Peer: "b", Kind: mesh.PathCircuit},
		{Peer: "c", Kind: mesh.PathDirect},
		{Peer: "c", Kind: mesh.PathCircuit},
	}
	got := countPaths(paths)
	if want := (PathsEvent{Direct: 1, HolePunched: 1, Circuit: 1}); got != want {
		t.Fatalf("countPaths = %+v, want %+v", got, want)
	}
	if got := countPaths(nil); got != (PathsEvent{}) {
		t.Fatalf("no paths: %+v", got)
	}
}

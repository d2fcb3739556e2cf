package upgrade

// previous is the release before this code: its tag, and the commit the
// tag names, which a clone without tags (a bundle of main) still has in
// its history. Move both when a release is tagged.
var previous = release{tag: "v0.20.0", commit: "455cf3d41833c62c94cf40cb86b8f6868c3e0970"}

type release struct{ tag, commit string }

package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/identity"
)

func openRelay(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.db")
	s, err := Open(path, Relay(), Durable())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// stored returns the key packages of keys at t0.
func stored(t testing.TB, s *Store, keys ...identity.PublicKey) [][]byte {
	t.Helper()
	got, err := s.KeyPackages(context.Background(), keys, t0)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// pair returns two packages made in one second, the second the larger by
// SHA-256 (keypackage.Package.Newer's tie-break).
func pair(name string) (small, large []byte) {
	a, b := []byte(name+" a"), []byte(name+" b")
	ha, hb := sha256.Sum256(a), sha256.Sum256(b)
	if bytes.Compare(ha[:], hb[:]) > 0 {
		return b, a
	}
	return a, b
}

// TestKeyPackageNewerWins: a package replaces the stored one only if it
// is newer: made later, or in the same second with the larger hash. The
// very package stored is a success again; anything else older is stale.
func TestKeyPackageNewerWins(t *testing.T) {
	s, _ := openRelay(t)
	ctx := context.Background()
	alice, bob := key(t, 1).Public(), key(t, 2).Public()
	created, expires := t0.Unix(), t0.Add(30*24*time.Hour).Unix()
	put := func(k identity.PublicKey, created int64, raw string) error {
		t.Helper()
		return s.PutKeyPackage(ctx, k, created, expires, []byte(raw))
	}
	if got := stored(t, s, alice); len(got) != 0 {
		t.Fatalf("before any put: %q", got)
	}
	if err := put(alice, created, "first"); err != nil {
		t.Fatal(err)
	}
	if err := put(alice, created, "first"); err != nil {
		t.Fatalf("the same package again: %v, want a success", err)
	}
	if err := put(alice, created-1, "older"); !errors.Is(err, ErrStaleKeyPackage) {
		t.Fatalf("an older package: %v, want stale", err)
	}
	if err := put(alice, created+10, "newer"); err != nil {
		t.Fatal(err)
	}
	if err := put(alice, created+5, "between"); !errors.Is(err, ErrStaleKeyPackage) {
		t.Fatalf("a package older than the stored one: %v, want stale", err)
	}
	if got := stored(t, s, alice); !slices.EqualFunc(got, [][]byte{[]byte("newer")}, bytes.Equal) {
		t.Fatalf("stored %q, want the newer", got)
	}

	// Two made in one second: the larger hash wins, whichever came first.
	small, large := pair("tie")
	if err := put(bob, created, string(large)); err != nil {
		t.Fatal(err)
	}
	if err := put(bob, created, string(small)); !errors.Is(err, ErrStaleKeyPackage) {
		t.Fatalf("the smaller of one second after the larger: %v, want stale", err)
	}
	carol := key(t, 3).Public()
	if err := put(carol, created, string(small)); err != nil {
		t.Fatal(err)
	}
	if err := put(carol, created, string(large)); err != nil {
		t.Fatalf("the larger of one second after the smaller: %v", err)
	}
	if got := stored(t, s, bob, carol); !slices.EqualFunc(got, [][]byte{large, large}, bytes.Equal) {
		t.Fatalf("stored %q, want the larger twice", got)
	}
}

// TestKeyPackagesAnswer: in the order asked, each key once, those with
// none or only an expired one left out.
func TestKeyPackagesAnswer(t *testing.T) {
	s, _ := openRelay(t)
	ctx := context.Background()
	a, b, c, d := key(t, 1).Public(), key(t, 2).Public(), key(t, 3).Public(), key(t, 4).Public()
	for _, p := range []struct {
		k       identity.PublicKey
		expires time.Time
		raw     string
	}{
		{a, t0.Add(time.Hour), "a"},
		{b, t0.Add(time.Hour), "b"},
		{c, t0, "c expires now"},
	} {
		if err := s.PutKeyPackage(ctx, p.k, t0.Add(-time.Hour).Unix(), p.expires.Unix(), []byte(p.raw)); err != nil {
			t.Fatal(err)
		}
	}
	got := stored(t, s, b, c, d, a, b)
	if want := [][]byte{[]byte("b"), []byte("a")}; !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got, err := s.KeyPackages(ctx, []identity.PublicKey{c}, t0.Add(-time.Second)); err != nil || len(got) != 1 {
		t.Fatalf("before it expired: %q, %v", got, err)
	}
	if got := stored(t, s); len(got) != 0 {
		t.Fatalf("no keys: %q", got)
	}
	// As many as a request may name.
	keys := make([]identity.PublicKey, 256)
	for i := range keys {
		k, err := identity.Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k.Public()
	}
	keys[200] = a
	if got := stored(t, s, keys...); len(got) != 1 || string(got[0]) != "a" {
		t.Fatalf("256 keys: %q", got)
	}
}

// TestKeyPackagesRace: puts at once of one identity leave the newest,
// whatever their order: the rule is in the statement.
func TestKeyPackagesRace(t *testing.T) {
	s, _ := openRelay(t)
	ctx := context.Background()
	alice := key(t, 1).Public()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			err := s.PutKeyPackage(ctx, alice, t0.Unix()+int64(i), t0.Add(time.Hour).Unix(), []byte{byte(i)})
			if err != nil && !errors.Is(err, ErrStaleKeyPackage) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := stored(t, s, alice); len(got) != 1 || !bytes.Equal(got[0], []byte{19}) {
		t.Fatalf("stored %v, want the newest, [19]", got)
	}
}

// TestKeyPackagesMigration: a relay's database from before the key
// packages gets their table when it is opened, and keeps what it had.
func TestKeyPackagesMigration(t *testing.T) {
	s, path := openRelay(t)
	ctx := context.Background()
	if _, err := s.AddACL(ctx, ListAllow, key(t, 1).Public(), "kept", t0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Back to the relay part's version before the table.
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	before := len(schemaRelay.migrations) - 1
	if _, err := db.Exec(`DROP TABLE relay_key_packages`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE schema_versions SET version = ? WHERE name = 'relay'`, before); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if slices.Contains(tables(t, path), "relay_key_packages") {
		t.Fatal("the table is still there")
	}

	s, err = Open(path, Relay(), Durable())
	if err != nil {
		t.Fatalf("open a relay's database from before key packages: %v", err)
	}
	defer s.Close()
	if !slices.Contains(tables(t, path), "relay_key_packages") {
		t.Fatal("no key package table after the migration")
	}
	var v int
	if err := s.r.QueryRow(`SELECT version FROM schema_versions WHERE name = 'relay'`).Scan(&v); err != nil || v != len(schemaRelay.migrations) {
		t.Fatalf("relay part at version %d (%v), want %d", v, err, len(schemaRelay.migrations))
	}
	if acl, err := s.ACL(ctx); err != nil || len(acl) != 1 {
		t.Fatalf("access list after the migration: %v, %v", acl, err)
	}
	if err := s.PutKeyPackage(ctx, key(t, 2).Public(), t0.Unix(), t0.Add(time.Hour).Unix(), []byte("p")); err != nil {
		t.Fatal(err)
	}
}

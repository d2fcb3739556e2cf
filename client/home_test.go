package client

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/parleychat/parley/identity"
)

func TestOpenHomeCreatesIdentityOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	h, err := OpenHome(dir, HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !h.Created {
		t.Fatal("first open did not create an identity")
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("home folder mode %v, want 0700", fi.Mode().Perm())
	}
	again, err := OpenHome(dir, HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || !again.Key.Equal(h.Key) {
		t.Fatal("second open made a new identity")
	}
}

func TestOpenHomeWithKeyFile(t *testing.T) {
	dir := t.TempDir()
	k, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := identity.Save(keyFile, k, []byte("pw"), ""); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	if _, err := OpenHome(home, HomeOptions{KeyFile: keyFile}); !errors.Is(err, identity.ErrPassphraseRequired) {
		t.Fatalf("encrypted key without passphrase: %v", err)
	}
	h, err := OpenHome(home, HomeOptions{KeyFile: keyFile, Passphrase: func() ([]byte, error) { return []byte("pw"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	if !h.Key.Equal(k) {
		t.Fatal("home does not use the given key")
	}
	if _, err := os.Stat(filepath.Join(home, IdentityFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("an identity was created although a key file was given")
	}
}

func TestDefaultHomeDir(t *testing.T) {
	t.Setenv(HomeEnv, "/somewhere/parley")
	if dir, err := DefaultHomeDir(); err != nil || dir != "/somewhere/parley" {
		t.Fatalf("DefaultHomeDir() = %q, %v", dir, err)
	}
	t.Setenv(HomeEnv, "")
	t.Setenv("XDG_CONFIG_HOME", "/cfg")
	if dir, err := DefaultHomeDir(); err != nil || dir != "/cfg/parley" {
		t.Fatalf("DefaultHomeDir() = %q, %v", dir, err)
	}
}

func TestOpenHomeClosesAWideFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenHome(dir, HomeOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("home folder mode %v, want 0700", fi.Mode().Perm())
	}
}

package client

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// A home folder with history whose identity file is gone gets no new key:
// its owner would become someone else to everyone they talk to.
func TestOpenHomeWithHistoryNeedsItsIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	if _, err := OpenHome(dir, HomeOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, StoreFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, IdentityFile)); err != nil {
		t.Fatal(err)
	}
	_, err := OpenHome(dir, HomeOptions{})
	if !errors.Is(err, ErrIdentityMissing) || !strings.Contains(err.Error(), "--identity FILE") {
		t.Fatalf("OpenHome with history and no identity: %v, want ErrIdentityMissing saying what to do", err)
	}
	if _, err := os.Stat(filepath.Join(dir, IdentityFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a new identity was made in a home folder with history")
	}
}

// A key file given once is the home folder's identity from then on, and
// its loss is an error, never a new key.
func TestOpenHomeRemembersKeyFile(t *testing.T) {
	dir := t.TempDir()
	k, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := identity.Save(keyFile, k, nil, ""); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	if _, err := OpenHome(home, HomeOptions{KeyFile: keyFile}); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(filepath.Join(home, ConfigFile))
	if err != nil || cfg.Identity != keyFile {
		t.Fatalf("config after --identity: identity %q, %v; want %q", cfg.Identity, err, keyFile)
	}
	data, err := os.ReadFile(filepath.Join(home, ConfigFile))
	if err != nil || !strings.HasPrefix(string(data), ConfigTemplate[:40]) {
		t.Fatalf("the config file lost its comments: %q, %v", data, err)
	}
	h, err := OpenHome(home, HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Created || !h.Key.Equal(k) || h.KeyFile != keyFile {
		t.Fatalf("without --identity: key file %s, created %v; want the remembered %s", h.KeyFile, h.Created, keyFile)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenHome(home, HomeOptions{}); !errors.Is(err, ErrIdentityMissing) {
		t.Fatalf("remembered key file gone: %v, want ErrIdentityMissing", err)
	}
	if _, err := os.Stat(filepath.Join(home, IdentityFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a new identity was made in place of the remembered key file")
	}
}

func TestDefaultNick(t *testing.T) {
	k, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	anon := anonNick(k.Public())
	if err := identity.ValidNick(anon); err != nil || len(anon) != len("anon-")+6 {
		t.Fatalf("anonNick = %q: %v", anon, err)
	}
	short := strings.ToLower(k.Public().ShortFingerprint()[:6])
	if want := "anon-" + strings.NewReplacer("+", "-", "/", "_").Replace(short); anon != want {
		t.Fatalf("anonNick = %q, want %q", anon, want)
	}
	for login, want := range map[string]string{
		"alice": "alice", "Bob": "bob", "root": anon, "ubuntu": anon, "ec2-user": anon,
		"Administrator": anon, "pi": anon, "": anon, "jean paul": anon,
	} {
		if got := nickFor(login, anon); got != want {
			t.Errorf("nickFor(%q) = %q, want %q", login, got, want)
		}
	}
}

func TestRememberNick(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	h, err := OpenHome(dir, HomeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ConfigFile)
	for _, nick := range []string{"alice", "bob", "bob"} {
		if err := h.RememberNick(nick); err != nil {
			t.Fatal(err)
		}
		cfg, err := h.Config()
		if err != nil || cfg.Nick != nick {
			t.Fatalf("after RememberNick(%q): nick %q, %v", nick, cfg.Nick, err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	if strings.Count(text, "\nnick = ") != 1 || !strings.Contains(text, "# nick = \"alice\"\nnick = \"bob\"\n") ||
		!strings.HasSuffix(text, ConfigTemplate[len(ConfigTemplate)-40:]) {
		t.Fatalf("config file after RememberNick:\n%s", text)
	}
	if err := h.RememberNick("Not Valid"); !errors.Is(err, ErrConfig) {
		t.Fatalf("RememberNick of an invalid nick: %v", err)
	}
}

func TestWithValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "nick = \"x\"\n"},
		{"mode = \"p2p\"", "mode = \"p2p\"\nnick = \"x\"\n"},
		{"# a\n#nick = \"y\"\nmode = \"p2p\"\n", "# a\n#nick = \"y\"\nnick = \"x\"\nmode = \"p2p\"\n"},
		{"nick = \"y\"\n# nick = \"z\"\n", "nick = \"x\"\n# nick = \"z\"\n"},
		{"  nick=\"y\"\nnickname = 1\n", "nick = \"x\"\nnickname = 1\n"},
	} {
		if got := withValue(tc.in, "nick", "x"); got != tc.want {
			t.Errorf("withValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := tomlString("a\"b\\c\n"); got != `"a\"b\\c\u000A"` {
		t.Errorf("tomlString = %s", got)
	}
}

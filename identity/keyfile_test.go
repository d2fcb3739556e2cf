package identity

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	for _, pass := range []string{"", "correct horse battery staple"} {
		name := "plain"
		if pass != "" {
			name = "passphrase"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "id_ed25519")
			k := testKey(t, 9)
			if err := Save(path, k, []byte(pass), "test"); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file mode = %04o, want 0600", fi.Mode().Perm())
			}
			var asked int
			got, err := Load(path, func() ([]byte, error) { asked++; return []byte(pass), nil })
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(k) {
				t.Fatal("loaded key differs from the saved one")
			}
			if wantAsked := map[bool]int{true: 1, false: 0}[pass != ""]; asked != wantAsked {
				t.Fatalf("passphrase asked %d times, want %d", asked, wantAsked)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	k := testKey(t, 9)
	enc := filepath.Join(dir, "enc")
	if err := Save(enc, k, []byte("secret"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(enc, nil); !errors.Is(err, ErrPassphraseRequired) {
		t.Errorf("Load(encrypted, nil) error = %v, want ErrPassphraseRequired", err)
	}
	if _, err := Load(enc, func() ([]byte, error) { return []byte("wrong"), nil }); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("Load(encrypted, wrong) error = %v, want ErrWrongPassphrase", err)
	}

	open := filepath.Join(dir, "open")
	if err := Save(open, k, nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(open, nil)
	if !errors.Is(err, ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600 "+open) {
		t.Errorf("Load(0644 file) error = %v, want ErrKeyPermissions saying how to fix it", err)
	}

	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(garbage, nil); !errors.Is(err, ErrMalformedKey) {
		t.Errorf("Load(garbage) error = %v, want ErrMalformedKey", err)
	}
	if _, err := Load(filepath.Join(dir, "missing"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want os.ErrNotExist", err)
	}
}

// sshKeygen returns the path of ssh-keygen. Under CI a missing ssh-keygen
// fails the test: the interoperability check must not be skipped quietly.
func sshKeygen(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("ssh-keygen")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ssh-keygen is required under CI: %v", err)
		}
		t.Skipf("ssh-keygen not found: %v", err)
	}
	return path
}

func TestLoadSSHKeygenKey(t *testing.T) {
	keygen := sshKeygen(t)
	for _, pass := range []string{"", "hunter2"} {
		name := "plain"
		if pass != "" {
			name = "passphrase"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "id_ed25519")
			out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", pass, "-C", "parley-test", "-f", path).CombinedOutput()
			if err != nil {
				t.Fatalf("ssh-keygen: %v\n%s", err, out)
			}
			k, err := Load(path, func() ([]byte, error) { return []byte(pass), nil })
			if err != nil {
				t.Fatal(err)
			}
			// ssh-keygen -lf prints "256 SHA256:... comment (ED25519)".
			out, err = exec.Command(keygen, "-l", "-f", path+".pub").Output()
			if err != nil {
				t.Fatalf("ssh-keygen -lf: %v", err)
			}
			fields := strings.Fields(string(out))
			if len(fields) < 2 {
				t.Fatalf("ssh-keygen -lf printed %q", out)
			}
			if got := k.Public().Fingerprint(); got != fields[1] {
				t.Fatalf("Fingerprint() = %s, ssh-keygen -lf says %s", got, fields[1])
			}
			pub, err := os.ReadFile(path + ".pub")
			if err != nil {
				t.Fatal(err)
			}
			if got := k.Public().SSHAuthorizedKey(); !strings.HasPrefix(string(pub), got+" ") {
				t.Fatalf("SSHAuthorizedKey() = %q, the .pub file holds %q", got, pub)
			}
		})
	}
}

// A key that Save wrote must be usable by OpenSSH too.
func TestSSHKeygenReadsSavedKey(t *testing.T) {
	keygen := sshKeygen(t)
	path := filepath.Join(t.TempDir(), "id")
	k := testKey(t, 11)
	if err := Save(path, k, nil, "c"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(keygen, "-y", "-f", path).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -y: %v", err)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, k.Public().SSHAuthorizedKey()) {
		t.Fatalf("ssh-keygen -y printed %q, want %q", got, k.Public().SSHAuthorizedKey())
	}
}

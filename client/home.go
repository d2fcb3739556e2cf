// Package client is the core that Parley's front ends share: the home
// folder with the person's identity and contacts, and (as the mesh and relay
// land) rooms, sending, receiving and history.
package client

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/lockfile"
)

// HomeEnv names the environment variable that sets the home folder.
const HomeEnv = "PARLEY_HOME"

// Files of the home folder.
const (
	IdentityFile = "identity" // OpenSSH private key, mode 0600
	ContactsFile = "contacts" // see identity.ParseContacts
	StoreFile    = "chat.db"  // messages, rooms, relay cursors (SQLite)
	LockFile     = "lock"     // held by the process using the home folder
)

// DefaultHomeDir returns $PARLEY_HOME, else the "parley" folder in the
// user's configuration folder (os.UserConfigDir).
func DefaultHomeDir() (string, error) {
	if dir := os.Getenv(HomeEnv); dir != "" {
		return dir, nil
	}
	cfg, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("client: no home folder: set %s or HOME: %w", HomeEnv, err)
	}
	return filepath.Join(cfg, "parley"), nil
}

// Home is an opened home folder.
type Home struct {
	Dir      string
	Key      identity.PrivateKey
	KeyFile  string
	Created  bool // whether this open made the identity
	contacts string
}

// HomeOptions say how to open a home folder.
type HomeOptions struct {
	// KeyFile is an existing OpenSSH Ed25519 key to use as the identity,
	// such as ~/.ssh/id_ed25519. If empty, the home folder's own identity
	// file, created on first use.
	KeyFile string
	// Passphrase is called if the key file is encrypted. If nil, an
	// encrypted key fails with identity.ErrPassphraseRequired.
	Passphrase func() ([]byte, error)
}

// OpenHome opens the home folder dir, creating it (mode 0700) and a new
// identity in it on first use.
func OpenHome(dir string, opts HomeOptions) (*Home, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("client: create home folder: %w", err)
	}
	// It holds the identity and every message: the owner's alone, even
	// when someone made the folder beforehand with a wider mode.
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, fi.Mode().Perm()&0o700); err != nil {
			return nil, fmt.Errorf("client: home folder %s is open to others and cannot be closed: %w", dir, err)
		}
	}
	h := &Home{Dir: dir, KeyFile: opts.KeyFile, contacts: filepath.Join(dir, ContactsFile)}
	if err := writeTemplate(filepath.Join(dir, ConfigFile)); err != nil {
		return nil, err
	}
	if h.KeyFile == "" {
		h.KeyFile = filepath.Join(dir, IdentityFile)
		if _, err := os.Stat(h.KeyFile); errors.Is(err, fs.ErrNotExist) {
			k, err := identity.Generate(nil)
			if err != nil {
				return nil, err
			}
			if err := identity.Save(h.KeyFile, k, nil, "parley"); err != nil {
				return nil, err
			}
			h.Key, h.Created = k, true
			return h, nil
		}
	}
	k, err := identity.Load(h.KeyFile, opts.Passphrase)
	if err != nil {
		return nil, err
	}
	h.Key = k
	return h, nil
}

// Contacts reads the contact book.
func (h *Home) Contacts() (*identity.Contacts, error) { return identity.LoadContacts(h.contacts) }

// SaveContacts writes the contact book.
func (h *Home) SaveContacts(c *identity.Contacts) error { return c.Save(h.contacts) }

// Config reads the home folder's config file over the defaults.
func (h *Home) Config() (Config, error) { return LoadConfig(filepath.Join(h.Dir, ConfigFile)) }

// Lock takes the home folder for this process. A second process is
// refused with a *lockfile.LockedError naming the one that holds it.
func (h *Home) Lock() (*lockfile.Lock, error) {
	l, err := lockfile.Acquire(filepath.Join(h.Dir, LockFile))
	if err != nil {
		return nil, fmt.Errorf("client: home folder %s: %w", h.Dir, err)
	}
	return l, nil
}

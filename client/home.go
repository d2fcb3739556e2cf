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
	"strings"

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

// ErrIdentityMissing: the home folder's identity key file is gone, and a
// new key would make its owner someone else to everyone they talk to.
var ErrIdentityMissing = errors.New("client: the identity key is missing")

// OpenHome opens the home folder dir, creating it (mode 0700) and a new
// identity in it on first use. A key file given in opts is remembered in
// the config file (identity), and used from then on without being given.
// A folder never gets a new identity in place of one it had: one whose
// identity file is gone while it has history, or whose config file names
// a key file that is gone, is an error wrapping ErrIdentityMissing.
func OpenHome(dir string, opts HomeOptions) (*Home, error) {
	if err := makeHomeDir(dir); err != nil {
		return nil, err
	}
	if err := writeTemplate(filepath.Join(dir, ConfigFile)); err != nil {
		return nil, err
	}
	keyFile, create, err := WhichKey(dir, opts.KeyFile)
	if err != nil {
		return nil, err
	}
	h := &Home{Dir: dir, KeyFile: keyFile, contacts: filepath.Join(dir, ContactsFile)}
	if create {
		return h, h.createKey()
	}
	k, err := identity.Load(h.KeyFile, opts.Passphrase)
	if opts.KeyFile == "" && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s, the key that %s names (identity), is not there: restore it, "+
			"or name another key with --identity FILE; a new key is not made in its place: %w",
			ErrIdentityMissing, h.KeyFile, filepath.Join(dir, ConfigFile), err)
	}
	if err != nil {
		return nil, err
	}
	h.Key = k
	if opts.KeyFile != "" {
		if err := h.rememberKeyFile(); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// makeHomeDir creates the home folder, or closes an existing one to others:
// it holds the identity and every message.
func makeHomeDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("client: create home folder: %w", err)
	}
	// Someone may have made the folder beforehand with a wider mode.
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, fi.Mode().Perm()&0o700); err != nil {
			return fmt.Errorf("client: home folder %s is open to others and cannot be closed: %w", dir, err)
		}
	}
	return nil
}

// createKey makes a new identity in the home folder's identity file.
func (h *Home) createKey() error {
	k, err := identity.Generate(nil)
	if err != nil {
		return err
	}
	if err := identity.Save(h.KeyFile, k, nil, "parley"); err != nil {
		return err
	}
	h.Key, h.Created = k, true
	return nil
}

// WhichKey says which key file the home folder dir uses as its identity,
// reading only its config file: keyFile if it is not empty, else the one
// the config file names (identity), else the folder's own identity file.
// create says that the last is missing and is to be made, which is so only
// in a folder with no history (no store, no contact book); in one with
// history it is an error wrapping ErrIdentityMissing.
func WhichKey(dir, keyFile string) (path string, create bool, err error) {
	if keyFile != "" {
		return keyFile, false, nil
	}
	cfg, err := loadConfig(filepath.Join(dir, ConfigFile), "")
	if err != nil {
		return "", false, err
	}
	if cfg.Identity != "" {
		path, err := expandPath(dir, cfg.Identity)
		return path, false, err
	}
	own := filepath.Join(dir, IdentityFile)
	if _, err := os.Stat(own); !errors.Is(err, fs.ErrNotExist) {
		return own, false, nil // there, or unreadable: Load says why
	}
	for _, f := range []string{StoreFile, ContactsFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return "", false, fmt.Errorf("%w: the home folder %s has history (%s) but no identity file %s, "+
				"and a new key would make you someone else to everyone you talk to. Restore the file from a backup, "+
				"or use the key you had with --identity FILE, or start afresh in a new home folder (--home DIR)",
				ErrIdentityMissing, dir, f, own)
		}
	}
	return own, true, nil
}

// expandPath makes a key file's path from the config file absolute:
// "~/" is the user's home folder, and a relative path is in the home
// folder dir.
func expandPath(dir, p string) (string, error) {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("%w: identity %q: %w", ErrConfig, p, err)
		}
		return filepath.Join(home, rest), nil
	}
	if !filepath.IsAbs(p) {
		return filepath.Join(dir, p), nil
	}
	return p, nil
}

// rememberKeyFile names the key file in the config file, if it does not
// name it already, so that the folder uses it from then on.
func (h *Home) rememberKeyFile() error {
	abs, err := filepath.Abs(h.KeyFile)
	if err != nil {
		return fmt.Errorf("client: identity %s: %w", h.KeyFile, err)
	}
	h.KeyFile = abs
	path := filepath.Join(h.Dir, ConfigFile)
	cfg, err := loadConfig(path, "")
	if err != nil {
		return err
	}
	if known, err := expandPath(h.Dir, cfg.Identity); err == nil && known == abs {
		return nil
	}
	return setConfigValue(path, "identity", abs)
}

// Contacts reads the contact book.
func (h *Home) Contacts() (*identity.Contacts, error) { return identity.LoadContacts(h.contacts) }

// SaveContacts writes the contact book.
func (h *Home) SaveContacts(c *identity.Contacts) error { return c.Save(h.contacts) }

// Config reads the home folder's config file over the defaults. The
// default nickname is made from the key (DefaultNick), if it is loaded.
func (h *Home) Config() (Config, error) {
	nick := DefaultConfig().Nick
	if !h.Key.IsZero() {
		nick = DefaultNick(h.Key.Public())
	}
	return loadConfig(filepath.Join(h.Dir, ConfigFile), nick)
}

// RememberNick writes nick into the config file, unless it is the
// nickname there already; comments and other keys stay as they are.
func (h *Home) RememberNick(nick string) error {
	if err := identity.ValidNick(nick); err != nil {
		return fmt.Errorf("%w: nick %q: %w", ErrConfig, nick, err)
	}
	cfg, err := h.Config()
	if err != nil || cfg.Nick == nick {
		return err
	}
	return setConfigValue(filepath.Join(h.Dir, ConfigFile), "nick", nick)
}

// Lock takes the home folder for this process. A second process is
// refused with a *lockfile.LockedError naming the one that holds it.
func (h *Home) Lock() (*lockfile.Lock, error) {
	l, err := lockfile.Acquire(filepath.Join(h.Dir, LockFile))
	if err != nil {
		return nil, fmt.Errorf("client: home folder %s: %w", h.Dir, err)
	}
	return l, nil
}

package server

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// The files of a relay's data folder.
const (
	ConfigFile = "config.toml" // the configuration (ConfigTemplate)
	KeyFile    = "identity"    // the relay's key: OpenSSH, mode 0600
	DBFile     = "relay.db"    // envelopes, access lists, invites (SQLite)
	MeshDBFile = "mesh.db"     // the bridge's mesh node's store
	SocketFile = "admin.sock"  // admin commands to the running relay, mode 0600
	LockFile   = "lock"        // held by the running relay; holds its PID
)

// DataEnv names the data folder when --data is not given.
const DataEnv = "PARLEY_RELAY_DATA"

// DefaultDataDir is $PARLEY_RELAY_DATA, else $XDG_DATA_HOME/parley-relay,
// else ~/.local/share/parley-relay.
func DefaultDataDir() (string, error) {
	if d := os.Getenv(DataEnv); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "parley-relay"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("relay: no data folder: set --data or $%s: %w", DataEnv, err)
	}
	return filepath.Join(home, ".local", "share", "parley-relay"), nil
}

// ErrNotInitialized: the data folder has no relay in it yet, or lacks
// its identity or config file.
var ErrNotInitialized = errors.New("relay: the data folder has no relay (run relay init)")

// ErrInitialized: relay init found a relay in the folder already.
var ErrInitialized = errors.New("relay: the data folder has a relay already")

// InitOptions say what relay init writes.
type InitOptions struct {
	Policy wire.PolicyMode
}

// InitResult is what Init did.
type InitResult struct {
	Key identity.PublicKey
	// Completed: the folder had the identity but no config file; Init
	// wrote the config file and kept the identity.
	Completed bool
}

// Init makes a relay in dir: its identity and a commented config file. A
// folder that has the identity but no config file (lost or removed) is
// completed: the config file is written, the identity kept. A folder
// with a config file is refused, so Init never replaces a key, nor makes
// a new one for a relay whose key is missing.
func Init(dir string, o InitOptions) (InitResult, error) {
	if o.Policy == 0 {
		o.Policy = wire.PolicyOpen
	}
	cfgPath, keyPath := filepath.Join(dir, ConfigFile), filepath.Join(dir, KeyFile)
	if _, err := os.Stat(cfgPath); err == nil {
		if _, err := os.Stat(keyPath); err != nil {
			return InitResult{}, fmt.Errorf("%w: %s exists, but not %s: restore the relay's identity from a backup (a new key would be another relay to its clients)", ErrInitialized, cfgPath, KeyFile)
		}
		return InitResult{}, fmt.Errorf("%w: %s exists", ErrInitialized, cfgPath)
	}
	var res InitResult
	if _, err := os.Stat(keyPath); err == nil {
		key, err := LoadKey(dir) // a key the relay can use, or no config
		if err != nil {
			return InitResult{}, err
		}
		res = InitResult{Key: key.Public(), Completed: true}
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return InitResult{}, fmt.Errorf("relay: init: %w", err)
		}
		key, err := identity.Generate(rand.Reader)
		if err != nil {
			return InitResult{}, err
		}
		if err := identity.Save(keyPath, key, nil, "parley relay"); err != nil {
			return InitResult{}, fmt.Errorf("relay: init: %w", err)
		}
		res.Key = key.Public()
	}
	cfg := fmt.Sprintf(ConfigTemplate, o.Policy)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return InitResult{}, fmt.Errorf("relay: init: %w", err)
	}
	return res, nil
}

// LoadKey reads the relay's key from dir.
func LoadKey(dir string) (identity.PrivateKey, error) {
	k, err := identity.Load(filepath.Join(dir, KeyFile), nil)
	if errors.Is(err, fs.ErrNotExist) {
		return k, fmt.Errorf("%w: %s", ErrNotInitialized, dir)
	}
	return k, err
}

// LoadDirConfig reads dir's config file.
func LoadDirConfig(dir string) (Config, error) {
	c, err := LoadConfig(filepath.Join(dir, ConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		if _, kerr := os.Stat(filepath.Join(dir, KeyFile)); kerr == nil {
			return c, fmt.Errorf("%w: %s has the relay's identity but no %s: run relay init to write a new one (it keeps the identity)", ErrNotInitialized, dir, ConfigFile)
		}
		return c, fmt.Errorf("%w: %s", ErrNotInitialized, dir)
	}
	return c, err
}

// ShareAddr is the address to give clients: Advertise, else Listen with
// an unspecified host replaced by this machine's name. The second result
// says whether that replacement was a guess.
func ShareAddr(key identity.PublicKey, cfg Config) (relay.Addr, bool) {
	if cfg.Advertise != "" {
		return relay.AddrOf(key, cfg.Advertise), false
	}
	host, port, _ := net.SplitHostPort(cfg.Listen)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		name, err := os.Hostname()
		if err != nil || name == "" {
			name = "localhost"
		}
		return relay.AddrOf(key, net.JoinHostPort(name, port)), true
	}
	return relay.AddrOf(key, cfg.Listen), false
}

// openStore opens a database of the data folder, creating it first with
// mode 0600 so that only the relay's user can read it (SQLite gives its
// journal files the same mode).
func openStore(dir, name string, opts ...store.Option) (*store.Store, error) {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	f.Close()
	// The relay's part of the database, and not the chat client's.
	return store.Open(path, append([]store.Option{store.Relay()}, opts...)...)
}

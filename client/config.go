package client

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/strictoml"
	"github.com/parleychat/parley/relay"
)

// ConfigFile is the home folder's configuration file.
const ConfigFile = "config.toml"

// ErrConfig: the configuration (file or flags) is not valid.
var ErrConfig = errors.New("client: config")

// Modes: which paths carry messages.
const (
	// ModeAuto uses the mesh, and the relay too when one is configured;
	// with no mesh peer in reach the relay alone carries the messages.
	ModeAuto = "auto"
	// ModeP2P uses the mesh only.
	ModeP2P = "p2p"
	// ModeRelay uses the relay only: for networks that block
	// peer-to-peer traffic.
	ModeRelay = "relay"
)

// Config is the client's configuration: config.toml in the home folder,
// overridden by flags. An empty file is a working peer-to-peer client.
type Config struct {
	// Nick is the nickname put on messages: 1 to 32 of a-z 0-9 - _ .
	Nick string `toml:"nick"`
	// Mode is auto, p2p or relay.
	Mode string `toml:"mode"`
	// Relay is the address of a relay (FINGERPRINT@HOST:PORT), or empty.
	Relay string `toml:"relay"`
	// Peers are mesh peers to dial at start (multiaddrs ending in /p2p/).
	Peers []string `toml:"peers"`
	// Listen are the mesh node's multiaddrs; empty: QUIC and TCP on
	// every interface, on ports the system picks.
	Listen []string `toml:"listen"`
	// MDNS finds peers on the local network.
	MDNS bool `toml:"mdns"`
}

// DefaultConfig is the configuration of an empty config file.
func DefaultConfig() Config {
	return Config{Nick: defaultNick(), Mode: ModeAuto, MDNS: true}
}

// defaultNick is the login name when it is a valid nickname, else "anon".
func defaultNick() string {
	if u, err := user.Current(); err == nil {
		if n := strings.ToLower(u.Username); identity.ValidNick(n) == nil {
			return n
		}
	}
	return "anon"
}

// ConfigTemplate is the config file a new home folder gets.
const ConfigTemplate = `# Parley chat client configuration. Flags override every setting here.

# The nickname on your messages: 1 to 32 of a-z 0-9 - _ .
# It is only a label: your identity is your key (chat id).
# nick = "alice"

# Which paths carry messages:
#   auto   the mesh, and the relay too when one is set below; the relay
#          alone when no peer can be reached
#   p2p    the mesh only
#   relay  the relay only, for networks that block peer-to-peer
# mode = "auto"

# A relay, as its operator shares it: FINGERPRINT@HOST:PORT. A relay
# whose key differs from the address is refused.
# relay = "SHA256:...@relay.example.org:4433"

# Mesh peers to dial at start, each a multiaddr ending in /p2p/<peer ID>.
# peers = ["/ip4/192.0.2.1/udp/4001/quic-v1/p2p/12D3KooW..."]

# Where the mesh node listens; empty: QUIC and TCP on every interface.
# listen = ["/ip4/0.0.0.0/udp/4001/quic-v1"]

# Find peers on the local network.
# mdns = true
`

// LoadConfig reads the config file at path over the defaults. A missing
// file is the defaults; an unknown key is an error.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultConfig(), nil
	}
	if err != nil {
		return DefaultConfig(), fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c := DefaultConfig()
	if err := strictoml.Decode(data, &c); err != nil {
		return c, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
	}
	return c, nil
}

// ParseConfig parses a config file over the defaults; an unknown key is
// an error. It does not Validate.
func ParseConfig(data []byte) (Config, error) {
	c := DefaultConfig()
	if err := strictoml.Decode(data, &c); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return c, nil
}

// Validate checks the configuration, flags included.
func (c *Config) Validate() error {
	var errs []error
	if err := identity.ValidNick(c.Nick); err != nil {
		errs = append(errs, fmt.Errorf("nick %q: %w", c.Nick, err))
	}
	switch c.Mode {
	case ModeAuto, ModeP2P:
	case ModeRelay:
		if c.Relay == "" {
			errs = append(errs, errors.New("mode relay needs a relay (--relay or relay in the config file)"))
		}
	default:
		errs = append(errs, fmt.Errorf("mode %q is not auto, p2p or relay", c.Mode))
	}
	if c.Relay != "" {
		if _, err := relay.ParseAddr(c.Relay); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range c.Peers {
		if _, err := peer.AddrInfoFromString(p); err != nil {
			errs = append(errs, fmt.Errorf("peer %q: a multiaddr ending in /p2p/<peer ID>: %w", p, err))
		}
	}
	for _, l := range c.Listen {
		if _, err := multiaddr.NewMultiaddr(l); err != nil {
			errs = append(errs, fmt.Errorf("listen %q: %w", l, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// writeTemplate creates the config file at path if there is none.
func writeTemplate(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("client: create config file: %w", err)
	}
	if _, err := f.WriteString(ConfigTemplate); err != nil {
		f.Close()
		return fmt.Errorf("client: create config file: %w", err)
	}
	return f.Close()
}

package client

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/atomicfile"
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
	// Relays are the relays to use (FINGERPRINT@HOST:PORT each), in the
	// order given; none for none. The config file's relay takes one
	// address or a list.
	Relays RelayList `toml:"relay"`
	// RelayAck is how many relays must acknowledge a message for it to
	// be delivered: any (one; the mesh counts as one too), quorum (more
	// than half of them) or all. Empty is any.
	RelayAck string `toml:"relay_ack"`
	// RelayTransport is how to reach the relay: auto (QUIC and TCP
	// together, QUIC preferred), quic, or tcp (for networks that block
	// UDP). Empty is auto.
	RelayTransport string `toml:"relay_transport"`
	// Peers are mesh peers to dial at start (multiaddrs ending in /p2p/).
	Peers []string `toml:"peers"`
	// Listen are the mesh node's multiaddrs; empty: QUIC and TCP on
	// every interface, on ports the system picks.
	Listen []string `toml:"listen"`
	// MDNS finds peers on the local network.
	MDNS bool `toml:"mdns"`
	// Bell rings the terminal's bell in the chat screen on a message
	// that names us and on a security alarm.
	Bell bool `toml:"bell"`
	// Identity is the key file used as the identity instead of the home
	// folder's own, remembered from --identity: a home folder used with a
	// key of its own never gets a fresh one.
	Identity string `toml:"identity"`
}

// DefaultConfig is the configuration of an empty config file, before the
// identity is known: its nickname is the login name, or "anon" for a
// shared account (Home.Config makes that one from the key).
func DefaultConfig() Config {
	return Config{Nick: nickFor(loginName(), "anon"), Mode: ModeAuto, MDNS: true, Bell: true}
}

// DefaultNick is the nickname of a person who has not chosen one: the
// login name, unless it is a shared or system account's (root, ubuntu,
// ...), which many people have; then "anon-" and the start of the key's
// fingerprint.
func DefaultNick(key identity.PublicKey) string {
	return nickFor(loginName(), anonNick(key))
}

func loginName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

// nickFor is login as a nickname, or anon if login is not valid as one or
// names an account that many people share.
func nickFor(login, anon string) string {
	n := strings.ToLower(login)
	if identity.ValidNick(n) != nil || sharedAccounts[n] {
		return anon
	}
	return n
}

// sharedAccounts are login names that say nothing about who is typing:
// system and cloud images' default accounts, and generic ones.
var sharedAccounts = map[string]bool{
	"root": true, "admin": true, "administrator": true, "user": true, "guest": true,
	"ubuntu": true, "debian": true, "centos": true, "fedora": true, "rocky": true,
	"almalinux": true, "alpine": true, "arch": true, "pi": true, "ec2-user": true,
	"azureuser": true, "opc": true, "cloud-user": true, "vagrant": true, "kali": true,
	"nobody": true, "daemon": true, "www-data": true, "runner": true, "test": true,
	"demo": true, "default": true, "docker": true, "git": true, "anon": true,
}

// anonNick is "anon-" and the first 6 characters of the key's short
// fingerprint, lower-cased, with the base64 characters that a nickname
// cannot hold made "-" and "_".
func anonNick(key identity.PublicKey) string {
	fp := strings.ToLower(key.ShortFingerprint())
	fp = strings.NewReplacer("+", "-", "/", "_").Replace(fp)
	return "anon-" + fp[:min(6, len(fp))]
}

// ConfigTemplate is the config file a new home folder gets.
const ConfigTemplate = `# Parley chat client configuration. Flags override every setting here.

# The nickname on your messages: 1 to 32 of a-z 0-9 - _ .
# It is only a label: your identity is your key (chat id).
# --nick NAME sets it here. If unset: your login name, or for a shared
# account (root, ubuntu, ...) "anon-" and the start of your fingerprint.
# nick = "alice"

# Which paths carry messages:
#   auto   the mesh, and the relay too when one is set below; the relay
#          alone when no peer can be reached
#   p2p    the mesh only
#   relay  the relay only, for networks that block peer-to-peer
# mode = "auto"

# A relay, as its operator shares it: FINGERPRINT@HOST:PORT, or a list
# of the relays of one network: messages go to each, come from each, and
# are shown once. A relay whose key differs from its address is refused.
# relay = "SHA256:...@relay.example.org:4433"
# relay = ["SHA256:...@relay1.example.org:4433", "SHA256:...@relay2.example.org:4433"]

# With several relays, how many must acknowledge a message before it is
# delivered (until then it stays in the outbox and goes again): any (one
# relay, or a mesh peer), quorum (more than half of the relays) or all.
# relay_ack = "any"

# Mesh peers to dial at start, each a multiaddr ending in /p2p/<peer ID>.
# peers = ["/ip4/192.0.2.1/udp/4001/quic-v1/p2p/12D3KooW..."]

# Where the mesh node listens; empty: QUIC and TCP on every interface.
# listen = ["/ip4/0.0.0.0/udp/4001/quic-v1"]

# Find peers on the local network.
# mdns = true

# The chat screen rings the terminal's bell on a message that names you
# and on a security alarm.
# bell = true

# The key file used as your identity instead of this folder's own
# "identity" file: an OpenSSH Ed25519 key such as ~/.ssh/id_ed25519.
# --identity FILE sets it. A folder that names a key here never gets a
# new one: if the file is gone, chat says so and stops.
# identity = "/home/alice/.ssh/id_ed25519"
`

// LoadConfig reads the config file at path over the defaults. A missing
// file is the defaults; an unknown key is an error.
func LoadConfig(path string) (Config, error) { return loadConfig(path, DefaultConfig().Nick) }

// loadConfig is LoadConfig with nick as the default nickname.
func loadConfig(path, nick string) (Config, error) {
	c := DefaultConfig()
	c.Nick = nick
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
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
		if len(c.Relays) == 0 {
			errs = append(errs, errors.New("mode relay needs a relay (--relay or relay in the config file)"))
		}
	default:
		errs = append(errs, fmt.Errorf("mode %q is not auto, p2p or relay", c.Mode))
	}
	if _, err := c.Relays.Addrs(); err != nil {
		errs = append(errs, err)
	}
	if _, err := relayNeed(c.RelayAck, len(c.Relays)); err != nil {
		errs = append(errs, err)
	}
	if _, err := relay.ParseVia(c.RelayTransport); err != nil {
		errs = append(errs, fmt.Errorf("relay_transport: %w", err))
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

// setConfigValue sets key to the string value in the config file at path
// and keeps the rest of the file, comments included: the line that sets
// the key is replaced; else the value goes under the template's commented
// example of it, else at the end. The file is replaced atomically, and
// only if the result is a valid config file.
func setConfigValue(path, key, value string) error {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	out, err := setValue(data, key, value)
	if err != nil {
		return fmt.Errorf("%w: %s: setting %s: %w", ErrConfig, path, key, err)
	}
	if err := atomicfile.WriteFile(path, out, 0o600); err != nil {
		return fmt.Errorf("client: config: %w", err)
	}
	return nil
}

// setValue is the config file data with key set to value
// (setConfigValue), or an error if the result would not be a valid
// config file that sets key to value and changes nothing else.
func setValue(data []byte, key, value string) ([]byte, error) {
	if !utf8.ValidString(value) {
		return nil, fmt.Errorf("%q is not UTF-8, which a config file cannot hold", value)
	}
	out := []byte(withValue(string(data), key, value))
	var c Config
	if err := strictoml.Decode(out, &c); err != nil {
		return nil, err
	}
	if err := onlyKeyChanged(data, out, key, value); err != nil {
		return nil, err
	}
	return out, nil
}

// onlyKeyChanged checks that the file after sets key to value and
// changes no other setting of the file before: a line that looks like
// the key's but is inside a multi-line string must not be taken for it.
func onlyKeyChanged(before, after []byte, key, value string) error {
	var was, is map[string]any
	if err := strictoml.Decode(after, &is); err != nil {
		return err
	}
	if is[key] != value {
		return errors.New("the file's text hides the setting (a multi-line string?)")
	}
	if strictoml.Decode(before, &was) != nil {
		return nil // a broken file: what it said is unknown
	}
	delete(was, key)
	delete(is, key)
	if !reflect.DeepEqual(was, is) {
		return errors.New("the change would touch other settings (a multi-line string?)")
	}
	return nil
}

// withValue is text with the line `key = "value"` set (setConfigValue).
func withValue(text, key, value string) string {
	set := key + " = " + tomlString(value) + "\n"
	lines := strings.SplitAfter(text, "\n")
	example := -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if setsKey(t, key) {
			lines[i] = set
			return strings.Join(lines, "")
		}
		if example < 0 && strings.HasPrefix(t, "#") && setsKey(strings.TrimSpace(strings.TrimPrefix(t, "#")), key) {
			example = i
		}
	}
	if example < 0 {
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		return text + set
	}
	if !strings.HasSuffix(lines[example], "\n") {
		lines[example] += "\n"
	}
	lines = slices.Insert(lines, example+1, set)
	return strings.Join(lines, "")
}

// setsKey reports whether the TOML line sets key.
func setsKey(line, key string) bool {
	rest, ok := strings.CutPrefix(line, key)
	return ok && strings.HasPrefix(strings.TrimSpace(rest), "=")
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

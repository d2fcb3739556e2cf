package relay

import (
	"encoding/base64"
	"fmt"
	"net"
	"strings"

	"github.com/parleychat/parley/identity"
)

// Addr is the address people share for a relay: where it listens and the
// fingerprint of its key, written FINGERPRINT@HOST:PORT, as in
//
//	SHA256:qJ3n0bq6...@relay.example.org:4433
//
// A client that reaches a relay with another key refuses it.
type Addr struct {
	Fingerprint string // SHA256:..., as identity.PublicKey.Fingerprint prints it
	HostPort    string
}

// AddrOf is the address of the relay with key at hostPort.
func AddrOf(key identity.PublicKey, hostPort string) Addr {
	return Addr{Fingerprint: key.Fingerprint(), HostPort: hostPort}
}

func (a Addr) String() string { return a.Fingerprint + "@" + a.HostPort }

// ParseAddr parses FINGERPRINT@HOST:PORT.
func ParseAddr(s string) (Addr, error) {
	fp, hp, ok := strings.Cut(s, "@")
	if !ok {
		return Addr{}, fmt.Errorf("relay: address %q: want FINGERPRINT@HOST:PORT (relay addr prints it)", s)
	}
	raw, ok := strings.CutPrefix(fp, "SHA256:")
	if b, err := base64.RawStdEncoding.Strict().DecodeString(raw); !ok || err != nil || len(b) != 32 {
		return Addr{}, fmt.Errorf("relay: address %q: %q is not a SHA256 key fingerprint", s, fp)
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil || host == "" || port == "" {
		return Addr{}, fmt.Errorf("relay: address %q: %q is not HOST:PORT", s, hp)
	}
	return Addr{Fingerprint: fp, HostPort: hp}, nil
}

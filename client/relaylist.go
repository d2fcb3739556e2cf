package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/parleychat/parley/relay"
)

// RelayList is the relays a session uses: the config file's relay, one
// address or a list of them, or --relay, given once or more, each a list
// separated by commas.
type RelayList []string

// UnmarshalTOML takes one address or a list of them.
func (l *RelayList) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*l = nil
		if v != "" {
			*l = RelayList{v}
		}
		return nil
	case []any:
		out := make(RelayList, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("relay: want addresses (strings), not %T", e)
			}
			out = append(out, s)
		}
		*l = out
		return nil
	}
	return fmt.Errorf("relay: want an address or a list of them, not %T", v)
}

// String is the list as --relay takes it.
func (l RelayList) String() string { return strings.Join(l, ",") }

// Set adds the relays of a --relay flag: one address or several,
// separated by commas.
func (l *RelayList) Set(s string) error {
	for a := range strings.SplitSeq(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			*l = append(*l, a)
		}
	}
	return nil
}

// maxRelays bounds how many relays a session uses.
const maxRelays = 16

// Addrs parses the list: each address must be good, and no relay may
// come twice (by its key).
func (l RelayList) Addrs() ([]relay.Addr, error) {
	if len(l) > maxRelays {
		return nil, fmt.Errorf("relay: %d relays; at most %d", len(l), maxRelays)
	}
	var errs []error
	out := make([]relay.Addr, 0, len(l))
	seen := map[string]bool{}
	for _, s := range l {
		a, err := relay.ParseAddr(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[a.Fingerprint] {
			errs = append(errs, fmt.Errorf("relay %s is named twice", a.Fingerprint))
			continue
		}
		seen[a.Fingerprint] = true
		out = append(out, a)
	}
	return out, errors.Join(errs...)
}

// The values of relay_ack.
const (
	AckAny    = "any"
	AckQuorum = "quorum"
	AckAll    = "all"
)

// relayNeed is how many of n relays must acknowledge a message under
// relay_ack mode ack.
func relayNeed(ack string, n int) (int, error) {
	if n == 0 {
		// No relay: the mesh alone.
		switch ack {
		case "", AckAny, AckQuorum, AckAll:
			return 0, nil
		}
	}
	switch ack {
	case "", AckAny:
		return min(n, 1), nil
	case AckQuorum:
		return n/2 + 1, nil
	case AckAll:
		return n, nil
	}
	return 0, fmt.Errorf("relay_ack %q is not any, quorum or all", ack)
}

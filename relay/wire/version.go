package wire

import (
	"fmt"
	"strconv"
	"strings"
)

// Versions of the relay protocol. Each version has its TLS application
// protocol (ALPN), "parley-relay/N". A client offers every version it
// speaks, highest first; a relay answers with the highest it speaks too.
// When they share none, a relay of this code still completes the
// handshake with the client's highest relay version, so that it can
// refuse the connection with a text naming both sides' versions
// (Refusal) instead of a bare TLS alert. What changes within a version,
// and what needs a new one, is in docs/relay-protocol.md ("Versions").
type Versions struct {
	Min, Max int // 1 <= Min <= Max <= MaxVersion
}

// Current is the range this code speaks.
var Current = Versions{Min: 1, Max: 1}

// MaxVersion is the highest version an ALPN may name.
const MaxVersion = 255

const alpnPrefix = "parley-relay/"

// RelayALPN is the TLS application protocol of relay protocol version 1.
const RelayALPN = alpnPrefix + "1"

// ALPN is the TLS application protocol of relay protocol version v.
func ALPN(v int) string { return alpnPrefix + strconv.Itoa(v) }

// ParseALPN returns the relay protocol version an ALPN names: the prefix
// "parley-relay/", then a decimal from 1 to MaxVersion without leading
// zeros (one spelling per version).
func ParseALPN(s string) (int, bool) {
	n, ok := strings.CutPrefix(s, alpnPrefix)
	if !ok || n == "" || len(n) > 3 || n[0] == '0' {
		return 0, false
	}
	v := 0
	for _, c := range []byte(n) {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	if v > MaxVersion {
		return 0, false
	}
	return v, true
}

// Speaks reports whether v is in the range.
func (vs Versions) Speaks(v int) bool { return v >= vs.Min && v <= vs.Max }

// ALPNs lists the range's ALPNs, highest first: what a client offers.
func (vs Versions) ALPNs() []string {
	var out []string
	for v := vs.Max; v >= vs.Min; v-- {
		out = append(out, ALPN(v))
	}
	return out
}

// Choose is the ALPN a relay speaking vs answers a client that offers
// offered: the highest version both speak; if they share none, the
// client's highest relay version (the relay refuses it after the
// handshake, with Refusal); "" if the client offers no relay version.
func (vs Versions) Choose(offered []string) string {
	best, highest := 0, 0
	for _, p := range offered {
		v, ok := ParseALPN(p)
		if !ok {
			continue
		}
		highest = max(highest, v)
		if vs.Speaks(v) {
			best = max(best, v)
		}
	}
	switch {
	case best > 0:
		return ALPN(best)
	case highest > 0:
		return ALPN(highest)
	}
	return ""
}

// Refusal is what a relay speaking vs tells a client whose connection
// negotiated alpn, and false if it speaks that version.
func (vs Versions) Refusal(alpn string) (string, bool) {
	v, ok := ParseALPN(alpn)
	switch {
	case !ok:
		return fmt.Sprintf("no relay protocol version offered (ALPN %q); this relay speaks %s", alpn, vs), true
	case v < vs.Min:
		return fmt.Sprintf("the client speaks relay protocol version %d at most, too old for this relay, which speaks %s: upgrade the client", v, vs), true
	case v > vs.Max:
		return fmt.Sprintf("the client speaks relay protocol version %d and none older that this relay speaks (%s): upgrade the relay, or use an older client", v, vs), true
	}
	return "", false
}

// String is "version 1" or "versions 1 to 3".
func (vs Versions) String() string {
	if vs.Min == vs.Max {
		return fmt.Sprintf("version %d", vs.Min)
	}
	return fmt.Sprintf("versions %d to %d", vs.Min, vs.Max)
}

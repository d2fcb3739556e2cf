package client

import (
	"testing"
	"unicode/utf8"
)

// configKeys are the string settings setConfigValue may be asked to set,
// with the field each sets.
var configKeys = []struct {
	key   string
	field func(*Config) *string
}{
	{"nick", func(c *Config) *string { return &c.Nick }},
	{"identity", func(c *Config) *string { return &c.Identity }},
	{"relay_ack", func(c *Config) *string { return &c.RelayAck }},
	{"mode", func(c *Config) *string { return &c.Mode }},
	{"relay_transport", func(c *Config) *string { return &c.RelayTransport }},
}

// FuzzConfigSetValue: setting one key of a config file (setValue, what
// `chat` does to save a nick or an identity's path) either is refused or
// gives a file whose key is exactly the value given and whose other
// settings are those of the file before. A value TOML cannot hold (not
// UTF-8) is refused; the template and an empty file are never refused.
//
// The file is an edit of one of a few bases (none, the template, a short
// file, one with a multi-line string): the bytes base[at:at+cut]
// replaced by edit, so that inputs stay small (see fuzz.FuzzKeyPackage).
func FuzzConfigSetValue(f *testing.F) {
	bases := []string{"", ConfigTemplate, "nick = \"alice\"\nmode = \"p2p\"\n# nick = \"x\"\nbell = false",
		"relay = \"\"\"\nnick = \"inside a string\"\n\"\"\"\n"}
	f.Add(byte(1), "", uint16(0), uint16(0), byte(0), "bob")
	f.Add(byte(1), "", uint16(0), uint16(0), byte(1), "/home/bob/.parley/id_ed25519")
	f.Add(byte(2), "", uint16(0), uint16(0), byte(0), "quote\" back\\slash \x01 \u2603")
	f.Add(byte(2), "", uint16(0), uint16(15), byte(0), "zoe")
	// Found by this target: withValue took a line inside a multi-line
	// string for the key's, and a path not in UTF-8 was saved changed.
	f.Add(byte(3), "", uint16(0), uint16(0), byte(0), "eve")
	f.Add(byte(0), "", uint16(0), uint16(0), byte(1), "/tmp/\xff")
	// Found by this target (testdata/fuzz/FuzzConfigSetValue/2371451963f70e89):
	// the TOML decoder took "Nick" for nick, so setting nick in a file
	// that said `Nick = "x"` added a second key and the file still said
	// x. strictoml now refuses a key in another case.
	f.Add(byte(2), "N", uint16(0), uint16(31), byte(0), "0")
	f.Fuzz(func(t *testing.T, base byte, edit string, at, cut uint16, keySel byte, value string) {
		b := bases[int(base)%len(bases)]
		i := min(int(at), len(b))
		j := min(i+int(cut), len(b))
		text := b[:i] + edit + b[j:]
		k := configKeys[int(keySel)%len(configKeys)]
		out, err := setValue([]byte(text), k.key, value)
		if err != nil {
			if utf8.ValidString(value) && (text == "" || text == ConfigTemplate) {
				t.Fatalf("setting %s to %q in the template or an empty file: %v", k.key, value, err)
			}
			return
		}
		if !utf8.ValidString(value) {
			t.Fatalf("set %s to %q, which is not UTF-8", k.key, value)
		}
		after, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("setValue gave a file that does not parse: %v\n%s", err, out)
		}
		if got := *k.field(&after); got != value {
			t.Fatalf("set %s to %q; the file says %q:\n%s", k.key, value, got, out)
		}
		before, err := ParseConfig([]byte(text))
		if err != nil {
			return // the file was broken; setting a key may mend it
		}
		*k.field(&after) = *k.field(&before)
		if !sameClientConfig(before, after) {
			t.Fatalf("setting %s changed other settings: %+v became %+v:\n%s", k.key, before, after, out)
		}
	})
}

// sameClientConfig compares configs field by field.
func sameClientConfig(a, b Config) bool {
	eq := func(x, y []string) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	return a.Nick == b.Nick && a.Mode == b.Mode && eq(a.Relays, b.Relays) && a.RelayAck == b.RelayAck && a.RelayTransport == b.RelayTransport &&
		a.MDNS == b.MDNS && a.Bell == b.Bell && a.Identity == b.Identity && eq(a.Peers, b.Peers) && eq(a.Listen, b.Listen)
}

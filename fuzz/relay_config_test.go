package fuzz

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/parleychat/parley/relay/server"
)

// loadRelayConfig writes data to path and loads it as the relay does.
func loadRelayConfig(t testing.TB, path string, data []byte) (server.Config, error) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return server.LoadConfig(path)
}

// sane checks what Validate's rules promise of an accepted config beyond
// what it tests field by field: rates are numbers (not NaN, not
// infinite), and history outlives twice the skew.
func sane(t *testing.T, c server.Config) {
	t.Helper()
	for _, r := range []float64{c.Limits.PublishRate, c.Limits.AddrRate} {
		if !(r > 0) || math.IsInf(r, 0) {
			t.Fatalf("accepted a rate of %v", r)
		}
	}
	if age, skew := c.Retention.MaxAge.Duration, c.Limits.Skew.Duration; age > 0 && age/2 < skew {
		t.Fatalf("accepted retention.max_age %v below twice limits.skew %v", age, skew)
	}
}

// sameConfig reports whether a and b are the same config, an empty list
// or map being the same as none (TOML writes both as nothing or []).
func sameConfig(a, b server.Config) bool {
	return reflect.DeepEqual(emptyIsNil(a), emptyIsNil(b))
}

func emptyIsNil(c server.Config) server.Config {
	nilIfEmpty := func(s []string) []string {
		if len(s) == 0 {
			return nil
		}
		return s
	}
	c.P2PListen = nilIfEmpty(c.P2PListen)
	c.Bootstrap = nilIfEmpty(c.Bootstrap)
	c.Federation.Relays = nilIfEmpty(c.Federation.Relays)
	c.Federation.Rooms = nilIfEmpty(c.Federation.Rooms)
	c.Policy.Admins = nilIfEmpty(c.Policy.Admins)
	rooms := c.Policy.Rooms
	c.Policy.Rooms = nil
	for room, rule := range rooms {
		if c.Policy.Rooms == nil {
			c.Policy.Rooms = map[string]server.RoomRule{}
		}
		c.Policy.Rooms[room] = server.RoomRule{Read: nilIfEmpty(rule.Read), Post: nilIfEmpty(rule.Post)}
	}
	return c
}

// FuzzRelayConfig: any config file loads to a config or to ErrConfig,
// with a message that starts by saying so; loading is deterministic; an
// accepted config passes Validate and the rules Validate states (sane),
// and written out as TOML it loads back to the same config.
//
// The file is an edit of one of a few bases (none, the template, the
// template with every setting on, a config with rules): the bytes
// base[at:at+cut] replaced by edit. The template is 4 kB, and the
// fuzzer spends its time minimizing inputs that large (see
// FuzzKeyPackage); with base 0 the edit is the whole file.
func FuzzRelayConfig(f *testing.F) {
	bases := relayConfigBases()
	for i := range bases {
		f.Add(byte(i), []byte{}, uint16(0), uint16(0))
	}
	for _, edit := range []string{
		"[limits]\npublish_rate = nan\n",                                 // accepted before the fix: NaN <= 0 is false
		"[limits]\naddr_rate = inf\n",                                    // accepted before the fix
		"[limits]\nskew = \"2562047h\"\n[retention]\nmax_age = \"1h\"\n", // 2*skew overflowed
		"[retention]\nmax_age = \"9m59s\"\n",
		"colour = 1\n",
		"[circuit]\nenabled = false\nmax_circuits = 0\n",
	} {
		f.Add(byte(0), []byte(edit), uint16(0), uint16(0))
	}
	f.Add(byte(1), []byte("mode = \"closed\""), uint16(strings.Index(bases[1], "mode =")), uint16(len("mode = \"open\"")))
	f.Add(byte(2), []byte("1e999"), uint16(strings.Index(bases[2], "200.0")), uint16(5))
	f.Add(byte(3), []byte("general."), uint16(strings.Index(bases[3], "general")), uint16(7))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, base byte, edit []byte, at, cut uint16) {
		data := splice([]byte(bases[int(base)%len(bases)]), edit, at, cut)
		path := filepath.Join(dir, "config.toml")
		c, err := loadRelayConfig(t, path, data)
		if err != nil {
			if !errors.Is(err, server.ErrConfig) || !strings.HasPrefix(err.Error(), server.ErrConfig.Error()) {
				t.Fatalf("error %q is not ErrConfig, or does not start by saying so", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("a loaded config does not pass Validate: %v", err)
		}
		sane(t, c)
		again, err := loadRelayConfig(t, path, data)
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("loaded twice, the same file gives %+v, %v and %+v", c, err, again)
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(c); err != nil {
			t.Fatalf("an accepted config does not encode: %v", err)
		}
		back, err := loadRelayConfig(t, path, buf.Bytes())
		if err != nil || !sameConfig(back, c) {
			t.Fatalf("written out and loaded back, %+v becomes %+v, %v\n%s", c, back, err, buf.Bytes())
		}
	})
}

// relayConfigBases are the files FuzzRelayConfig edits.
func relayConfigBases() []string {
	return []string{
		"",
		fmt.Sprintf(server.ConfigTemplate, "open"),
		string(uncommentTemplate("allowlist")),
		"listen = \"127.0.0.1:0\"\nlisten_tcp = \"off\"\nbootstrap = []\n[policy]\nmode = \"allowlist\"\n" +
			"admins = [\"SHA256:5jV9gJBjzXqNYZCm7iKTZC6XL5PqDH1RCOJS3SBkjtc\"]\n" +
			"[policy.rooms.general]\nread = []\npost = [\"SHA256:5jV9gJBjzXqNYZCm7iKTZC6XL5PqDH1RCOJS3SBkjtc\"]\n" +
			"[retention]\nmax_age = \"0s\"\nmax_bytes = 1000000\n",
	}
}

// templateSetting is a commented setting in the template: "# key = value".
var templateSetting = regexp.MustCompile(`(?m)^# ([a-z_]+ = .*)$`)

// uncommentTemplate is the relay's config template, for mode, with every
// commented setting turned on, except the examples, which are no
// defaults: advertise, and the fingerprints of admins and room rules.
func uncommentTemplate(mode string) []byte {
	text := fmt.Sprintf(server.ConfigTemplate, mode)
	return []byte(templateSetting.ReplaceAllStringFunc(text, func(line string) string {
		for _, example := range []string{"# advertise ", "# admins ", "# read ", "# post "} {
			if strings.HasPrefix(line, example) {
				return line
			}
		}
		return strings.TrimPrefix(line, "# ")
	}))
}

// TestRelayConfigTemplate: the config file `relay init` writes, as it is
// and with every setting turned on, is the default config; every
// setting says its default, as the template claims.
func TestRelayConfigTemplate(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []string{"open", "allowlist", "invite"} {
		want := server.DefaultConfig()
		want.Policy.Mode = mode
		for i, data := range [][]byte{[]byte(fmt.Sprintf(server.ConfigTemplate, mode)), uncommentTemplate(mode)} {
			got, err := loadRelayConfig(t, filepath.Join(dir, "config.toml"), data)
			if err != nil {
				t.Fatalf("template %d for %s: %v", i, mode, err)
			}
			if !sameConfig(got, want) {
				t.Errorf("template %d for %s loads as\n%+v\nnot the default\n%+v", i, mode, got, want)
			}
		}
	}
	if n := len(templateSetting.FindAll(uncommentTemplate("open"), -1)); n != 4 {
		t.Errorf("%d settings left commented, want the 4 examples", n)
	}
}

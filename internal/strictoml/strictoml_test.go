package strictoml

import (
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	type conf struct {
		Name  string `toml:"name"`
		Inner struct {
			On bool `toml:"on"`
		} `toml:"inner"`
		List []struct {
			Name string `toml:"name"`
		} `toml:"list"`
		Rooms map[string]struct {
			Name string `toml:"name"`
		} `toml:"rooms"`
		Free  map[string]any `toml:"free"`
		Plain string
	}
	var c conf
	good := "name = 'x'\nPlain = 'p'\n[inner]\non = true\n[[list]]\nname = 'l'\n[rooms.Any-Case]\nname = 'r'\n[free]\nAny = 1\n"
	if err := Decode([]byte(good), &c); err != nil || c.Name != "x" || !c.Inner.On || c.List[0].Name != "l" ||
		c.Rooms["Any-Case"].Name != "r" || c.Free["Any"] != int64(1) || c.Plain != "p" {
		t.Fatalf("Decode = %+v, %v", c, err)
	}
	for in, want := range map[string]string{
		"nmae = 'x'\n":         "unknown key nmae",
		"[inner]\nof = true\n": "unknown key inner.of",
		"name = 'x\n":          "",
		"a = 1\nb = 2\n":       "unknown key a, b",
		// Keys are case-sensitive: the decoder underneath would take
		// these for name and inner.on.
		"Name = 'x'\n":                   "unknown key Name",
		"name = 'x'\nNAME = 'y'\n":       "unknown key NAME",
		"[Inner]\non = true\n":           "unknown key Inner",
		"[inner]\nOn = true\n":           "unknown key inner.On",
		"[[list]]\nName = 'x'\n":         "unknown key list.Name",
		"[rooms.A]\nname = 'x'\nX = 1\n": "unknown key rooms.A.X",
	} {
		err := Decode([]byte(in), &c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

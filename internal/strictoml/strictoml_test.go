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
	}
	var c conf
	if err := Decode([]byte("name = 'x'\n[inner]\non = true\n"), &c); err != nil || c.Name != "x" || !c.Inner.On {
		t.Fatalf("Decode = %+v, %v", c, err)
	}
	for in, want := range map[string]string{
		"nmae = 'x'\n":         "unknown key nmae",
		"[inner]\nof = true\n": "unknown key inner.of",
		"name = 'x\n":          "",
		"a = 1\nb = 2\n":       "unknown key a, b",
	} {
		err := Decode([]byte(in), &c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

// Package strictoml decodes TOML configuration files strictly: a key the
// program does not know is an error that names it, so that a typo in a
// config file is never silently ignored.
package strictoml

import (
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
)

// Decode decodes data into v and fails on any key v has no field for.
func Decode(data []byte, v any) error {
	md, err := toml.Decode(string(data), v)
	if err != nil {
		return err
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	return nil
}

// Package strictoml decodes TOML configuration files strictly: a key the
// program does not know is an error that names it, so that a typo in a
// config file is never silently ignored.
package strictoml

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Decode decodes data into v and fails on any key v has no field for.
//
// TOML keys are case-sensitive, but the decoder underneath takes a key for
// a field whose name it matches in another case when none matches
// exactly: "Nick" would set the field of "nick", and a file with both
// would set it twice, the last one winning. Such a key is unknown here.
func Decode(data []byte, v any) error {
	md, err := toml.Decode(string(data), v)
	if err != nil {
		return err
	}
	var unknown []string
	for _, k := range md.Undecoded() {
		unknown = append(unknown, k.String())
	}
	t := reflect.TypeOf(v)
	for _, k := range md.Keys() {
		// Only the outermost unknown key: not the keys of a table that
		// is unknown itself.
		if !known(t, k) && known(t, k[:len(k)-1]) && !slices.Contains(unknown, k.String()) {
			unknown = append(unknown, k.String())
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("unknown key %s", strings.Join(unknown, ", "))
	}
	return nil
}

var (
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	tomlUnmarshaler = reflect.TypeFor[toml.Unmarshaler]()
)

// known reports whether key k names a field of t, or is within a value
// that takes any key (a map, an interface, a type that decodes itself),
// spelled exactly as the field's toml tag (or name, without one).
func known(t reflect.Type, k toml.Key) bool {
	for i := 0; i < len(k); {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if p := reflect.PointerTo(t); p.Implements(textUnmarshaler) || p.Implements(tomlUnmarshaler) {
			return true
		}
		switch t.Kind() {
		case reflect.Struct:
			f, ok := field(t, k[i])
			if !ok {
				return false
			}
			t = f
			i++
		case reflect.Map:
			t = t.Elem()
			i++
		case reflect.Slice, reflect.Array: // an array of tables: its keys are its elements'
			t = t.Elem()
		case reflect.Interface:
			return true
		default:
			return false
		}
	}
	return true
}

// field returns the type of struct t's field whose key is exactly name.
func field(t reflect.Type, name string) (reflect.Type, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		switch {
		case tag == "-" || !f.IsExported() && !f.Anonymous:
			continue
		case f.Anonymous && tag == "":
			inner := f.Type
			if inner.Kind() == reflect.Pointer {
				inner = inner.Elem()
			}
			if inner.Kind() == reflect.Struct {
				if ft, ok := field(inner, name); ok {
					return ft, true
				}
				continue
			}
		}
		if tag == "" {
			tag = f.Name
		}
		if tag == name {
			return f.Type, true
		}
	}
	return nil, false
}

package main

import (
	"flag"
	"fmt"
)

// onceFlag is a string flag that may be given only once: a command that
// acts on one room must not quietly take the last of several.
type onceFlag struct {
	name  string
	value *string
	set   bool
}

func (f *onceFlag) String() string {
	if f.value == nil {
		return ""
	}
	return *f.value
}

func (f *onceFlag) Set(v string) error {
	if f.set {
		return fmt.Errorf("only one --%s may be given", f.name)
	}
	*f.value, f.set = v, true
	return nil
}

// onceString defines a string flag that may be given only once; a second
// one is a usage error.
func onceString(fs *flag.FlagSet, name, usage string) *string {
	p := new(string)
	fs.Var(&onceFlag{name: name, value: p}, name, usage)
	return p
}

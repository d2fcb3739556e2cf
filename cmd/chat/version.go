package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
)

func (c *cli) version(args []string) int {
	fs := c.flags("version")
	if err := c.parse(fs, args, 0); err != nil {
		return c.usageError(err)
	}
	fmt.Fprintln(c.stdout, versionLine("chat"))
	fmt.Fprintln(c.stdout, protocolsLine())
	return exitOK
}

// versionLine is "NAME VERSION GOVERSION": the module's version, else the
// commit it was built from ("(modified)" if the tree had changes), else
// "(devel)".
func versionLine(name string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return name + " (devel), no build information"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			modified = " (modified)"
		}
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "(devel)"
		if rev != "" {
			v = rev[:min(12, len(rev))]
		}
	}
	if strings.HasSuffix(v, "+dirty") {
		modified = "" // the version says it already
	}
	return fmt.Sprintf("%s %s%s %s", name, v, modified, bi.GoVersion)
}

// protocolsLine names the wire versions this build speaks, which decide
// what it can talk to (docs/protocol.md, "Versions and upgrades").
func protocolsLine() string {
	return fmt.Sprintf("envelope version %d, relay protocol %s", protocol.Version, wire.Current)
}

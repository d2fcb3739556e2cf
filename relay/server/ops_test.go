package server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/parleychat/parley/relay/wire"
)

// mDNS is off on a relay unless the config turns it on: a relay is a
// public server. So it is in the defaults and in the file init writes.
func TestMDNSOffByDefault(t *testing.T) {
	if DefaultConfig().MDNS {
		t.Fatal("mdns is on by default")
	}
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{Policy: wire.PolicyOpen}); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadDirConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MDNS {
		t.Fatal("mdns is on in the config init writes")
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte("mdns = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err = LoadDirConfig(dir); err != nil || !cfg.MDNS {
		t.Fatalf("mdns = true: %v, %v", cfg.MDNS, err)
	}
}

package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStoreConfigValidate: the store settings take 0 or a size within
// bounds, and a checkpoint interval within bounds.
func TestStoreConfigValidate(t *testing.T) {
	set := func(f func(*StoreConfig)) func(*Config) { return func(c *Config) { f(&c.Store) } }
	checkConfigCases(t, []configCase{
		{"defaults", set(func(*StoreConfig) {}), ""},
		{"cache 256 MiB, mmap 1 GiB, 100,000 pages", set(func(s *StoreConfig) {
			s.CacheSize, s.MmapSize, s.CheckpointPages = 256<<20, 1<<30, 100_000
		}), ""},
		{"bounds", set(func(s *StoreConfig) {
			s.CacheSize, s.MmapSize, s.CheckpointPages = maxStoreCache, maxStoreMmap, maxCheckpointPages
		}), ""},
		{"cache below SQLite's default", set(func(s *StoreConfig) { s.CacheSize = 1 << 20 }), "store.cache_size"},
		{"negative cache", set(func(s *StoreConfig) { s.CacheSize = -1 }), "store.cache_size"},
		{"cache above 64 GiB", set(func(s *StoreConfig) { s.CacheSize = maxStoreCache + 1 }), "store.cache_size"},
		{"negative mmap", set(func(s *StoreConfig) { s.MmapSize = -1 }), "store.mmap_size"},
		{"mmap above SQLite's limit", set(func(s *StoreConfig) { s.MmapSize = maxStoreMmap + 1 }), "store.mmap_size"},
		{"no checkpoint interval", set(func(s *StoreConfig) { s.CheckpointPages = 0 }), "store.checkpoint_pages"},
		{"checkpoint interval too short", set(func(s *StoreConfig) { s.CheckpointPages = minCheckpointPages - 1 }), "store.checkpoint_pages"},
		{"checkpoint interval too long", set(func(s *StoreConfig) { s.CheckpointPages = maxCheckpointPages + 1 }), "store.checkpoint_pages"},
	})
}

// TestStoreConfigFile: the [store] table of a config file reaches the
// config, an unknown key in it is refused, and the template shows each
// default.
func TestStoreConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ConfigFile)
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("[store]\ncache_size = 67108864\nmmap_size = 1073741824\ncheckpoint_pages = 50000\n")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := (StoreConfig{CacheSize: 64 << 20, MmapSize: 1 << 30, CheckpointPages: 50000}); cfg.Store != want {
		t.Errorf("store = %+v, want %+v", cfg.Store, want)
	}
	write("[store]\ncache_sise = 67108864\n")
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "cache_sise") {
		t.Errorf("an unknown key in [store]: %v, want an error naming it", err)
	}
	write("[store]\ncheckpoint_pages = 10\n")
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "store.checkpoint_pages") {
		t.Errorf("checkpoint_pages = 10: %v, want an error naming it", err)
	}
	def := DefaultConfig().Store
	for _, line := range []string{"[store]", "# cache_size = 0 ", "# mmap_size = 0 ", "# checkpoint_pages = 10000 "} {
		if !strings.Contains(ConfigTemplate, line) {
			t.Errorf("the config template has no %q", line)
		}
	}
	if def.CacheSize != 0 || def.MmapSize != 0 || def.CheckpointPages != 10000 {
		t.Errorf("default store = %+v, want the template's 0, 0, 10000", def)
	}
}

// The store's settings are read at start: a reload names a change to them.
func TestReloadNamesStore(t *testing.T) {
	r := startRelay(t, nil)
	cfg := r.srv.cfg
	cfg.Store.CacheSize = 64 << 20
	if resp := r.srv.Reload(ctxT(t), cfg, "test"); resp.Error != "" || !strings.HasSuffix(resp.Message, "at the next start: store") {
		t.Fatalf("reload with another page cache: %+v", resp)
	}
}

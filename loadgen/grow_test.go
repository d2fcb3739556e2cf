package main

import (
	"strings"
	"testing"
)

func TestParseStoreSetting(t *testing.T) {
	def := currentStore().cfg
	for _, tc := range []struct {
		in          string
		cache, mmap int64
		checkpoint  int
		wantErr     string // a part of the error; "" for none
	}{
		{in: "cache=64MiB", cache: 64 << 20, mmap: def.MmapSize, checkpoint: def.CheckpointPages},
		{in: "cache=256MiB,mmap=1GiB", cache: 256 << 20, mmap: 1 << 30, checkpoint: def.CheckpointPages},
		{in: "checkpoint=100000", cache: def.CacheSize, mmap: def.MmapSize, checkpoint: 100000},
		{in: " mmap=4096KiB , cache=3000000", cache: 3000000, mmap: 4 << 20, checkpoint: def.CheckpointPages},
		{in: "cache", wantErr: `"cache" is not KEY=VALUE`},
		{in: "cache=64MiB,", wantErr: `"" is not KEY=VALUE`},
		{in: "size=1GiB", wantErr: `unknown key "size"`},
		{in: "cache=64MB", wantErr: `"64MB" is not a size`},
		{in: "cache=-1", wantErr: `"-1" is not a size`},
		{in: "mmap=9000000000GiB", wantErr: `"9000000000GiB" is not a size`},
		{in: "cache=1KiB", wantErr: "store.cache_size 1024"},
		{in: "checkpoint=10", wantErr: "store.checkpoint_pages 10"},
	} {
		set, err := parseStoreSetting(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "-grow-store") {
				t.Errorf("%q: error %v, want one naming -grow-store and %s", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if set.name != tc.in || set.cfg.CacheSize != tc.cache || set.cfg.MmapSize != tc.mmap || set.cfg.CheckpointPages != tc.checkpoint {
			t.Errorf("%q: got %q %+v, want cache %d, mmap %d, checkpoint %d", tc.in, set.name, set.cfg, tc.cache, tc.mmap, tc.checkpoint)
		}
	}
}

package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// pragma is the value of PRAGMA name on one connection of db.
func pragma(t *testing.T, db *sql.DB, name string) int64 {
	t.Helper()
	var v int64
	if err := db.QueryRowContext(context.Background(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

// TestCacheAndMmapSize: CacheSize sets the writer's page cache (in KiB,
// so SQLite reports it negative) and leaves the readers' at the default;
// MmapSize maps the file on the writer and on the readers.
func TestCacheAndMmapSize(t *testing.T) {
	def, err := Open(filepath.Join(t.TempDir(), "d.db"), Relay())
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	s, err := Open(filepath.Join(t.TempDir(), "s.db"), Relay(), CacheSize(64<<20), MmapSize(1<<30), CheckpointEvery(5000))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	defCache := pragma(t, def.w, "cache_size")
	if got := pragma(t, s.w, "cache_size"); got != -(64 << 10) {
		t.Errorf("writer cache_size = %d, want %d (64 MiB in KiB)", got, -(64 << 10))
	}
	if got := pragma(t, s.r, "cache_size"); got != defCache {
		t.Errorf("reader cache_size = %d, want the default %d", got, defCache)
	}
	if got := pragma(t, def.w, "mmap_size"); got != 0 {
		t.Errorf("default mmap_size = %d, want 0", got)
	}
	for name, db := range map[string]*sql.DB{"writer": s.w, "reader": s.r} {
		if got := pragma(t, db, "mmap_size"); got != 1<<30 {
			t.Errorf("%s mmap_size = %d, want %d", name, got, 1<<30)
		}
	}
	if got := pragma(t, s.w, "wal_autocheckpoint"); got != 5000 {
		t.Errorf("wal_autocheckpoint = %d, want 5000", got)
	}
}

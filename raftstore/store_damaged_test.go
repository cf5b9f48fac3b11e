package raftstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenRefusesADamagedStore: a store whose manifest marker is lost is
// refused, its files left as they were; before, Pebble created a new
// database there and deleted the old one's files (found by QA).
func TestOpenRefusesADamagedStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pebble")
	s := openAt(t, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	for _, name := range names() {
		if strings.HasPrefix(name, "marker.manifest") {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := names()
	if _, err := Open(dir, Options{Logger: quietLogger()}); !errors.Is(err, ErrStoreDamaged) {
		t.Fatalf("opening a store without its manifest marker: %v, want ErrStoreDamaged", err)
	}
	if after := names(); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Fatalf("the refused open changed the store's files: %v, then %v", before, after)
	}
	// An empty directory is a new store, as before.
	empty := filepath.Join(t.TempDir(), "new")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(empty, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("opening an empty directory: %v", err)
	}
	s2.Close()
}

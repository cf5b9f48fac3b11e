package raftstore

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

func TestSyncWindowDecision(t *testing.T) {
	const window = time.Millisecond
	tests := []struct {
		name   string
		writes []GroupID // synced writes between two syncs
		want   time.Duration
	}{
		{"no writes", nil, 0},
		{"one group", []GroupID{7, 7, 7, 7}, 0},
		{"two groups", []GroupID{7, 8}, window},
		{"many groups", []GroupID{1, 2, 3, 4, 5}, window},
		{"group zero then another", []GroupID{0, 1}, window},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &syncWindow{window: window}
			// The group written before the sync the decision follows.
			if len(tt.writes) > 0 {
				w.noteSyncedWrite(tt.writes[0])
				w.next()
			}
			for _, g := range tt.writes {
				w.noteSyncedWrite(g)
			}
			if got := w.next(); got != tt.want {
				t.Fatalf("next() = %v after writes from %v, want %v", got, tt.writes, tt.want)
			}
			// The decision consumed the switches: the next sync, with no
			// writes in between, is not held back.
			if got := w.next(); got != 0 {
				t.Fatalf("second next() = %v, want 0", got)
			}
		})
	}
}

func TestSyncWindowOption(t *testing.T) {
	tests := []struct {
		opt  time.Duration
		want time.Duration // 0: no window
	}{
		{0, defaultSyncWindow},
		{3 * time.Millisecond, 3 * time.Millisecond},
		{-1, 0},
	}
	for _, tt := range tests {
		s, err := open("db", Options{CacheSize: 8 << 20, Logger: quietLogger(), SyncWindow: tt.opt}, vfs.NewMem())
		if err != nil {
			t.Fatal(err)
		}
		var got time.Duration
		if s.syncWindow != nil {
			got = s.syncWindow.window
		}
		_ = s.Close()
		if got != tt.want {
			t.Errorf("SyncWindow %v: window %v, want %v", tt.opt, got, tt.want)
		}
	}
}

// syncCountingFS counts the syncs of Pebble's WAL files.
type syncCountingFS struct {
	vfs.FS
	syncs *atomic.Int64
}

func (fs syncCountingFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return syncCountingFile{File: f, syncs: fs.syncs}, nil
}

func (fs syncCountingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs syncCountingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

type syncCountingFile struct {
	vfs.File
	syncs *atomic.Int64
}

func (f syncCountingFile) Sync() error     { f.syncs.Add(1); return f.File.Sync() }
func (f syncCountingFile) SyncData() error { f.syncs.Add(1); return f.File.SyncData() }

// TestSyncWindowSharesSyncs: groups writing at once share WAL syncs when
// the window is on, and one group alone is never held back.
func TestSyncWindowSharesSyncs(t *testing.T) {
	const groups, writesPerGroup = 8, 20
	run := func(window time.Duration) (syncs, writes int64) {
		var count atomic.Int64
		s, err := open("db", Options{CacheSize: 8 << 20, Logger: quietLogger(), SyncWindow: window},
			syncCountingFS{FS: vfs.NewMem(), syncs: &count})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Close() }()
		before := count.Load()
		var wg sync.WaitGroup
		for g := range GroupID(groups) {
			wg.Go(func() {
				ls := s.LogStore(g + 1)
				for i := range uint64(writesPerGroup) {
					if err := ls.StoreLogs([]*raft.Log{{Index: i + 1, Term: 1, Data: []byte("x")}}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return count.Load() - before, groups * writesPerGroup
	}
	// A long window, so that every writer's next write is queued before it
	// ends, however slow the machine.
	syncs, writes := run(20 * time.Millisecond)
	if syncs > writes/2 {
		t.Errorf("with the window: %d WAL syncs for %d synced writes from %d groups, want at most half", syncs, writes, groups)
	}
	t.Logf("with a 20ms window: %d syncs for %d writes", syncs, writes)

	s := openTest(t)
	ls := s.LogStore(3)
	for i := range uint64(50) {
		if err := ls.StoreLogs([]*raft.Log{{Index: i + 1, Term: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.syncWindow.switches.Load(); n > 1 {
		t.Errorf("one group's 50 writes counted %d switches between groups, want at most 1 (the first write)", n)
	}
}

package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLogTrimmedByBytes: a group written with large entries keeps a log of
// about its trim bytes, not of TrailingLogs entries (10,240: gigabytes with
// values of a few MiB), and its state survives the trims and a restart.
func TestLogTrimmedByBytes(t *testing.T) {
	const entries, valueBytes, trimBytes = 64, 128 << 10, 2 << 20
	dir := t.TempDir()
	s := openAt(t, dir)
	g := startSingle(t, s, 3, newTransport(t, "n1"), func(c *GroupConfig) { c.LogTrimBytes = trimBytes })
	value := bytes.Repeat([]byte("v"), valueBytes)
	for v := uint64(1); v <= entries; v++ {
		e := Entry{Batches: []ObjectBatch{batch(oid(1), v, Op{Kind: OpPut, Key: fmt.Sprintf("k%02d", v%4), Value: value})}}
		data, err := e.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Raft().Apply(data, 10*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	// A trim runs beside the writes; the last may still be under way.
	// Trims keep 16 entries (minTrailingLogs) and start at 16 entries'
	// bytes, so the log holds at most 31 of them and more than 16 trims
	// have run.
	// Once done, a trim puts TrailingLogs back.
	logs := s.LogStore(3)
	trailing := DefaultRaftConfig("n1").TrailingLogs
	deadline := time.Now().Add(10 * time.Second)
	for {
		first, _ := logs.FirstIndex()
		last, _ := logs.LastIndex()
		got := g.Raft().ReloadableConfig().TrailingLogs
		if first > 1 && last-first+1 <= 2*minTrailingLogs && got == trailing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d entries of %d KiB the log holds indexes %d..%d and TrailingLogs is %d; want at most %d entries, and %d", entries, valueBytes>>10, first, last, got, 2*minTrailingLogs, trailing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := g.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := reopenSingle(t, dir, 3)
	st := readObject(t, s2, 3, oid(1))
	if st.Version != entries || len(st.Keys) != 4 || st.Keys["k00"] != string(value) {
		t.Fatalf("after the trims and a restart: version %d, %d keys; want version %d, 4 keys", st.Version, len(st.Keys), entries)
	}
}

// A snapshot a stopped process left unfinished is deleted when its group
// starts again; raft only warns of it, and on a disk that had filled up
// such leftovers kept it full.
func TestUnfinishedSnapshotsRemovedAtStart(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	g := startSingle(t, s, 4, newTransport(t, "n1"), nil)
	tmp := filepath.Join(s.snapshotDir(4), "snapshots", "3-37-1796561653167.tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "state.bin"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	reopenSingle(t, dir, 4)
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an unfinished snapshot is still there after its group restarted: %v", err)
	}
}

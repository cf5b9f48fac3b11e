package raftstore

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// dump returns every key and value of the database.
func dump(t testing.TB, s *Store) map[string]string {
	t.Helper()
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	m := map[string]string{}
	for ok := it.First(); ok; ok = it.Next() {
		m[string(it.Key())] = string(it.Value())
	}
	return m
}

// ofGroup reports whether key belongs to group g (its raft range, its state
// range or its deleting marker).
func ofGroup(key string, g GroupID) bool {
	ks := newKeyspace(g)
	return bytes.HasPrefix([]byte(key), ks.raftPrefix) || bytes.HasPrefix([]byte(key), ks.statePrefix) || key == string(ks.deleting)
}

// fillRaft gives group g log entries and stable keys, as raft would.
func fillRaft(t *testing.T, s *Store, g GroupID) {
	t.Helper()
	if err := s.LogStore(g).StoreLogs([]*raft.Log{testLog(1), testLog(2), testLog(3)}); err != nil {
		t.Fatal(err)
	}
	if err := s.StableStore(g).SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteGroup(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	const g = 7
	// Its neighbours hold the same kinds of keys, so a range one group too
	// wide on either side shows.
	for _, other := range []GroupID{g - 1, g + 1} {
		fillRaft(t, s, other)
		fillGroup(t, s, other, int(other))
	}
	tr := newTransport(t, "n1")
	grp := startSingle(t, s, g, tr, nil)
	proposeAll(t, grp.Raft(), 4, 1, 5)
	if err := grp.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	snaps, err := os.ReadDir(s.snapshotDir(g))
	if err != nil || len(snaps) == 0 {
		t.Fatalf("group %d has no snapshot to delete: %v, %v", g, snaps, err)
	}
	if got, err := s.Groups(); err != nil || !slices.Equal(got, []GroupID{g - 1, g, g + 1}) {
		t.Fatalf("Groups = %v, %v", got, err)
	}

	before := dump(t, s)
	if err := s.DeleteGroup(g); !errors.Is(err, ErrGroupRunning) {
		t.Fatalf("DeleteGroup of a running group = %v, want ErrGroupRunning", err)
	}
	if after := dump(t, s); len(after) != len(before) {
		t.Fatalf("a refused DeleteGroup changed the database: %d keys, was %d", len(after), len(before))
	}
	if err := grp.Shutdown(); err != nil {
		t.Fatal(err)
	}
	before = dump(t, s)
	if err := s.DeleteGroup(g); err != nil {
		t.Fatal(err)
	}
	after := dump(t, s)
	for k, v := range before {
		if ofGroup(k, g) {
			if _, ok := after[k]; ok {
				t.Errorf("key %q of the deleted group is still there", k)
			}
		} else if after[k] != v {
			t.Errorf("key %q of another group changed or went", k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("DeleteGroup left a new key %q", k)
		}
	}
	if _, err := os.Stat(s.snapshotDir(g)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the group's snapshot directory is still there: %v", err)
	}
	if got, err := s.Groups(); err != nil || !slices.Equal(got, []GroupID{g - 1, g + 1}) {
		t.Fatalf("Groups after DeleteGroup = %v, %v", got, err)
	}
	if err := s.DeleteGroup(g); err != nil {
		t.Fatalf("deleting a group with nothing left: %v", err)
	}

	// Started again, the group is empty: it bootstraps anew and holds no
	// object of its earlier run.
	grp = startSingle(t, s, g, tr, nil)
	if err := grp.Raft().Barrier(10 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if st := readObject(t, s, g, oid(0)); st.Version != 0 || len(st.Keys) != 0 {
		t.Fatalf("object of the deleted group after a fresh start: %+v", st)
	}
	if last := grp.Raft().LastIndex(); last > 3 {
		t.Fatalf("fresh group's last index is %d: the old log came back", last)
	}
	if err := grp.Shutdown(); err != nil {
		t.Fatal(err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteGroup(g); !errors.Is(err, ErrClosed) {
		t.Fatalf("DeleteGroup after Close = %v, want ErrClosed", err)
	}
}

// TestDeleteGroupFinishedOnOpen stops a DeleteGroup after its Pebble batch:
// the next Open must remove the snapshots, which would otherwise give a
// fresh start of the group the old configuration and applied index.
func TestDeleteGroupFinishedOnOpen(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	const g = 3
	fillRaft(t, s, g)
	fillRaft(t, s, g+1)
	if err := os.MkdirAll(filepath.Join(s.snapshotDir(g), "1-5-123"), 0o755); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(s.snapshotDir(g+1), "1-5-123")
	if err := os.MkdirAll(keep, 0o755); err != nil {
		t.Fatal(err)
	}
	// What DeleteGroup's batch does, without what follows it.
	ks := newKeyspace(g)
	b := s.db.NewBatch()
	_ = b.DeleteRange(ks.raftPrefix, ks.raftEnd, nil)
	_ = b.DeleteRange(ks.statePrefix, ks.stateEnd, nil)
	_ = b.Set(ks.deleting, nil, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openAt(t, dir)
	if _, err := os.Stat(s.snapshotDir(g)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open left the snapshots of a half-deleted group: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("Open removed another group's snapshots: %v", err)
	}
	for k := range dump(t, s) {
		if bytes.HasPrefix([]byte(k), []byte(deletingPrefix)) {
			t.Fatalf("deleting marker %q is still there", k)
		}
	}
	if got, err := s.Groups(); err != nil || !slices.Equal(got, []GroupID{g + 1}) {
		t.Fatalf("Groups = %v, %v", got, err)
	}
}

// TestGroups lists groups that hold only some kinds of keys, at the edges
// of the ID range.
func TestGroups(t *testing.T) {
	s := openTest(t)
	if got, err := s.Groups(); err != nil || len(got) != 0 {
		t.Fatalf("Groups of an empty store = %v, %v", got, err)
	}
	if err := s.StableStore(0).SetUint64([]byte("CurrentTerm"), 1); err != nil { // stable only
		t.Fatal(err)
	}
	if err := s.LogStore(256).StoreLogs([]*raft.Log{testLog(9)}); err != nil { // log only
		t.Fatal(err)
	}
	fillGroup(t, s, 300, 1) // state machine only
	if err := s.StableStore(math.MaxUint64).SetUint64([]byte("CurrentTerm"), 1); err != nil {
		t.Fatal(err)
	}
	fillGroup(t, s, math.MaxUint64, 2)
	want := []GroupID{0, 256, 300, math.MaxUint64}
	if got, err := s.Groups(); err != nil || !slices.Equal(got, want) {
		t.Fatalf("Groups = %v, %v; want %v", got, err, want)
	}
}

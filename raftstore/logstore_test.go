package raftstore

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func testLog(index uint64) *raft.Log {
	return &raft.Log{
		Index:      index,
		Term:       index/10 + 1,
		Type:       raft.LogType(index % 6),
		Data:       []byte{byte(index), 'd', 'a', 't', 'a'},
		Extensions: []byte{'x', byte(index >> 8)},
		AppendedAt: time.Unix(1_700_000_000+int64(index), int64(index)*1000+7).UTC(),
	}
}

func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

func checkBounds(t *testing.T, ls *LogStore, first, last uint64) {
	t.Helper()
	f, err := ls.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	l, err := ls.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if f != first || l != last {
		t.Fatalf("FirstIndex, LastIndex = %d, %d; want %d, %d", f, l, first, last)
	}
}

func checkMissing(t *testing.T, ls *LogStore, indexes ...uint64) {
	t.Helper()
	for _, i := range indexes {
		var l raft.Log
		// raft compares with ==, so the error must not be wrapped.
		if err := ls.GetLog(i, &l); err != raft.ErrLogNotFound {
			t.Fatalf("GetLog(%d) = %v, want raft.ErrLogNotFound", i, err)
		}
	}
}

func checkPresent(t *testing.T, ls *LogStore, indexes ...uint64) {
	t.Helper()
	for _, i := range indexes {
		var l raft.Log
		if err := ls.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if want := testLog(i); !sameLog(&l, want) {
			t.Fatalf("GetLog(%d) = %+v, want %+v", i, l, want)
		}
	}
}

func TestLogStoreEmpty(t *testing.T) {
	s := openTest(t)
	ls := s.LogStore(1)
	checkBounds(t, ls, 0, 0)
	checkMissing(t, ls, 0, 1, math.MaxUint64)
	// raft's own startup probe must find nothing.
	snaps := raft.NewInmemSnapshotStore()
	has, err := raft.HasExistingState(ls, s.StableStore(1), snaps)
	if err != nil || has {
		t.Fatalf("HasExistingState = %v, %v; want false, nil", has, err)
	}
}

func TestLogStoreRoundTrip(t *testing.T) {
	s := openTest(t)
	ls := s.LogStore(3)
	if err := ls.StoreLog(testLog(1)); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, ls, 1, 1)
	checkPresent(t, ls, 1)

	var logs []*raft.Log
	for i := uint64(2); i <= 50; i++ {
		logs = append(logs, testLog(i))
	}
	if err := ls.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := ls.StoreLogs(nil); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, ls, 1, 50)
	for i := uint64(1); i <= 50; i++ {
		checkPresent(t, ls, i)
	}
	checkMissing(t, ls, 0, 51)

	// Empty fields and the zero time survive, and GetLog overwrites every
	// field of a reused Log.
	bare := &raft.Log{Index: 51, Term: 9}
	if err := ls.StoreLog(bare); err != nil {
		t.Fatal(err)
	}
	got := *testLog(7)
	if err := ls.GetLog(51, &got); err != nil {
		t.Fatal(err)
	}
	if got.Index != 51 || got.Term != 9 || got.Type != raft.LogCommand || got.Data != nil || got.Extensions != nil || !got.AppendedAt.IsZero() {
		t.Fatalf("bare log read back as %+v", got)
	}

	// Overwriting an index (a follower replacing a conflicting suffix) wins.
	over := testLog(51)
	over.Data = []byte("replaced")
	if err := ls.StoreLog(over); err != nil {
		t.Fatal(err)
	}
	if err := ls.GetLog(51, &got); err != nil || string(got.Data) != "replaced" {
		t.Fatalf("overwritten log = %q, %v", got.Data, err)
	}
}

func TestLogStoreDataIsCopied(t *testing.T) {
	s := openTest(t)
	ls := s.LogStore(1)
	l := testLog(1)
	if err := ls.StoreLog(l); err != nil {
		t.Fatal(err)
	}
	l.Data[0] = 'Z' // the caller reusing its buffer must not change the store
	var a, b raft.Log
	if err := ls.GetLog(1, &a); err != nil {
		t.Fatal(err)
	}
	a.Data[1] = 'Q' // nor may a reader's change leak into the next read
	if err := ls.GetLog(1, &b); err != nil {
		t.Fatal(err)
	}
	if !sameLog(&b, testLog(1)) {
		t.Fatalf("stored log changed through a caller's slice: %+v", b)
	}
}

func TestLogStoreDeleteRange(t *testing.T) {
	s := openTest(t)
	ls := s.LogStore(1)
	var logs []*raft.Log
	for i := uint64(1); i <= 20; i++ {
		logs = append(logs, testLog(i))
	}
	if err := ls.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		min, max    uint64
		first, last uint64
		gone, kept  []uint64
	}{
		{min: 5, max: 4, first: 1, last: 20, kept: []uint64{4, 5}},                         // min > max: nothing
		{min: 1, max: 3, first: 4, last: 20, gone: []uint64{1, 2, 3}, kept: []uint64{4}},   // prefix (compaction)
		{min: 18, max: 20, first: 4, last: 17, gone: []uint64{18, 20}, kept: []uint64{17}}, // suffix (conflict)
		{min: 8, max: 8, first: 4, last: 17, gone: []uint64{8}, kept: []uint64{7, 9}},      // single, inclusive
		{min: 0, max: 4, first: 5, last: 17, gone: []uint64{4}, kept: []uint64{5}},
		{min: 16, max: math.MaxUint64, first: 5, last: 15, gone: []uint64{16, 17}, kept: []uint64{15}},
		{min: 0, max: math.MaxUint64, first: 0, last: 0, gone: []uint64{5, 15}},
	}
	for _, st := range steps {
		if err := ls.DeleteRange(st.min, st.max); err != nil {
			t.Fatalf("DeleteRange(%d, %d): %v", st.min, st.max, err)
		}
		checkBounds(t, ls, st.first, st.last)
		checkMissing(t, ls, st.gone...)
		checkPresent(t, ls, st.kept...)
	}
	// The log can be written again after being emptied, even with a gap.
	if err := ls.StoreLogs([]*raft.Log{testLog(100), testLog(101)}); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, ls, 100, 101)
}

func TestStableStore(t *testing.T) {
	s := openTest(t)
	st := s.StableStore(1)
	v, err := st.Get([]byte("CurrentTerm"))
	if err == nil || err.Error() != "not found" || v != nil {
		t.Fatalf("Get(missing) = %q, %v; want nil and an error reading exactly \"not found\"", v, err)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) error %v is not ErrNotFound", err)
	}
	n, err := st.GetUint64([]byte("CurrentTerm"))
	if err == nil || err.Error() != "not found" || n != 0 {
		t.Fatalf("GetUint64(missing) = %d, %v; want 0, \"not found\"", n, err)
	}

	if err := st.Set([]byte("LastVoteCand"), []byte("node-1")); err != nil {
		t.Fatal(err)
	}
	if v, err := st.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-1" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if err := st.Set([]byte("LastVoteCand"), []byte("node-2")); err != nil {
		t.Fatal(err)
	}
	if v, err := st.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-2" {
		t.Fatalf("Get after overwrite = %q, %v", v, err)
	}
	for _, want := range []uint64{0, 1, 1 << 40, math.MaxUint64} {
		if err := st.SetUint64([]byte("CurrentTerm"), want); err != nil {
			t.Fatal(err)
		}
		if got, err := st.GetUint64([]byte("CurrentTerm")); err != nil || got != want {
			t.Fatalf("GetUint64 = %d, %v; want %d", got, err, want)
		}
	}
	// A value that is not 8 bytes is corruption, not a number.
	if err := st.Set([]byte("odd"), []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetUint64([]byte("odd")); !errors.Is(err, ErrCorruptState) {
		t.Fatalf("GetUint64(3 bytes) = %v, want ErrCorruptState", err)
	}
	// Keys that extend one another are distinct.
	if _, err := st.Get([]byte("LastVote")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get(prefix of a key) = %v, want not found", err)
	}
}

// Groups share one Pebble but never see each other's logs or stable keys,
// including groups whose IDs differ only in a high byte.
func TestGroupsAreIsolated(t *testing.T) {
	s := openTest(t)
	groups := []GroupID{1, 2, 256, 1 << 56, math.MaxUint64}
	for gi, g := range groups {
		ls := s.LogStore(g)
		base := uint64(gi * 100)
		var logs []*raft.Log
		for i := base + 1; i <= base+10; i++ {
			logs = append(logs, testLog(i))
		}
		if err := ls.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		if err := s.StableStore(g).SetUint64([]byte("CurrentTerm"), uint64(g)); err != nil {
			t.Fatal(err)
		}
		if err := s.StableStore(g).Set([]byte("only-"+g.String()), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// Deleting every log of one group leaves the others alone.
	if err := s.LogStore(2).DeleteRange(0, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	for gi, g := range groups {
		ls := s.LogStore(g)
		base := uint64(gi * 100)
		if g == 2 {
			checkBounds(t, ls, 0, 0)
		} else {
			checkBounds(t, ls, base+1, base+10)
			checkPresent(t, ls, base+1, base+10)
		}
		checkMissing(t, ls, base+11, base+100+1)
		if got, err := s.StableStore(g).GetUint64([]byte("CurrentTerm")); err != nil || got != uint64(g) {
			t.Fatalf("group %s term = %d, %v", g, got, err)
		}
		for _, other := range groups {
			_, err := s.StableStore(g).Get([]byte("only-" + other.String()))
			if (other == g) != (err == nil) {
				t.Fatalf("group %s sees stable key of group %s: err=%v", g, other, err)
			}
		}
	}
}

func TestLogStoreReopen(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	ls := s.LogStore(4)
	if err := ls.StoreLogs([]*raft.Log{testLog(10), testLog(11), testLog(12)}); err != nil {
		t.Fatal(err)
	}
	if err := ls.DeleteRange(10, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.StableStore(4).SetUint64([]byte("CurrentTerm"), 42); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
	if _, err := ls.LastIndex(); !errors.Is(err, ErrClosed) {
		t.Fatalf("LastIndex after Close = %v, want ErrClosed", err)
	}

	s2 := openAt(t, dir)
	ls2 := s2.LogStore(4)
	checkBounds(t, ls2, 11, 12)
	checkPresent(t, ls2, 11, 12)
	checkMissing(t, ls2, 10)
	if got, err := s2.StableStore(4).GetUint64([]byte("CurrentTerm")); err != nil || got != 42 {
		t.Fatalf("term after reopen = %d, %v", got, err)
	}
}

// A corrupt stored entry is an error, never a panic or a wrong entry.
func TestLogStoreCorruptEntry(t *testing.T) {
	s := openTest(t)
	ls := s.LogStore(1)
	if err := s.db.Set(ls.ks.logKey(5), []byte{9, 9, 9}, nil); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := ls.GetLog(5, &l); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("GetLog(corrupt) = %v, want ErrCorruptLog", err)
	}
	// An entry stored under the wrong index is caught too.
	if err := s.db.Set(ls.ks.logKey(6), appendLog(nil, testLog(7)), nil); err != nil {
		t.Fatal(err)
	}
	if err := ls.GetLog(6, &l); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("GetLog(misplaced) = %v, want ErrCorruptLog", err)
	}
}

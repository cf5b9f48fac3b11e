package raftstore

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
)

type memSink struct {
	bytes.Buffer
	closed, cancelled bool
	failAfter         int // if > 0, writes fail once the buffer holds this many bytes
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { m.closed = true; return nil }
func (m *memSink) Write(p []byte) (int, error) {
	if m.failAfter > 0 && m.Len()+len(p) > m.failAfter {
		return 0, errors.New("disk full")
	}
	return m.Buffer.Write(p)
}

// fillGroup applies a varied state to group g: keys, versions, alarms, a
// deleted object, big values.
func fillGroup(t testing.TB, s *Store, g GroupID, seed int) {
	t.Helper()
	f := s.NewShardFSM(g)
	var logs []*raft.Log
	for i := 1; i <= 20; i++ {
		var bs []ObjectBatch
		for o := 0; o < 5; o++ {
			obj := oid(seed*100 + o)
			ops := []Op{put("k"+string(rune('a'+i)), string(bytes.Repeat([]byte{byte(i)}, i*50))), setAlarm(int64(i*1000 + o))}
			if o == 3 && i == 20 {
				ops = append(ops, deleteAll())
			}
			bs = append(bs, batch(obj, uint64(i), ops...))
		}
		logs = append(logs, cmdLog(t, uint64(i), Entry{Batches: bs}))
	}
	for _, r := range f.ApplyBatch(logs) {
		if !reflect.DeepEqual(r, ApplyResult{}) {
			t.Fatalf("fill: %v", r)
		}
	}
}

func persist(t testing.TB, snap raft.FSMSnapshot) []byte {
	t.Helper()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist: closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func TestSnapshotRestore(t *testing.T) {
	src := openTest(t)
	fillGroup(t, src, 1, 1)
	fillGroup(t, src, 2, 2) // a neighbour that must not end up in the snapshot
	want := rawState(t, src, 1)
	if len(want) < 50 {
		t.Fatalf("source state suspiciously small: %d keys", len(want))
	}
	f := src.NewShardFSM(1)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	// Writes after Snapshot returns are not part of it (raft applies
	// concurrently with Persist).
	if r := f.Apply(cmdLog(t, 21, Entry{Batches: []ObjectBatch{batch(oid(100), 21, put("late", "x"))}})); !reflect.DeepEqual(r, ApplyResult{}) {
		t.Fatalf("Apply = %v", r)
	}
	data := persist(t, snap)

	dst := openTest(t)
	fillGroup(t, dst, 7, 3) // old state of the target group: must vanish
	fillGroup(t, dst, 8, 4) // a neighbour: must stay exactly as it is
	neighbour := rawState(t, dst, 8)
	target := dst.NewShardFSM(7)
	if err := target.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if got := rawState(t, dst, 7); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored state differs: %d keys, want %d", len(got), len(want))
	}
	if got := rawState(t, dst, 8); !reflect.DeepEqual(got, neighbour) {
		t.Fatal("restore changed another group")
	}
	// Through the read API too.
	if a, b := readObject(t, src, 1, oid(102)), readObject(t, dst, 7, oid(102)); !reflect.DeepEqual(a, b) {
		t.Fatalf("object differs after restore:\n%+v\n%+v", a, b)
	}
	if v, ok, _ := dst.Get(7, oid(100), "late"); ok {
		t.Fatalf("a write made after Snapshot leaked into it: %q", v)
	}
	// The restored FSM carries the snapshot's applied index: older entries
	// are skipped, newer ones apply on top.
	if ai, _ := dst.AppliedIndex(7); ai != 20 {
		t.Fatalf("AppliedIndex after restore = %d, want 20", ai)
	}
	if r := target.Apply(cmdLog(t, 20, Entry{Batches: []ObjectBatch{batch(oid(100), 21, put("x", "x"))}})); r != nil {
		t.Fatalf("entry at the snapshot's index applied: %v", r)
	}
	if r := target.Apply(cmdLog(t, 21, Entry{Batches: []ObjectBatch{batch(oid(100), 21, put("late", "y"))}})); !reflect.DeepEqual(r, ApplyResult{}) {
		t.Fatalf("entry after the snapshot: %v", r)
	}
	if v, ok, _ := dst.Get(7, oid(100), "late"); !ok || string(v) != "y" {
		t.Fatalf("late = %q, %v", v, ok)
	}
}

func TestSnapshotOfEmptyGroup(t *testing.T) {
	src, dst := openTest(t), openTest(t)
	snap, err := src.NewShardFSM(1).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	data := persist(t, snap)
	snap.Release()
	snap.Release() // idempotent
	fillGroup(t, dst, 1, 1)
	if err := dst.NewShardFSM(1).Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if st := rawState(t, dst, 1); len(st) != 0 {
		t.Fatalf("restoring an empty snapshot left %d keys", len(st))
	}
}

func TestRestoreRejectsCorruptStreams(t *testing.T) {
	src := openTest(t)
	fillGroup(t, src, 1, 1)
	snap, err := src.NewShardFSM(1).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	good := persist(t, snap)

	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0x01
	cases := map[string][]byte{
		"empty":         {},
		"bad magic":     append([]byte("XXXXX"), good[5:]...),
		"flipped byte":  flipped,
		"truncated":     good[:len(good)-1],
		"cut mid-way":   good[:len(good)/3],
		"trailing data": append(append([]byte(nil), good...), 0),
		"huge key":      append(append([]byte(nil), good[:5]...), 0xff, 0xff, 0xff, 0xff, 0x0f),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			dst := openTest(t)
			fillGroup(t, dst, 2, 2)
			neighbour := rawState(t, dst, 2)
			f := dst.NewShardFSM(1)
			err := f.Restore(io.NopCloser(bytes.NewReader(data)))
			if !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("Restore = %v, want ErrCorruptSnapshot", err)
			}
			// The half-restored group is marked and refuses entries...
			if inc, err := f.restoreIncomplete(); err != nil || !inc {
				t.Fatalf("restoreIncomplete = %v, %v", inc, err)
			}
			r := f.Apply(cmdLog(t, 100, Entry{}))
			if err, ok := r.(error); !ok || !errors.Is(err, ErrFSMFailed) {
				t.Fatalf("Apply after a failed restore = %v, want ErrFSMFailed", r)
			}
			// ... also when a new FSM (a restart) looks at it.
			r = dst.NewShardFSM(1).Apply(cmdLog(t, 100, Entry{}))
			if err, ok := r.(error); !ok || !errors.Is(err, ErrFSMFailed) {
				t.Fatalf("Apply of a fresh FSM after a failed restore = %v, want ErrFSMFailed", r)
			}
			// ... and will not hand out a snapshot of its broken state.
			if _, err := f.Snapshot(); !errors.Is(err, ErrFSMFailed) {
				t.Fatalf("Snapshot after a failed restore = %v, want ErrFSMFailed", err)
			}
			if got := rawState(t, dst, 2); !reflect.DeepEqual(got, neighbour) {
				t.Fatal("failed restore changed another group")
			}
			// A good restore repairs it.
			if err := f.Restore(io.NopCloser(bytes.NewReader(good))); err != nil {
				t.Fatal(err)
			}
			if got, want := rawState(t, dst, 1), rawState(t, src, 1); !reflect.DeepEqual(got, want) {
				t.Fatal("state after repairing restore differs")
			}
			if r := f.Apply(cmdLog(t, 100, Entry{})); !reflect.DeepEqual(r, ApplyResult{}) {
				t.Fatalf("Apply after a good restore = %v", r)
			}
		})
	}
}

func TestPersistCancelsOnWriteError(t *testing.T) {
	s := openTest(t)
	fillGroup(t, s, 1, 1)
	snap, err := s.NewShardFSM(1).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{failAfter: 100}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("Persist into a failing sink succeeded")
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("sink closed=%v cancelled=%v; want cancelled", sink.closed, sink.cancelled)
	}
}

// FuzzSnapshotStream: whatever bytes a snapshot stream holds (a leader's
// InstallSnapshot is spilled to disk and then read back by Restore),
// reading it never panics and every key it hands on is inside the group.
func FuzzSnapshotStream(f *testing.F) {
	src := openTest(f)
	fillGroup(f, src, 1, 1)
	snap, err := src.NewShardFSM(1).Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	good := persist(f, snap)
	snap.Release()
	f.Add(good)
	f.Add([]byte{})
	f.Add(append(append([]byte(nil), snapshotMagic[:]...), 0, 0, 0, 0, 0, 0))
	ks := newKeyspace(7)
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = readSnapshotStream(bytes.NewReader(b), &ks, func(key, val []byte) error {
			if !bytes.HasPrefix(key, ks.statePrefix) || len(key) == len(ks.statePrefix) {
				t.Fatalf("key %q outside group 7's state", key)
			}
			return nil
		})
	})
}

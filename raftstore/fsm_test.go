package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// applyMode runs a list of entries through the FSM either one Apply per
// entry or in a single ApplyBatch, which must give identical results (the
// batch path has to see its own uncommitted versions and alarms).
type applyMode struct {
	name string
	run  func(f *ShardFSM, logs []*raft.Log) []any
}

var applyModes = []applyMode{
	{"Apply", func(f *ShardFSM, logs []*raft.Log) []any {
		out := make([]any, len(logs))
		for i, l := range logs {
			out[i] = f.Apply(l)
		}
		return out
	}},
	{"ApplyBatch", func(f *ShardFSM, logs []*raft.Log) []any { return f.ApplyBatch(logs) }},
}

func TestFSMOps(t *testing.T) {
	a, b := oid(1), oid(2)
	type want struct {
		obj [32]byte
		st  objectState
	}
	cases := []struct {
		name     string
		entries  []Entry
		rejected [][]int // per entry; nil = none
		want     []want
		due      []DueAlarm // every alarm of the group, in time order
	}{
		{
			name:    "put and overwrite",
			entries: []Entry{{Batches: []ObjectBatch{batch(a, 1, put("k", "1"), put("k", "2"), put("e", ""))}}},
			want:    []want{{a, objectState{Keys: map[string]string{"k": "2", "e": ""}, Version: 1}}},
		},
		{
			name: "delete existing and missing",
			entries: []Entry{
				{Batches: []ObjectBatch{batch(a, 1, put("k", "1"), put("j", "1"))}},
				{Batches: []ObjectBatch{batch(a, 2, del("k"), del("never"))}},
			},
			want: []want{{a, objectState{Keys: map[string]string{"j": "1"}, Version: 2}}},
		},
		{
			name: "deleteAll removes keys and alarm, keeps and bumps version",
			entries: []Entry{
				{Batches: []ObjectBatch{batch(a, 1, put("k", "1"), put("k2", "2"), setAlarm(500)), batch(b, 1, put("k", "b"), setAlarm(600))}},
				{Batches: []ObjectBatch{batch(a, 2, deleteAll())}},
			},
			want: []want{
				{a, objectState{Keys: map[string]string{}, Version: 2}},
				{b, objectState{Keys: map[string]string{"k": "b"}, Version: 1, Alarm: 600, HasAlarm: true}},
			},
			due: []DueAlarm{{b, 600}},
		},
		{
			name: "put after deleteAll in one batch survives; put before it does not",
			entries: []Entry{
				{Batches: []ObjectBatch{batch(a, 1, put("old", "1"))}},
				{Batches: []ObjectBatch{batch(a, 2, put("before", "x"), deleteAll(), put("after", "y"))}},
			},
			want: []want{{a, objectState{Keys: map[string]string{"after": "y"}, Version: 2}}},
		},
		{
			name: "setAlarm moves the alarm and replaces its index entry",
			entries: []Entry{
				{Batches: []ObjectBatch{batch(a, 1, setAlarm(1000))}},
				{Batches: []ObjectBatch{batch(a, 2, setAlarm(200)), batch(b, 1, setAlarm(300))}},
				{Batches: []ObjectBatch{batch(a, 3, setAlarm(400), setAlarm(-50))}},
			},
			want: []want{
				{a, objectState{Keys: map[string]string{}, Version: 3, Alarm: -50, HasAlarm: true}},
				{b, objectState{Keys: map[string]string{}, Version: 1, Alarm: 300, HasAlarm: true}},
			},
			due: []DueAlarm{{a, -50}, {b, 300}},
		},
		{
			name: "deleteAlarm, with and without an alarm",
			entries: []Entry{
				{Batches: []ObjectBatch{batch(a, 1, deleteAlarm(), setAlarm(10)), batch(b, 1, setAlarm(10))}},
				{Batches: []ObjectBatch{batch(a, 2, deleteAlarm())}},
			},
			want: []want{
				{a, objectState{Keys: map[string]string{}, Version: 2}},
				{b, objectState{Keys: map[string]string{}, Version: 1, Alarm: 10, HasAlarm: true}},
			},
			due: []DueAlarm{{b, 10}},
		},
		{
			name: "version fence rejects whole batches and accepts later correct ones",
			entries: []Entry{
				{Batches: []ObjectBatch{batch(a, 2, put("skipped", "x"), setAlarm(5))}}, // object is at 0: needs 1
				{Batches: []ObjectBatch{batch(a, 1, put("k", "1"))}},
				{Batches: []ObjectBatch{batch(a, 1, put("k", "stale"))}}, // a retry of version 1
				{Batches: []ObjectBatch{
					batch(b, 1, put("k", "b1")),
					batch(a, 3, put("k", "too new")),
					batch(a, 2, put("k", "2")),
					batch(a, 3, put("k", "3")), // sees the version set earlier in this entry
					batch(b, 1, put("k", "b-dup")),
				}},
			},
			rejected: [][]int{{0}, nil, {0}, {1, 4}},
			want: []want{
				{a, objectState{Keys: map[string]string{"k": "3"}, Version: 3}},
				{b, objectState{Keys: map[string]string{"k": "b1"}, Version: 1}},
			},
		},
		{
			name:    "a batch with no ops bumps the version only",
			entries: []Entry{{Batches: []ObjectBatch{batch(a, 1)}}, {Batches: []ObjectBatch{batch(a, 2, put("k", "v"))}}},
			want:    []want{{a, objectState{Keys: map[string]string{"k": "v"}, Version: 2}}},
		},
	}
	for _, tc := range cases {
		for _, mode := range applyModes {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				s := openTest(t)
				const g = 5
				f := s.NewShardFSM(g)
				var logs []*raft.Log
				for i, e := range tc.entries {
					logs = append(logs, cmdLog(t, uint64(i+1), e))
				}
				resps := mode.run(f, logs)
				for i, r := range resps {
					res, ok := r.(ApplyResult)
					if !ok {
						t.Fatalf("entry %d: response %T %v, want ApplyResult", i, r, r)
					}
					var wantRej []int
					if tc.rejected != nil {
						wantRej = tc.rejected[i]
					}
					if !reflect.DeepEqual(res.Rejected, wantRej) {
						t.Fatalf("entry %d: rejected %v, want %v", i, res.Rejected, wantRej)
					}
				}
				for _, w := range tc.want {
					if got := readObject(t, s, g, w.obj); !reflect.DeepEqual(got, w.st) {
						t.Fatalf("object %x:\n got %+v\nwant %+v", w.obj[:8], got, w.st)
					}
				}
				due, err := s.DueAlarms(g, 1<<62, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(due) != 0 || len(tc.due) != 0 {
					if !reflect.DeepEqual(due, tc.due) {
						t.Fatalf("DueAlarms = %+v, want %+v", due, tc.due)
					}
				}
				if ai, err := s.AppliedIndex(g); err != nil || ai != uint64(len(tc.entries)) {
					t.Fatalf("AppliedIndex = %d, %v; want %d", ai, err, len(tc.entries))
				}
				// Nothing leaked into another group.
				if st := rawState(t, s, g+1); len(st) != 0 {
					t.Fatalf("group %d has state %v", g+1, st)
				}
			})
		}
	}
}

func TestDueAlarms(t *testing.T) {
	s := openTest(t)
	f := s.NewShardFSM(1)
	var bs []ObjectBatch
	times := []int64{50, -10, 50, 20, 1 << 50}
	for i, at := range times {
		bs = append(bs, batch(oid(i), 1, setAlarm(at)))
	}
	if r := f.Apply(cmdLog(t, 1, Entry{Batches: bs})); !reflect.DeepEqual(r, ApplyResult{}) {
		t.Fatalf("Apply = %v", r)
	}
	cases := []struct {
		notAfter int64
		limit    int
		want     []DueAlarm
	}{
		{-11, 0, nil},
		{-10, 0, []DueAlarm{{oid(1), -10}}},
		{49, 0, []DueAlarm{{oid(1), -10}, {oid(3), 20}}},
		{50, 0, []DueAlarm{{oid(1), -10}, {oid(3), 20}, {oid(0), 50}, {oid(2), 50}}},
		{50, 3, []DueAlarm{{oid(1), -10}, {oid(3), 20}, {oid(0), 50}}},
		{1 << 62, 0, []DueAlarm{{oid(1), -10}, {oid(3), 20}, {oid(0), 50}, {oid(2), 50}, {oid(4), 1 << 50}}},
		{1<<63 - 1, 1, []DueAlarm{{oid(1), -10}}},
	}
	for _, c := range cases {
		got, err := s.DueAlarms(1, c.notAfter, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("DueAlarms(%d, %d) = %v, want %v", c.notAfter, c.limit, got, c.want)
		}
	}
	if got, _ := s.DueAlarms(2, 1<<62, 0); len(got) != 0 {
		t.Fatalf("group 2 sees group 1's alarms: %v", got)
	}
	after := []struct {
		after    DueAlarm
		notAfter int64
		limit    int
		want     []DueAlarm
	}{
		{DueAlarm{oid(1), -10}, 50, 0, []DueAlarm{{oid(3), 20}, {oid(0), 50}, {oid(2), 50}}},
		{DueAlarm{oid(0), 50}, 50, 0, []DueAlarm{{oid(2), 50}}}, // a tie: by object
		{DueAlarm{oid(3), 20}, 50, 1, []DueAlarm{{oid(0), 50}}},
		{DueAlarm{oid(2), 50}, 50, 0, nil},
		{DueAlarm{oid(2), 50}, 20, 0, nil}, // after the bound
	}
	for _, c := range after {
		got, err := s.DueAlarmsAfter(1, c.after, c.notAfter, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("DueAlarmsAfter(%v, %d, %d) = %v, want %v", c.after, c.notAfter, c.limit, got, c.want)
		}
	}
}

func TestNextAlarm(t *testing.T) {
	s := openTest(t)
	f := s.NewShardFSM(1)
	var bs []ObjectBatch
	for i, at := range []int64{50, -10, 50, 20, 1 << 50} {
		bs = append(bs, batch(oid(i), 1, setAlarm(at)))
	}
	if r := f.Apply(cmdLog(t, 1, Entry{Batches: bs})); !reflect.DeepEqual(r, ApplyResult{}) {
		t.Fatalf("Apply = %v", r)
	}
	check := func(after int64, want int64, wantOK bool) {
		t.Helper()
		at, ok, err := s.NextAlarm(1, after)
		if err != nil {
			t.Fatal(err)
		}
		if ok != wantOK || at != want {
			t.Errorf("NextAlarm(%d) = %d, %v; want %d, %v", after, at, ok, want, wantOK)
		}
	}
	check(math.MinInt64, -10, true)
	check(-11, -10, true)
	check(-10, 20, true) // strictly later: an alarm at after is due, not next
	check(20, 50, true)
	check(49, 50, true)
	check(50, 1<<50, true)
	check(1<<50, 0, false)
	check(math.MaxInt64, 0, false)

	// The index follows moves and deletions.
	moved := Entry{Batches: []ObjectBatch{batch(oid(1), 2, setAlarm(30)), batch(oid(3), 2, deleteAlarm())}}
	if r := f.Apply(cmdLog(t, 2, moved)); !reflect.DeepEqual(r, ApplyResult{}) {
		t.Fatalf("Apply = %v", r)
	}
	check(math.MinInt64, 30, true)
	if _, ok, _ := s.NextAlarm(2, math.MinInt64); ok {
		t.Fatal("group 2 sees group 1's alarms")
	}
}

func TestFSMNonCommandAndCorruptEntries(t *testing.T) {
	for _, mode := range applyModes {
		t.Run(mode.name, func(t *testing.T) {
			s := openTest(t)
			f := s.NewShardFSM(1)
			logs := []*raft.Log{
				{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("whatever")},
				{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte{0xde, 0xad}},
				cmdLog(t, 3, Entry{Batches: []ObjectBatch{batch(oid(1), 1, put("k", "v"))}}),
				{Index: 4, Term: 1, Type: raft.LogNoop},
			}
			resps := mode.run(f, logs)
			if resps[0] != nil || resps[3] != nil {
				t.Fatalf("non-command responses = %v, %v; want nil", resps[0], resps[3])
			}
			if err, ok := resps[1].(error); !ok || !errors.Is(err, ErrCorruptEntry) {
				t.Fatalf("corrupt entry response = %v, want an ErrCorruptEntry error", resps[1])
			}
			if _, ok := resps[2].(ApplyResult); !ok {
				t.Fatalf("good entry after a corrupt one: %v", resps[2])
			}
			if ai, _ := s.AppliedIndex(1); ai != 4 {
				t.Fatalf("AppliedIndex = %d, want 4", ai)
			}
			if v, ok, _ := s.Get(1, oid(1), "k"); !ok || string(v) != "v" {
				t.Fatalf("k = %q, %v", v, ok)
			}
		})
	}
}

// The scenario a restart produces: raft hands the FSM entries it already
// applied. Pebble's crashable filesystem drops every write that was not
// synced, as a power cut would.
func TestFSMSkipsReplayedEntries(t *testing.T) {
	const g = 3
	obj := oid(1)
	entry := func(i int) Entry {
		return Entry{Batches: []ObjectBatch{batch(obj, uint64(i), put("n", fmt.Sprint(i)), put(fmt.Sprintf("k%02d", i), "x"))}}
	}
	logsUpTo := func(t *testing.T, n int) []*raft.Log {
		var logs []*raft.Log
		for i := 1; i <= n; i++ {
			logs = append(logs, cmdLog(t, uint64(i), entry(i)))
		}
		return logs
	}
	checkReplay := func(t *testing.T, s *Store, applied, total int) {
		t.Helper()
		if ai, err := s.AppliedIndex(g); err != nil || ai != uint64(applied) {
			t.Fatalf("AppliedIndex after reopen = %d, %v; want %d", ai, err, applied)
		}
		// Re-apply everything from the (synced) raft log, as raft does.
		var logs []*raft.Log
		ls := s.LogStore(g)
		for i := 1; i <= total; i++ {
			var l raft.Log
			if err := ls.GetLog(uint64(i), &l); err != nil {
				t.Fatal(err)
			}
			logs = append(logs, &l)
		}
		resps := s.NewShardFSM(g).ApplyBatch(logs)
		for i, r := range resps {
			if i < applied {
				if r != nil {
					t.Fatalf("entry %d was applied a second time: %v", i+1, r)
				}
			} else if res, ok := r.(ApplyResult); !ok || len(res.Rejected) != 0 {
				t.Fatalf("entry %d after reopen: %v, want applied", i+1, r)
			}
		}
		st := readObject(t, s, g, obj)
		if st.Version != uint64(total) || st.Keys["n"] != fmt.Sprint(total) || len(st.Keys) != total+1 {
			t.Fatalf("state after replay: %+v", st)
		}
	}

	t.Run("clean close", func(t *testing.T) {
		dir := t.TempDir()
		s := openAt(t, dir)
		logs := logsUpTo(t, 6)
		if err := s.LogStore(g).StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		s.NewShardFSM(g).ApplyBatch(logs[:5])
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		checkReplay(t, openAt(t, dir), 5, 6)
	})

	t.Run("crash", func(t *testing.T) {
		fs := vfs.NewCrashableMem()
		s := openFS(t, fs)
		ls, f := s.LogStore(g), s.NewShardFSM(g)
		logs := logsUpTo(t, 12)
		if err := ls.StoreLogs(logs[:10]); err != nil {
			t.Fatal(err)
		}
		f.ApplyBatch(logs[:10]) // NoSync
		// Raft's next synced append makes those FSM writes durable too.
		if err := ls.StoreLogs(logs[10:]); err != nil {
			t.Fatal(err)
		}
		f.Apply(logs[10]) // NoSync, and nothing synced after it: lost in the crash
		crashed := fs.CrashClone(vfs.CrashCloneCfg{})
		checkReplay(t, openFS(t, crashed), 10, 12)
	})
}

// Snapshot must make everything applied durable before raft may truncate the
// log. Without its sync, the crash below loses the applied entries.
func TestFSMSnapshotMakesAppliedDurable(t *testing.T) {
	for _, snapshot := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snapshot), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			s := openFS(t, fs)
			f := s.NewShardFSM(1)
			for i := 1; i <= 5; i++ {
				f.Apply(cmdLog(t, uint64(i), Entry{Batches: []ObjectBatch{batch(oid(1), uint64(i), put("k", "v"))}}))
			}
			if snapshot {
				snap, err := f.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				defer snap.Release()
			}
			s2 := openFS(t, fs.CrashClone(vfs.CrashCloneCfg{}))
			ai, err := s2.AppliedIndex(1)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]uint64{false: 0, true: 5}[snapshot]; ai != want {
				t.Fatalf("AppliedIndex after crash = %d, want %d", ai, want)
			}
		})
	}
}

func TestClosedStore(t *testing.T) {
	s := openTest(t)
	f := s.NewShardFSM(1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(1, oid(1), "k"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close = %v", err)
	}
	r := f.Apply(cmdLog(t, 1, Entry{}))
	if err, ok := r.(error); !ok || !errors.Is(err, ErrFSMFailed) || !errors.Is(err, ErrClosed) {
		t.Fatalf("Apply after Close = %v, want ErrFSMFailed wrapping ErrClosed", r)
	}
	if _, err := f.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Snapshot after Close = %v", err)
	}
	if _, err := s.StartGroup(GroupConfig{ID: 1, LocalID: "n", Transport: newTransport(t, "n")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("StartGroup after Close = %v", err)
	}
}

// The FSM caches the versions it wrote; a Restore replaces the group's
// state under it, so the cache must go with it: here the object's next
// version after the restore is 6, not 2.
func TestFSMVersionsAfterRestore(t *testing.T) {
	obj := oid(9)
	write := func(t *testing.T, f *ShardFSM, index, version uint64) ApplyResult {
		t.Helper()
		r, ok := f.Apply(cmdLog(t, index, Entry{Batches: []ObjectBatch{batch(obj, version, put("v", fmt.Sprint(version)))}})).(ApplyResult)
		if !ok {
			t.Fatalf("Apply of version %d at index %d did not apply", version, index)
		}
		return r
	}
	src := openTest(t)
	sf := src.NewShardFSM(1)
	for i := uint64(1); i <= 5; i++ {
		write(t, sf, i, i)
	}
	snap, err := sf.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	data := persist(t, snap)

	dst := openTest(t)
	f := dst.NewShardFSM(1)
	if r := write(t, f, 1, 1); len(r.Rejected) != 0 {
		t.Fatalf("version 1 on an empty group rejected")
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if r := write(t, f, 6, 2); len(r.Rejected) != 1 {
		t.Fatalf("version 2 accepted after restoring version 5")
	}
	if r := write(t, f, 7, 6); len(r.Rejected) != 0 {
		t.Fatalf("version 6 rejected after restoring version 5")
	}
}

// The version cache stays bounded, and an object whose version was evicted
// from it is checked against the store.
func TestFSMVersionCacheBounded(t *testing.T) {
	s := openTest(t)
	f := s.NewShardFSM(1)
	n := 2*versionCacheGen + 100
	var logs []*raft.Log
	for i := 0; i < n; i++ {
		logs = append(logs, cmdLog(t, uint64(i+1), Entry{Batches: []ObjectBatch{batch(oid(i), 1, put("k", "v"))}}))
	}
	f.ApplyBatch(logs)
	if cached := len(f.versions.recent) + len(f.versions.older); cached > 2*versionCacheGen {
		t.Fatalf("%d cached versions, bound %d", cached, 2*versionCacheGen)
	}
	logs = logs[:0]
	for i := 0; i < n; i++ {
		logs = append(logs, cmdLog(t, uint64(n+i+1), Entry{Batches: []ObjectBatch{batch(oid(i), 2, put("k", "w")), batch(oid(i), 2, put("k", "x"))}}))
	}
	for i, r := range f.ApplyBatch(logs) {
		if res, ok := r.(ApplyResult); !ok || !reflect.DeepEqual(res.Rejected, []int{1}) {
			t.Fatalf("object %d: %v; want its first version 2 accepted and the second rejected", i, r)
		}
	}
}

// An entry the FSM fails to write is committed all the same: raft's future
// succeeds with the failure as its response, and the entry is applied from
// the log after a restart. ErrFSMFailed is not a failed commit.
func TestFSMFailureLeavesTheEntryCommitted(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	// The store's owner hears of the failure, once: its replica has to
	// leave service (node stops).
	failures := make(chan error, 2)
	s.onFSMFailure = func(g GroupID, err error) { failures <- fmt.Errorf("group %s: %w", g, err) }
	g := startSingle(t, s, 3, newTransport(t, "n1"), func(c *GroupConfig) { c.Tune = fast })
	// A transient storage failure: object 1's version cannot be read.
	ks := newKeyspace(3)
	o1 := oid(1)
	if err := s.db.Set(ks.versionKey(&o1), []byte("bad"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	f := g.Raft().Apply(encode(t, Entry{Batches: []ObjectBatch{batch(oid(1), 1, put("k", "v"))}}), 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if err, ok := f.Response().(error); !ok || !errors.Is(err, ErrFSMFailed) {
		t.Fatalf("response %v, want ErrFSMFailed", f.Response())
	}
	select {
	case err := <-failures:
		if !errors.Is(err, ErrFSMFailed) {
			t.Fatalf("OnFSMFailure got %v, want ErrFSMFailed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnFSMFailure was not called")
	}
	// A later entry fails too, without a second call.
	f = g.Raft().Apply(encode(t, Entry{Batches: []ObjectBatch{batch(oid(2), 1, put("k", "v"))}}), 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failures:
		t.Fatalf("OnFSMFailure called again: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := g.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Delete(ks.versionKey(&o1), pebble.Sync); err != nil { // the failure passed
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := reopenSingle(t, dir, 3)
	if st := readObject(t, s2, 3, oid(1)); st.Version != 1 || st.Keys["k"] != "v" {
		t.Fatalf("after restart: %+v; the entry the FSM failed was committed and must apply", st)
	}
}

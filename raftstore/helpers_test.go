package raftstore

import (
	"bytes"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/roostdb/roost/durable"
)

// quietLogger keeps test output readable; errors still show.
func quietLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Error})
}

// openTest opens a Store in a fresh directory and closes it at the end of the test.
func openTest(t testing.TB) *Store {
	t.Helper()
	return openAt(t, t.TempDir())
}

func openAt(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{CacheSize: 8 << 20, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// reopenSingle opens the Store in dir again, starts group g in it as its
// single voter, and waits until the group has applied its log.
func reopenSingle(t testing.TB, dir string, g GroupID) (*Store, *Group) {
	t.Helper()
	s := openAt(t, dir)
	grp := startSingle(t, s, g, newTransport(t, "n1"), func(c *GroupConfig) { c.Tune = fast })
	if err := grp.Raft().Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	return s, grp
}

// openFS opens a Store on a (crashable) in-memory filesystem.
func openFS(t testing.TB, fs vfs.FS) *Store {
	t.Helper()
	s, err := open("db", Options{CacheSize: 8 << 20, Logger: quietLogger()}, fs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// oid makes a recognisable object ID.
func oid(n int) [32]byte {
	var o [32]byte
	copy(o[:], fmt.Sprintf("object-%04d", n))
	o[31] = byte(n)
	return o
}

func encode(t testing.TB, e Entry) []byte {
	t.Helper()
	b, err := e.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cmdLog(t testing.TB, index uint64, e Entry) *raft.Log {
	t.Helper()
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: encode(t, e)}
}

func put(k, v string) Op   { return Op{Kind: OpPut, Key: k, Value: []byte(v)} }
func del(k string) Op      { return Op{Kind: OpDelete, Key: k} }
func deleteAll() Op        { return Op{Kind: OpDeleteAll} }
func setAlarm(at int64) Op { return Op{Kind: OpSetAlarm, AlarmAt: at} }
func deleteAlarm() Op      { return Op{Kind: OpDeleteAlarm} }

func batch(obj [32]byte, version uint64, ops ...Op) ObjectBatch {
	return ObjectBatch{Object: obj, Version: version, Ops: ops}
}

// rawState returns every key of group g's state range, relative to its
// prefix, with its value: the exact state a snapshot must reproduce.
func rawState(t testing.TB, s *Store, g GroupID) map[string]string {
	t.Helper()
	ks := newKeyspace(g)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: ks.statePrefix, UpperBound: ks.stateEnd})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	m := map[string]string{}
	for ok := it.First(); ok; ok = it.Next() {
		m[string(it.Key()[len(ks.statePrefix):])] = string(it.Value())
	}
	return m
}

// allKeys lists every key in the database, for isolation checks.
func allKeys(t testing.TB, s *Store) [][]byte {
	t.Helper()
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var keys [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, append([]byte(nil), it.Key()...))
	}
	return keys
}

// objectState is what an object looks like through the read API.
type objectState struct {
	Keys     map[string]string
	Version  uint64
	Alarm    int64
	HasAlarm bool
}

func readObject(t testing.TB, s *Store, g GroupID, obj [32]byte) objectState {
	t.Helper()
	kvs, err := s.List(g, obj, durable.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := objectState{Keys: map[string]string{}}
	for _, kv := range kvs {
		st.Keys[kv.Key] = string(kv.Value)
		// Get must agree with List.
		v, ok, err := s.Get(g, obj, kv.Key)
		if err != nil || !ok || !bytes.Equal(v, kv.Value) {
			t.Fatalf("Get(%q) = %q, %v, %v; List says %q", kv.Key, v, ok, err, kv.Value)
		}
	}
	if st.Version, err = s.ObjectVersion(g, obj); err != nil {
		t.Fatal(err)
	}
	if st.Alarm, st.HasAlarm, err = s.Alarm(g, obj); err != nil {
		t.Fatal(err)
	}
	return st
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

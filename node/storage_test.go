package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/raftstore"
)

// Tests of objectStorage, the durable.Storage of an instance, against the
// semantics of Cloudflare Durable Objects storage. Each test starts one real
// node and gives every case its own object, so what a case commits really
// goes through the shard's Raft group into Pebble, and every case checks
// the object's state three times: through its own storage before the
// commit (uncommitted layers), after it (cache), and through a new
// objectStorage that only has the committed state to read.

// storageTestNode starts a node for a storage test and closes it afterwards.
func storageTestNode(t *testing.T) *Node {
	t.Helper()
	n := startNode(t, t.TempDir(), nil)
	t.Cleanup(func() { closeNode(t, n) })
	return n
}

// storageTestObject is an object ID of the (sub)test's own.
func storageTestObject(t *testing.T) [32]byte { return sha256.Sum256([]byte(t.Name())) }

func storageTestShard(n *Node, obj [32]byte) *shard { return n.shards[shardOf(obj, len(n.shards))] }

// openTestStorage builds a new objectStorage for obj over the node's store,
// as an instance's activation does. A nil c commits through obj's shard.
func openTestStorage(t *testing.T, n *Node, obj [32]byte, c committer) *objectStorage {
	t.Helper()
	sh := storageTestShard(n, obj)
	if c == nil {
		c = sh
	}
	st := newObjectStorage(sh.id, obj, n.store, c, n.cfg.Limits)
	if err := st.load(); err != nil {
		t.Fatalf("load: %v", err)
	}
	return st
}

// commitStorage flushes st and waits for its newest commit.
func commitStorage(t *testing.T, st *objectStorage) {
	t.Helper()
	c := st.flush()
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.wait(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if !st.idle() {
		t.Fatalf("storage has writes pending or in flight after its newest commit finished")
	}
}

// heldCommitter keeps the commits submitted to it in flight until release,
// which hands them, in order, to the shard (and every later one at once).
type heldCommitter struct {
	to       committer
	mu       sync.Mutex
	released bool
	held     []*commit
}

func (h *heldCommitter) submit(c *commit) error {
	h.mu.Lock()
	if !h.released {
		h.held = append(h.held, c)
		h.mu.Unlock()
		return nil
	}
	h.mu.Unlock()
	return h.to.submit(c)
}

func (h *heldCommitter) release() {
	h.mu.Lock()
	held := h.held
	h.held, h.released = nil, true
	h.mu.Unlock()
	for _, c := range held {
		if err := h.to.submit(c); err != nil {
			c.finish(err)
		}
	}
}

// storageOp is one write of a test's script.
type storageOp struct {
	kind  byte // 'p' put, 'd' delete, 'X' DeleteAll, 'A' SetAlarm, 'a' DeleteAlarm
	key   string
	value string
	at    time.Time
}

func (op storageOp) String() string {
	switch op.kind {
	case 'p':
		return fmt.Sprintf("Put(%q)", op.key)
	case 'd':
		return fmt.Sprintf("Delete(%q)", op.key)
	case 'X':
		return "DeleteAll()"
	case 'A':
		return fmt.Sprintf("SetAlarm(%v)", op.at)
	default:
		return "DeleteAlarm()"
	}
}

func opPut(k, v string) storageOp       { return storageOp{kind: 'p', key: k, value: v} }
func opDel(k string) storageOp          { return storageOp{kind: 'd', key: k} }
func opSetAlarm(at time.Time) storageOp { return storageOp{kind: 'A', at: at} }

var (
	opDeleteAll   = storageOp{kind: 'X'}
	opDeleteAlarm = storageOp{kind: 'a'}
)

// applyOps runs ops on rw; DeleteAll and alarms need a durable.Storage.
func applyOps(t *testing.T, rw durable.ReadWriter, ops []storageOp) {
	t.Helper()
	for _, op := range ops {
		var err error
		switch op.kind {
		case 'p':
			err = rw.Put(op.key, []byte(op.value))
		case 'd':
			_, err = rw.Delete(op.key)
		case 'X':
			err = rw.(durable.Storage).DeleteAll()
		case 'A':
			err = rw.(durable.Storage).SetAlarm(op.at)
		case 'a':
			err = rw.(durable.Storage).DeleteAlarm()
		}
		if err != nil {
			t.Fatalf("%v: %v", op, err)
		}
	}
}

// seedStorage commits ops as the object's state before a case starts.
func seedStorage(t *testing.T, n *Node, obj [32]byte, ops []storageOp) {
	t.Helper()
	if len(ops) == 0 {
		return
	}
	st := openTestStorage(t, n, obj, nil)
	applyOps(t, st, ops)
	commitStorage(t, st)
}

func showValue(v string) string {
	if len(v) <= 32 {
		return fmt.Sprintf("%q", v)
	}
	h := sha256.Sum256([]byte(v))
	return fmt.Sprintf("<%d bytes %x>", len(v), h[:4])
}

func showKVs(kvs []durable.KV) string {
	parts := make([]string, len(kvs))
	for i, kv := range kvs {
		parts[i] = showValue(kv.Key) + "=" + showValue(string(kv.Value))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func showMap(m map[string]string) string {
	kvs := make([]durable.KV, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		kvs = append(kvs, durable.KV{Key: k, Value: []byte(m[k])})
	}
	return showKVs(kvs)
}

// expectState checks that rw holds exactly want (List, Get, GetMany) and
// that the absent keys do not exist.
func expectState(t *testing.T, stage string, rw durable.ReadWriter, want map[string]string, absent []string) {
	t.Helper()
	kvs, err := rw.List(durable.ListOptions{})
	if err != nil {
		t.Errorf("%s: List: %v", stage, err)
	} else if got, w := showKVs(kvs), showMap(want); got != w {
		t.Errorf("%s: List = %s, want %s", stage, got, w)
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		v, ok, err := rw.Get(k)
		if err != nil || !ok || string(v) != want[k] {
			t.Errorf("%s: Get(%s) = %s, %v, %v; want %s", stage, showValue(k), showValue(string(v)), ok, err, showValue(want[k]))
		}
	}
	for _, k := range absent {
		if v, ok, err := rw.Get(k); err != nil || ok {
			t.Errorf("%s: Get(%s) = %s, %v, %v; want it absent", stage, showValue(k), showValue(string(v)), ok, err)
		}
	}
	keys := append(slices.Sorted(maps.Keys(want)), absent...)
	got := map[string]string{}
	for chunk := range slices.Chunk(keys, 100) {
		m, err := rw.GetMany(chunk)
		if err != nil {
			t.Errorf("%s: GetMany: %v", stage, err)
			return
		}
		for k, v := range m {
			got[k] = string(v)
		}
	}
	if !maps.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Errorf("%s: GetMany = %s, want %s", stage, showMap(got), showMap(want))
	}
}

// checkErr reports err unless it is target (or nil when target is nil).
func checkErr(t *testing.T, what string, err, target error) {
	t.Helper()
	switch {
	case target == nil && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case target != nil && !errors.Is(err, target):
		t.Errorf("%s: error %v, want one wrapping %v", what, err, target)
	}
}

// checkGet reports unless rw's value of key is want (ok false: absent).
func checkGet(t *testing.T, what string, rw durable.ReadWriter, key, want string, wantOK bool) {
	t.Helper()
	v, ok, err := rw.Get(key)
	if err != nil || ok != wantOK || string(v) != want {
		t.Errorf("%s: Get(%s) = %s, %v, %v; want %s, %v", what, showValue(key), showValue(string(v)), ok, err, showValue(want), wantOK)
	}
}

// storageCase is one case of runStorageCases.
type storageCase struct {
	name     string
	seed     []storageOp // committed before the case opens its storage
	inflight []storageOp // flushed into a commit kept in flight until after do
	do       func(t *testing.T, st *objectStorage)
	want     map[string]string // every key of the object afterwards
	absent   []string          // keys that must not exist afterwards
	// checkAlarm: GetAlarm must report wantAlarm (the zero Time: no alarm).
	checkAlarm bool
	wantAlarm  time.Time
}

func runStorageCases(t *testing.T, n *Node, cases []storageCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := storageTestObject(t)
			seedStorage(t, n, obj, tc.seed)
			held := &heldCommitter{to: storageTestShard(n, obj)}
			st := openTestStorage(t, n, obj, held)
			if len(tc.inflight) > 0 {
				applyOps(t, st, tc.inflight)
				if c := st.flush(); c == nil || c.isDone() {
					t.Fatal("the in-flight layer is not in flight")
				}
			}
			if tc.do != nil {
				tc.do(t, st)
			}
			check := func(stage string, st *objectStorage) {
				t.Helper()
				expectState(t, stage, st, tc.want, tc.absent)
				if tc.checkAlarm {
					checkAlarm(t, stage, st, tc.wantAlarm)
				}
			}
			check("before commit", st)
			held.release()
			commitStorage(t, st)
			check("after commit", st)
			check("new storage over the committed state", openTestStorage(t, n, obj, nil))
		})
	}
}

func checkAlarm(t *testing.T, stage string, st interface {
	GetAlarm() (time.Time, bool, error)
}, want time.Time) {
	t.Helper()
	at, ok, err := st.GetAlarm()
	switch {
	case err != nil:
		t.Errorf("%s: GetAlarm: %v", stage, err)
	case want.IsZero() && ok:
		t.Errorf("%s: GetAlarm = %v, want no alarm", stage, at)
	case !want.IsZero() && (!ok || !at.Equal(want)):
		t.Errorf("%s: GetAlarm = %v, %v; want %v", stage, at, ok, want)
	}
}

var abcSeed = []storageOp{opPut("a", "1"), opPut("b", "2"), opPut("c", "3")}

func TestStorageReadWrite(t *testing.T) {
	n := storageTestNode(t)
	abc := map[string]string{"a": "1", "b": "2", "c": "3"}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := maps.Clone(m)
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	without := func(m map[string]string, keys ...string) map[string]string {
		out := maps.Clone(m)
		for _, k := range keys {
			delete(out, k)
		}
		return out
	}
	runStorageCases(t, n, []storageCase{
		{
			name: "Get and GetMany of committed and missing keys",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkGet(t, "committed", st, "a", "1", true)
				checkGet(t, "missing", st, "zz", "", false)
				m, err := st.GetMany([]string{"a", "zz", "c"})
				if got := showMap(bytesMap(m)); err != nil || got != `["a"="1" "c"="3"]` {
					t.Errorf("GetMany = %s, %v; want a and c", got, err)
				}
			},
			want: abc, absent: []string{"zz"},
		},
		{
			name: "Put of a new key is read back before it commits",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("d", []byte("4")), nil)
				checkGet(t, "own write", st, "d", "4", true)
			},
			want: with(abc, "d", "4"),
		},
		{
			name: "Put overwrites a committed key",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("a", []byte("one")), nil)
				checkGet(t, "own write", st, "a", "one", true)
			},
			want: with(abc, "a", "one"),
		},
		{
			name: "PutMany",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "PutMany", st.PutMany(map[string][]byte{"d": []byte("4"), "a": []byte("10")}), nil)
			},
			want: with(abc, "d", "4", "a", "10"),
		},
		{
			name: "GetMany sees pending puts and deletes",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("d", []byte("4")), nil)
				if _, err := st.Delete("b"); err != nil {
					t.Fatal(err)
				}
				m, err := st.GetMany([]string{"a", "b", "d", "zz"})
				if got := showMap(bytesMap(m)); err != nil || got != `["a"="1" "d"="4"]` {
					t.Errorf("GetMany = %s, %v; want a and d", got, err)
				}
			},
			want: with(without(abc, "b"), "d", "4"), absent: []string{"b"},
		},
		{
			name: "Delete of a committed key reports that it existed, once",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkDelete(t, st, "a", true)
				checkGet(t, "after Delete", st, "a", "", false)
				checkDelete(t, st, "a", false)
			},
			want: without(abc, "a"), absent: []string{"a"},
		},
		{
			name: "Delete of a missing key",
			seed: abcSeed,
			do:   func(t *testing.T, st *objectStorage) { checkDelete(t, st, "zz", false) },
			want: abc, absent: []string{"zz"},
		},
		{
			name: "Delete of an uncommitted put",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("d", []byte("4")), nil)
				checkDelete(t, st, "d", true)
			},
			want: abc, absent: []string{"d"},
		},
		{
			name: "Put after Delete",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkDelete(t, st, "a", true)
				checkErr(t, "Put", st.Put("a", []byte("again")), nil)
			},
			want: with(abc, "a", "again"),
		},
		{
			name: "DeleteMany counts the keys that existed",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("d", []byte("4")), nil)
				checkDeleteMany(t, st, []string{"a", "zz", "c", "d"}, 3)
				checkDeleteMany(t, st, []string{"a", "c"}, 0)
			},
			want: map[string]string{"b": "2"}, absent: []string{"a", "c", "d", "zz"},
		},
		{
			// Workers: delete(keys) returns the number of keys deleted;
			// naming a key twice deletes it once (txn.DeleteMany agrees).
			name: "DeleteMany counts a repeated key once",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkDeleteMany(t, st, []string{"a", "a", "zz", "zz"}, 1)
			},
			want: without(abc, "a"), absent: []string{"a"},
		},
		{
			name: "DeleteMany and GetMany of no keys",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkDeleteMany(t, st, nil, 0)
				if m, err := st.GetMany(nil); err != nil || len(m) != 0 {
					t.Errorf("GetMany(nil) = %v, %v", m, err)
				}
			},
			want: abc,
		},
		{
			name: "DeleteAll hides every committed key",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "DeleteAll", st.DeleteAll(), nil)
				checkGet(t, "after DeleteAll", st, "a", "", false)
				checkDelete(t, st, "b", false)
				checkDeleteMany(t, st, []string{"a", "c"}, 0)
			},
			absent: []string{"a", "b", "c"},
		},
		{
			// The reads fill the storage's cache of committed values; once
			// the DeleteAll commits, none of them may come back.
			name: "DeleteAll of keys read before",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkGet(t, "before DeleteAll", st, "a", "1", true)
				if m, err := st.GetMany([]string{"b", "c"}); err != nil || len(m) != 2 {
					t.Errorf("GetMany = %v, %v", m, err)
				}
				checkErr(t, "DeleteAll", st.DeleteAll(), nil)
				checkErr(t, "Put", st.Put("d", []byte("4")), nil)
			},
			want: map[string]string{"d": "4"}, absent: []string{"a", "b", "c"},
		},
		{
			name: "Put after DeleteAll",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("z", []byte("0")), nil)
				checkErr(t, "DeleteAll", st.DeleteAll(), nil)
				checkErr(t, "Put", st.Put("e", []byte("5")), nil)
				checkErr(t, "Put", st.Put("a", []byte("new")), nil)
			},
			want: map[string]string{"a": "new", "e": "5"}, absent: []string{"b", "c", "z"},
		},
		{
			name: "an empty value exists",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("e", []byte{}), nil)
				checkErr(t, "Put", st.Put("n", nil), nil)
				checkGet(t, "empty value", st, "e", "", true)
			},
			want: with(abc, "e", "", "n", ""),
		},
		{
			name:     "writes in flight are read and deleted",
			seed:     abcSeed,
			inflight: []storageOp{opPut("d", "4"), opDel("a"), opPut("b", "two")},
			do: func(t *testing.T, st *objectStorage) {
				checkGet(t, "in-flight put", st, "d", "4", true)
				checkGet(t, "in-flight overwrite", st, "b", "two", true)
				checkGet(t, "in-flight delete", st, "a", "", false)
				checkDeleteMany(t, st, []string{"a", "b", "d"}, 2)
				checkErr(t, "Put", st.Put("a", []byte("back")), nil)
			},
			want: map[string]string{"a": "back", "c": "3"}, absent: []string{"b", "d"},
		},
		{
			name:     "DeleteAll in flight hides committed keys",
			seed:     abcSeed,
			inflight: []storageOp{opDeleteAll, opPut("x", "9")},
			do: func(t *testing.T, st *objectStorage) {
				checkGet(t, "hidden", st, "a", "", false)
				checkGet(t, "put after DeleteAll", st, "x", "9", true)
				checkDelete(t, st, "b", false)
				checkErr(t, "Put", st.Put("y", []byte("8")), nil)
			},
			want: map[string]string{"x": "9", "y": "8"}, absent: []string{"a", "b", "c"},
		},
		{
			name:     "DeleteAll pending hides in-flight writes",
			seed:     abcSeed,
			inflight: []storageOp{opPut("x", "9")},
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "DeleteAll", st.DeleteAll(), nil)
				checkGet(t, "in-flight put", st, "x", "", false)
				checkDelete(t, st, "x", false)
			},
			absent: []string{"a", "x"},
		},
	})
}

func bytesMap(m map[string][]byte) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func checkDelete(t *testing.T, rw durable.ReadWriter, key string, want bool) {
	t.Helper()
	existed, err := rw.Delete(key)
	if err != nil || existed != want {
		t.Errorf("Delete(%q) = %v, %v; want %v", key, existed, err, want)
	}
}

func checkDeleteMany(t *testing.T, rw durable.ReadWriter, keys []string, want int) {
	t.Helper()
	n, err := rw.DeleteMany(keys)
	if err != nil || n != want {
		t.Errorf("DeleteMany(%q) = %d, %v; want %d", keys, n, err, want)
	}
}

// TestStorageReturnsCopies: a value handed to storage or returned by it is
// the caller's; changing it does not change what is stored.
func TestStorageReturnsCopies(t *testing.T) {
	n := storageTestNode(t)
	seed := []storageOp{opPut("k", "abc"), opPut("l", "def")}
	kl := map[string]string{"k": "abc", "l": "def"}
	scribble := func(b []byte) {
		for i := range b {
			b[i] = 'X'
		}
	}
	listAndScribble := func(t *testing.T, rw durable.ReadWriter) {
		kvs, err := rw.List(durable.ListOptions{})
		if err != nil || len(kvs) == 0 {
			t.Fatalf("List = %v, %v", kvs, err)
		}
		for _, kv := range kvs {
			scribble(kv.Value)
		}
	}
	runStorageCases(t, n, []storageCase{
		{
			name: "value passed to Put",
			do: func(t *testing.T, st *objectStorage) {
				b := []byte("abc")
				checkErr(t, "Put", st.Put("k", b), nil)
				scribble(b)
				checkGet(t, "after changing the slice", st, "k", "abc", true)
			},
			want: map[string]string{"k": "abc"},
		},
		{
			name: "values passed to PutMany",
			do: func(t *testing.T, st *objectStorage) {
				m := map[string][]byte{"k": []byte("abc"), "l": []byte("def")}
				checkErr(t, "PutMany", st.PutMany(m), nil)
				scribble(m["k"])
				scribble(m["l"])
			},
			want: kl,
		},
		{
			name: "value Get returns for a pending write",
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("k", []byte("abc")), nil)
				v, _, _ := st.Get("k")
				scribble(v)
			},
			want: map[string]string{"k": "abc"},
		},
		{
			name:     "value Get returns for an in-flight write",
			inflight: []storageOp{opPut("k", "abc")},
			do: func(t *testing.T, st *objectStorage) {
				v, _, _ := st.Get("k")
				scribble(v)
			},
			want: map[string]string{"k": "abc"},
		},
		{
			name: "value Get returns for a committed key, read and then cached",
			seed: seed,
			do: func(t *testing.T, st *objectStorage) {
				for range 2 {
					v, _, _ := st.Get("k")
					scribble(v)
				}
			},
			want: kl,
		},
		{
			name: "values GetMany returns",
			seed: seed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("m", []byte("ghi")), nil)
				for range 2 {
					m, _ := st.GetMany([]string{"k", "l", "m"})
					for _, v := range m {
						scribble(v)
					}
				}
			},
			want: map[string]string{"k": "abc", "l": "def", "m": "ghi"},
		},
		{
			name: "values List returns of committed data",
			seed: seed,
			do:   func(t *testing.T, st *objectStorage) { listAndScribble(t, st) },
			want: kl,
		},
		{
			name: "values List returns through a pending write",
			seed: seed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("m", []byte("ghi")), nil)
				listAndScribble(t, st)
			},
			want: map[string]string{"k": "abc", "l": "def", "m": "ghi"},
		},
		{
			name:     "values List returns through an in-flight write",
			seed:     []storageOp{opPut("k", "abc")},
			inflight: []storageOp{opPut("l", "def")},
			do:       func(t *testing.T, st *objectStorage) { listAndScribble(t, st) },
			want:     kl,
		},
		{
			name: "values through a transaction",
			seed: []storageOp{opPut("k", "abc")},
			do: func(t *testing.T, st *objectStorage) {
				err := st.Transaction(func(tx durable.Txn) error {
					b := []byte("def")
					if err := tx.Put("l", b); err != nil {
						return err
					}
					scribble(b)
					m := map[string][]byte{"m": []byte("ghi")}
					if err := tx.PutMany(m); err != nil {
						return err
					}
					scribble(m["m"])
					for _, k := range []string{"k", "l"} {
						v, _, _ := tx.Get(k)
						scribble(v)
					}
					gm, _ := tx.GetMany([]string{"k", "l", "m"})
					for _, v := range gm {
						scribble(v)
					}
					listAndScribble(t, tx)
					return nil
				})
				checkErr(t, "Transaction", err, nil)
			},
			want: map[string]string{"k": "abc", "l": "def", "m": "ghi"},
		},
	})
}

// TestStorageList runs the same List queries over one logical data set laid
// out in different ways across the committed state, a commit in flight,
// the pending writes and a transaction. Decoy keys exist in older layers
// and are deleted in newer ones; each sorts right next to a data key, so a
// deletion that shortened a Limit page (or leaked through) would show.
func TestStorageList(t *testing.T) {
	n := storageTestNode(t)
	// In UTF-8 byte order; U+FF5E sorts before U+1F600 in UTF-8 but after it
	// in UTF-16 (JavaScript string) order.
	data := []string{"a", "a/1", "a/2", "a/3", "b", "b/1", "ba", "c", "z", "é", "\uff5e", "😀"}
	if !slices.IsSorted(data) {
		t.Fatal("data is not in byte order")
	}
	decoys := []string{"0", "a/0", "a/25", "b/0", "bb", "zz", "ê", "😁"}
	good := func(keys ...string) []storageOp {
		ops := make([]storageOp, len(keys))
		for i, k := range keys {
			ops[i] = opPut(k, "v:"+k)
		}
		return ops
	}
	stale := func(keys ...string) []storageOp {
		ops := make([]storageOp, len(keys))
		for i, k := range keys {
			ops[i] = opPut(k, "stale:"+k)
		}
		return ops
	}
	dels := func(keys ...string) []storageOp {
		ops := make([]storageOp, len(keys))
		for i, k := range keys {
			ops[i] = opDel(k)
		}
		return ops
	}
	cat := func(parts ...[]storageOp) []storageOp { return slices.Concat(parts...) }
	wipe := []storageOp{opDeleteAll}

	layouts := []struct {
		name                    string
		seed, inflight, pending []storageOp
		txn                     []storageOp // run in a Transaction, whose tx.List is checked too
	}{
		{name: "committed", seed: good(data...)},
		{name: "pending", pending: good(data...)},
		{name: "in flight", inflight: good(data...)},
		{name: "committed decoys deleted in pending", seed: cat(good(data...), good(decoys...)), pending: dels(decoys...)},
		{name: "committed decoys deleted in flight", seed: cat(good(data...), good(decoys...)), inflight: dels(decoys...)},
		{name: "in-flight decoys deleted in pending", seed: good(data[:6]...), inflight: cat(good(decoys...), good(data[6:]...)), pending: dels(decoys...)},
		{
			name:     "spread over every layer",
			seed:     cat(stale(data[:6]...), good(data[6:9]...), good(decoys...)),
			inflight: cat(good(data[:3]...), good(data[9:]...), dels(decoys[:4]...)),
			pending:  cat(good(data[3:6]...), dels(decoys[4:]...)),
		},
		{name: "DeleteAll pending, then puts", seed: cat(stale(data...), good(decoys...)), inflight: good("x", "a/5"), pending: cat(wipe, good(data...))},
		{
			name:     "DeleteAll in flight, then puts",
			seed:     cat(stale(data...), good(decoys...)),
			inflight: cat(wipe, good(data[:8]...), good(decoys[:3]...)),
			pending:  cat(good(data[8:]...), dels(decoys[:3]...)),
		},
		{name: "DeleteAll pending over in-flight puts", seed: good(decoys...), inflight: stale(data...), pending: cat(wipe, good(data...))},
		{
			name:     "transaction",
			seed:     cat(good(data[:6]...), good(decoys...)),
			inflight: good(data[6:9]...),
			txn:      cat(good(data[9:]...), dels(decoys...)),
		},
		{
			name:    "transaction over pending writes",
			seed:    cat(stale(data...), good(decoys...)),
			pending: cat(dels(decoys[:4]...), good(data[:6]...)),
			txn:     cat(good(data[6:]...), dels(decoys[4:]...)),
		},
	}

	rev := func(keys []string) []string { r := slices.Clone(keys); slices.Reverse(r); return r }
	type O = durable.ListOptions
	queries := []struct {
		opts durable.ListOptions
		want []string
		err  error
	}{
		{opts: O{}, want: data},
		{opts: O{Limit: 1}, want: []string{"a"}},
		{opts: O{Limit: 3}, want: []string{"a", "a/1", "a/2"}},
		{opts: O{Limit: len(data)}, want: data},
		{opts: O{Limit: 100}, want: data},
		{opts: O{Limit: math.MaxInt}, want: data},
		{opts: O{Limit: math.MaxInt - 1, Reverse: true}, want: rev(data)},
		{opts: O{Reverse: true}, want: rev(data)},
		{opts: O{Reverse: true, Limit: 1}, want: []string{"😀"}},
		{opts: O{Reverse: true, Limit: 3}, want: []string{"😀", "\uff5e", "é"}},
		{opts: O{Start: "b"}, want: data[4:]},
		{opts: O{Start: "a/2", End: "c"}, want: []string{"a/2", "a/3", "b", "b/1", "ba"}},
		{opts: O{StartAfter: "a/2", End: "c"}, want: []string{"a/3", "b", "b/1", "ba"}},
		{opts: O{StartAfter: "a/2", Limit: 2}, want: []string{"a/3", "b"}},
		{opts: O{StartAfter: "a/25", Limit: 1}, want: []string{"a/3"}},
		{opts: O{Start: "a/25", Limit: 1}, want: []string{"a/3"}},
		{opts: O{Start: "a/3", End: "b/1", Limit: 2}, want: []string{"a/3", "b"}},
		{opts: O{Start: "a/3", End: "b/1", Limit: 2, Reverse: true}, want: []string{"b", "a/3"}},
		{opts: O{End: "a/1"}, want: []string{"a"}},
		{opts: O{Prefix: "a/"}, want: []string{"a/1", "a/2", "a/3"}},
		{opts: O{Prefix: "a/", Limit: 2}, want: []string{"a/1", "a/2"}},
		{opts: O{Prefix: "a/", Reverse: true, Limit: 2}, want: []string{"a/3", "a/2"}},
		{opts: O{Prefix: "a/", End: "a/2"}, want: []string{"a/1"}},
		{opts: O{Prefix: "a", Start: "a/2"}, want: []string{"a/2", "a/3"}},
		{opts: O{Prefix: "a", End: "a/3"}, want: []string{"a", "a/1", "a/2"}},
		{opts: O{Prefix: "a", StartAfter: "a"}, want: []string{"a/1", "a/2", "a/3"}},
		{opts: O{Prefix: "b"}, want: []string{"b", "b/1", "ba"}},
		{opts: O{Prefix: "b", Reverse: true, Limit: 2}, want: []string{"ba", "b/1"}},
		{opts: O{Prefix: "z", Reverse: true, Limit: 1}, want: []string{"z"}},
		{opts: O{Start: "b", End: "z", Reverse: true}, want: []string{"c", "ba", "b/1", "b"}},
		{opts: O{Start: "b", End: "z", Reverse: true, Limit: 2}, want: []string{"c", "ba"}},
		{opts: O{Start: "c", End: "b"}, want: nil},
		{opts: O{Start: "b", End: "b"}, want: nil},
		{opts: O{Prefix: "nope"}, want: nil},
		{opts: O{Start: "é"}, want: []string{"é", "\uff5e", "😀"}},
		{opts: O{StartAfter: "z", Limit: 1}, want: []string{"é"}},
		{opts: O{Prefix: "é"}, want: []string{"é"}},
		{opts: O{StartAfter: "😀"}, want: nil},
		{opts: O{Start: "a", StartAfter: "a"}, err: durable.ErrInvalidOption},
		{opts: O{Start: "b", StartAfter: "a", Limit: 1}, err: durable.ErrInvalidOption},
		{opts: O{Limit: -1}, err: durable.ErrInvalidOption},
	}
	runQueries := func(t *testing.T, stage string, rw durable.ReadWriter) {
		t.Helper()
		for _, q := range queries {
			got, err := rw.List(q.opts)
			if q.err != nil {
				if !errors.Is(err, q.err) {
					t.Errorf("%s: List(%+v) = %s, %v; want an error wrapping %v", stage, q.opts, showKVs(got), err, q.err)
				}
				continue
			}
			want := make([]durable.KV, len(q.want))
			for i, k := range q.want {
				want[i] = durable.KV{Key: k, Value: []byte("v:" + k)}
			}
			if err != nil || showKVs(got) != showKVs(want) {
				t.Errorf("%s: List(%+v) = %s, %v;\n\twant %s", stage, q.opts, showKVs(got), err, showKVs(want))
			}
		}
	}

	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			obj := storageTestObject(t)
			seedStorage(t, n, obj, l.seed)
			held := &heldCommitter{to: storageTestShard(n, obj)}
			st := openTestStorage(t, n, obj, held)
			if len(l.inflight) > 0 {
				applyOps(t, st, l.inflight)
				if c := st.flush(); c == nil || c.isDone() {
					t.Fatal("the in-flight layer is not in flight")
				}
			}
			applyOps(t, st, l.pending)
			if l.txn != nil {
				err := st.Transaction(func(tx durable.Txn) error {
					applyOps(t, tx, l.txn)
					runQueries(t, "inside the transaction", tx)
					return nil
				})
				if err != nil {
					t.Fatalf("Transaction: %v", err)
				}
			}
			runQueries(t, "before commit", st)
			held.release()
			commitStorage(t, st)
			runQueries(t, "after commit", st)
			runQueries(t, "new storage over the committed state", openTestStorage(t, n, obj, nil))
		})
	}
}

func TestStorageTransaction(t *testing.T) {
	n := storageTestNode(t)
	abc := map[string]string{"a": "1", "b": "2", "c": "3"}
	errBoom := errors.New("boom")
	// writeSome writes through tx: x and y put, a deleted.
	writeSome := func(tx durable.Txn) error {
		if err := tx.Put("x", []byte("9")); err != nil {
			return err
		}
		if _, err := tx.Delete("a"); err != nil {
			return err
		}
		return tx.PutMany(map[string][]byte{"y": []byte("8")})
	}
	runStorageCases(t, n, []storageCase{
		{
			name: "commit applies every write",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Transaction", st.Transaction(writeSome), nil)
			},
			want: map[string]string{"b": "2", "c": "3", "x": "9", "y": "8"}, absent: []string{"a"},
		},
		{
			name: "its writes commit in one batch with the turn's",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("p", []byte("0")), nil)
				checkErr(t, "Transaction", st.Transaction(writeSome), nil)
				c := st.flush()
				want := []raftstore.Op{
					{Kind: raftstore.OpDelete, Key: "a"},
					{Kind: raftstore.OpPut, Key: "p", Value: []byte("0")},
					{Kind: raftstore.OpPut, Key: "x", Value: []byte("9")},
					{Kind: raftstore.OpPut, Key: "y", Value: []byte("8")},
				}
				if got := fmt.Sprint(c.batch.Ops); got != fmt.Sprint(want) {
					t.Errorf("the batch holds %s, want %s", got, fmt.Sprint(want))
				}
			},
			want: map[string]string{"b": "2", "c": "3", "p": "0", "x": "9", "y": "8"}, absent: []string{"a"},
		},
		{
			name: "an error from fn discards its writes and is returned",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				err := st.Transaction(func(tx durable.Txn) error {
					if err := writeSome(tx); err != nil {
						return err
					}
					return fmt.Errorf("wrapped: %w", errBoom)
				})
				checkErr(t, "Transaction", err, errBoom)
				checkGet(t, "after the failed transaction", st, "x", "", false)
				checkGet(t, "after the failed transaction", st, "a", "1", true)
			},
			want: abc, absent: []string{"x", "y"},
		},
		{
			name: "Rollback discards its writes",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				err := st.Transaction(func(tx durable.Txn) error {
					if err := writeSome(tx); err != nil {
						return err
					}
					tx.Rollback()
					return nil
				})
				checkErr(t, "Transaction", err, durable.ErrTransactionRolledBack)
			},
			want: abc, absent: []string{"x", "y"},
		},
		{
			name: "Rollback then an error returns the error",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				err := st.Transaction(func(tx durable.Txn) error {
					if err := writeSome(tx); err != nil {
						return err
					}
					tx.Rollback()
					return errBoom
				})
				checkErr(t, "Transaction", err, errBoom)
			},
			want: abc, absent: []string{"x", "y"},
		},
		{
			name: "a failed transaction leaves the turn's own writes",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("p", []byte("0")), nil)
				checkDelete(t, st, "b", true)
				checkErr(t, "Transaction", st.Transaction(func(tx durable.Txn) error {
					if err := tx.Put("p", []byte("changed")); err != nil {
						return err
					}
					if err := tx.Put("b", []byte("back")); err != nil {
						return err
					}
					return errBoom
				}), errBoom)
			},
			want: map[string]string{"a": "1", "c": "3", "p": "0"}, absent: []string{"b"},
		},
		{
			name:     "reads inside see its own writes over the object's",
			seed:     abcSeed,
			inflight: []storageOp{opPut("f", "in flight"), opDel("c")},
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("p", []byte("pending")), nil)
				err := st.Transaction(func(tx durable.Txn) error {
					checkGet(t, "committed", tx, "a", "1", true)
					checkGet(t, "in flight", tx, "f", "in flight", true)
					checkGet(t, "deleted in flight", tx, "c", "", false)
					checkGet(t, "pending", tx, "p", "pending", true)
					if err := writeSome(tx); err != nil {
						return err
					}
					checkGet(t, "own put", tx, "x", "9", true)
					checkGet(t, "own delete", tx, "a", "", false)
					m, err := tx.GetMany([]string{"a", "b", "x", "y", "zz"})
					if got := showMap(bytesMap(m)); err != nil || got != `["b"="2" "x"="9" "y"="8"]` {
						t.Errorf("tx.GetMany = %s, %v", got, err)
					}
					checkDelete(t, tx, "a", false)
					checkDelete(t, tx, "y", true)
					checkDeleteMany(t, tx, []string{"b", "x", "zz", "c", "f"}, 3)
					checkGet(t, "own delete of an in-flight put", tx, "f", "", false)
					return tx.Put("g", []byte("7"))
				})
				checkErr(t, "Transaction", err, nil)
			},
			want: map[string]string{"g": "7", "p": "pending"}, absent: []string{"a", "b", "c", "f", "x", "y"},
		},
		{
			name: "List inside sees its writes",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("b1", []byte("p")), nil)
				err := st.Transaction(func(tx durable.Txn) error {
					if err := tx.Put("b2", []byte("t")); err != nil {
						return err
					}
					if _, err := tx.Delete("c"); err != nil {
						return err
					}
					for _, q := range []struct {
						opts durable.ListOptions
						want string
					}{
						{durable.ListOptions{}, `["a"="1" "b"="2" "b1"="p" "b2"="t"]`},
						{durable.ListOptions{Reverse: true, Limit: 2}, `["b2"="t" "b1"="p"]`},
						{durable.ListOptions{Prefix: "b", StartAfter: "b"}, `["b1"="p" "b2"="t"]`},
						{durable.ListOptions{Start: "b2", Limit: 1}, `["b2"="t"]`},
						{durable.ListOptions{Start: "b3"}, `[]`},
					} {
						got, err := tx.List(q.opts)
						if err != nil || showKVs(got) != q.want {
							t.Errorf("tx.List(%+v) = %s, %v; want %s", q.opts, showKVs(got), err, q.want)
						}
					}
					_, err := tx.List(durable.ListOptions{Start: "a", StartAfter: "a"})
					checkErr(t, "tx.List with Start and StartAfter", err, durable.ErrInvalidOption)
					_, err = tx.List(durable.ListOptions{Limit: -2})
					checkErr(t, "tx.List with a negative Limit", err, durable.ErrInvalidOption)
					return nil
				})
				checkErr(t, "Transaction", err, nil)
			},
			want: map[string]string{"a": "1", "b": "2", "b1": "p", "b2": "t"}, absent: []string{"c"},
		},
		{
			name: "transactions do not nest",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				err := st.Transaction(func(tx durable.Txn) error {
					ran := false
					err := st.Transaction(func(durable.Txn) error { ran = true; return nil })
					if err == nil || ran {
						t.Errorf("nested Transaction = %v (fn ran: %v); want an error without running fn", err, ran)
					}
					checkErr(t, "nested Transaction", err, durable.ErrInvalidOption)
					return tx.Put("x", []byte("9"))
				})
				checkErr(t, "Transaction", err, nil)
				// The outer transaction is over: a new one runs.
				checkErr(t, "Transaction after", st.Transaction(func(tx durable.Txn) error {
					return tx.Put("y", []byte("8"))
				}), nil)
			},
			want: map[string]string{"a": "1", "b": "2", "c": "3", "x": "9", "y": "8"},
		},
		{
			name: "a panic in fn discards its writes and ends the transaction",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				func() {
					defer func() {
						if recover() == nil {
							t.Error("the panic did not propagate")
						}
					}()
					_ = st.Transaction(func(tx durable.Txn) error {
						if err := writeSome(tx); err != nil {
							return err
						}
						panic("boom")
					})
				}()
				checkErr(t, "Transaction after the panic", st.Transaction(func(tx durable.Txn) error {
					return tx.Put("z", []byte("7"))
				}), nil)
			},
			want: map[string]string{"a": "1", "b": "2", "c": "3", "z": "7"}, absent: []string{"x", "y"},
		},
		{
			name: "over a pending DeleteAll",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "DeleteAll", st.DeleteAll(), nil)
				checkErr(t, "Transaction", st.Transaction(func(tx durable.Txn) error {
					checkGet(t, "deleted by DeleteAll", tx, "a", "", false)
					checkDelete(t, tx, "b", false)
					return tx.Put("x", []byte("9"))
				}), nil)
			},
			want: map[string]string{"x": "9"}, absent: []string{"a", "b", "c"},
		},
	})
}

func TestStorageLimits(t *testing.T) {
	n := storageTestNode(t)
	lim := n.cfg.Limits
	abc := map[string]string{"a": "1", "b": "2", "c": "3"}
	maxKey := strings.Repeat("k", lim.MaxKeyBytes)
	bigKey := strings.Repeat("k", lim.MaxKeyBytes+1)
	value := func(n int) []byte { return bytes.Repeat([]byte{'v'}, n) }
	keys := func(count int) []string {
		out := make([]string, count)
		for i := range out {
			out[i] = fmt.Sprintf("n%04d", i)
		}
		return out
	}
	entries := func(count int) map[string][]byte {
		m := make(map[string][]byte, count)
		for _, k := range keys(count) {
			m[k] = []byte(k)
		}
		return m
	}
	with := func(m map[string]string, kv map[string][]byte) map[string]string {
		out := maps.Clone(m)
		for k, v := range kv {
			out[k] = string(v)
		}
		return out
	}
	runStorageCases(t, n, []storageCase{
		{
			name: "a key of MaxKeyBytes",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put(maxKey, []byte("v")), nil)
				checkGet(t, "the longest key", st, maxKey, "v", true)
				if _, err := st.GetMany([]string{maxKey}); err != nil {
					t.Errorf("GetMany: %v", err)
				}
				checkDeleteMany(t, st, []string{maxKey}, 1)
				checkErr(t, "PutMany", st.PutMany(map[string][]byte{maxKey: []byte("w")}), nil)
			},
			want: with(abc, map[string][]byte{maxKey: []byte("w")}),
		},
		{
			name: "a key one byte over MaxKeyBytes changes nothing",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put(bigKey, []byte("v")), durable.ErrKeyTooLarge)
				checkErr(t, "PutMany", st.PutMany(map[string][]byte{"a": []byte("changed"), bigKey: []byte("v")}), durable.ErrKeyTooLarge)
				_, _, err := st.Get(bigKey)
				checkErr(t, "Get", err, durable.ErrKeyTooLarge)
				_, err = st.GetMany([]string{"a", bigKey})
				checkErr(t, "GetMany", err, durable.ErrKeyTooLarge)
				_, err = st.Delete(bigKey)
				checkErr(t, "Delete", err, durable.ErrKeyTooLarge)
				_, err = st.DeleteMany([]string{"a", "b", bigKey})
				checkErr(t, "DeleteMany", err, durable.ErrKeyTooLarge)
			},
			want: abc, absent: []string{maxKey},
		},
		{
			name: "the empty key is refused for writes and changes nothing",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("", []byte("v")), durable.ErrEmptyKey)
				checkErr(t, "PutMany", st.PutMany(map[string][]byte{"a": []byte("changed"), "": []byte("v")}), durable.ErrEmptyKey)
				checkErr(t, "Transaction", st.Transaction(func(tx durable.Txn) error {
					checkErr(t, "Txn.Put", tx.Put("", []byte("v")), durable.ErrEmptyKey)
					return tx.Put("a", []byte("txn"))
				}), nil)
				checkGet(t, "the empty key", st, "", "", false)
				if _, err := st.Delete(""); err != nil {
					t.Errorf("Delete(\"\"): %v", err)
				}
			},
			want: with(abc, map[string][]byte{"a": []byte("txn")}),
		},
		{
			name: "key and value of MaxEntryBytes",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("e", value(lim.MaxEntryBytes-1)), nil)
				checkErr(t, "PutMany", st.PutMany(map[string][]byte{maxKey: value(lim.MaxEntryBytes - lim.MaxKeyBytes)}), nil)
			},
			want: with(abc, map[string][]byte{"e": value(lim.MaxEntryBytes - 1), maxKey: value(lim.MaxEntryBytes - lim.MaxKeyBytes)}),
		},
		{
			name: "key and value one byte over MaxEntryBytes change nothing",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Put", st.Put("e", value(lim.MaxEntryBytes)), durable.ErrValueTooLarge)
				checkErr(t, "Put", st.Put(maxKey, value(lim.MaxEntryBytes-lim.MaxKeyBytes+1)), durable.ErrValueTooLarge)
				checkErr(t, "PutMany", st.PutMany(map[string][]byte{"a": []byte("changed"), "e": value(lim.MaxEntryBytes)}), durable.ErrValueTooLarge)
			},
			want: abc, absent: []string{"e", maxKey},
		},
		{
			name: "MaxBatchKeys keys in one call",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "PutMany", st.PutMany(entries(lim.MaxBatchKeys)), nil)
				m, err := st.GetMany(keys(lim.MaxBatchKeys))
				if err != nil || len(m) != lim.MaxBatchKeys {
					t.Errorf("GetMany of %d keys: %d values, %v", lim.MaxBatchKeys, len(m), err)
				}
				checkDeleteMany(t, st, append(keys(lim.MaxBatchKeys - 1)[1:], "a", "zz"), lim.MaxBatchKeys-1)
			},
			want: map[string]string{"b": "2", "c": "3", "n0000": "n0000", keys(lim.MaxBatchKeys)[lim.MaxBatchKeys-1]: keys(lim.MaxBatchKeys)[lim.MaxBatchKeys-1]},
		},
		{
			name: "MaxBatchKeys+1 keys in one call change nothing",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "PutMany", st.PutMany(entries(lim.MaxBatchKeys+1)), durable.ErrTooManyKeys)
				_, err := st.GetMany(keys(lim.MaxBatchKeys + 1))
				checkErr(t, "GetMany", err, durable.ErrTooManyKeys)
				_, err = st.DeleteMany(append(keys(lim.MaxBatchKeys-1), "a", "b"))
				checkErr(t, "DeleteMany", err, durable.ErrTooManyKeys)
			},
			want: abc, absent: keys(3),
		},
		{
			name: "limits inside a transaction",
			seed: abcSeed,
			do: func(t *testing.T, st *objectStorage) {
				err := st.Transaction(func(tx durable.Txn) error {
					checkErr(t, "tx.Put", tx.Put(bigKey, nil), durable.ErrKeyTooLarge)
					checkErr(t, "tx.Put", tx.Put("e", value(lim.MaxEntryBytes)), durable.ErrValueTooLarge)
					checkErr(t, "tx.PutMany", tx.PutMany(entries(lim.MaxBatchKeys+1)), durable.ErrTooManyKeys)
					_, _, err := tx.Get(bigKey)
					checkErr(t, "tx.Get", err, durable.ErrKeyTooLarge)
					_, err = tx.GetMany(keys(lim.MaxBatchKeys + 1))
					checkErr(t, "tx.GetMany", err, durable.ErrTooManyKeys)
					_, err = tx.DeleteMany([]string{"a", bigKey})
					checkErr(t, "tx.DeleteMany", err, durable.ErrKeyTooLarge)
					_, err = tx.Delete(bigKey)
					checkErr(t, "tx.Delete", err, durable.ErrKeyTooLarge)
					return tx.Put(maxKey, value(lim.MaxEntryBytes-lim.MaxKeyBytes))
				})
				checkErr(t, "Transaction", err, nil)
			},
			want: with(abc, map[string][]byte{maxKey: value(lim.MaxEntryBytes - lim.MaxKeyBytes)}), absent: []string{"e", "n0000"},
		},
	})
}

func TestStorageAlarm(t *testing.T) {
	n := storageTestNode(t)
	t1 := time.Unix(1_700_000_000, 123_456_789) // sub-millisecond part is dropped
	t1ms := time.UnixMilli(t1.UnixMilli())
	t2 := time.UnixMilli(1_800_000_000_007)
	runStorageCases(t, n, []storageCase{
		{
			name: "set and get, to the millisecond",
			do: func(t *testing.T, st *objectStorage) {
				checkAlarm(t, "before", st, time.Time{})
				checkErr(t, "SetAlarm", st.SetAlarm(t1), nil)
				checkAlarm(t, "after SetAlarm", st, t1ms)
			},
			checkAlarm: true, wantAlarm: t1ms,
		},
		{
			name:       "a committed alarm is read",
			seed:       []storageOp{opSetAlarm(t1)},
			checkAlarm: true, wantAlarm: t1ms,
		},
		{
			name: "SetAlarm moves the alarm",
			seed: []storageOp{opSetAlarm(t1)},
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "SetAlarm", st.SetAlarm(t2), nil)
			},
			checkAlarm: true, wantAlarm: t2,
		},
		{
			name: "DeleteAlarm",
			seed: []storageOp{opSetAlarm(t1), opPut("a", "1")},
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "DeleteAlarm", st.DeleteAlarm(), nil)
				checkAlarm(t, "after DeleteAlarm", st, time.Time{})
			},
			want: map[string]string{"a": "1"}, checkAlarm: true,
		},
		{
			name: "DeleteAlarm without an alarm",
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "DeleteAlarm", st.DeleteAlarm(), nil)
			},
			checkAlarm: true,
		},
		{
			name: "DeleteAll clears the alarm",
			seed: []storageOp{opSetAlarm(t1), opPut("a", "1")},
			do: func(t *testing.T, st *objectStorage) {
				checkAlarm(t, "before DeleteAll", st, t1ms)
				checkErr(t, "DeleteAll", st.DeleteAll(), nil)
				checkAlarm(t, "after DeleteAll", st, time.Time{})
			},
			absent: []string{"a"}, checkAlarm: true,
		},
		{
			name:     "DeleteAll clears an in-flight alarm",
			inflight: []storageOp{opSetAlarm(t1)},
			do: func(t *testing.T, st *objectStorage) {
				checkAlarm(t, "in flight", st, t1ms)
				checkErr(t, "DeleteAll", st.DeleteAll(), nil)
			},
			checkAlarm: true,
		},
		{
			name:       "DeleteAll in flight cleared the committed alarm",
			seed:       []storageOp{opSetAlarm(t1)},
			inflight:   []storageOp{opDeleteAll},
			checkAlarm: true,
		},
		{
			name: "SetAlarm after DeleteAll",
			seed: []storageOp{opSetAlarm(t1), opPut("a", "1")},
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "DeleteAll", st.DeleteAll(), nil)
				checkErr(t, "SetAlarm", st.SetAlarm(t2), nil)
			},
			absent: []string{"a"}, checkAlarm: true, wantAlarm: t2,
		},
		{
			name:     "in-flight changes are read",
			seed:     []storageOp{opSetAlarm(t1)},
			inflight: []storageOp{opDeleteAlarm},
			do: func(t *testing.T, st *objectStorage) {
				checkAlarm(t, "deleted in flight", st, time.Time{})
				checkErr(t, "SetAlarm", st.SetAlarm(t2), nil)
			},
			checkAlarm: true, wantAlarm: t2,
		},
		{
			name: "a zero time is rejected and changes nothing",
			seed: []storageOp{opSetAlarm(t1)},
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "SetAlarm(zero)", st.SetAlarm(time.Time{}), durable.ErrInvalidOption)
			},
			checkAlarm: true, wantAlarm: t1ms,
		},
		{
			name: "a transaction's SetAlarm applies with it and is seen inside it",
			seed: []storageOp{opSetAlarm(t1)},
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Transaction", st.Transaction(func(tx durable.Txn) error {
					checkAlarm(t, "before", tx, t1ms)
					checkErr(t, "tx.SetAlarm", tx.SetAlarm(t2), nil)
					checkAlarm(t, "after tx.SetAlarm", tx, t2)
					checkAlarm(t, "outside, before the transaction ends", st, t1ms)
					return nil
				}), nil)
				checkAlarm(t, "after the transaction", st, t2)
			},
			checkAlarm: true, wantAlarm: t2,
		},
		{
			name: "a transaction's DeleteAlarm alone is a write",
			seed: []storageOp{opSetAlarm(t1)},
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Transaction", st.Transaction(func(tx durable.Txn) error {
					checkErr(t, "tx.DeleteAlarm", tx.DeleteAlarm(), nil)
					checkAlarm(t, "after tx.DeleteAlarm", tx, time.Time{})
					return nil
				}), nil)
			},
			checkAlarm: true,
		},
		{
			name: "a failed transaction's alarm write is discarded",
			seed: []storageOp{opSetAlarm(t1)},
			do: func(t *testing.T, st *objectStorage) {
				failed := errors.New("changed my mind")
				checkErr(t, "Transaction", st.Transaction(func(tx durable.Txn) error {
					checkErr(t, "tx.SetAlarm", tx.SetAlarm(t2), nil)
					return failed
				}), failed)
				checkErr(t, "Transaction", st.Transaction(func(tx durable.Txn) error {
					checkErr(t, "tx.DeleteAlarm", tx.DeleteAlarm(), nil)
					tx.Rollback()
					return nil
				}), durable.ErrTransactionRolledBack)
			},
			checkAlarm: true, wantAlarm: t1ms,
		},
		{
			name: "a transaction's zero time is rejected and changes nothing",
			seed: []storageOp{opSetAlarm(t1)},
			do: func(t *testing.T, st *objectStorage) {
				checkErr(t, "Transaction", st.Transaction(func(tx durable.Txn) error {
					checkErr(t, "tx.SetAlarm(zero)", tx.SetAlarm(time.Time{}), durable.ErrInvalidOption)
					checkAlarm(t, "after the refused SetAlarm", tx, t1ms)
					return nil
				}), nil)
			},
			checkAlarm: true, wantAlarm: t1ms,
		},
	})
}

// TestStorageCommittedState: what a storage commits is in Pebble (through
// the shard's Raft group), a new storage of the object reads it, and a new
// storage's own writes continue the object's version sequence.
func TestStorageCommittedState(t *testing.T) {
	n := storageTestNode(t)
	obj := storageTestObject(t)
	sh := storageTestShard(n, obj)
	st := openTestStorage(t, n, obj, nil)
	want := map[string]string{}
	for i := range 50 {
		k := fmt.Sprintf("key%02d", i)
		want[k] = fmt.Sprintf("value %d", i)
		checkErr(t, "Put", st.Put(k, []byte(want[k])), nil)
	}
	at := time.UnixMilli(1_750_000_000_000)
	checkErr(t, "SetAlarm", st.SetAlarm(at), nil)
	c := st.flush()
	if c == nil {
		t.Fatal("flush made no commit")
	}
	version := c.batch.Version // the proposer drops the batch once encoded
	commitStorage(t, st)
	if c.err != nil || !c.isDone() {
		t.Fatalf("commit: done %v, err %v", c.isDone(), c.err)
	}

	// Straight from Pebble.
	for k, v := range want {
		b, ok, err := n.store.Get(sh.id, obj, k)
		if err != nil || !ok || string(b) != v {
			t.Errorf("store.Get(%q) = %q, %v, %v; want %q", k, b, ok, err, v)
		}
	}
	if v, err := n.store.ObjectVersion(sh.id, obj); err != nil || v != version || v == 0 {
		t.Errorf("stored version %d, %v; want the commit's %d", v, err, version)
	}
	if ms, ok, err := n.store.Alarm(sh.id, obj); err != nil || !ok || ms != at.UnixMilli() {
		t.Errorf("stored alarm %d, %v, %v; want %d", ms, ok, err, at.UnixMilli())
	}

	// A new storage reads it and writes on top of it.
	st2 := openTestStorage(t, n, obj, nil)
	expectState(t, "new storage", st2, want, []string{"key50"})
	checkAlarm(t, "new storage", st2, at)
	checkDelete(t, st2, "key00", true)
	checkErr(t, "Put", st2.Put("key50", []byte("value 50")), nil)
	version2 := st2.flush().batch.Version
	commitStorage(t, st2)
	if version2 != version+1 {
		t.Errorf("the new storage's batch has version %d, want %d", version2, version+1)
	}
	delete(want, "key00")
	want["key50"] = "value 50"
	expectState(t, "third storage", openTestStorage(t, n, obj, nil), want, []string{"key00"})

	// Another object of the same shard is untouched.
	var other [32]byte
	for i := 0; ; i++ {
		other = sha256.Sum256(fmt.Appendf(nil, "%s other %d", t.Name(), i))
		if shardOf(other, len(n.shards)) == shardOf(obj, len(n.shards)) {
			break
		}
	}
	expectState(t, "another object", openTestStorage(t, n, other, nil), nil, []string{"key01"})
}

// TestStorageFlushAfterShardStopped: a turn that ends after its node
// stopped the shards (Close with a drain that timed out, or a turn still
// running) must get a failed commit, not hang.
func TestStorageFlushAfterShardStopped(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	st := openTestStorage(t, n, storageTestObject(t), nil)
	closeNode(t, n)
	checkErr(t, "Put", st.Put("k", []byte("v")), nil)
	done := make(chan error, 1)
	go func() {
		c := st.flush()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- c.wait(ctx)
	}()
	select {
	case err := <-done:
		checkErr(t, "commit after the shard stopped", err, durable.ErrCommitFailed)
	case <-time.After(5 * time.Second):
		t.Fatal("flush after the shard stopped hangs: shard.submit finishes the commit at once, " +
			"and its onDone (objectStorage.committed) locks objectStorage.mu, which flush holds")
	}
}

// TestStorageTurnSize: the writes of a turn since its last commit must fit
// in one Raft entry (raftstore.MaxBatchBytes). A write that would go over
// is refused with ErrTurnTooLarge and changes nothing; Sync commits what is
// pending, and the writes go on.
func TestStorageTurnSize(t *testing.T) {
	n := storageTestNode(t)
	lim := n.cfg.Limits
	value := func(b byte) []byte { return bytes.Repeat([]byte{b}, lim.MaxEntryBytes-10) }
	ctx := context.Background()

	st := openTestStorage(t, n, storageTestObject(t), nil)
	// Overwriting one key does not add up.
	for range 20 {
		checkErr(t, "Put over the same key", st.Put("same", value('s')), nil)
	}
	fitted := 0
	var err error
	for ; err == nil && fitted < 20; fitted++ {
		err = st.Put(fmt.Sprintf("p%02d", fitted), value(byte('a'+fitted)))
	}
	fitted-- // the last Put failed
	checkErr(t, "the Put over the limit", err, durable.ErrTurnTooLarge)
	if want := raftstore.MaxBatchBytes / lim.MaxEntryBytes; fitted < want-2 {
		t.Fatalf("%d puts of %d bytes fitted in a turn; want about %d", fitted, lim.MaxEntryBytes, want)
	}
	refused := fmt.Sprintf("p%02d", fitted)
	checkGet(t, "the refused key", st, refused, "", false)
	big := map[string][]byte{}
	for i := range 3 {
		big[fmt.Sprintf("m%d", i)] = value('m')
	}
	checkErr(t, "PutMany over the limit", st.PutMany(big), durable.ErrTurnTooLarge)
	checkGet(t, "a key of the refused PutMany", st, "m0", "", false)
	checkErr(t, "Transaction over the limit", st.Transaction(func(tx durable.Txn) error {
		return tx.PutMany(big)
	}), durable.ErrTurnTooLarge)
	checkGet(t, "a key of the refused transaction", st, "m1", "", false)

	if err := st.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	checkErr(t, "the refused Put after Sync", st.Put(refused, value('z')), nil)
	commitStorage(t, st)
	fresh := openTestStorage(t, n, storageTestObject(t), nil)
	for i := range fitted {
		if v, ok, err := fresh.Get(fmt.Sprintf("p%02d", i)); err != nil || !ok || !bytes.Equal(v, value(byte('a'+i))) {
			t.Fatalf("p%02d after commit: %d bytes, %v, %v", i, len(v), ok, err)
		}
	}
	if v, ok, err := fresh.Get(refused); err != nil || !ok || v[0] != 'z' {
		t.Fatalf("%s after commit: %v, %v", refused, ok, err)
	}
}

// TestTakeEntry: the proposer puts the queued commits into entries of at
// most raftstore.MaxEntryBytes, oldest first, a commit larger than half
// alone.
func TestTakeEntry(t *testing.T) {
	commitOf := func(valueBytes int) *commit {
		return newCommit(raftstore.ObjectBatch{Version: 1, Ops: []raftstore.Op{{Kind: raftstore.OpPut, Key: "k", Value: make([]byte, valueBytes)}}}, nil, nil)
	}
	const over, under = raftstore.MaxEntryBytes * 9 / 16, raftstore.MaxEntryBytes * 3 / 8 // two of these fit, not of those
	for _, tc := range []struct {
		sizes []int // value bytes of each queued commit
		want  []int // commits in each entry taken
	}{
		{[]int{10}, []int{1}},
		{[]int{10, 10, 10}, []int{3}},
		{[]int{over, over, over}, []int{1, 1, 1}},
		{[]int{under, under, under, 1}, []int{2, 2}},
		{[]int{raftstore.MaxEntryBytes - 100, 100}, []int{1, 1}},
	} {
		s := &shard{}
		for _, size := range tc.sizes {
			s.queue = append(s.queue, commitOf(size))
		}
		var got []int
		for len(s.queue) > 0 {
			commits := s.takeEntry()
			got = append(got, len(commits))
			size := 0
			for _, c := range commits {
				size += c.batch.EncodedLen()
			}
			if n := raftstore.EntryLen(len(commits), size); len(commits) > 1 && n > raftstore.MaxEntryBytes {
				t.Errorf("sizes %v: an entry of %d bytes", tc.sizes, n)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("sizes %v: entries of %v commits, want %v", tc.sizes, got, tc.want)
		}
	}
}

// TestStorageCacheBytes: the cache of committed values starts over before
// it holds more than maxCachedBytes, however large the values read.
func TestStorageCacheBytes(t *testing.T) {
	n := storageTestNode(t)
	obj := storageTestObject(t)
	value := bytes.Repeat([]byte{'v'}, 2<<20-16)
	st := openTestStorage(t, n, obj, nil)
	for i := range 12 {
		checkErr(t, "Put", st.Put(fmt.Sprintf("k%02d", i), value), nil)
		if i%2 == 1 {
			commitStorage(t, st) // two values a commit: within one entry
		}
	}
	fresh := openTestStorage(t, n, obj, nil)
	for i := range 12 {
		if v, ok, err := fresh.Get(fmt.Sprintf("k%02d", i)); err != nil || !ok || len(v) != len(value) {
			t.Fatalf("k%02d: %d bytes, %v, %v", i, len(v), ok, err)
		}
		fresh.mu.Lock()
		held := 0
		for _, v := range fresh.cache {
			held += len(v.value)
		}
		if held != fresh.cacheBytes || held > maxCachedBytes || held == 0 {
			fresh.mu.Unlock()
			t.Fatalf("after %d reads the cache holds %d bytes (counted %d), bound %d", i+1, held, fresh.cacheBytes, maxCachedBytes)
		}
		fresh.mu.Unlock()
	}
}

// TestStorageSetAlarmOutOfRange: an alarm time that Unix milliseconds
// cannot hold is refused (ErrInvalidOption) and records nothing, rather
// than stored as another time (a far-future alarm wrapping round into one
// due at once).
func TestStorageSetAlarmOutOfRange(t *testing.T) {
	n := storageTestNode(t)
	obj := storageTestObject(t)
	st := openTestStorage(t, n, obj, nil)
	for _, at := range []time.Time{
		time.Date(300_000_000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Unix(1<<62, 0),
		time.Date(-300_000_000, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		err := st.SetAlarm(at)
		if got, ok, _ := st.GetAlarm(); ok && !got.Equal(at) {
			t.Errorf("SetAlarm(%v) = %v; GetAlarm = %v: the alarm was stored as another time", at, err, got.UTC())
		}
		if !errors.Is(err, durable.ErrInvalidOption) {
			t.Errorf("SetAlarm(%v) = %v, want ErrInvalidOption", at, err)
		}
	}
	commitStorage(t, st)
	checkAlarm(t, "after commit", openTestStorage(t, n, obj, nil), time.Time{})
}

// TestStorageTurnSizeRepeatedDeletes: a key repeated in one DeleteMany is
// one delete, in the turn's size as in the batch: a DeleteMany that names
// a key twice fits wherever deleting it once does.
func TestStorageTurnSizeRepeatedDeletes(t *testing.T) {
	n := storageTestNode(t)
	st := openTestStorage(t, n, storageTestObject(t), nil)
	lim := n.cfg.Limits
	key := strings.Repeat("d", lim.MaxKeyBytes)
	del := keyOpLen(key, cachedValue{})
	value := func(size int) []byte { return bytes.Repeat([]byte{'v'}, size) }
	for i := 0; ; i++ {
		k := fmt.Sprint("big", i)
		if err := st.Put(k, value(lim.MaxEntryBytes-len(k))); err != nil {
			checkErr(t, "Put", err, durable.ErrTurnTooLarge)
			break
		}
	}
	// Fill the turn until room is left for one delete of key but not two.
	room := raftstore.MaxBatchBytes - batchOverhead - st.pending.keyBytes
	size := room - del - del/2
	for size > 0 && keyOpLen("fill", cachedValue{value: value(size), exists: true}) > room-del-del/2 {
		size--
	}
	checkErr(t, "Put of the filler", st.Put("fill", value(size)), nil)
	if got, err := st.DeleteMany([]string{key, key}); err != nil || got != 0 {
		t.Fatalf("DeleteMany of a key twice = %d, %v; want 0, nil", got, err)
	}
	checkErr(t, "Put of a key as large again", st.Put(strings.Repeat("e", lim.MaxKeyBytes), nil), durable.ErrTurnTooLarge)
	commitStorage(t, st)
}

// failingReader is a committedReader whose Get of one key fails.
type failingReader struct {
	committedReader
	key string
}

func (r failingReader) Get(g raftstore.GroupID, obj [32]byte, key string) ([]byte, bool, error) {
	if key == r.key {
		return nil, false, errors.New("read failed")
	}
	return r.committedReader.Get(g, obj, key)
}

// TestStorageTxnDeleteManyReadError: a transaction's DeleteMany that fails
// reading one of its keys deletes none of them, as the object's does.
func TestStorageTxnDeleteManyReadError(t *testing.T) {
	n := storageTestNode(t)
	obj := storageTestObject(t)
	seedStorage(t, n, obj, abcSeed)
	st := openTestStorage(t, n, obj, nil)
	st.reader = failingReader{committedReader: st.reader, key: "bad"}
	if got, err := st.DeleteMany([]string{"a", "bad"}); err == nil {
		t.Fatalf("DeleteMany with a failing read = %d, nil; want an error", got)
	}
	checkGet(t, "after the object's failed DeleteMany", st, "a", "1", true)
	err := st.Transaction(func(tx durable.Txn) error {
		if got, err := tx.DeleteMany([]string{"b", "bad"}); err == nil {
			t.Errorf("the transaction's DeleteMany with a failing read = %d, nil; want an error", got)
		}
		checkGet(t, "in the transaction after its failed DeleteMany", tx, "b", "2", true)
		return nil
	})
	checkErr(t, "Transaction", err, nil)
	checkGet(t, "after the transaction", st, "b", "2", true)
}

// TestStorageTxnAfterRollback: after tx.Rollback, and after Transaction has
// returned, tx neither shows nor takes writes that will never commit: its
// calls fail, as Cloudflare's ("Cannot get on rolled back transaction",
// "... on transaction that has already committed").
func TestStorageTxnAfterRollback(t *testing.T) {
	n := storageTestNode(t)
	obj := storageTestObject(t)
	seedStorage(t, n, obj, abcSeed)
	st := openTestStorage(t, n, obj, nil)
	calls := func(t *testing.T, stage string, tx durable.Txn, target error) {
		t.Helper()
		if v, ok, err := tx.Get("x"); !errors.Is(err, target) {
			t.Errorf("%s: Get = %q, %v, %v; want an error wrapping %v", stage, v, ok, err, target)
		}
		if m, err := tx.GetMany([]string{"x", "a"}); !errors.Is(err, target) {
			t.Errorf("%s: GetMany = %s, %v; want an error wrapping %v", stage, showMap(bytesMap(m)), err, target)
		}
		if kvs, err := tx.List(durable.ListOptions{}); !errors.Is(err, target) {
			t.Errorf("%s: List = %s, %v; want an error wrapping %v", stage, showKVs(kvs), err, target)
		}
		checkErr(t, stage+": Put", tx.Put("y", []byte("1")), target)
		checkErr(t, stage+": PutMany", tx.PutMany(map[string][]byte{"y": []byte("1")}), target)
		if _, err := tx.Delete("b"); !errors.Is(err, target) {
			t.Errorf("%s: Delete: %v; want an error wrapping %v", stage, err, target)
		}
		if _, err := tx.DeleteMany([]string{"b"}); !errors.Is(err, target) {
			t.Errorf("%s: DeleteMany: %v; want an error wrapping %v", stage, err, target)
		}
		if at, ok, err := tx.GetAlarm(); !errors.Is(err, target) {
			t.Errorf("%s: GetAlarm = %v, %v, %v; want an error wrapping %v", stage, at, ok, err, target)
		}
		checkErr(t, stage+": SetAlarm", tx.SetAlarm(time.Unix(1_700_000_000, 0)), target)
		checkErr(t, stage+": DeleteAlarm", tx.DeleteAlarm(), target)
	}
	var kept durable.Txn
	err := st.Transaction(func(tx durable.Txn) error {
		checkErr(t, "Put", tx.Put("x", []byte("9")), nil)
		tx.Rollback()
		tx.Rollback() // again: no effect
		calls(t, "after Rollback", tx, durable.ErrTransactionRolledBack)
		return nil
	})
	checkErr(t, "Transaction", err, durable.ErrTransactionRolledBack)
	checkErr(t, "Transaction", st.Transaction(func(tx durable.Txn) error {
		kept = tx
		return nil
	}), nil)
	calls(t, "after Transaction returned", kept, durable.ErrInvalidOption)
	kept.Rollback() // no effect
	commitStorage(t, st)
	expectState(t, "after commit", openTestStorage(t, n, obj, nil), map[string]string{"a": "1", "b": "2", "c": "3"}, []string{"x", "y"})
}

// Calls that write nothing (a read-only transaction, PutMany and
// DeleteMany of no keys) leave nothing to commit: an empty batch would
// cost a Raft entry, and the turn would not count as read-only.
func TestStorageNoWriteCommitsNothing(t *testing.T) {
	n := storageTestNode(t)
	obj := storageTestObject(t)
	seedStorage(t, n, obj, []storageOp{opPut("a", "1")})
	var st *objectStorage
	calls := []struct {
		name string
		call func() error
	}{
		{"read-only transaction", func() error {
			return st.Transaction(func(tx durable.Txn) error {
				_, _, err := tx.Get("a")
				return err
			})
		}},
		{"PutMany of no keys", func() error { return st.PutMany(map[string][]byte{}) }},
		{"DeleteMany of no keys", func() error { _, err := st.DeleteMany(nil); return err }},
	}
	for _, c := range calls {
		st = openTestStorage(t, n, obj, nil) // one with no commit of its own yet
		if err := c.call(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if last := st.flush(); last != nil {
			t.Errorf("%s left a commit to make", c.name)
			commitStorage(t, st)
		}
	}
}

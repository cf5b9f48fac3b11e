package raftstore

import (
	"errors"
	"math/rand"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/roostdb/roost/durable"
)

// listKeys are the keys of the object under test: prefixes of one another,
// multi-byte UTF-8 (which sorts after ASCII by bytes), and bytes at the
// edges of the range.
var listKeys = []string{"a", "ab", "abc", "abd", "b", "bb", "c", "d", "z", "é", "éa", "日本", "日本語", "\x00", "\xff\xff"}

// refList is the specification: filter, order by bytes, reverse, limit.
func refList(keys []string, o durable.ListOptions) []string {
	sorted := append([]string(nil), keys...)
	sort.Strings(sorted) // Go compares strings bytewise
	var out []string
	for _, k := range sorted {
		switch {
		case o.Start != "" && k < o.Start,
			o.StartAfter != "" && k <= o.StartAfter,
			o.End != "" && k >= o.End,
			!strings.HasPrefix(k, o.Prefix):
			continue
		}
		out = append(out, k)
	}
	if o.Reverse {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	if o.Limit > 0 && len(out) > o.Limit {
		out = out[:o.Limit]
	}
	return out
}

func setupList(t *testing.T) (*Store, GroupID, [32]byte) {
	t.Helper()
	s := openTest(t)
	const g = 2
	obj := oid(10)
	var ops []Op
	for _, k := range listKeys {
		ops = append(ops, put(k, "v:"+k))
	}
	// Neighbours that must never show up: the same keys in the adjacent
	// objects and in another group.
	prev, next := obj, obj
	prev[31]--
	next[31]++
	e := Entry{Batches: []ObjectBatch{batch(obj, 1, ops...), batch(prev, 1, ops...), batch(next, 1, ops...)}}
	if r := s.NewShardFSM(g).Apply(cmdLog(t, 1, e)); !reflect.DeepEqual(r, ApplyResult{}) {
		t.Fatalf("Apply = %v", r)
	}
	if r := s.NewShardFSM(g + 1).Apply(cmdLog(t, 1, Entry{Batches: []ObjectBatch{batch(obj, 1, put("other-group", "x"))}})); !reflect.DeepEqual(r, ApplyResult{}) {
		t.Fatalf("Apply = %v", r)
	}
	return s, g, obj
}

func listNames(t *testing.T, s *Store, g GroupID, obj [32]byte, o durable.ListOptions) []string {
	t.Helper()
	kvs, err := s.List(g, obj, o)
	if err != nil {
		t.Fatalf("List(%+v): %v", o, err)
	}
	var names []string
	for _, kv := range kvs {
		if string(kv.Value) != "v:"+kv.Key {
			t.Fatalf("List(%+v): key %q has value %q", o, kv.Key, kv.Value)
		}
		names = append(names, kv.Key)
	}
	return names
}

func TestListSemantics(t *testing.T) {
	s, g, obj := setupList(t)
	cases := []struct {
		o    durable.ListOptions
		want []string
	}{
		{durable.ListOptions{}, []string{"\x00", "a", "ab", "abc", "abd", "b", "bb", "c", "d", "z", "é", "éa", "日本", "日本語", "\xff\xff"}},
		{durable.ListOptions{Start: "b"}, []string{"b", "bb", "c", "d", "z", "é", "éa", "日本", "日本語", "\xff\xff"}},
		{durable.ListOptions{StartAfter: "b"}, []string{"bb", "c", "d", "z", "é", "éa", "日本", "日本語", "\xff\xff"}},
		{durable.ListOptions{StartAfter: "ab", End: "b"}, []string{"abc", "abd"}},
		{durable.ListOptions{Start: "ab", End: "abd"}, []string{"ab", "abc"}},
		{durable.ListOptions{End: "a"}, []string{"\x00"}},
		{durable.ListOptions{Prefix: "ab"}, []string{"ab", "abc", "abd"}},
		{durable.ListOptions{Prefix: "a", StartAfter: "ab"}, []string{"abc", "abd"}},
		{durable.ListOptions{Prefix: "a", End: "abd"}, []string{"a", "ab", "abc"}},
		{durable.ListOptions{Prefix: "日本"}, []string{"日本", "日本語"}},
		{durable.ListOptions{Prefix: "é"}, []string{"é", "éa"}},
		{durable.ListOptions{Prefix: "\xff"}, []string{"\xff\xff"}},
		{durable.ListOptions{Prefix: "q"}, nil},
		{durable.ListOptions{Limit: 3}, []string{"\x00", "a", "ab"}},
		{durable.ListOptions{Reverse: true, Limit: 3}, []string{"\xff\xff", "日本語", "日本"}},
		{durable.ListOptions{Prefix: "a", Reverse: true}, []string{"abd", "abc", "ab", "a"}},
		{durable.ListOptions{Prefix: "a", Reverse: true, Limit: 2}, []string{"abd", "abc"}},
		{durable.ListOptions{Start: "b", End: "d", Reverse: true, Limit: 2}, []string{"c", "bb"}},
		{durable.ListOptions{StartAfter: "z", End: "日本語"}, []string{"é", "éa", "日本"}},
		{durable.ListOptions{Start: "c", End: "b"}, nil},
		{durable.ListOptions{Start: "c", End: "c"}, nil},
		{durable.ListOptions{Prefix: "b", Start: "c"}, nil},
		{durable.ListOptions{Limit: 100}, refList(listKeys, durable.ListOptions{})},
	}
	for _, c := range cases {
		if got := listNames(t, s, g, obj, c.o); !reflect.DeepEqual(got, c.want) {
			t.Errorf("List(%+v) = %q, want %q", c.o, got, c.want)
		}
		// The table must agree with the reference model, or one of them is wrong.
		if ref := refList(listKeys, c.o); !reflect.DeepEqual(ref, c.want) {
			t.Errorf("table entry %+v disagrees with refList: %q", c.o, ref)
		}
	}
}

// Random combinations, against the reference model.
func TestListMatchesModel(t *testing.T) {
	s, g, obj := setupList(t)
	rng := rand.New(rand.NewSource(1))
	probes := append([]string{"", "a", "ab", "abc", "abz", "b", "c", "e", "é", "日", "日本", "\x00", "\xff", "\xff\xff\xff"}, listKeys...)
	pick := func() string {
		if rng.Intn(3) == 0 {
			return ""
		}
		return probes[rng.Intn(len(probes))]
	}
	for i := 0; i < 2000; i++ {
		o := durable.ListOptions{End: pick(), Prefix: pick(), Reverse: rng.Intn(2) == 0, Limit: rng.Intn(5)}
		if rng.Intn(2) == 0 {
			o.Start = pick()
		} else {
			o.StartAfter = pick()
		}
		got := listNames(t, s, g, obj, o)
		if want := refList(listKeys, o); !reflect.DeepEqual(got, want) {
			t.Fatalf("List(%+v) = %q, want %q", o, got, want)
		}
	}
}

func TestListInvalidOptions(t *testing.T) {
	s := openTest(t)
	for _, o := range []durable.ListOptions{{Start: "a", StartAfter: "b"}, {Limit: -1}} {
		if _, err := s.List(1, oid(1), o); !errors.Is(err, durable.ErrInvalidOption) {
			t.Errorf("List(%+v) = %v, want ErrInvalidOption", o, err)
		}
	}
}

func TestGetReturnsCopy(t *testing.T) {
	s, g, obj := setupList(t)
	v, ok, err := s.Get(g, obj, "ab")
	if err != nil || !ok || string(v) != "v:ab" {
		t.Fatalf("Get = %q, %v, %v", v, ok, err)
	}
	v[0] = 'X'
	if v2, _, _ := s.Get(g, obj, "ab"); string(v2) != "v:ab" {
		t.Fatalf("changing a returned value changed the store: %q", v2)
	}
	if _, ok, err := s.Get(g, obj, "abe"); ok || err != nil {
		t.Fatalf("Get(missing) = %v, %v", ok, err)
	}
	if _, ok, _ := s.Get(g, obj, "other-group"); ok {
		t.Fatal("Get sees another group's key")
	}
}

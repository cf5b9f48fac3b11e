package raftstore

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestLogCacheBoundedByBytes: the cache keeps the newest entries that fit
// in its bytes, whatever its count allows; the rest are read from the
// store. raft.LogCache, bounded by count alone, kept 512 entries of any
// size a group.
func TestLogCacheBoundedByBytes(t *testing.T) {
	store := raft.NewInmemStore()
	c := newLogCache(store, 8, 1000)
	entry := func(i uint64, size int) *raft.Log {
		return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, size)}
	}
	for i := uint64(1); i <= 6; i++ {
		if err := c.StoreLogs([]*raft.Log{entry(i, 300)}); err != nil {
			t.Fatal(err)
		}
	}
	cached := func() (ids []uint64) {
		for _, e := range c.ring {
			if e != nil {
				ids = append(ids, e.Index)
			}
		}
		return ids
	}
	if c.bytes > 1000 || len(cached()) != 3 {
		t.Fatalf("after six entries of 300 bytes: %d bytes cached in entries %v; want the newest three, at most 1000 bytes", c.bytes, cached())
	}
	for i := uint64(1); i <= 6; i++ {
		var l raft.Log
		if err := c.GetLog(i, &l); err != nil || l.Index != i || len(l.Data) != 300 || l.Data[0] != byte(i) {
			t.Fatalf("entry %d: %v %+v", i, err, l)
		}
	}
	// An entry larger than the whole budget is stored, not cached, and
	// takes the others with it.
	if err := c.StoreLogs([]*raft.Log{entry(7, 5000)}); err != nil {
		t.Fatal(err)
	}
	if c.bytes != 0 || len(cached()) != 0 {
		t.Fatalf("after an entry over the budget: %d bytes in %v", c.bytes, cached())
	}
	var l raft.Log
	if err := c.GetLog(7, &l); err != nil || len(l.Data) != 5000 {
		t.Fatalf("entry 7 from the store: %v, %d bytes", err, len(l.Data))
	}
	// Small entries fill the ring by count, and wrap it.
	for i := uint64(8); i <= 20; i++ {
		if err := c.StoreLogs([]*raft.Log{entry(i, 10)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := cached(); len(got) != 8 || c.bytes != 80 {
		t.Fatalf("after 13 entries of 10 bytes: %v, %d bytes; want the newest 8, 80 bytes", got, c.bytes)
	}
	if err := c.DeleteRange(1, 20); err != nil {
		t.Fatal(err)
	}
	if c.bytes != 0 || len(cached()) != 0 {
		t.Fatalf("after DeleteRange: %d bytes in %v", c.bytes, cached())
	}
	if err := c.GetLog(15, &l); err == nil {
		t.Fatalf("entry 15 read after its deletion: %+v", l)
	}
}

// The cache copies the entries it keeps: a leader's entries are fields of
// raft's apply futures, and keeping pointers to them kept every cached
// entry's future, channels and response included, alive long after it was
// applied (8 MB of an idle dev node's heap after 100,000 objects).
func TestLogCacheKeepsNoCallerMemory(t *testing.T) {
	type future struct { // as raft.logFuture: the entry, then more
		log  raft.Log
		more [256]byte
	}
	c := newLogCache(copyingStore{raft.NewInmemStore()}, 8, 1<<20)
	released := make(chan struct{})
	f := &future{log: raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("x")}}
	runtime.AddCleanup(f, func(ch chan struct{}) { close(ch) }, released)
	if err := c.StoreLogs([]*raft.Log{&f.log}); err != nil {
		t.Fatal(err)
	}
	f = nil
	for range 20 {
		runtime.GC()
		select {
		case <-released:
			var l raft.Log
			if err := c.GetLog(1, &l); err != nil || string(l.Data) != "x" {
				t.Fatalf("the cached entry: %v %+v", err, l)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatal("the cache keeps the memory around the entry it was given")
}

// copyingStore is an in-memory LogStore that, like the Pebble one, keeps
// no pointer it was given (raft.InmemStore keeps them).
type copyingStore struct{ *raft.InmemStore }

func (s copyingStore) StoreLogs(logs []*raft.Log) error {
	copies := make([]*raft.Log, len(logs))
	for i, l := range logs {
		c := *l
		copies[i] = &c
	}
	return s.InmemStore.StoreLogs(copies)
}

package raftstore

import (
	"encoding/binary"
	"runtime"
	"testing"
)

// The cache finds what it was given last, forgets only what is older than
// two generations, and never answers with a version a later put replaced.
func TestVersionCache(t *testing.T) {
	var c versionCache
	obj := func(i int) *[32]byte {
		var o [32]byte
		binary.BigEndian.PutUint64(o[:], uint64(i))
		return &o
	}
	for i := range 3 * versionCacheGen {
		c.put(*obj(i), uint64(i))
	}
	for i := range 3 * versionCacheGen {
		v, ok := c.get(obj(i))
		switch {
		case i < versionCacheGen && ok:
			t.Fatalf("object %d, three generations old, is still cached (%d)", i, v)
		case i >= versionCacheGen && (!ok || v != uint64(i)):
			t.Fatalf("object %d: %d, %v; want %d from the last two generations", i, v, ok, i)
		}
	}
	// A newer version of an object of the older generation.
	old := obj(versionCacheGen)
	c.put(*old, 1<<40)
	if v, ok := c.get(old); !ok || v != 1<<40 {
		t.Fatalf("after a newer version: %d, %v", v, ok)
	}
	c.reset()
	if v, ok := c.get(old); ok {
		t.Fatalf("after reset: %d cached", v)
	}
}

// Under churn the cache's memory stays that of its two generations. A
// single map with a random victim deleted per insert grew without bound
// though it never held more than its limit (about 700 KB after a million
// puts, against about 100 KB full; found by QA in a cluster soak).
func TestVersionCacheMemoryBoundedUnderChurn(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	var c versionCache
	var o [32]byte
	putN := func(from, n int) {
		for i := from; i < from+n; i++ {
			binary.BigEndian.PutUint64(o[:], uint64(i)*0x9e3779b97f4a7c15)
			c.put(o, uint64(i))
		}
	}
	putN(0, 4*versionCacheGen)
	full := heap()
	putN(4*versionCacheGen, 1_000_000)
	churned := heap()
	runtime.KeepAlive(&c)
	if churned > full && churned-full > 256<<10 {
		t.Fatalf("the cache's heap grew by %d KB over a million puts", (churned-full)>>10)
	}
	t.Logf("heap %d KB full, %d KB after a million more puts", full>>10, churned>>10)
}

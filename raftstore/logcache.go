package raftstore

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// logCache keeps a group's most recent log entries in memory, as
// raft.LogCache does (a leader reads each new entry back to replicate it),
// but bounded by their bytes as well as their count. raft.LogCache keeps
// its capacity in entries whatever their size: with entries of a few MiB
// (large KV values, 5 MiB turns) each group pinned up to 512 of them,
// gigabytes a node, long after they were applied (found by QA: 1.6 GiB
// of an idle node's heap after 1.7 GB of KV puts to one shard).
type logCache struct {
	store    raft.LogStore
	maxBytes int

	// stored, when set, is told of every batch of entries stored.
	stored atomic.Pointer[func(entries, bytes int)]

	mu    sync.RWMutex
	ring  []*raft.Log // entry i at i % len(ring), if cached
	bytes int         // the cached entries' entrySize
	last  uint64      // the highest index stored
}

var _ raft.LogStore = (*logCache)(nil)

// Bounds of each group's logCache.
const (
	logCacheEntries = 512
	// logCacheBytes holds hundreds of the entries the request path makes
	// (a turn's writes, a few KiB), far more than replication reads back,
	// while 64 groups' caches stay within 64 MiB.
	logCacheBytes = 1 << 20
)

func newLogCache(store raft.LogStore, entries, maxBytes int) *logCache {
	return &logCache{store: store, maxBytes: maxBytes, ring: make([]*raft.Log, entries)}
}

// setStored has f told of every batch of entries stored from now on.
func (c *logCache) setStored(f func(entries, bytes int)) { c.stored.Store(&f) }

// entrySize is what an entry holds in memory beyond its fixed fields.
func entrySize(l *raft.Log) int { return len(l.Data) + len(l.Extensions) }

func (c *logCache) GetLog(index uint64, log *raft.Log) error {
	c.mu.RLock()
	cached := c.ring[index%uint64(len(c.ring))]
	c.mu.RUnlock()
	if cached != nil && cached.Index == index {
		*log = *cached
		return nil
	}
	return c.store.GetLog(index, log)
}

func (c *logCache) StoreLog(log *raft.Log) error { return c.StoreLogs([]*raft.Log{log}) }

// StoreLogs stores logs, then caches them, dropping the oldest cached
// entries while the cache holds more than maxBytes (a new entry larger
// than that is dropped too: it is read back from the store).
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		return fmt.Errorf("unable to store logs within log store, err: %q", err)
	}
	stored := 0 // the new entries' bytes
	c.mu.Lock()
	n := uint64(len(c.ring))
	for _, l := range logs {
		slot := l.Index % n
		if old := c.ring[slot]; old != nil {
			c.bytes -= entrySize(old)
		}
		size := entrySize(l)
		// A copy: a leader's entries are fields of raft's apply futures,
		// which the cache would otherwise keep, with their channels and
		// responses, long after the entries were applied (8 MB of a dev
		// node's idle heap after 100,000 objects had been served).
		cached := *l
		c.ring[slot] = &cached
		c.bytes += size
		stored += size
		c.last = max(c.last, l.Index)
	}
	for i := c.last - min(c.last, n-1); c.bytes > c.maxBytes && i <= c.last; i++ {
		if e := c.ring[i%n]; e != nil && e.Index == i {
			c.bytes -= entrySize(e)
			c.ring[i%n] = nil
		}
	}
	c.mu.Unlock()
	if f := c.stored.Load(); f != nil {
		(*f)(len(logs), stored)
	}
	return nil
}

func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }
func (c *logCache) LastIndex() (uint64, error)  { return c.store.LastIndex() }

// DeleteRange empties the cache, as raft.LogCache does: raft deletes a
// range to compact the log or to drop a conflicting suffix.
func (c *logCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	clear(c.ring)
	c.bytes, c.last = 0, 0
	c.mu.Unlock()
	return c.store.DeleteRange(min, max)
}

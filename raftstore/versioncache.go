package raftstore

// versionCache remembers the persisted versions of a group's recently
// written objects (ShardFSM.versions), so that applying an entry does not
// read each object's version from Pebble. It keeps two generations, each a
// map that only ever takes versionCacheGen distinct objects: when the
// recent one is full, it becomes the older one and a new one starts, and
// the older one's objects are forgotten. Evicting from one map instead (a
// random victim deleted per insert) made the map grow under churn, though
// it never held more than its bound: Go maps keep the room of deleted
// entries (found by QA: 8 MB a node in a 25-minute soak, still growing).
// Only the shard FSM uses it, under its mutex.
type versionCache struct {
	recent, older map[[32]byte]uint64
}

// versionCacheGen is how many objects a generation holds. Two
// generations of it cost about 100 KiB a group, 6.5 MB for 64 groups
// (every replica has one).
const versionCacheGen = 512

func (c *versionCache) get(obj *[32]byte) (uint64, bool) {
	if v, ok := c.recent[*obj]; ok {
		return v, true
	}
	v, ok := c.older[*obj]
	return v, ok
}

// put records that obj's persisted version is v. A newer version always
// lands in the recent generation, so an older one's entry, read only when
// the recent one has none, is never stale.
func (c *versionCache) put(obj [32]byte, v uint64) {
	if _, ok := c.recent[obj]; !ok && len(c.recent) >= versionCacheGen {
		c.older, c.recent = c.recent, nil
	}
	if c.recent == nil {
		c.recent = make(map[[32]byte]uint64, versionCacheGen)
	}
	c.recent[obj] = v
}

// reset forgets every version: the store was rewritten under the cache (a
// restore, a reload).
func (c *versionCache) reset() { c.recent, c.older = nil, nil }

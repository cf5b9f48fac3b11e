package raftstore

import (
	"sync/atomic"
	"time"
)

// defaultSyncWindow is Options.SyncWindow's default. Pebble's documentation
// suggests 500µs for its WALMinSyncInterval; on the three-node benchmark
// (64 shards, 1000 objects) 250µs–1ms all gave 10–30 % more increments a
// second than no window, and 2ms began to cost more latency than it saved.
const defaultSyncWindow = 500 * time.Microsecond

// syncWindow decides, each time Pebble has synced its WAL, whether the next
// sync waits out a window, so that the synced writes other groups request
// meanwhile share one fdatasync instead of paying one each.
//
// Waiting helps only when several groups write at once. One group never
// requests its next synced write before the last returned (raft's leader
// loop stores a batch, then replicates it; a follower stores an append
// before it answers), so with one busy group — every request on one object —
// a window would only add its length to every commit. So the window applies
// only after a sync during which some synced write came from another group
// than the synced write before it; one group alone never switches.
//
// Pebble calls next under its WAL flusher's mutex; it only touches atomics.
type syncWindow struct {
	window time.Duration
	// last is the group of the latest synced write plus one (0: none yet).
	last atomic.Uint64
	// switches counts changes of group between consecutive synced writes
	// since next last ran.
	switches atomic.Uint32
	// syncs counts the WAL syncs (the calls of next), for benchmarks.
	syncs atomic.Uint64
}

// noteSyncedWrite records that group g is about to commit a synced write.
func (w *syncWindow) noteSyncedWrite(g GroupID) {
	if w.last.Swap(uint64(g)+1) != uint64(g)+1 {
		w.switches.Add(1)
	}
}

// next is Pebble's WALMinSyncInterval: how long after the sync that just
// ended the next one must wait.
func (w *syncWindow) next() time.Duration {
	w.syncs.Add(1)
	if w.switches.Swap(0) >= 1 {
		return w.window
	}
	return 0
}

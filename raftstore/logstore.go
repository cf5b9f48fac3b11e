package raftstore

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

var _ raft.LogStore = (*LogStore)(nil)

// LogStore is one group's raft log in the Store's Pebble: keys
// r/<group8>/log/<index8>. It keeps no state of its own, so any number of
// views of the same group see the same log.
type LogStore struct {
	s     *Store
	group GroupID
	ks    keyspace
}

// LogStore returns the raft.LogStore of group g.
func (s *Store) LogStore(g GroupID) *LogStore {
	return &LogStore{s: s, group: g, ks: newKeyspace(g)}
}

// FirstIndex returns the lowest stored index, 0 when the log is empty.
func (l *LogStore) FirstIndex() (uint64, error) { return l.edge(true) }

// LastIndex returns the highest stored index, 0 when the log is empty.
func (l *LogStore) LastIndex() (uint64, error) { return l.edge(false) }

// edge seeks to the first or last log key of the group. Indexes are not
// cached in memory: a seek is cheap, raft asks rarely (it tracks its last
// index itself), and there is then nothing to keep consistent.
func (l *LogStore) edge(first bool) (uint64, error) {
	if err := l.s.acquire(); err != nil {
		return 0, err
	}
	defer l.s.mu.RUnlock()
	it, err := l.s.db.NewIter(&pebble.IterOptions{LowerBound: l.ks.logPrefix, UpperBound: l.ks.logEnd})
	if err != nil {
		return 0, fmt.Errorf("raftstore: log iterator: %w", err)
	}
	var ok bool
	if first {
		ok = it.First()
	} else {
		ok = it.Last()
	}
	var idx uint64
	if ok {
		k := it.Key()
		if len(k) != len(l.ks.logPrefix)+8 {
			_ = it.Close()
			return 0, fmt.Errorf("%w: log key of %d bytes", ErrCorruptLog, len(k))
		}
		idx = binary.BigEndian.Uint64(k[len(l.ks.logPrefix):])
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("raftstore: log iterator: %w", err)
	}
	return idx, nil
}

// GetLog reads the entry at index into log; raft.ErrLogNotFound if absent.
func (l *LogStore) GetLog(index uint64, log *raft.Log) error {
	if err := l.s.acquire(); err != nil {
		return err
	}
	v, ok, err := l.s.get(l.ks.logKey(index))
	l.s.mu.RUnlock()
	if err != nil {
		return err
	}
	if !ok {
		return raft.ErrLogNotFound
	}
	// v is our own copy, so the decoded log may alias it.
	if err := decodeLog(v, log); err != nil {
		return fmt.Errorf("log index %d: %w", index, err)
	}
	if log.Index != index {
		return fmt.Errorf("%w: key index %d holds entry %d", ErrCorruptLog, index, log.Index)
	}
	return nil
}

// StoreLog stores one entry, synced.
func (l *LogStore) StoreLog(log *raft.Log) error {
	return l.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores entries in one batch written with pebble.Sync: raft
// counts them durable when this returns.
func (l *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	if err := l.s.acquire(); err != nil {
		return err
	}
	defer l.s.mu.RUnlock()
	b := l.s.db.NewBatch()
	defer b.Close()
	var key, val []byte
	for _, lg := range logs {
		// Set copies key and value, so both buffers are reused.
		key = binary.BigEndian.AppendUint64(append(key[:0], l.ks.logPrefix...), lg.Index)
		val = appendLog(val[:0], lg)
		if err := b.Set(key, val, nil); err != nil {
			return fmt.Errorf("raftstore: storing log %d: %w", lg.Index, err)
		}
	}
	if w := l.s.syncWindow; w != nil {
		w.noteSyncedWrite(l.group)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("raftstore: storing logs %d-%d: %w", logs[0].Index, logs[len(logs)-1].Index, err)
	}
	return nil
}

// DeleteRange deletes the entries min..max inclusive with one range
// tombstone, synced (so a truncated suffix cannot reappear after a crash).
func (l *LogStore) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	end := l.ks.logEnd
	if max != math.MaxUint64 {
		end = l.ks.logKey(max + 1)
	}
	if err := l.s.acquire(); err != nil {
		return err
	}
	defer l.s.mu.RUnlock()
	if err := l.s.db.DeleteRange(l.ks.logKey(min), end, pebble.Sync); err != nil {
		return fmt.Errorf("raftstore: deleting logs %d-%d: %w", min, max, err)
	}
	return nil
}

var _ raft.StableStore = (*StableStore)(nil)

// StableStore is one group's raft.StableStore: keys r/<group8>/stable/<key>.
type StableStore struct {
	s  *Store
	ks keyspace
}

// StableStore returns the raft.StableStore of group g.
func (s *Store) StableStore(g GroupID) *StableStore {
	return &StableStore{s: s, ks: newKeyspace(g)}
}

// Set stores val under key, synced (raft's term and vote must survive a crash).
func (st *StableStore) Set(key, val []byte) error {
	if err := st.s.acquire(); err != nil {
		return err
	}
	defer st.s.mu.RUnlock()
	if err := st.s.db.Set(st.ks.stableKey(key), val, pebble.Sync); err != nil {
		return fmt.Errorf("raftstore: stable set %q: %w", key, err)
	}
	return nil
}

// Get returns key's value; a missing key gives nil and ErrNotFound (whose
// text raft compares against "not found").
func (st *StableStore) Get(key []byte) ([]byte, error) {
	if err := st.s.acquire(); err != nil {
		return nil, err
	}
	v, ok, err := st.s.get(st.ks.stableKey(key))
	st.s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNotFound
	}
	return v, nil
}

// SetUint64 stores val as 8 big-endian bytes.
func (st *StableStore) SetUint64(key []byte, val uint64) error {
	return st.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns key's number; a missing key gives 0 and ErrNotFound.
func (st *StableStore) GetUint64(key []byte) (uint64, error) {
	v, err := st.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: stable key %q holds %d bytes, not a uint64", ErrCorruptState, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

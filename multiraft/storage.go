package multiraft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// keyPrefix begins every key the engine writes (see doc.go).
const keyPrefix = "m/"

// groupKeys are the keys of one group's log and state.
type groupKeys struct {
	prefix []byte // m/<group8>/
}

func keysOf(g GroupID) groupKeys {
	p := append([]byte(keyPrefix), make([]byte, 8)...)
	binary.BigEndian.PutUint64(p[len(keyPrefix):], uint64(g))
	return groupKeys{prefix: append(p, '/')}
}

func (k groupKeys) key(kind byte) []byte {
	return append(append(make([]byte, 0, len(k.prefix)+1), k.prefix...), kind)
}

func (k groupKeys) hardState() []byte { return k.key('h') }
func (k groupKeys) confState() []byte { return k.key('c') }
func (k groupKeys) applied() []byte   { return k.key('a') }
func (k groupKeys) logStart() []byte  { return k.key('s') }

// entry is the key of log entry index.
func (k groupKeys) entry(index uint64) []byte {
	return binary.BigEndian.AppendUint64(append(k.key('l'), '/'), index)
}

// entriesEnd is the first key after every log entry of the group.
func (k groupKeys) entriesEnd() []byte { return append(k.key('l'), '/'+1) }

// end is the first key after every key of the group.
func (k groupKeys) end() []byte {
	e := append([]byte(nil), k.prefix...)
	e[len(e)-1]++ // '/' + 1
	return e
}

// groupStorage is a group's raft.Storage: the log since the last
// compaction, in memory (raft.MemoryStorage) and in Pebble, written by the
// loop before raft is told it is stable. It answers InitialState with the
// ConfState as of the applied index (raft does not hand back entries at or
// below it, configuration changes included), and Snapshot with the state
// machine's state at the applied index.
type groupStorage struct {
	*raft.MemoryStorage
	// applied and conf are the group's applied index and the configuration
	// as of it; the loop keeps them.
	applied uint64
	conf    raftpb.ConfState
}

func (s *groupStorage) InitialState() (raftpb.HardState, raftpb.ConfState, error) {
	hs, _, err := s.MemoryStorage.InitialState()
	return hs, s.conf, err
}

// Snapshot describes the state at the applied index. Its Data is left
// empty: the loop fills it in when the message carrying it is sent, which
// is in the same round, before that round's entries are applied.
func (s *groupStorage) Snapshot() (raftpb.Snapshot, error) {
	term, err := s.Term(s.applied)
	if err != nil {
		return raftpb.Snapshot{}, err
	}
	return raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: s.applied, Term: term, ConfState: s.conf}}, nil
}

var _ raft.Storage = (*groupStorage)(nil)

// loadGroup reads a group's stored log and state. A group with nothing
// stored yields an empty storage (found false).
func loadGroup(db pebble.Reader, k groupKeys) (st *groupStorage, found bool, err error) {
	st = &groupStorage{MemoryStorage: raft.NewMemoryStorage()}
	get := func(key []byte, into func([]byte) error) error {
		v, closer, err := db.Get(key)
		if errors.Is(err, pebble.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		defer closer.Close()
		found = true
		return into(v)
	}
	var start raftpb.SnapshotMetadata
	if err := get(k.logStart(), func(v []byte) error {
		if len(v) != 16 {
			return fmt.Errorf("%w: log start of %d bytes", ErrCorruptState, len(v))
		}
		start.Index, start.Term = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
		return nil
	}); err != nil {
		return nil, false, err
	}
	if start.Index > 0 {
		if err := st.ApplySnapshot(raftpb.Snapshot{Metadata: start}); err != nil {
			return nil, false, err
		}
	}
	var hs raftpb.HardState
	if err := get(k.hardState(), func(v []byte) error {
		if err := hs.Unmarshal(v); err != nil {
			return fmt.Errorf("%w: hard state: %v", ErrCorruptState, err)
		}
		return nil
	}); err != nil {
		return nil, false, err
	}
	if err := get(k.confState(), func(v []byte) error {
		if err := st.conf.Unmarshal(v); err != nil {
			return fmt.Errorf("%w: conf state: %v", ErrCorruptState, err)
		}
		return nil
	}); err != nil {
		return nil, false, err
	}
	if err := get(k.applied(), func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: applied index of %d bytes", ErrCorruptState, len(v))
		}
		st.applied = binary.BigEndian.Uint64(v)
		return nil
	}); err != nil {
		return nil, false, err
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: k.entry(start.Index + 1), UpperBound: k.entriesEnd()})
	if err != nil {
		return nil, false, err
	}
	var ents []raftpb.Entry
	for it.First(); it.Valid(); it.Next() {
		var e raftpb.Entry
		if err := e.Unmarshal(it.Value()); err != nil {
			_ = it.Close()
			return nil, false, fmt.Errorf("%w: log entry: %v", ErrCorruptState, err)
		}
		ents = append(ents, e)
	}
	if err := it.Close(); err != nil {
		return nil, false, err
	}
	if len(ents) > 0 {
		found = true
		if err := st.Append(ents); err != nil {
			return nil, false, fmt.Errorf("%w: log: %v", ErrCorruptState, err)
		}
	}
	// The stored commit index is written only with a new term or vote
	// (group.persist); everything applied was committed.
	hs.Commit = max(hs.Commit, st.applied)
	if !raft.IsEmptyHardState(hs) {
		if err := st.SetHardState(hs); err != nil {
			return nil, false, err
		}
	}
	if first, _ := st.FirstIndex(); st.applied < first-1 {
		return nil, false, fmt.Errorf("%w: applied index %d is before the log's start %d", ErrCorruptState, st.applied, first-1)
	}
	return st, found, nil
}

// writeBootstrap stores the state every founding member of a new group
// starts from: an empty state machine at index 1, term 1, with voters as
// its configuration. Founders agree on it without a message, so the first
// leader's log starts at index 2 and a later member catches up from a
// snapshot (raft's recommended way to bootstrap).
func writeBootstrap(b *pebble.Batch, k groupKeys, st *groupStorage, voters []uint64) error {
	st.conf = raftpb.ConfState{Voters: append([]uint64(nil), voters...)}
	st.applied = 1
	meta := raftpb.SnapshotMetadata{Index: 1, Term: 1, ConfState: st.conf}
	hs := raftpb.HardState{Term: 1, Commit: 1}
	if err := b.Set(k.logStart(), logStartValue(meta.Index, meta.Term), nil); err != nil {
		return err
	}
	if err := setProto(b, k.hardState(), &hs); err != nil {
		return err
	}
	if err := writeApplied(b, k, st.applied, &st.conf); err != nil {
		return err
	}
	if err := st.ApplySnapshot(raftpb.Snapshot{Metadata: meta}); err != nil {
		return err
	}
	return st.SetHardState(hs)
}

func logStartValue(index, term uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, index), term)
}

// writeApplied records the applied index and, if it changed (conf not
// nil), the configuration as of it.
func writeApplied(b *pebble.Batch, k groupKeys, applied uint64, conf *raftpb.ConfState) error {
	if err := b.Set(k.applied(), binary.BigEndian.AppendUint64(nil, applied), nil); err != nil {
		return err
	}
	if conf == nil {
		return nil
	}
	return setProto(b, k.confState(), conf)
}

type marshaler interface{ Marshal() ([]byte, error) }

func setProto(b *pebble.Batch, key []byte, m marshaler) error {
	v, err := m.Marshal()
	if err != nil {
		return err
	}
	return b.Set(key, v, nil)
}

// writeEntries stores ents, which follow or overwrite the log's tail, and
// deletes any stored entries after them (a new leader's log replaced them).
func writeEntries(b *pebble.Batch, k groupKeys, ents []raftpb.Entry, prevLast uint64) error {
	for i := range ents {
		if err := setProto(b, k.entry(ents[i].Index), &ents[i]); err != nil {
			return err
		}
	}
	if last := ents[len(ents)-1].Index; last < prevLast {
		return b.DeleteRange(k.entry(last+1), k.entry(prevLast+1), nil)
	}
	return nil
}

// writeCompaction drops the log up to and including index.
func writeCompaction(b *pebble.Batch, k groupKeys, first, index, term uint64) error {
	if err := b.DeleteRange(k.entry(first), k.entry(index+1), nil); err != nil {
		return err
	}
	return b.Set(k.logStart(), logStartValue(index, term), nil)
}

// writeSnapshot replaces the group's log with a snapshot's start point:
// every stored entry goes, the log starts after the snapshot's index.
func writeSnapshot(b *pebble.Batch, k groupKeys, meta raftpb.SnapshotMetadata) error {
	if err := b.DeleteRange(k.entry(0), k.entriesEnd(), nil); err != nil {
		return err
	}
	if err := b.Set(k.logStart(), logStartValue(meta.Index, meta.Term), nil); err != nil {
		return err
	}
	return writeApplied(b, k, meta.Index, &meta.ConfState)
}

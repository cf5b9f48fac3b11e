package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

var _ raft.BatchingFSM = (*ShardFSM)(nil)

// ShardFSM is the persistent state machine of a shard group: it applies
// encoded Entry commands to the group's key range of the Store.
//
// Raft calls Apply, ApplyBatch, Snapshot and Restore from one goroutine; the
// mutex only makes direct use (tests, tools) safe too. Run at most one
// ShardFSM per group at a time: it caches the group's applied index.
type ShardFSM struct {
	s  *Store
	g  GroupID
	ks keyspace

	mu      sync.Mutex
	loaded  bool   // applied and failed reflect the database
	applied uint64 // the persisted applied index
	// failed, once set, makes every later entry fail without being written:
	// applying entry n+1 after n failed would make this replica diverge. A
	// restart re-applies from the log; a successful Restore clears it.
	failed error
	// versions caches the persisted versions of recently written objects,
	// so applying an entry does not read each object's version from Pebble
	// (a memtable seek: 5 % of a node's CPU under load spread over many
	// objects). Only applyBatch writes versions, and only after its batch
	// committed; load, which a Restore forces, empties it.
	versions versionCache
	// engineOv is the overlay of engineBatch, the batch the multiraft
	// engine's last Apply wrote to, engineLen bytes long after it: the
	// engine may apply one round's commands in several calls on one
	// uncommitted batch, and each must see what the earlier ones wrote.
	engineOv    *overlay
	engineBatch *pebble.Batch
	engineLen   int
}

// NewShardFSM returns the state machine of group g. Nothing is read until
// the first call, so it cannot fail here.
func (s *Store) NewShardFSM(g GroupID) *ShardFSM {
	return &ShardFSM{s: s, g: g, ks: newKeyspace(g)}
}

// load reads the applied index and the restore marker. Caller holds f.mu and acquire.
func (f *ShardFSM) load() error {
	if f.loaded {
		return nil
	}
	applied, err := f.s.readUint64(f.ks.applied)
	if err != nil {
		return err
	}
	_, restoring, err := f.s.get(f.ks.restoring)
	if err != nil {
		return err
	}
	f.applied, f.loaded, f.failed = applied, true, nil
	f.versions.reset()
	if restoring {
		f.failed = fmt.Errorf("%w: group %s: a snapshot restore was interrupted; its state is incomplete", ErrFSMFailed, f.g)
	}
	return nil
}

// restoreIncomplete reports whether a Restore of the group was interrupted.
func (f *ShardFSM) restoreIncomplete() (bool, error) {
	if err := f.s.acquire(); err != nil {
		return false, err
	}
	defer f.s.mu.RUnlock()
	_, ok, err := f.s.get(f.ks.restoring)
	return ok, err
}

// behindSnapshot reports whether the group's latest snapshot in snaps
// covers command entries this state machine has not applied. raft's
// installSnapshot finalizes a leader's snapshot in the snapshot store
// before it hands it to Restore, so a crash in between leaves a snapshot
// newer than the state machine and no restoring marker; raft, with
// NoSnapshotRestoreOnStart, would then take the snapshot's index as applied
// and never apply what it stands for. A snapshot ahead of the applied index
// by entries raft never hands the FSM (no-ops, barriers) is no sign of
// that: those entries, still in the log, tell the two cases apart.
func (f *ShardFSM) behindSnapshot(snaps raft.SnapshotStore, logs raft.LogStore) (bool, error) {
	metas, err := snaps.List()
	if err != nil {
		return false, fmt.Errorf("listing snapshots: %w", err)
	}
	if len(metas) == 0 {
		return false, nil
	}
	applied, err := f.s.AppliedIndex(f.g)
	if err != nil {
		return false, err
	}
	for i := applied + 1; i <= metas[0].Index; i++ {
		var l raft.Log
		err := logs.GetLog(i, &l)
		if errors.Is(err, raft.ErrLogNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			// The FSM is handed both kinds, and advances its index over them.
			return true, nil
		}
	}
	return false, nil
}

// Apply applies one log entry; see ApplyBatch for what it returns.
func (f *ShardFSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in one Pebble batch, together with
// the new applied index, written NoSync: the raft log lives in the same
// Pebble and is synced, and Pebble's WAL is sequential, so these writes are
// durable by the next log append; if a crash loses them, the entries are
// still in the log and are applied again.
//
// The response of each entry is:
//   - ApplyResult for a command entry that was applied;
//   - an error wrapping ErrCorruptEntry for a command that does not decode
//     (the applied index still advances: every replica fails the same way);
//   - an error wrapping ErrFSMFailed if the FSM could not write (see ShardFSM.failed);
//   - nil for other entry types and for entries at or below the persisted
//     applied index (a replay after restart), which are skipped.
func (f *ShardFSM) ApplyBatch(logs []*raft.Log) []any {
	resp := make([]any, len(logs))
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.applyBatch(logs, resp); err != nil {
		if f.failed == nil {
			f.failed = fmt.Errorf("%w: group %s: %w", ErrFSMFailed, f.g, err)
			f.s.logger.Error("shard FSM failed; refusing further entries until restart", "group", f.g.String(), "error", err)
			if h := f.s.onFSMFailure; h != nil {
				go h(f.g, f.failed)
			}
		}
		for i := range resp {
			resp[i] = f.failed
		}
	}
	return resp
}

func (f *ShardFSM) applyBatch(logs []*raft.Log, resp []any) error {
	if f.failed != nil {
		return f.failed
	}
	if err := f.s.acquire(); err != nil {
		return err
	}
	defer f.s.mu.RUnlock()
	if err := f.load(); err != nil {
		return err
	}
	if f.failed != nil {
		return f.failed
	}
	b := f.s.db.NewBatch()
	defer b.Close()
	ov := overlay{versions: map[[32]byte]uint64{}, alarms: map[[32]byte]alarmState{}}
	last := f.applied
	for i, l := range logs {
		if l.Index <= last {
			continue // already applied before a restart (or a repeated index)
		}
		last = l.Index
		if l.Type != raft.LogCommand {
			continue
		}
		e, err := DecodeEntry(l.Data)
		if err != nil {
			resp[i] = fmt.Errorf("group %s raft index %d: %w", f.g, l.Index, err)
			continue
		}
		res, err := f.applyEntry(b, &ov, &e)
		if err != nil {
			return fmt.Errorf("raft index %d: %w", l.Index, err)
		}
		resp[i] = res
	}
	if last == f.applied {
		return nil
	}
	if err := b.Set(f.ks.applied, binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("committing entries up to %d: %w", last, err)
	}
	f.applied = last
	for obj, v := range ov.versions {
		f.versions.put(obj, v)
	}
	return nil
}

// alarmState is an object's alarm as the batch being built sees it.
type alarmState struct {
	at int64
	ok bool
}

// overlay holds the versions and alarms written by the batch being built,
// which the database cannot show yet: later entries of the same batch must
// see them.
type overlay struct {
	versions map[[32]byte]uint64
	alarms   map[[32]byte]alarmState
}

func (f *ShardFSM) version(ov *overlay, obj *[32]byte) (uint64, error) {
	if v, ok := ov.versions[*obj]; ok {
		return v, nil
	}
	if v, ok := f.versions.get(obj); ok {
		return v, nil
	}
	v, err := f.s.readUint64(f.ks.versionKey(obj))
	if err == nil {
		f.versions.put(*obj, v)
	}
	return v, err
}

func (f *ShardFSM) alarm(ov *overlay, obj *[32]byte) (alarmState, error) {
	if a, ok := ov.alarms[*obj]; ok {
		return a, nil
	}
	at, ok, err := f.s.readAlarm(&f.ks, obj)
	return alarmState{at: at, ok: ok}, err
}

// applyEntry adds the writes of e's accepted batches to b. Its error is a
// storage failure, never a property of e.
func (f *ShardFSM) applyEntry(b *pebble.Batch, ov *overlay, e *Entry) (ApplyResult, error) {
	var res ApplyResult
	for i := range e.Batches {
		ob := &e.Batches[i]
		obj := &ob.Object
		cur, err := f.version(ov, obj)
		if err != nil {
			return res, err
		}
		if ob.Version != cur+1 {
			res.Rejected = append(res.Rejected, i)
			continue
		}
		for j := range ob.Ops {
			if err := f.applyOp(b, ov, obj, &ob.Ops[j]); err != nil {
				return res, err
			}
		}
		if err := b.Set(f.ks.versionKey(obj), binary.BigEndian.AppendUint64(nil, ob.Version), nil); err != nil {
			return res, err
		}
		ov.versions[*obj] = ob.Version
	}
	return res, nil
}

func (f *ShardFSM) applyOp(b *pebble.Batch, ov *overlay, obj *[32]byte, op *Op) error {
	switch op.Kind {
	case OpPut:
		return b.Set(f.ks.userKey(obj, op.Key), op.Value, nil)
	case OpDelete:
		return b.Delete(f.ks.userKey(obj, op.Key), nil)
	case OpDeleteAll:
		p := f.ks.objectPrefix(obj)
		if err := b.DeleteRange(p, prefixEnd(p), nil); err != nil {
			return err
		}
		return f.clearAlarm(b, ov, obj)
	case OpSetAlarm:
		if err := f.clearAlarm(b, ov, obj); err != nil {
			return err
		}
		if err := b.Set(f.ks.alarmKey(obj), appendTime(nil, op.AlarmAt), nil); err != nil {
			return err
		}
		if err := b.Set(f.ks.alarmIndexKey(op.AlarmAt, obj), nil, nil); err != nil {
			return err
		}
		ov.alarms[*obj] = alarmState{at: op.AlarmAt, ok: true}
		return nil
	case OpDeleteAlarm:
		return f.clearAlarm(b, ov, obj)
	}
	// DecodeEntry admits only the kinds above.
	return fmt.Errorf("unknown op kind %d", uint8(op.Kind))
}

// clearAlarm removes the object's alarm and its time index entry, if any.
func (f *ShardFSM) clearAlarm(b *pebble.Batch, ov *overlay, obj *[32]byte) error {
	a, err := f.alarm(ov, obj)
	if err != nil || !a.ok {
		return err
	}
	if err := b.Delete(f.ks.alarmKey(obj), nil); err != nil {
		return err
	}
	if err := b.Delete(f.ks.alarmIndexKey(a.at, obj), nil); err != nil {
		return err
	}
	ov.alarms[*obj] = alarmState{}
	return nil
}

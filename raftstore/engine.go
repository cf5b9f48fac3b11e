package raftstore

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/roostdb/roost/multiraft"
)

// NewEngine starts a multiraft engine on the Store's database (cfg.DB is
// set here): groups it runs keep their logs under the engine's m/ keys and
// their state machines under s/, as groups on hashicorp/raft do. Close the
// engine before the Store.
//
// This is the path the shard groups are moving to (docs/multiraft.md); a
// group runs on one or the other, never both.
func (s *Store) NewEngine(cfg multiraft.Config) (*multiraft.Engine, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	cfg.DB = s.db
	return multiraft.New(cfg)
}

// Machine returns the group's state machine for a multiraft engine: it
// applies the same encoded Entry commands, with the same results, as
// ApplyBatch. The engine keeps the applied index, so the FSM's own
// (s/<g>/applied) is not written; do not run the group on hashicorp/raft
// as well.
func (f *ShardFSM) Machine() multiraft.StateMachine { return (*shardMachine)(f) }

// shardMachine is a ShardFSM seen by a multiraft engine.
type shardMachine ShardFSM

var _ multiraft.StateMachine = (*shardMachine)(nil)

// Apply adds the commands' writes to b. It caches the versions it wrote
// before the engine commits b: if that commit fails the engine stops the
// group, and starting it again takes a new ShardFSM, whose cache starts
// empty.
func (m *shardMachine) Apply(b *pebble.Batch, cmds []multiraft.Command) ([]any, error) {
	f := (*ShardFSM)(m)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.s.acquire(); err != nil {
		return nil, err
	}
	defer f.s.mu.RUnlock()
	// The same batch, unchanged since the last call: a later part of the
	// same round, which must see the earlier parts' writes.
	ov := f.engineOv
	if ov == nil || f.engineBatch != b || f.engineLen != b.Len() {
		ov = &overlay{versions: map[[32]byte]uint64{}, alarms: map[[32]byte]alarmState{}}
	}
	f.engineOv = nil
	out := make([]any, len(cmds))
	for i, c := range cmds {
		e, err := DecodeEntry(c.Data)
		if err != nil {
			// Every replica fails the same way; the index still advances.
			out[i] = fmt.Errorf("group %s raft index %d: %w", f.g, c.Index, err)
			continue
		}
		res, err := f.applyEntry(b, ov, &e)
		if err != nil {
			return nil, fmt.Errorf("group %s raft index %d: %w", f.g, c.Index, err)
		}
		out[i] = res
	}
	for obj, v := range ov.versions {
		f.versions.put(obj, v)
	}
	f.engineOv, f.engineBatch, f.engineLen = ov, b, b.Len()
	return out, nil
}

// Snapshot is the group's state in the snapshot stream format of
// hashicorp/raft's snapshots (snapshot.go).
func (m *shardMachine) Snapshot() ([]byte, error) {
	f := (*ShardFSM)(m)
	if err := f.s.acquire(); err != nil {
		return nil, err
	}
	sn := &shardSnapshot{s: f.s, ks: f.ks, snap: f.s.db.NewSnapshot()}
	f.s.mu.RUnlock()
	defer sn.Release()
	var buf bytes.Buffer
	if err := sn.write(&buf); err != nil {
		return nil, fmt.Errorf("raftstore: snapshot of group %s: %w", f.g, err)
	}
	return buf.Bytes(), nil
}

// Restore replaces the group's state with a snapshot's, in b.
func (m *shardMachine) Restore(b *pebble.Batch, data []byte) error {
	f := (*ShardFSM)(m)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := b.DeleteRange(f.ks.statePrefix, f.ks.stateEnd, nil); err != nil {
		return err
	}
	err := readSnapshotStream(bytes.NewReader(data), &f.ks, func(key, val []byte) error {
		return b.Set(key, val, nil)
	})
	if err != nil {
		return fmt.Errorf("raftstore: restoring group %s: %w", f.g, err)
	}
	f.versions.reset()
	f.engineOv = nil
	return nil
}

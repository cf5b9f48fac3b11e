package placement

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
)

// FSM is the meta group's state machine: the cluster map, in memory. It
// implements raft.FSM; node runs it on raftstore like any group (raft
// rebuilds it from the latest snapshot and the log on start).
//
// Apply returns the map's new version (uint64) for an applied command and
// an error for a rejected one (ApplyResponse tells them apart). A rejected
// or undecodable command changes nothing and never panics, so every replica
// stays identical whatever the log holds.
type FSM struct {
	mu    sync.Mutex
	m     Map             // zero until bootstrapped
	op    *Operation      // the recorded operation, if any
	ended *EndedOperation // the last operation that ended, if any
	watch chan struct{}   // closed and replaced on every change of m
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an empty (not bootstrapped) FSM.
func NewFSM() *FSM { return &FSM{watch: make(chan struct{})} }

// Map returns a copy of the current map (the zero Map before bootstrap).
func (f *FSM) Map() Map {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m.Clone()
}

// Watch returns a channel that is closed at the next change of the map.
func (f *FSM) Watch() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watch
}

// MapAndWatch returns the current map and a channel closed at the next
// change after it, atomically, so no change falls between the two.
func (f *FSM) MapAndWatch() (Map, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m.Clone(), f.watch
}

// Operation returns the recorded operation, if any (BeginOperationCmd).
func (f *FSM) Operation() (Operation, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return copyOf(f.op)
}

// LastEnded returns the last operation that ended (EndOperationCmd), if any.
func (f *FSM) LastEnded() (EndedOperation, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return copyOf(f.ended)
}

// copyOf returns a copy of *p, and whether p was set.
func copyOf[T any](p *T) (T, bool) {
	if p == nil {
		var zero T
		return zero, false
	}
	return *p, true
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return fmt.Errorf("%w: log entry of type %s", ErrBadCommand, l.Type)
	}
	c, err := DecodeCommand(l.Data)
	if err != nil {
		return err
	}
	v, err := f.ApplyCommand(c)
	if err != nil {
		return err
	}
	return v
}

// ApplyCommand applies c directly (Apply without raft: for a single-node
// setup and tests). It returns the map's new version.
func (f *FSM) ApplyCommand(c Command) (uint64, error) {
	if _, err := c.name(); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var (
		changed bool
		err     error
	)
	switch {
	case c.Bootstrap != nil:
		changed, err = f.bootstrap(c.Bootstrap)
	case !f.m.Bootstrapped():
		return 0, fmt.Errorf("%w: %s needs a cluster map", ErrNotBootstrapped, c)
	case c.UpsertNode != nil:
		changed, err = f.upsertNode(c.UpsertNode)
	case c.SetNodeState != nil:
		changed, err = f.setNodeState(c.SetNodeState)
	case c.SetShardReplicas != nil:
		changed, err = f.setShardReplicas(c.SetShardReplicas)
	case c.BeginOperation != nil:
		err = f.beginOperation(c.BeginOperation)
	case c.EndOperation != nil:
		if e := c.EndOperation; f.op != nil && f.op.ID == e.ID {
			f.ended = &EndedOperation{Operation: *f.op, OperationOutcome: e.OperationOutcome}
			f.op = nil
		}
	}
	if err != nil {
		return 0, err
	}
	if changed {
		f.m.Version++
		close(f.watch)
		f.watch = make(chan struct{})
	}
	return f.m.Version, nil
}

func (f *FSM) bootstrap(c *BootstrapCmd) (bool, error) {
	if f.m.Bootstrapped() {
		return false, fmt.Errorf("%w: cluster %s", ErrAlreadyBootstrapped, f.m.ClusterID)
	}
	m := c.Map.Clone()
	m.Version = 0 // ApplyCommand makes it 1
	for id, n := range m.Nodes {
		if n.State == 0 {
			n.State = NodeActive
			m.Nodes[id] = n
		}
	}
	for i := range m.ShardMap {
		m.ShardMap[i].Version = InitialShardVersion
	}
	if err := m.Validate(); err != nil {
		return false, err
	}
	f.m = m
	return true, nil
}

func (f *FSM) upsertNode(c *UpsertNodeCmd) (bool, error) {
	n := c.Node
	if err := n.validateAddrs(); err != nil {
		return false, err
	}
	cur, ok := f.m.Nodes[n.ID]
	switch {
	case ok && cur.State == NodeRemoved:
		return false, fmt.Errorf("%w: %s cannot be registered again; give the node a new id", ErrNodeRemoved, n.ID)
	case ok && n.DataID != "" && cur.DataID != "" && n.DataID != cur.DataID:
		return false, fmt.Errorf("%w: %s is registered with data dir %s, not %s", ErrDataDirReplaced, n.ID, cur.DataID, n.DataID)
	case ok:
		n.State = cur.State
		if n.DataID == "" {
			n.DataID = cur.DataID
		}
		if n == cur {
			return false, nil
		}
	case n.State == 0:
		n.State = NodeActive
	case n.State == NodeRemoved || !n.State.Valid():
		return false, fmt.Errorf("%w: a new node cannot join as %s", ErrInvalidNodeState, n.State)
	}
	if !ok && len(f.m.Nodes) >= MaxNodes {
		return false, fmt.Errorf("%w: the map already has %d nodes", ErrInvalidMap, MaxNodes)
	}
	f.m.Nodes[n.ID] = n
	return true, nil
}

func (f *FSM) setNodeState(c *SetNodeStateCmd) (bool, error) {
	if !c.State.Valid() {
		return false, fmt.Errorf("%w: %s", ErrInvalidNodeState, c.State)
	}
	n, ok := f.m.Nodes[c.ID]
	if !ok {
		return false, fmt.Errorf("%w: %q", ErrUnknownNode, c.ID)
	}
	if n.State == c.State {
		return false, nil
	}
	if n.State == NodeRemoved {
		return false, fmt.Errorf("%w: %s cannot become %s", ErrNodeRemoved, c.ID, c.State)
	}
	if c.State == NodeRemoved {
		if held := f.m.ShardsOf(c.ID); len(held) > 0 {
			return false, fmt.Errorf("%w: %s still holds replicas of %d shards (first: %d); drain it first",
				ErrUnsafe, c.ID, len(held), held[0])
		}
	}
	n.State = c.State
	f.m.Nodes[c.ID] = n
	return true, nil
}

func (f *FSM) beginOperation(c *BeginOperationCmd) error {
	op := c.Operation
	if f.op != nil {
		if f.op.ID == op.ID {
			return nil
		}
		return fmt.Errorf("%w: %s (%s) is recorded", ErrOperationRunning, f.op.ID, f.op.Kind)
	}
	if op.Kind == OperationDrain {
		if _, ok := f.m.Nodes[op.Node]; !ok {
			return fmt.Errorf("%w: drain of %q", ErrUnknownNode, op.Node)
		}
	}
	f.op = &op
	return nil
}

func (f *FSM) setShardReplicas(c *SetShardReplicasCmd) (bool, error) {
	if int64(c.Shard) >= int64(len(f.m.ShardMap)) {
		return false, fmt.Errorf("%w: %d (the cluster has %d)", ErrUnknownShard, c.Shard, len(f.m.ShardMap))
	}
	s := &f.m.ShardMap[c.Shard]
	if s.Version != c.ExpectedVersion {
		return false, fmt.Errorf("%w: shard %d is at version %d, not %d", ErrStaleVersion, c.Shard, s.Version, c.ExpectedVersion)
	}
	if err := f.m.validReplicas(c.Shard, c.Replicas); err != nil {
		return false, err
	}
	for _, id := range c.Replicas {
		if !slices.Contains(s.Replicas, id) && f.m.Nodes[id].State != NodeActive {
			return false, fmt.Errorf("%w: shard %d cannot get a new replica on %s, which is %s",
				ErrNodeNotActive, c.Shard, id, f.m.Nodes[id].State)
		}
	}
	if err := SafeChange(s.Replicas, c.Replicas); err != nil {
		return false, fmt.Errorf("shard %d %v → %v: %w", c.Shard, s.Replicas, c.Replicas, err)
	}
	if slices.Equal(s.Replicas, c.Replicas) {
		return false, nil
	}
	s.Replicas = slices.Clone(c.Replicas)
	s.Version++
	return true, nil
}

// snapshotFormat is the version of the snapshot encoding.
const snapshotFormat = 1

// snapshotDoc is what a snapshot holds: the whole map, or none before
// bootstrap, and the recorded operation.
type snapshotDoc struct {
	Format    int             `json:"format"`
	Map       *Map            `json:"map"`
	Operation *Operation      `json:"operation,omitempty"`
	LastEnded *EndedOperation `json:"last_ended,omitempty"`
}

// Snapshot implements raft.FSM.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	doc := snapshotDoc{Format: snapshotFormat}
	if f.m.Bootstrapped() {
		m := f.m.Clone()
		doc.Map = &m
	}
	if f.op != nil {
		op := *f.op
		doc.Operation = &op
	}
	if f.ended != nil {
		e := *f.ended
		doc.LastEnded = &e
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return fsmSnapshot(b), nil
}

// Restore implements raft.FSM: it replaces the map with the snapshot's,
// after checking it.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 4*MaxCommandSize+1))
	if err != nil {
		return fmt.Errorf("placement: reading the meta snapshot: %w", err)
	}
	if len(b) > 4*MaxCommandSize {
		return fmt.Errorf("%w: meta snapshot larger than %d bytes", ErrBadCommand, 4*MaxCommandSize)
	}
	var doc snapshotDoc
	if err := decodeStrict(b, &doc); err != nil {
		return fmt.Errorf("placement: meta snapshot: %w", err)
	}
	if doc.Format != snapshotFormat {
		return fmt.Errorf("%w: meta snapshot format %d (this node understands %d)", ErrBadCommand, doc.Format, snapshotFormat)
	}
	var m Map
	if doc.Map != nil {
		m = *doc.Map
		if err := m.Validate(); err != nil {
			return fmt.Errorf("placement: meta snapshot: %w", err)
		}
	}
	if doc.Operation != nil {
		if err := doc.Operation.validate(); err != nil {
			return fmt.Errorf("placement: meta snapshot: %w", err)
		}
	}
	if e := doc.LastEnded; e != nil {
		if err := errors.Join(e.Operation.validate(), e.OperationOutcome.validate()); err != nil {
			return fmt.Errorf("placement: meta snapshot: last ended operation: %w", err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m = m
	f.op = doc.Operation
	f.ended = doc.LastEnded
	close(f.watch)
	f.watch = make(chan struct{})
	return nil
}

// fsmSnapshot is an encoded snapshot, written out by Persist.
type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() {}

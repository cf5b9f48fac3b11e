package placement

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// bootstrapped returns an FSM holding InitialMap over nodes n01..n0k.
func bootstrapped(t *testing.T, k, shards, replicas int) *FSM {
	t.Helper()
	f := NewFSM()
	v, err := f.ApplyCommand(Command{Bootstrap: &BootstrapCmd{Map: InitialMap("c1", testNodes(k), shards, replicas)}})
	if err != nil || v != 1 {
		t.Fatalf("bootstrap: version %d, %v", v, err)
	}
	return f
}

// apply encodes c and applies it as a raft log entry, as the meta group does.
func apply(f *FSM, c Command) (uint64, error) {
	b, err := EncodeCommand(c)
	if err != nil {
		return 0, err
	}
	return ApplyResponse(f.Apply(&raft.Log{Type: raft.LogCommand, Data: b, Index: 1, Term: 1}))
}

func TestFSMCommands(t *testing.T) {
	node4 := Node{ID: "n04", GRPCAddr: "127.0.0.1:9004", HTTPAddr: "127.0.0.1:8004"}
	type step struct {
		cmd  Command
		want error // nil = applied
	}
	setState := func(id NodeID, st NodeState) Command {
		return Command{SetNodeState: &SetNodeStateCmd{ID: id, State: st}}
	}
	setReps := func(s ShardID, v uint64, r ...string) Command {
		return Command{SetShardReplicas: &SetShardReplicasCmd{Shard: s, ExpectedVersion: v, Replicas: ids(r...)}}
	}
	upsert := func(n Node) Command { return Command{UpsertNode: &UpsertNodeCmd{Node: n}} }

	for _, tc := range []struct {
		name  string
		steps []step
		check func(t *testing.T, m Map)
	}{
		{name: "double bootstrap", steps: []step{
			{Command{Bootstrap: &BootstrapCmd{Map: InitialMap("c2", testNodes(1), 1, 1)}}, ErrAlreadyBootstrapped},
		}, check: func(t *testing.T, m Map) {
			if m.ClusterID != "c1" {
				t.Fatalf("cluster id %q", m.ClusterID)
			}
		}},
		{name: "register a node", steps: []step{{upsert(node4), nil}}, check: func(t *testing.T, m Map) {
			if n := m.Nodes["n04"]; n.State != NodeActive || n.HTTPAddr != "127.0.0.1:8004" {
				t.Fatalf("n04 = %+v", n)
			}
		}},
		{name: "update addresses keeps state", steps: []step{
			{setState("n01", NodeDraining), nil},
			{upsert(Node{ID: "n01", GRPCAddr: "10.0.0.1:1", State: NodeActive}), nil},
		}, check: func(t *testing.T, m Map) {
			if n := m.Nodes["n01"]; n.State != NodeDraining || n.GRPCAddr != "10.0.0.1:1" {
				t.Fatalf("n01 = %+v", n)
			}
		}},
		{name: "a data dir ID is recorded once and never replaced", steps: []step{
			{upsert(Node{ID: "n05", GRPCAddr: "a:1"}), nil},
			{upsert(Node{ID: "n05", GRPCAddr: "a:1", DataID: "d1"}), nil},
			{upsert(Node{ID: "n05", GRPCAddr: "a:2"}), nil},
			{upsert(Node{ID: "n05", GRPCAddr: "a:3", DataID: "d2"}), ErrDataDirReplaced},
		}, check: func(t *testing.T, m Map) {
			if n := m.Nodes["n05"]; n.DataID != "d1" || n.GRPCAddr != "a:2" {
				t.Fatalf("n05 = %+v, want data dir d1 at a:2", n)
			}
		}},
		{name: "register with an oversized data dir ID", steps: []step{
			{upsert(Node{ID: "n09", GRPCAddr: "a:1", DataID: strings.Repeat("d", 65)}), ErrInvalidNode},
		}},
		{name: "register as removed", steps: []step{
			{upsert(Node{ID: "n09", GRPCAddr: "a:1", State: NodeRemoved}), ErrInvalidNodeState},
		}},
		{name: "register without grpc address", steps: []step{
			{upsert(Node{ID: "n09"}), ErrInvalidNode},
		}},
		{name: "register with a bad id", steps: []step{
			{Command{UpsertNode: &UpsertNodeCmd{Node: Node{GRPCAddr: "a:1"}}}, ErrInvalidNodeID},
		}},
		{name: "drain and remove an empty node", steps: []step{
			{upsert(node4), nil},
			{setState("n04", NodeDraining), nil},
			{setState("n04", NodeRemoved), nil},
		}, check: func(t *testing.T, m Map) {
			if m.Nodes["n04"].State != NodeRemoved {
				t.Fatal("n04 not removed")
			}
		}},
		{name: "resurrect a removed node", steps: []step{
			{upsert(node4), nil},
			{setState("n04", NodeRemoved), nil},
			{upsert(node4), ErrNodeRemoved},
			{setState("n04", NodeActive), ErrNodeRemoved},
		}},
		{name: "remove a node that holds replicas", steps: []step{
			{setState("n01", NodeRemoved), ErrUnsafe},
		}},
		{name: "state of unknown node", steps: []step{
			{setState("zz", NodeDraining), ErrUnknownNode},
		}},
		{name: "move a replica: add then remove", steps: []step{
			{upsert(node4), nil},
			{setReps(0, 1, "n01", "n02", "n03", "n04"), nil},
			{setReps(0, 2, "n02", "n03", "n04"), nil},
		}, check: func(t *testing.T, m Map) {
			if s := m.ShardMap[0]; s.Version != 3 || !slices.Equal(s.Replicas, ids("n02", "n03", "n04")) {
				t.Fatalf("shard 0 = %+v", s)
			}
		}},
		{name: "replace one replica in one change", steps: []step{
			{upsert(node4), nil},
			{setReps(0, 1, "n01", "n02", "n04"), nil},
		}},
		{name: "stale version", steps: []step{
			{upsert(node4), nil},
			{setReps(0, 1, "n01", "n02", "n04"), nil},
			{setReps(0, 1, "n01", "n02", "n03"), ErrStaleVersion},
			{setReps(0, 7, "n01", "n02", "n03"), ErrStaleVersion},
		}},
		{name: "unknown replica", steps: []step{
			{setReps(0, 1, "n01", "n02", "zz"), ErrUnknownNode},
		}},
		{name: "removed replica", steps: []step{
			{upsert(node4), nil},
			{setState("n04", NodeRemoved), nil},
			{setReps(0, 1, "n01", "n02", "n03", "n04"), ErrNodeRemoved},
		}},
		{name: "new replica on a draining node", steps: []step{
			{upsert(node4), nil},
			{setState("n04", NodeDraining), nil},
			{setReps(0, 1, "n01", "n02", "n03", "n04"), ErrNodeNotActive},
		}},
		{name: "draining replica may stay", steps: []step{
			{upsert(node4), nil},
			{setState("n03", NodeDraining), nil},
			{setReps(0, 1, "n01", "n03", "n04"), nil},
		}},
		{name: "remove two replicas at once", steps: []step{
			{setReps(0, 1, "n01"), ErrUnsafe},
		}},
		{name: "add two replicas at once", steps: []step{
			{upsert(node4), nil},
			{upsert(Node{ID: "n05", GRPCAddr: "a:5"}), nil},
			{setReps(0, 1, "n01", "n02", "n03", "n04", "n05"), ErrUnsafe},
		}},
		{name: "duplicate replica", steps: []step{
			{setReps(0, 1, "n01", "n01", "n02"), ErrInvalidMap},
		}},
		{name: "empty replica set", steps: []step{
			{setReps(0, 1), ErrInvalidMap},
		}},
		{name: "unknown shard", steps: []step{
			{setReps(8, 1, "n01", "n02", "n03"), ErrUnknownShard},
			{setReps(1<<31, 1, "n01", "n02", "n03"), ErrUnknownShard},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := bootstrapped(t, 3, 8, 3)
			for i, s := range tc.steps {
				before := f.Map()
				v, err := apply(f, s.cmd)
				after := f.Map()
				if s.want == nil {
					if err != nil {
						t.Fatalf("step %d (%s): %v", i, s.cmd, err)
					}
					if v != after.Version || v != before.Version+1 {
						t.Fatalf("step %d: version %d, map %d → %d", i, v, before.Version, after.Version)
					}
				} else {
					if !errors.Is(err, s.want) {
						t.Fatalf("step %d (%s): err %v, want %v", i, s.cmd, err, s.want)
					}
					if !reflect.DeepEqual(before, after) {
						t.Fatalf("step %d: a rejected command changed the map", i)
					}
				}
				if err := after.Validate(); err != nil {
					t.Fatalf("step %d left an invalid map: %v", i, err)
				}
			}
			if tc.check != nil {
				tc.check(t, f.Map())
			}
		})
	}
}

func TestFSMChecksIDsItself(t *testing.T) {
	// EncodeCommand refuses malformed IDs; the FSM must too (a command
	// may come from a peer running other code).
	f := bootstrapped(t, 3, 4, 3)
	if _, err := f.ApplyCommand(Command{UpsertNode: &UpsertNodeCmd{Node: Node{ID: "Bad ID", GRPCAddr: "a:1"}}}); !errors.Is(err, ErrInvalidNodeID) {
		t.Fatalf("upsert with a bad id: %v", err)
	}
	if _, err := f.ApplyCommand(Command{SetNodeState: &SetNodeStateCmd{ID: "n01"}}); !errors.Is(err, ErrInvalidNodeState) {
		t.Fatalf("set_node_state without a state: %v", err)
	}
	if _, err := f.ApplyCommand(Command{}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("empty command: %v", err)
	}
}

func TestFSMBeforeBootstrap(t *testing.T) {
	f := NewFSM()
	for _, c := range []Command{
		{UpsertNode: &UpsertNodeCmd{Node: Node{ID: "a", GRPCAddr: "a:1"}}},
		{SetNodeState: &SetNodeStateCmd{ID: "a", State: NodeDraining}},
		{SetShardReplicas: &SetShardReplicasCmd{Replicas: ids("a")}},
	} {
		if _, err := apply(f, c); !errors.Is(err, ErrNotBootstrapped) {
			t.Errorf("%s before bootstrap: %v", c, err)
		}
	}
	if f.Map().Bootstrapped() {
		t.Fatal("bootstrapped by a rejected command")
	}
	// An invalid first map is refused and the FSM stays empty.
	for _, m := range []Map{
		InitialMap("", testNodes(3), 4, 3),
		InitialMap("c", nil, 4, 3),
		InitialMap("c", testNodes(3), 0, 3),
		InitialMap("c", testNodes(3), 4, 0),
	} {
		if _, err := apply(f, Command{Bootstrap: &BootstrapCmd{Map: m}}); !errors.Is(err, ErrInvalidMap) {
			t.Errorf("bootstrap with %+v: %v", m, err)
		}
	}
	if f.Map().Bootstrapped() {
		t.Fatal("bootstrapped by an invalid map")
	}
}

func TestFSMBootstrapNormalizes(t *testing.T) {
	m := InitialMap("c", testNodes(2), 3, 2)
	m.Version = 42
	m.ShardMap[1].Version = 9
	n := m.Nodes["n01"]
	n.State = 0
	m.Nodes["n01"] = n
	f := NewFSM()
	if _, err := apply(f, Command{Bootstrap: &BootstrapCmd{Map: m}}); err != nil {
		t.Fatal(err)
	}
	got := f.Map()
	if got.Version != 1 || got.ShardMap[1].Version != InitialShardVersion || got.Nodes["n01"].State != NodeActive {
		t.Fatalf("bootstrapped map not normalized: %+v", got)
	}
}

func TestFSMNoOpsKeepVersion(t *testing.T) {
	f := bootstrapped(t, 3, 4, 3)
	m := f.Map()
	w := f.Watch()
	n := m.Nodes["n01"]
	for _, c := range []Command{
		{UpsertNode: &UpsertNodeCmd{Node: n}},
		{SetNodeState: &SetNodeStateCmd{ID: "n01", State: NodeActive}},
		{SetShardReplicas: &SetShardReplicasCmd{Shard: 0, ExpectedVersion: 1, Replicas: m.ShardMap[0].Replicas}},
	} {
		v, err := apply(f, c)
		if err != nil || v != m.Version {
			t.Fatalf("%s no-op: version %d, %v", c, v, err)
		}
	}
	select {
	case <-w:
		t.Fatal("a no-op fired the watch")
	default:
	}
	if f.Map().ShardMap[0].Version != 1 {
		t.Fatal("a no-op bumped the shard version")
	}
}

func TestFSMWatch(t *testing.T) {
	f := bootstrapped(t, 3, 4, 3)
	m, w := f.MapAndWatch()
	w2 := f.Watch()
	if _, err := apply(f, Command{SetNodeState: &SetNodeStateCmd{ID: "n02", State: NodeDraining}}); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan struct{}{w, w2} {
		select {
		case <-ch:
		default:
			t.Fatal("watch not closed by a change")
		}
	}
	m2, w3 := f.MapAndWatch()
	if m2.Version != m.Version+1 {
		t.Fatalf("version %d → %d", m.Version, m2.Version)
	}
	if _, err := apply(f, Command{SetNodeState: &SetNodeStateCmd{ID: "zz", State: NodeDraining}}); err == nil {
		t.Fatal("unknown node accepted")
	}
	select {
	case <-w3:
		t.Fatal("a rejected command fired the watch")
	default:
	}
	// Map returns a copy.
	m2.ShardMap[0].Replicas[0] = "zz"
	m2.Nodes["n01"] = Node{}
	if err := f.Map().Validate(); err != nil {
		t.Fatalf("mutating Map()'s result changed the FSM: %v", err)
	}
}

func TestFSMApplyGarbage(t *testing.T) {
	f := bootstrapped(t, 3, 4, 3)
	before := f.Map()
	for _, data := range [][]byte{nil, {}, {0}, {1}, {2, '{', '}'}, []byte("\x01{}"), []byte("\x01null"), []byte("\x01{\"bogus\":1}")} {
		resp := f.Apply(&raft.Log{Type: raft.LogCommand, Data: data})
		if _, err := ApplyResponse(resp); !errors.Is(err, ErrBadCommand) {
			t.Errorf("Apply(%q) = %v, want ErrBadCommand", data, resp)
		}
	}
	if resp := f.Apply(&raft.Log{Type: raft.LogNoop}); resp == nil {
		t.Error("Apply of a non-command entry returned nil")
	}
	if !reflect.DeepEqual(before, f.Map()) {
		t.Fatal("garbage changed the map")
	}
	if _, err := ApplyResponse("what"); err == nil {
		t.Fatal("ApplyResponse accepted a string")
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed {
		t.Fatalf("Persist: %v (closed %v)", err, sink.closed)
	}
	snap.Release()
	return sink.Bytes()
}

func TestFSMSnapshotRestore(t *testing.T) {
	f := bootstrapped(t, 3, 16, 3)
	for _, c := range []Command{
		{UpsertNode: &UpsertNodeCmd{Node: Node{ID: "n04", GRPCAddr: "h:4", AdminAddr: "h:5"}}},
		{SetNodeState: &SetNodeStateCmd{ID: "n02", State: NodeDraining}},
		{SetShardReplicas: &SetShardReplicasCmd{Shard: 5, ExpectedVersion: 1, Replicas: ids("n01", "n03", "n04")}},
	} {
		if _, err := apply(f, c); err != nil {
			t.Fatal(err)
		}
	}
	snap := snapshotBytes(t, f)
	// Changes after the snapshot do not leak into it.
	if _, err := apply(f, Command{SetNodeState: &SetNodeStateCmd{ID: "n03", State: NodeDraining}}); err != nil {
		t.Fatal(err)
	}

	g := NewFSM()
	w := g.Watch()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w:
	default:
		t.Fatal("Restore did not fire the watch")
	}
	got := g.Map()
	if got.Version != 4 || got.Nodes["n03"].State != NodeActive || got.Nodes["n02"].State != NodeDraining ||
		!slices.Equal(got.ShardMap[5].Replicas, ids("n01", "n03", "n04")) || got.ShardMap[5].Version != 2 {
		t.Fatalf("restored map wrong: %+v", got)
	}
	// A restored FSM keeps enforcing the rules: the CAS continues from
	// the restored versions, and bootstrap stays refused.
	if _, err := apply(g, Command{SetShardReplicas: &SetShardReplicasCmd{Shard: 5, ExpectedVersion: 1, Replicas: ids("n01", "n03")}}); !errors.Is(err, ErrStaleVersion) {
		t.Fatalf("stale CAS after restore: %v", err)
	}
	if _, err := apply(g, Command{Bootstrap: &BootstrapCmd{Map: InitialMap("c9", testNodes(1), 1, 1)}}); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Fatalf("bootstrap after restore: %v", err)
	}
	// Restoring replaces everything, including with an empty snapshot.
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, NewFSM())))); err != nil {
		t.Fatal(err)
	}
	if g.Map().Bootstrapped() {
		t.Fatal("restoring an empty snapshot kept the old map")
	}
	// Round trip is exact.
	h := NewFSM()
	if err := h.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotBytes(t, h), snap) {
		t.Fatal("snapshot → restore → snapshot is not identical")
	}
}

func TestFSMRestoreRejectsBadSnapshots(t *testing.T) {
	good := snapshotBytes(t, bootstrapped(t, 3, 4, 3))
	for name, b := range map[string][]byte{
		"empty":          nil,
		"not json":       []byte("hello"),
		"trailing":       append(slices.Clone(good), []byte(" {}")...),
		"unknown format": bytes.Replace(good, []byte(`"format":1`), []byte(`"format":2`), 1),
		"unknown field":  bytes.Replace(good, []byte(`"format":1`), []byte(`"format":1,"x":0`), 1),
		"invalid map":    bytes.Replace(good, []byte(`"shards":4`), []byte(`"shards":5`), 1),
		"bad node id":    bytes.Replace(good, []byte(`"n01"`), []byte(`"N 01"`), -1),
	} {
		f := bootstrapped(t, 2, 2, 1)
		before := f.Map()
		if err := f.Restore(io.NopCloser(bytes.NewReader(b))); err == nil {
			t.Errorf("%s: Restore accepted it", name)
		}
		if !reflect.DeepEqual(before, f.Map()) {
			t.Errorf("%s: a failed Restore changed the map", name)
		}
	}
}

func TestFSMOperations(t *testing.T) {
	f := bootstrapped(t, 3, 8, 3)
	rebalance := Operation{ID: "rebalance-1", Kind: OperationRebalance, MaxConcurrent: 2, Started: time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)}
	drain := Operation{ID: "drain-2", Kind: OperationDrain, Node: "n02", MaxConcurrent: 1}
	begin := func(op Operation) Command { return Command{BeginOperation: &BeginOperationCmd{Operation: op}} }
	end := func(id string) Command {
		return Command{EndOperation: &EndOperationCmd{ID: id, OperationOutcome: OperationOutcome{State: OperationDone, Done: 7, Finished: time.Date(2026, 12, 3, 7, 5, 0, 0, time.UTC)}}}
	}
	recorded := func(want *Operation) {
		t.Helper()
		got, ok := f.Operation()
		switch {
		case want == nil && ok:
			t.Fatalf("recorded operation %+v, want none", got)
		case want != nil && (!ok || got != *want):
			t.Fatalf("recorded operation %+v (%v), want %+v", got, ok, *want)
		}
	}

	recorded(nil)
	w := f.Watch()
	steps := []struct {
		name string
		cmd  Command
		want error
		then *Operation
	}{
		{"begin", begin(rebalance), nil, &rebalance},
		{"begin the same again", begin(rebalance), nil, &rebalance},
		{"begin another", begin(drain), ErrOperationRunning, &rebalance},
		{"end another", end("drain-2"), nil, &rebalance},
		{"end", end("rebalance-1"), nil, nil},
		{"end again", end("rebalance-1"), nil, nil},
		{"drain of an unknown node", begin(Operation{ID: "d", Kind: OperationDrain, Node: "n09", MaxConcurrent: 1}), ErrUnknownNode, nil},
		{"drain", begin(drain), nil, &drain},
	}
	for _, st := range steps {
		v, err := apply(f, st.cmd)
		if !errors.Is(err, st.want) || (st.want == nil) != (err == nil) {
			t.Fatalf("%s: %v, want %v", st.name, err, st.want)
		}
		if err == nil && v != 1 {
			t.Fatalf("%s: map version %d, want 1 (operations do not change the map)", st.name, v)
		}
		recorded(st.then)
	}
	select {
	case <-w:
		t.Fatal("recording operations fired the map's watch")
	default:
	}
	// The rebalance's end is kept, with how it ended; ends of operations
	// not recorded ("drain-2" while the rebalance was) are not.
	wantEnded := EndedOperation{Operation: rebalance, OperationOutcome: OperationOutcome{State: OperationDone, Done: 7, Finished: time.Date(2026, 12, 3, 7, 5, 0, 0, time.UTC)}}
	if got, ok := f.LastEnded(); !ok || got != wantEnded {
		t.Fatalf("last ended %+v (%v), want %+v", got, ok, wantEnded)
	}

	// The recorded operation is part of the snapshot, and restoring one
	// without it clears it.
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	if got, ok := g.Operation(); !ok || got != drain {
		t.Fatalf("restored operation %+v (%v), want %+v", got, ok, drain)
	}
	if got, ok := g.LastEnded(); !ok || got != wantEnded {
		t.Fatalf("restored last ended %+v (%v), want %+v", got, ok, wantEnded)
	}
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, bootstrapped(t, 3, 8, 3))))); err != nil {
		t.Fatal(err)
	}
	if got, ok := g.Operation(); ok {
		t.Fatalf("restoring a snapshot without an operation kept %+v", got)
	}
	if got, ok := g.LastEnded(); ok {
		t.Fatalf("restoring a snapshot without an ended operation kept %+v", got)
	}
	for _, c := range []struct{ from, to string }{
		{`"kind":"drain"`, `"kind":"heal"`},
		{`"state":"done"`, `"state":"paused"`},
	} {
		bad := bytes.Replace(snapshotBytes(t, f), []byte(c.from), []byte(c.to), 1)
		if err := g.Restore(io.NopCloser(bytes.NewReader(bad))); !errors.Is(err, ErrBadCommand) {
			t.Fatalf("restoring a snapshot with %s: %v", c.to, err)
		}
	}
}

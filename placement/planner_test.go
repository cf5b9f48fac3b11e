package placement

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// withNodes returns m's map with its nodes replaced by those given.
func mapOf(nodes []Node, shards, replicas int) Map {
	return InitialMap("c1", nodes, shards, replicas)
}

func setState(m Map, id NodeID, st NodeState) {
	n := m.Nodes[id]
	n.State = st
	m.Nodes[id] = n
}

// slotsMoved counts replica slots of b that a did not have, per shard.
func slotsMoved(a, b map[ShardID][]NodeID) int {
	moved := 0
	for s, reps := range b {
		for _, id := range reps {
			if !slices.Contains(a[s], id) {
				moved++
			}
		}
	}
	return moved
}

func TestDesiredThreeNodes(t *testing.T) {
	m := mapOf(testNodes(3), 64, 3)
	d := Desired(m)
	if len(d) != 64 {
		t.Fatalf("%d shards in Desired", len(d))
	}
	for s, reps := range d {
		if len(reps) != 3 {
			t.Fatalf("shard %d has %d replicas", s, len(reps))
		}
		seen := map[NodeID]bool{}
		for _, id := range reps {
			if seen[id] || m.Nodes[id].State != NodeActive {
				t.Fatalf("shard %d replicas %v", s, reps)
			}
			seen[id] = true
		}
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestDesiredMatchesConsistent pins the contract with node's shardOf: the
// planner's shard s is consistent's partition s for the same hasher, so
// the replica set of the shard an object ID maps to is
// GetClosestN(objectID) of a ring built the documented way.
func TestDesiredMatchesConsistent(t *testing.T) {
	m := mapOf(testNodes(5), 64, 3)
	d := Desired(m)
	var members []consistent.Member
	for _, id := range m.NodesIn(NodeActive) {
		members = append(members, id)
	}
	c := consistent.New(members, consistent.Config{Hasher: hasher{}, PartitionCount: 64, ReplicationFactor: 64, Load: 1.25})
	for i := 0; i < 200; i++ {
		key := []byte(fmt.Sprintf("object-%d", i))
		shard := ShardID(xxhash.Sum64(key) % 64) // node/manager.go shardOf
		if got := c.FindPartitionID(key); got != int(shard) {
			t.Fatalf("consistent partition %d != shardOf %d", got, shard)
		}
		want, err := c.GetClosestN(key, 3)
		if err != nil {
			t.Fatal(err)
		}
		for j, mem := range want {
			if d[shard][j] != mem.(NodeID) {
				t.Fatalf("shard %d: Desired %v, consistent %v", shard, d[shard], want)
			}
		}
	}
}

func TestDesiredBalance(t *testing.T) {
	m := mapOf(testNodes(5), 64, 3)
	load := map[NodeID]int{}
	lead := map[NodeID]int{}
	for _, reps := range Desired(m) {
		lead[reps[0]]++
		for _, id := range reps {
			load[id]++
		}
	}
	// 64 shards × 3 replicas over 5 nodes: 38.4 each on average.
	for id, n := range load {
		if n < 20 || n > 56 {
			t.Errorf("%s holds %d replicas: %v", id, n, load)
		}
	}
	// Owners are bounded by consistent's load: ceil(floor(64/5) × 1.25) = 15.
	for id, n := range lead {
		if n > 15 {
			t.Errorf("%s owns %d shards, more than the bound 15: %v", id, n, lead)
		}
	}
}

func TestAddingANodeMovesAboutAQuarter(t *testing.T) {
	nodes := testNodes(4)
	before := Desired(mapOf(nodes[:3], 64, 3))
	after := Desired(mapOf(nodes, 64, 3))
	moved := slotsMoved(before, after)
	frac := float64(moved) / float64(64*3)
	t.Logf("adding a 4th node moves %d of %d replica slots (%.0f%%)", moved, 64*3, frac*100)
	if frac < 0.15 || frac > 0.35 {
		t.Fatalf("moved %.0f%% of replica slots, want about 25%%", frac*100)
	}
	// Every moved slot goes to the new node.
	for s, reps := range after {
		for _, id := range reps {
			if !slices.Contains(before[s], id) && id != nodes[3].ID {
				t.Fatalf("shard %d gained %s, not the new node", s, id)
			}
		}
	}
}

func TestRemovingANodeMovesLittleElse(t *testing.T) {
	for _, st := range []NodeState{NodeDraining, NodeRemoved} {
		t.Run(st.String(), func(t *testing.T) {
			const shards, replicas = 64, 3
			m := mapOf(testNodes(6), shards, replicas)
			before := Desired(m)
			gone := NodeID("n03")
			held := len(m.ShardsOf(gone))
			setState(m, gone, st)
			after := Desired(m)
			for s, reps := range after {
				if len(reps) != replicas || slices.Contains(reps, gone) {
					t.Fatalf("shard %d: %v", s, reps)
				}
			}
			moved := slotsMoved(before, after)
			extra := moved - held
			t.Logf("%s node held %d slots; %d slots moved (%d beyond its own)", st, held, moved, extra)
			if extra < 0 {
				t.Fatalf("moved %d < %d", moved, held)
			}
			// Bounded-load rebalancing may shift a few owners; most of the
			// other 5/6 of the slots must stay.
			if extra > shards*replicas/10 {
				t.Fatalf("%d slots moved beyond the removed node's %d", extra, held)
			}
		})
	}
}

func TestDesiredFewActiveNodes(t *testing.T) {
	m := mapOf(testNodes(3), 16, 3)
	setState(m, "n02", NodeDraining)
	for s, reps := range Desired(m) {
		if len(reps) != 2 || slices.Contains(reps, "n02") {
			t.Fatalf("shard %d: %v", s, reps)
		}
	}
	setState(m, "n01", NodeDraining)
	setState(m, "n03", NodeDraining)
	if d := Desired(m); len(d) != 0 {
		t.Fatalf("Desired with no active node = %v", d)
	}
	if p := Plan(m); len(p) != 0 {
		t.Fatalf("Plan with no active node = %v", p)
	}
}

func TestDesiredFewerShardsThanNodes(t *testing.T) {
	// consistent panics when partitions < members; the planner must not.
	for _, shards := range []int{1, 2, 3} {
		m := mapOf(testNodes(5), shards, 3)
		if err := m.Validate(); err != nil {
			t.Fatalf("%d shards: %v", shards, err)
		}
		if len(Desired(m)) != shards {
			t.Fatalf("%d shards: Desired has %d", shards, len(Desired(m)))
		}
	}
	m := mapOf(testNodes(1), 1, 3)
	if err := m.Validate(); err != nil || len(m.ShardMap[0].Replicas) != 1 {
		t.Fatalf("one node: %v %+v", err, m.ShardMap)
	}
}

// runPlan applies every move step by step to m's shard map, checking each
// step, and returns the final replica sets.
func runPlan(t *testing.T, m Map, moves []Move) map[ShardID][]NodeID {
	t.Helper()
	cur := map[ShardID][]NodeID{}
	for _, s := range m.ShardMap {
		cur[s.ID] = slices.Clone(s.Replicas)
	}
	for i, mv := range moves {
		if mv.Add == "" && mv.Remove == "" {
			t.Fatalf("move %d is empty", i)
		}
		if mv.Add != "" && m.Nodes[mv.Add].State != NodeActive {
			t.Fatalf("move %d adds non-active %s", i, mv.Add)
		}
		if mv.Add != "" && slices.Contains(cur[mv.Shard], mv.Add) {
			t.Fatalf("move %d adds %s, already a replica", i, mv.Add)
		}
		if mv.Remove != "" && !slices.Contains(cur[mv.Shard], mv.Remove) {
			t.Fatalf("move %d removes %s, not a replica", i, mv.Remove)
		}
		prev := cur[mv.Shard]
		for _, next := range mv.Steps(prev) {
			if err := SafeChange(prev, next); err != nil {
				t.Fatalf("move %d (%v) step %v → %v: %v", i, mv, prev, next, err)
			}
			// Each step keeps enough of the set before it to meet every
			// majority of it (so a replica with every committed entry
			// stays): at least a quorum when it has 3 or more replicas,
			// and one of a pair.
			kept := 0
			for _, id := range next {
				if slices.Contains(prev, id) {
					kept++
				}
			}
			if kept <= len(prev)-Quorum(len(prev)) || len(prev) >= 3 && kept < Quorum(len(prev)) {
				t.Fatalf("move %d step %v → %v keeps only %d", i, prev, next, kept)
			}
			prev = next
		}
		if !slices.Equal(prev, mv.Apply(cur[mv.Shard])) {
			t.Fatalf("move %d: Steps end at %v, Apply gives %v", i, prev, mv.Apply(cur[mv.Shard]))
		}
		cur[mv.Shard] = prev
	}
	return cur
}

func sameSets(a, b []NodeID) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(id NodeID) bool { return !slices.Contains(b, id) })
}

func TestPlanConverges(t *testing.T) {
	type scenario struct {
		name   string
		m      Map
		mutate func(m Map)
	}
	base := func(n, shards, replicas int) Map { return mapOf(testNodes(n), shards, replicas) }
	addNodes := func(m Map, ns ...Node) {
		for _, n := range ns {
			m.Nodes[n.ID] = n
		}
	}
	more := testNodes(9)
	for _, sc := range []scenario{
		{"steady", base(3, 64, 3), func(Map) {}},
		{"add a 4th node", base(3, 64, 3), func(m Map) { addNodes(m, more[3]) }},
		{"add three nodes", base(3, 64, 3), func(m Map) { addNodes(m, more[3:6]...) }},
		{"drain one of five", base(5, 64, 3), func(m Map) { setState(m, "n02", NodeDraining) }},
		{"drain one of three", base(3, 64, 3), func(m Map) { setState(m, "n02", NodeDraining) }},
		{"drain two of three", base(3, 16, 3), func(m Map) {
			setState(m, "n02", NodeDraining)
			setState(m, "n03", NodeDraining)
		}},
		{"replace every node", base(3, 32, 3), func(m Map) {
			for _, id := range []NodeID{"n01", "n02", "n03"} {
				setState(m, id, NodeDraining)
			}
			addNodes(m, more[3:6]...)
		}},
		{"one replica, add node", base(1, 16, 1), func(m Map) { addNodes(m, more[1:4]...) }},
		{"one replica, drain", base(2, 16, 1), func(m Map) { setState(m, "n01", NodeDraining) }},
		{"two replicas, drain", base(3, 16, 2), func(m Map) { setState(m, "n01", NodeDraining) }},
		{"grow from one node", base(1, 16, 3), func(m Map) { addNodes(m, more[1:5]...) }},
		{"five replicas", base(7, 32, 5), func(m Map) {
			setState(m, "n01", NodeDraining)
			addNodes(m, more[7:9]...)
		}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			m := sc.m
			sc.mutate(m)
			moves := Plan(m)
			want := Desired(m)
			got := runPlan(t, m, moves)
			for s := range got {
				if !sameSets(got[s], want[s]) {
					t.Fatalf("after the plan shard %d has %v, Desired %v", s, got[s], want[s])
				}
			}
			if sc.name == "steady" && len(moves) != 0 {
				t.Fatalf("steady map has moves %v", moves)
			}
			// Determinism: same input, same plan (consistent iterates maps
			// internally, so run it a few times).
			for i := 0; i < 5; i++ {
				if again := Plan(m.Clone()); !reflect.DeepEqual(again, moves) {
					t.Fatalf("Plan is not deterministic:\n%v\n%v", moves, again)
				}
			}
			// Moves of one shard are contiguous and shards ascend.
			for i := 1; i < len(moves); i++ {
				if moves[i].Shard < moves[i-1].Shard {
					t.Fatalf("moves out of shard order at %d: %v", i, moves)
				}
			}
			// After applying, the plan is empty.
			after := m.Clone()
			for s, reps := range got {
				after.ShardMap[s].Replicas = reps
			}
			if rest := Plan(after); len(rest) != 0 {
				t.Fatalf("plan after convergence: %v", rest)
			}
			t.Logf("%d moves", len(moves))
		})
	}
}

// TestPlanThroughFSM carries a plan out through the FSM, step by step with
// compare-and-set, as a controller would.
func TestPlanThroughFSM(t *testing.T) {
	f := bootstrapped(t, 3, 32, 3)
	for _, n := range testNodes(5)[3:] {
		if _, err := apply(f, Command{UpsertNode: &UpsertNodeCmd{Node: n}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := apply(f, Command{SetNodeState: &SetNodeStateCmd{ID: "n01", State: NodeDraining}}); err != nil {
		t.Fatal(err)
	}
	moves := Plan(f.Map())
	if len(moves) == 0 {
		t.Fatal("no moves")
	}
	for _, mv := range moves {
		m := f.Map()
		s := m.ShardMap[mv.Shard]
		for _, next := range mv.Steps(s.Replicas) {
			if _, err := apply(f, Command{SetShardReplicas: &SetShardReplicasCmd{Shard: mv.Shard, ExpectedVersion: s.Version, Replicas: next}}); err != nil {
				t.Fatalf("%v: %v", mv, err)
			}
			s = f.Map().ShardMap[mv.Shard]
		}
	}
	m := f.Map()
	if rest := Plan(m); len(rest) != 0 {
		t.Fatalf("not converged: %v", rest)
	}
	if len(m.ShardsOf("n01")) != 0 {
		t.Fatal("drained node still holds replicas")
	}
	if _, err := apply(f, Command{SetNodeState: &SetNodeStateCmd{ID: "n01", State: NodeRemoved}}); err != nil {
		t.Fatalf("removing the drained node: %v", err)
	}
}

func TestMoveStepsAndString(t *testing.T) {
	mv := Move{Shard: 3, Add: "d", Remove: "a"}
	if s := mv.String(); s != "shard 3: +d -a" {
		t.Fatalf("String = %q", s)
	}
	steps := mv.Steps(ids("a", "b", "c"))
	if len(steps) != 2 || !slices.Equal(steps[0], ids("a", "b", "c", "d")) || !slices.Equal(steps[1], ids("b", "c", "d")) {
		t.Fatalf("Steps = %v", steps)
	}
	if got := (Move{Remove: "b"}).Steps(ids("a", "b")); len(got) != 1 || !slices.Equal(got[0], ids("a")) {
		t.Fatalf("remove-only Steps = %v", got)
	}
}

func TestInitialMapStates(t *testing.T) {
	nodes := testNodes(3)
	nodes[0].State = 0
	nodes[2].State = NodeDraining
	m := InitialMap("c", nodes, 8, 3)
	if m.Nodes["n01"].State != NodeActive || m.Nodes["n03"].State != NodeDraining {
		t.Fatalf("states: %+v", m.Nodes)
	}
	if len(m.ShardsOf("n03")) != 0 {
		t.Fatal("a draining node got initial replicas")
	}
	for _, s := range m.ShardMap {
		if s.Version != InitialShardVersion {
			t.Fatalf("shard %d version %d", s.ID, s.Version)
		}
	}
}

// TestPlannerShapes runs the planner over many cluster shapes: no panic
// (consistent panics when partitions < members), a valid initial map, the
// right replica count, and independence from the order nodes are listed.
func TestPlannerShapes(t *testing.T) {
	for nodes := 1; nodes <= 9; nodes++ {
		for _, shards := range []int{1, 2, 3, 7, 16, 64, 257} {
			for replicas := 1; replicas <= 5; replicas++ {
				ns := testNodes(nodes)
				m := InitialMap("c", ns, shards, replicas)
				if err := m.Validate(); err != nil {
					t.Fatalf("%d nodes, %d shards, %d replicas: %v", nodes, shards, replicas, err)
				}
				for _, s := range m.ShardMap {
					if len(s.Replicas) != min(nodes, replicas) {
						t.Fatalf("%d/%d/%d: shard %d has %v", nodes, shards, replicas, s.ID, s.Replicas)
					}
				}
				slices.Reverse(ns)
				if m2 := InitialMap("c", ns, shards, replicas); !reflect.DeepEqual(m, m2) {
					t.Fatalf("%d/%d/%d: node order changed the map", nodes, shards, replicas)
				}
				if p := Plan(m); len(p) != 0 {
					t.Fatalf("%d/%d/%d: fresh map has moves %v", nodes, shards, replicas, p)
				}
			}
		}
	}
}

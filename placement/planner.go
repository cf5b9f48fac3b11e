package placement

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Planner computes where shards' replicas should be. It is deterministic:
// the same map gives the same answer on every node, so any meta leader
// plans the same moves.
type Planner struct {
	// VirtualNodes is how many points each member has on the ring
	// (consistent's ReplicationFactor). At least 2.
	VirtualNodes int
	// Load bounds a member's share of partitions at Load × average
	// (consistent's bounded loads). Above 1.
	Load float64
}

// DefaultPlanner is the planner Desired, Plan and InitialMap use. Changing
// its parameters moves shards: every node must use the same ones.
var DefaultPlanner = Planner{VirtualNodes: 64, Load: 1.25}

// Desired returns DefaultPlanner.Desired(m).
func Desired(m Map) map[ShardID][]NodeID { return DefaultPlanner.Desired(m) }

// Plan returns DefaultPlanner.Plan(m).
func Plan(m Map) []Move { return DefaultPlanner.Plan(m) }

// InitialMap returns DefaultPlanner.InitialMap(clusterID, nodes, shards, replicas).
func InitialMap(clusterID string, nodes []Node, shards, replicas int) Map {
	return DefaultPlanner.InitialMap(clusterID, nodes, shards, replicas)
}

// hasher is xxhash, the hash node uses for object → shard
// (xxhash(id) % shards, which is consistent's FindPartitionID).
type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// ring builds the consistent-hash ring over the active nodes of m, or nil
// if there are none.
//
// Partition p of the ring is shard p. consistent's bounded-load placement
// gives each member at most ceil(floor(P/members) × Load) partitions and
// panics when that is 0, that is when there are fewer partitions than
// members; then the ring gets as many partitions as members, of which only
// the first m.Shards are used (a partition's owner depends only on its
// number and the loads, so nothing changes for clusters with at least as
// many shards as active nodes).
func (p Planner) ring(m Map) *consistent.Consistent {
	active := m.NodesIn(NodeActive)
	if len(active) == 0 || m.Shards < 1 {
		return nil
	}
	members := make([]consistent.Member, len(active))
	for i, id := range active {
		members[i] = id
	}
	vn := max(p.VirtualNodes, 2)
	load := p.Load
	if !(load > 1) {
		load = 1.25
	}
	return consistent.New(members, consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    max(m.Shards, len(active)),
		ReplicationFactor: vn,
		Load:              load,
	})
}

// Desired returns, for each shard of m, the replicas it should have: the
// partition's closest m.Replicas active nodes on the ring
// (GetClosestNForPartition), or every active node if there are fewer. The
// first is the partition's owner, the shard's preferred leader. With no
// active node the result is empty.
func (p Planner) Desired(m Map) map[ShardID][]NodeID {
	out := make(map[ShardID][]NodeID, m.Shards)
	r := p.ring(m)
	if r == nil {
		return out
	}
	n := min(max(m.Replicas, 1), len(r.GetMembers()))
	for s := 0; s < m.Shards; s++ {
		ms, err := r.GetClosestNForPartition(s, n)
		if err != nil { // cannot happen: n ≤ members
			panic(fmt.Sprintf("placement: GetClosestNForPartition(%d, %d): %v", s, n, err))
		}
		ids := make([]NodeID, len(ms))
		for i, mem := range ms {
			ids[i] = mem.(NodeID)
		}
		out[ShardID(s)] = ids
	}
	return out
}

// Move is one step of a plan: add a replica to a shard and, in the same
// move, remove one (either may be empty, not both). A move is carried out
// as "add, then remove" (see Steps).
type Move struct {
	Shard  ShardID
	Add    NodeID // "" = none
	Remove NodeID // "" = none
}

// String renders the move as "shard 3: +d -a".
func (mv Move) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "shard %d:", mv.Shard)
	if mv.Add != "" {
		b.WriteString(" +" + string(mv.Add))
	}
	if mv.Remove != "" {
		b.WriteString(" -" + string(mv.Remove))
	}
	return b.String()
}

// Apply returns the replica set after the move: cur without Remove, with
// Add appended.
func (mv Move) Apply(cur []NodeID) []NodeID {
	out := make([]NodeID, 0, len(cur)+1)
	for _, id := range cur {
		if id != mv.Remove {
			out = append(out, id)
		}
	}
	if mv.Add != "" && !slices.Contains(out, mv.Add) {
		out = append(out, mv.Add)
	}
	return out
}

// Steps returns the replica sets a move passes through from cur, in
// order: with Add, cur+Add; with Remove, the set without Remove. Each step
// is a SafeChange of the one before, so each can be one SetShardReplicas.
// (A controller may also write Apply(cur) in one command when that is a
// SafeChange — with two or more replicas — and let the shard leader add
// before it removes.)
func (mv Move) Steps(cur []NodeID) [][]NodeID {
	var steps [][]NodeID
	if mv.Add != "" {
		cur = Move{Add: mv.Add}.Apply(cur)
		steps = append(steps, cur)
	}
	if mv.Remove != "" {
		steps = append(steps, Move{Remove: mv.Remove}.Apply(cur))
	}
	return steps
}

// Plan turns the current shard map into Desired(m) as single-replica
// moves, ordered by shard and, within a shard, in the order they must run
// (each assumes the ones before it have been applied). Each move adds one
// desired replica and removes one unwanted replica (non-active nodes
// first); a shard with more replicas than it should have (fewer active
// nodes than the replication factor) loses the extra ones one at a time.
// Every step of every move is a SafeChange, and applying all moves gives
// each shard exactly its Desired set. With no active node the plan is
// empty.
func (p Planner) Plan(m Map) []Move {
	desired := p.Desired(m)
	var moves []Move
	for _, s := range m.ShardMap {
		want := desired[s.ID]
		if len(want) == 0 {
			continue
		}
		cur := slices.Clone(s.Replicas)
		var add, remove []NodeID
		for _, id := range want {
			if !slices.Contains(cur, id) {
				add = append(add, id)
			}
		}
		for _, id := range cur {
			if !slices.Contains(want, id) {
				remove = append(remove, id)
			}
		}
		// Unwanted replicas on removed or unknown nodes go first, then
		// draining ones, then active ones; ties keep replica-set order.
		sort.SliceStable(remove, func(i, j int) bool {
			return stateRank(m, remove[i]) < stateRank(m, remove[j])
		})
		for len(add) > 0 || len(remove) > 0 {
			var mv Move
			switch {
			case len(add) > 0 && len(remove) > 0:
				mv = Move{Shard: s.ID, Add: add[0], Remove: remove[0]}
				add, remove = add[1:], remove[1:]
			case len(add) > 0:
				mv = Move{Shard: s.ID, Add: add[0]}
				add = add[1:]
			default:
				if SafeChange(cur, Move{Remove: remove[0]}.Apply(cur)) != nil {
					remove = nil
					continue
				}
				mv = Move{Shard: s.ID, Remove: remove[0]}
				remove = remove[1:]
			}
			moves = append(moves, mv)
			cur = mv.Apply(cur)
		}
	}
	return moves
}

// stateRank orders replicas for removal: lower goes first.
func stateRank(m Map, id NodeID) int {
	switch n, ok := m.Nodes[id]; {
	case !ok || n.State == NodeRemoved:
		return 0
	case n.State == NodeDraining:
		return 1
	default:
		return 2
	}
}

// InitialMap returns the first map of a cluster: the nodes (a zero state
// becomes active), and every shard at InitialShardVersion with its Desired
// replicas. Check the result with Validate (the FSM does): bad input, such
// as no nodes or shards < 1, gives an invalid map rather than an error.
func (p Planner) InitialMap(clusterID string, nodes []Node, shards, replicas int) Map {
	m := Map{ClusterID: clusterID, Shards: shards, Replicas: replicas, Nodes: make(map[NodeID]Node, len(nodes))}
	for _, n := range nodes {
		if n.State == 0 {
			n.State = NodeActive
		}
		m.Nodes[n.ID] = n
	}
	if shards < 1 || shards > MaxShards {
		return m
	}
	desired := p.Desired(m)
	m.ShardMap = make([]Shard, shards)
	for s := range m.ShardMap {
		m.ShardMap[s] = Shard{ID: ShardID(s), Replicas: desired[ShardID(s)], Version: InitialShardVersion}
	}
	return m
}

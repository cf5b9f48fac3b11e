package node

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
)

// Automatic healing: the meta leader watches gossip, and a node that has
// been dead for longer than Config.DeadNodeGrace loses its replicas to the
// other nodes, through an operation of kind "heal" that runs like a drain
// (docs/operations.md). Only moves that re-create a replica elsewhere are
// made: with no spare node a shard keeps its dead replica, since dropping
// it would lower the replication without replacing anything. The dead
// node stays active in the map, so a later `roost rebalance` gives it
// replicas again once it is back; until then, a returning node stops the
// replicas it lost (stopIfRemoved) rather than running them next to their
// replacements, and deletes their data (reclaim.go). A dead voter of the meta group is likewise replaced by an
// alive non-voter.
//
// The clock starts when this meta leader first sees the node dead: a new
// meta leader counts the grace again from its own first look.

// healer remembers since when each node has been dead. It is written by
// the cluster's control loop and read by the heal operation's planner.
type healer struct {
	mu        sync.Mutex
	downSince map[placement.NodeID]time.Time
	// stuck is the last set of shards logged as past healing (stuckNews),
	// so that the control loop logs each set once, not every tick.
	stuck string
}

// stuckNews reports whether shards, which no heal can help, differ from
// those last reported.
func (h *healer) stuckNews(shards string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	news := shards != h.stuck
	h.stuck = shards
	return news
}

// observe records which nodes of m are alive now and returns the set of
// nodes that have been dead for at least grace.
func (h *healer) observe(m placement.Map, alive map[placement.NodeID]bool, grace time.Duration, now time.Time) map[placement.NodeID]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	down := map[placement.NodeID]time.Time{} // nodes back, removed or gone drop out
	dead := map[placement.NodeID]bool{}
	for id, nd := range m.Nodes {
		if alive[id] || nd.State == placement.NodeRemoved {
			continue
		}
		since, ok := h.downSince[id]
		if !ok {
			since = now
		}
		down[id] = since
		if now.Sub(since) >= grace {
			dead[id] = true
		}
	}
	h.downSince = down
	return dead
}

// forget drops what the healer knows, when this node stops leading the
// meta group.
func (h *healer) forget() {
	h.mu.Lock()
	h.downSince, h.stuck = nil, ""
	h.mu.Unlock()
}

// healMoves returns the moves that re-create, on alive active nodes, the
// replicas that dead nodes hold: placement.Plan over m with every node that
// gossip does not see alive taken off the ring, keeping only moves that
// take a replica off a dead node and add one elsewhere — or that only take
// it off, when the shard keeps m.Replicas replicas without it: a move
// half done (its replacement added, and the operation ended before the
// removal: the step timed out while a big shard caught up, or the meta
// leadership moved) is finished, rather than leaving the shard with one
// more voter, dead, and no failure to spare.
func healMoves(m placement.Map, alive, dead map[placement.NodeID]bool) []placement.Move {
	if len(dead) == 0 {
		return nil
	}
	size := map[placement.ShardID]int{} // replicas once the kept moves before are made
	return slices.DeleteFunc(placement.Plan(deadAsDraining(m, alive)), func(mv placement.Move) bool {
		n, ok := size[mv.Shard]
		if !ok && int(mv.Shard) < len(m.ShardMap) {
			n = len(m.ShardMap[mv.Shard].Replicas)
		}
		if !dead[mv.Remove] || mv.Add == "" && n-1 < m.Replicas {
			size[mv.Shard] = n
			return true
		}
		if mv.Add == "" {
			n--
		}
		size[mv.Shard] = n
		return false
	})
}

// deadAsDraining returns m with every active node that is not in alive
// made draining (m itself is not changed): a plan over it places nothing on
// a node gossip does not see alive, and moves replicas off such nodes.
func deadAsDraining(m placement.Map, alive map[placement.NodeID]bool) placement.Map {
	view := m
	view.Nodes = maps.Clone(m.Nodes)
	for id, nd := range view.Nodes {
		if !alive[id] && nd.State == placement.NodeActive {
			nd.State = placement.NodeDraining
			view.Nodes[id] = nd
		}
	}
	return view
}

// aliveIDs is the set of nodes gossip sees alive, this one included.
func (c *cluster) aliveIDs() map[placement.NodeID]bool {
	alive := map[placement.NodeID]bool{c.self: true}
	for _, mem := range c.aliveMembers() {
		alive[mem.ID] = true
	}
	return alive
}

// answeringIDs is aliveIDs without the members of servers (a group's
// configuration) that the Raft transport finds unreachable
// (Transport.PeerReachable): a node alive in gossip but cut off from Raft
// counts towards no quorum. Decisions that take a voter out of a group
// count only these.
func (c *cluster) answeringIDs(servers []raft.Server) map[placement.NodeID]bool {
	return answering(c.aliveIDs(), servers, c.trans.PeerReachable)
}

// usableIDs is answeringIDs over every node of m: the nodes a replica can
// be moved to. A node alive in gossip that the Raft transport cannot reach
// (its TLS set up wrong, or cut off from Raft alone) would be given a
// replica no leader could send anything to.
func (c *cluster) usableIDs(m placement.Map) map[placement.NodeID]bool {
	servers := make([]raft.Server, 0, len(m.Nodes))
	for id, nd := range m.Nodes {
		servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(nd.GRPCAddr)})
	}
	return c.answeringIDs(servers)
}

// answering is alive without the servers whose address reachable refuses.
func answering(alive map[placement.NodeID]bool, servers []raft.Server, reachable func(raft.ServerAddress) bool) map[placement.NodeID]bool {
	out := maps.Clone(alive)
	for _, s := range servers {
		if id := placement.NodeID(s.ID); out[id] && !reachable(s.Address) {
			delete(out, id)
		}
	}
	return out
}

// heal runs on the meta leader each control tick: it starts a heal
// operation when some dead node's replicas can be re-created, and replaces
// a dead voter of the meta group.
func (c *cluster) heal(r *raft.Raft) {
	grace := c.n.cfg.DeadNodeGrace
	if grace <= 0 {
		return
	}
	m := c.metaFSM.Map()
	if m.ClusterID == "" {
		return
	}
	alive := c.aliveIDs()
	dead := c.healer.observe(m, alive, grace, time.Now())
	if len(dead) == 0 {
		return
	}
	c.healMeta(r, alive, dead)
	// A shard without a live quorum cannot be healed: starting on it alone
	// would only end in an error at every control tick.
	moves := healMoves(m, alive, dead)
	held := withoutLiveQuorum(m, moves, alive)
	healable := len(slices.DeleteFunc(slices.Clone(moves), func(mv placement.Move) bool { return held[mv.Shard] != nil }))
	if healable == 0 {
		// No operation starts, so none can name these shards: the log does,
		// once for each set of them.
		stuck := slices.Sorted(maps.Keys(held))
		if c.healer.stuckNews(fmt.Sprint(stuck)) && len(stuck) > 0 {
			c.n.log.Warn("cannot re-create the replicas of dead nodes: every shard they hold lost a quorum of its replicas and can change nothing; they serve again once enough of their nodes are back",
				"dead", joinIDs(slices.Sorted(maps.Keys(dead))), "shards", fmt.Sprint(stuck))
		}
		return
	}
	c.healer.stuckNews("")
	a := c.n.admin
	op, err := a.startOp("heal", "", defaultMaxConcurrent, healable)
	if err != nil {
		return // another operation runs; try again when it has ended
	}
	c.n.log.Warn("re-creating the replicas of dead nodes elsewhere", "dead", joinIDs(slices.Sorted(maps.Keys(dead))), "grace", grace, "op", op.id)
	a.launch(op, func(m placement.Map) []placement.Move {
		alive := c.aliveIDs()
		return healMoves(m, alive, c.healer.observe(m, alive, grace, time.Now()))
	})
}

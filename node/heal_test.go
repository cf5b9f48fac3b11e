package node

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/raftstore"
)

func TestHealerObserve(t *testing.T) {
	m := placement.InitialMap("c", []placement.Node{{ID: "a"}, {ID: "b"}, {ID: "c"}, {ID: "d", State: placement.NodeRemoved}}, 4, 3)
	var h healer
	t0 := time.Unix(1000, 0)
	grace := 10 * time.Second
	all := map[placement.NodeID]bool{"a": true, "b": true, "c": true}
	noC := map[placement.NodeID]bool{"a": true, "b": true}
	steps := []struct {
		at    time.Duration
		alive map[placement.NodeID]bool
		want  []placement.NodeID
	}{
		{0, all, nil},
		{1 * time.Second, noC, nil},                      // c's clock starts
		{10 * time.Second, noC, nil},                     // 9 s dead
		{11 * time.Second, noC, []placement.NodeID{"c"}}, // 10 s dead: past the grace
		{12 * time.Second, all, nil},                     // back: forgotten
		{13 * time.Second, noC, nil},                     // its clock starts again
		{22 * time.Second, noC, nil},
		{23 * time.Second, noC, []placement.NodeID{"c"}},
	}
	for _, s := range steps {
		got := h.observe(m, s.alive, grace, t0.Add(s.at))
		ids := slices.Sorted(func(yield func(placement.NodeID) bool) {
			for id := range got {
				if !yield(id) {
					return
				}
			}
		})
		if !slices.Equal(ids, s.want) {
			t.Fatalf("at %v: dead %v, want %v", s.at, ids, s.want)
		}
	}
	h.forget()
	if got := h.observe(m, noC, grace, t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("a forgetful healer counts from its first look, got %v", got)
	}
}

func TestHealMoves(t *testing.T) {
	nodes := []placement.Node{{ID: "a"}, {ID: "b"}, {ID: "c"}, {ID: "d"}, {ID: "e"}}
	m := placement.InitialMap("c", nodes, 32, 3)
	alive := func(down ...placement.NodeID) map[placement.NodeID]bool {
		out := map[placement.NodeID]bool{}
		for _, n := range nodes {
			if !slices.Contains(down, n.ID) {
				out[n.ID] = true
			}
		}
		return out
	}
	tests := []struct {
		name  string
		m     placement.Map
		alive map[placement.NodeID]bool
		dead  []placement.NodeID
	}{
		{"one dead", m, alive("d"), []placement.NodeID{"d"}},
		{"one dead, another down within its grace", m, alive("d", "e"), []placement.NodeID{"d"}},
		{"two dead", m, alive("d", "e"), []placement.NodeID{"d", "e"}},
		{"none dead", m, alive(), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dead := map[placement.NodeID]bool{}
			for _, id := range tt.dead {
				dead[id] = true
			}
			moves := healMoves(tt.m, tt.alive, dead)
			cur := map[placement.ShardID][]placement.NodeID{}
			for _, s := range tt.m.ShardMap {
				cur[s.ID] = s.Replicas
			}
			for _, mv := range moves {
				if mv.Add == "" || !dead[mv.Remove] || !tt.alive[mv.Add] {
					t.Fatalf("move %s: want an alive node added and a dead one removed", mv)
				}
				for _, step := range mv.Steps(cur[mv.Shard]) {
					if err := placement.SafeChange(cur[mv.Shard], step); err != nil {
						t.Fatalf("move %s: %v", mv, err)
					}
					cur[mv.Shard] = step
				}
			}
			for sid, reps := range cur {
				if len(reps) != 3 {
					t.Fatalf("shard %d has %d replicas after healing: %v", sid, len(reps), reps)
				}
				for _, id := range reps {
					if dead[id] {
						t.Fatalf("shard %d still on dead %s: %v", sid, id, reps)
					}
				}
			}
			if len(tt.dead) == 0 && len(moves) != 0 {
				t.Fatalf("moves with nothing dead: %v", moves)
			}
		})
	}

	// A heal move half done (its replacement added, and the operation
	// ended before the dead replica's removal: the step timed out while a
	// big shard caught up, or the meta leadership moved): the dead
	// replica is removed on its own, since its replacement is there. Left
	// in, the shard had four voters with one dead and survived no further
	// failure.
	view := deadAsDraining(m, alive("d"))
	half := m.Clone()
	held := half.ShardsOf("d")
	if len(held) == 0 {
		t.Fatal("d holds no replica")
	}
	sid := held[0]
	for _, id := range placement.Desired(view)[sid] {
		if !slices.Contains(half.ShardMap[sid].Replicas, id) {
			half.ShardMap[sid].Replicas = append(slices.Clone(half.ShardMap[sid].Replicas), id)
			half.ShardMap[sid].Version++
		}
	}
	if n := len(half.ShardMap[sid].Replicas); n != 4 {
		t.Fatalf("shard %d half moved has %d replicas", sid, n)
	}
	moves := healMoves(half, alive("d"), map[placement.NodeID]bool{"d": true})
	if !slices.Contains(moves, placement.Move{Shard: sid, Remove: "d"}) {
		t.Fatalf("a half-done heal of shard %d (%v) is not finished: moves %v", sid, half.ShardMap[sid].Replicas, moves)
	}

	// With no spare node the dead replica stays: removing it alone would
	// lower the replication without replacing anything.
	small := placement.InitialMap("c", nodes[:3], 8, 3)
	if moves := healMoves(small, map[placement.NodeID]bool{"a": true, "b": true}, map[placement.NodeID]bool{"c": true}); len(moves) != 0 {
		t.Fatalf("healing without a spare node: %v", moves)
	}
}

// TestHealReplacesDeadNode: a node dead past the grace has its replicas,
// and its meta vote, taken over by the others with no data lost; when it
// comes back it runs none of the replicas it lost.
func TestHealReplacesDeadNode(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 8, reg, func(cfg *Config) { cfg.DeadNodeGrace = 2 * time.Second })

	// Give n4 replicas, so that every node holds some.
	// (Waiting for the operation to end: a rebalance still running would
	// hold the heal back.)
	if op := c.runOp(0, "/v1/rebalance", map[string]any{}, nil); op.State != "done" {
		t.Fatalf("rebalance: %+v", op)
	}
	c.waitBalanced(60 * time.Second)

	names := make([]string, 16)
	for i := range names {
		names[i] = fmt.Sprintf("heal-%d", i)
		for n := 1; n <= 3; n++ {
			if code, body, err := c.doRetrying(i%4, "/increment", names[i]); err != nil || code != 200 || body != strconv.Itoa(n) {
				t.Fatalf("increment %s: %d %q %v", names[i], code, body, err)
			}
		}
	}

	// The victim: a voter of the meta group that is not its leader.
	leader := c.metaLeader()
	cf := leader.cluster.meta.Raft().GetConfiguration()
	victim := -1
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != leader.cfg.NodeID {
			for i, cfg := range c.cfgs {
				if cfg.NodeID == string(s.ID) {
					victim = i
				}
			}
			break
		}
	}
	if victim < 0 {
		t.Fatal("no meta voter besides the leader")
	}
	vid := placement.NodeID(c.cfgs[victim].NodeID)
	if held := leader.cluster.metaFSM.Map().ShardsOf(vid); len(held) == 0 {
		t.Fatalf("%s holds no replica before it dies", vid)
	}
	c.stop(victim)
	killed := time.Now()

	// Its replicas move to the three others, each shard keeps 3 voters.
	deadline := time.Now().Add(90 * time.Second)
	for {
		m := c.metaLeader().cluster.metaFSM.Map()
		if len(m.ShardsOf(vid)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still holds shards %v %s after it died", vid, m.ShardsOf(vid), time.Since(killed))
		}
		time.Sleep(100 * time.Millisecond)
	}
	alive := (victim + 1) % 4
	views := c.waitConverged(alive, 60*time.Second)
	for _, v := range views {
		if len(v.Replicas) != 3 {
			t.Fatalf("shard %d has %d replicas after healing", v.ID, len(v.Replicas))
		}
	}
	t.Logf("%s's replicas re-created elsewhere %s after it died (grace 2s)", vid, time.Since(killed).Round(100*time.Millisecond))
	for _, s := range c.metaLeader().cluster.meta.Raft().GetConfiguration().Configuration().Servers {
		if s.ID == raft.ServerID(vid) && s.Suffrage == raft.Voter {
			t.Fatalf("dead %s is still a meta voter", vid)
		}
	}

	for i, name := range names {
		if code, body, err := c.doRetrying(alive, "/increment", name); err != nil || code != 200 || body != "4" {
			t.Fatalf("increment %s (#%d) after healing: %d %q %v", name, i, code, body, err)
		}
	}

	// Back from the dead: it rejoins, holds nothing, runs nothing.
	c.cfgs[victim].Join = []string{c.cfgs[alive].GossipAddr} // the first node had nobody to join
	c.start(victim)
	c.waitReady()
	time.Sleep(2 * time.Second)
	if held := c.metaLeader().cluster.metaFSM.Map().ShardsOf(vid); len(held) != 0 {
		t.Fatalf("the returning %s was given back shards %v", vid, held)
	}
	// Replicas it restarted from its old map stop once the leaders of
	// their groups confirm that they were removed (a status call a second).
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		c.nodes[victim].cluster.mu.Lock()
		running := len(c.nodes[victim].cluster.groups)
		c.nodes[victim].cluster.mu.Unlock()
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the returning %s runs %d shard groups", vid, running)
		}
	}
	// It found their data on disk when it started, and deletes it: their
	// groups have removed it.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		gs, err := c.nodes[victim].store.Groups()
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(gs, []raftstore.GroupID{metaGroup}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the returning %s still holds data of groups %v", vid, gs)
		}
	}
	for _, name := range names {
		if code, body, err := c.doRetrying(victim, "/increment", name); err != nil || code != 200 || body != "5" {
			t.Fatalf("increment %s through the returned node: %d %q %v", name, code, body, err)
		}
	}
}

// waitBalanced waits until every node of the cluster holds a replica and
// every shard has converged.
func (c *testCluster) waitBalanced(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := c.metaLeader().cluster.metaFSM.Map()
		all := true
		for i := range c.nodes {
			if len(m.ShardsOf(placement.NodeID(c.cfgs[i].NodeID))) == 0 {
				all = false
			}
		}
		if all {
			c.waitConverged(0, timeout)
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the cluster did not balance within %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

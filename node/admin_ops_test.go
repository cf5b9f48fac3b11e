package node

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
)

func TestWithoutLiveQuorum(t *testing.T) {
	ids := func(s ...string) []placement.NodeID {
		out := make([]placement.NodeID, len(s))
		for i, id := range s {
			out[i] = placement.NodeID(id)
		}
		return out
	}
	m := placement.Map{ShardMap: []placement.Shard{
		{ID: 0, Replicas: ids("n1", "n2", "n3")},
		{ID: 1, Replicas: ids("n1", "n2", "n4")},
		{ID: 2, Replicas: ids("n1", "n2", "n3", "n4")}, // half-way through a move
		{ID: 3, Replicas: ids("n5")},
	}}
	for _, tc := range []struct {
		name  string
		alive []string
		moves []placement.Move
		want  []placement.ShardID
	}{
		{"all alive", []string{"n1", "n2", "n3", "n4", "n5"}, []placement.Move{{Shard: 0}, {Shard: 1}, {Shard: 2}, {Shard: 3}}, nil},
		{"one of three down", []string{"n1", "n3", "n4", "n5"}, []placement.Move{{Shard: 0}, {Shard: 1}}, nil},
		{"two of three down", []string{"n1", "n4", "n5"}, []placement.Move{{Shard: 0}, {Shard: 1}}, []placement.ShardID{0}},
		{"two of four down", []string{"n1", "n3", "n5"}, []placement.Move{{Shard: 2}}, []placement.ShardID{2}},
		{"lone replica down", []string{"n1"}, []placement.Move{{Shard: 3}}, []placement.ShardID{3}},
		{"only the moves' shards", []string{"n1"}, []placement.Move{{Shard: 1}, {Shard: 1}}, []placement.ShardID{1}},
		{"unknown shard skipped", []string{}, []placement.Move{{Shard: 9}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alive := map[placement.NodeID]bool{}
			for _, id := range tc.alive {
				alive[placement.NodeID(id)] = true
			}
			held := withoutLiveQuorum(m, tc.moves, alive)
			var got []placement.ShardID
			for sid, err := range held {
				got = append(got, sid)
				if !errors.Is(err, errNoLiveQuorum) || !strings.Contains(err.Error(), fmt.Sprintf("shard %d:", sid)) {
					t.Errorf("shard %d: %v", sid, err)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("held %v, want %v", got, tc.want)
			}
		})
	}
	err := heldError(withoutLiveQuorum(m, []placement.Move{{Shard: 0}, {Shard: 1}}, map[placement.NodeID]bool{"n3": true}))
	if !errors.Is(err, errNoLiveQuorum) || !strings.Contains(err.Error(), "did not move 2 shard(s) (0, 1)") ||
		!strings.Contains(err.Error(), "shard 0: too few of its replicas are alive to change it: 1 of its replicas [n1, n2, n3] are alive (n1, n2 down), and a change needs 2") {
		t.Fatalf("heldError: %v", err)
	}
}

// TestOperationLeavesShardsWithoutQuorum: draining a dead node whose
// shards partly lost two of three replicas moves the replicas it can and
// leaves the others untouched, ending with an error that names them,
// instead of writing steps their groups can never carry out and waiting
// out convergeTimeout on each. (Five nodes, so that the meta group has
// five voters and keeps its quorum with two nodes down.)
func TestOperationLeavesShardsWithoutQuorum(t *testing.T) {
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 5, 8, reg, func(cfg *Config) { cfg.DeadNodeGrace = 0 })
	c.waitMetaVoters(5, 60*time.Second)
	if op := c.runOp(0, "/v1/rebalance", map[string]any{}, nil); op.State != "done" {
		t.Fatalf("spreading the shards: %+v", op)
	}
	c.waitConverged(0, 60*time.Second)

	// Two victims, neither leading the meta group, such that some shard
	// has both (it loses its quorum) and some has only the first (its
	// replica there can be moved).
	leader := placement.NodeID(c.metaLeader().cfg.NodeID)
	m := c.metaLeader().cluster.metaFSM.Map()
	a, b := -1, -1
	for i := range c.nodes {
		for j := range c.nodes {
			x, y := placement.NodeID(c.cfgs[i].NodeID), placement.NodeID(c.cfgs[j].NodeID)
			if i == j || x == leader || y == leader {
				continue
			}
			both, onlyX := false, false
			for _, s := range m.ShardMap {
				hasX, hasY := slices.Contains(s.Replicas, x), slices.Contains(s.Replicas, y)
				both = both || hasX && hasY
				onlyX = onlyX || hasX && !hasY
			}
			if both && onlyX && a < 0 {
				a, b = i, j
			}
		}
	}
	if a < 0 {
		t.Fatalf("no pair of nodes shares a shard while the first also holds one alone: %+v", m.ShardMap)
	}
	victim, other := placement.NodeID(c.cfgs[a].NodeID), placement.NodeID(c.cfgs[b].NodeID)
	c.stop(a)
	c.stop(b)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		alive := c.metaLeader().cluster.aliveIDs()
		if !alive[victim] && !alive[other] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gossip still sees %s or %s alive", victim, other)
		}
	}

	before := c.metaLeader().cluster.metaFSM.Map()
	li := c.nodeIndex(leader)
	op := c.runOp(li, "/v1/nodes/"+string(victim)+"/drain", nil, nil)
	after := c.metaLeader().cluster.metaFSM.Map()
	if op.State != "failed" || !strings.Contains(op.Error, "too few of their replicas are alive") {
		t.Fatalf("drain of %s with %s also down ended %s: %q, want failed naming the shards without a quorum", victim, other, op.State, op.Error)
	}
	var held []string
	for i, s := range before.ShardMap {
		hasV, hasO := slices.Contains(s.Replicas, victim), slices.Contains(s.Replicas, other)
		got := after.ShardMap[i]
		switch {
		case hasV && hasO:
			held = append(held, fmt.Sprint(s.ID))
			if got.Version != s.Version || !slices.Equal(got.Replicas, s.Replicas) {
				t.Errorf("shard %d without a quorum was changed: %v (v%d) -> %v (v%d)", s.ID, s.Replicas, s.Version, got.Replicas, got.Version)
			}
		case hasV:
			if slices.Contains(got.Replicas, victim) {
				t.Errorf("shard %d kept its replica on %s: %v", s.ID, victim, got.Replicas)
			}
		}
	}
	if want := "shard(s) (" + strings.Join(held, ", ") + ")"; !strings.Contains(op.Error, want) {
		t.Errorf("error %q does not name the shards %s", op.Error, want)
	}
	t.Logf("drain of %s: %s", victim, op.Error)

	// Once the two are back, the same drain finishes: the shards it left
	// were not left half-changed.
	c.start(a)
	c.start(b)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		alive := c.metaLeader().cluster.aliveIDs()
		if alive[victim] && alive[other] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gossip does not see %s and %s back", victim, other)
		}
	}
	li = c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))
	if op := c.runOp(li, "/v1/nodes/"+string(victim)+"/drain", nil, nil); op.State != "done" {
		t.Fatalf("drain of %s with every node back: %s %q", victim, op.State, op.Error)
	}
	if held := c.metaLeader().cluster.metaFSM.Map().ShardsOf(victim); len(held) > 0 {
		t.Fatalf("%s still holds shards %v after its drain", victim, held)
	}
}

// TestOperationShowsWhatItWaitsOn: a rebalance whose move cannot converge
// — the new replica's node is alive in gossip but cut off from Raft, so it
// never catches up — says, while it runs, which shard it waits on and why,
// and finishes once the node is reachable again.
func TestOperationShowsWhatItWaitsOn(t *testing.T) {
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 4, reg, func(cfg *Config) { cfg.DeadNodeGrace = 0 })
	// Four nodes: the meta group keeps three voters, n1..n3, and every
	// shard is on them (nothing was rebalanced onto n4).
	c.waitMetaVoters(3, 60*time.Second)
	c.faults.Isolate(raft.ServerAddress(c.cfgs[3].GRPCAddr))
	defer c.faults.Heal()
	li := c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))

	var out struct {
		Operation opJSON `json:"operation"`
		Error     string `json:"error"`
	}
	if code := c.admin(li, "POST", "/v1/rebalance", map[string]any{}, &out); code != 202 {
		t.Fatalf("POST /v1/rebalance: %d %s", code, out.Error)
	}
	id := out.Operation.ID
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if code := c.admin(li, "GET", "/v1/operations/"+id, nil, &out); code != 200 {
			t.Fatalf("GET /v1/operations/%s: %d %s", id, code, out.Error)
		}
		op := out.Operation
		if op.State != "running" {
			t.Fatalf("the rebalance ended while n4 cannot catch up: %+v", op)
		}
		if len(op.Waiting) > 0 && op.Waiting[0].Seconds >= 2 {
			w := op.Waiting[0]
			if !strings.Contains(w.Reason, "n4") || w.Shard < 0 || int(w.Shard) >= 4 {
				t.Fatalf("waiting on %+v, want a shard waiting for n4", w)
			}
			t.Logf("%s waits on %d shard(s), the longest: shard %d for %ds, %s", id, len(op.Waiting), w.Shard, w.Seconds, w.Reason)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s the rebalance says it waits on nothing: %+v", op)
		}
	}
	c.faults.Heal()
	if op, _ := c.waitOp(li, id, 2*time.Minute); op.State != "done" || len(op.Waiting) > 0 {
		t.Fatalf("after n4 was reachable again the rebalance ended %+v", op)
	}
}

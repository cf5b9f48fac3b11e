package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
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
		// n2 down: taking n1 off shard 0 leaves [n2 n3], one alive.
		{"bare removal leaving too few alive", []string{"n1", "n3", "n4", "n5"}, []placement.Move{{Shard: 0, Remove: "n1"}, {Shard: 1, Remove: "n2"}}, []placement.ShardID{0}},
		{"paired move keeps its live replicas", []string{"n1", "n3", "n4", "n5"}, []placement.Move{{Shard: 0, Add: "n5", Remove: "n1"}, {Shard: 0, Remove: "n1"}}, nil},
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
	t.Parallel()
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
	c.waitMetaLeaderSees(false, a, b)

	before := c.metaLeader().cluster.metaFSM.Map()
	li := c.nodeIndex(leader)
	op := c.runOp(li, "/v1/nodes/"+string(victim)+"/drain", nil, nil)
	after := c.metaLeader().cluster.metaFSM.Map()
	if op.State != "failed" || !strings.Contains(op.Error, "too few of their replicas are alive") || !strings.Contains(op.Error, "stays draining") {
		t.Fatalf("drain of %s with %s also down ended %s: %q, want failed naming the shards without a quorum, and that %[1]s stays draining", victim, other, op.State, op.Error)
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
	c.waitMetaLeaderSees(true, a, b)
	li = c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))
	if op := c.runOp(li, "/v1/nodes/"+string(victim)+"/drain", nil, nil); op.State != "done" {
		t.Fatalf("drain of %s with every node back: %s %q", victim, op.State, op.Error)
	}
	if held := c.metaLeader().cluster.metaFSM.Map().ShardsOf(victim); len(held) > 0 {
		t.Fatalf("%s still holds shards %v after its drain", victim, held)
	}
}

// rebalanceStuckOnIsolatedN4 starts four nodes without automatic healing
// — the meta group keeps three voters, n1..n3, and every shard is on them
// (nothing was rebalanced onto n4) — cuts n4 off from Raft, so a new
// replica there never catches up, and starts a rebalance on the meta
// leader (node li); it returns once the rebalance has waited minSeconds
// on a step onto n4. The cut lasts until the test ends or heals it.
func rebalanceStuckOnIsolatedN4(t *testing.T, minSeconds int) (c *testCluster, li int, id string, w opWaitJSON) {
	t.Helper()
	c = newTestCluster(t, 4, 4, &turnRegistry{active: map[string]string{}}, func(cfg *Config) { cfg.DeadNodeGrace = 0 })
	c.waitMetaVoters(3, 60*time.Second)
	c.faults.Isolate(raft.ServerAddress(c.cfgs[3].GRPCAddr))
	t.Cleanup(c.faults.Heal)
	li = c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))
	id, w = c.rebalanceWaitingOn(li, "n4", minSeconds)
	return c, li, id, w
}

// TestOperationShowsWhatItWaitsOn: a rebalance whose move cannot converge
// — the new replica's node is alive in gossip but cut off from Raft, so it
// never catches up — says, while it runs, which shard it waits on and why,
// and finishes once the node is reachable again.
func TestOperationShowsWhatItWaitsOn(t *testing.T) {
	t.Parallel()
	c, li, id, w := rebalanceStuckOnIsolatedN4(t, 2)
	if w.Shard < 0 || int(w.Shard) >= 4 {
		t.Fatalf("waiting on %+v, want one of the 4 shards", w)
	}
	t.Logf("%s waits on shard %d for %ds: %s", id, w.Shard, w.Seconds, w.Reason)
	c.faults.Heal()
	if op, _ := c.waitOp(li, id, 2*time.Minute); op.State != "done" || len(op.Waiting) > 0 {
		t.Fatalf("after n4 was reachable again the rebalance ended %+v", op)
	}
}

// TestStepGivesUpOnANewReplicaThatDied: a rebalance step waiting for its
// new replica, which cannot catch up, gives that replica up once its node
// has been dead in gossip for quorumLossGrace — the map is set back
// without it and the operation plans again with the nodes alive — instead
// of waiting out convergeTimeout (2 min). With n4 dead, the moves onto it
// cannot be made: the operation ends failed naming them, not "done" as if
// the shards were spread.
func TestStepGivesUpOnANewReplicaThatDied(t *testing.T) {
	t.Parallel()
	c, li, id, w := rebalanceStuckOnIsolatedN4(t, 1)
	t.Logf("%s waits on shard %d: %s", id, w.Shard, w.Reason)
	c.stop(3)
	op, _ := c.waitOp(li, id, 60*time.Second)
	if op.State != "failed" || !strings.Contains(op.Error, "they add replicas on n4, which gossip sees down") {
		t.Fatalf("the rebalance after n4 died: %+v, want failed naming the moves onto n4", op)
	}
	for _, s := range c.nodes[li].cluster.metaFSM.Map().ShardMap {
		if slices.Contains(s.Replicas, "n4") {
			t.Fatalf("shard %d still has a replica on the dead n4: %v", s.ID, s.Replicas)
		}
	}
}

// TestStepGivesUpWhenItsShardLosesQuorum: a rebalance step already
// written and waiting for its shard's group — here a new replica that
// cannot catch up — gives the shard up once two of its three old
// replicas die, instead of waiting out convergeTimeout, and the operation
// ends naming it. Once the nodes are back, a rebalance finishes the shard
// left half-way through its move.
func TestStepGivesUpWhenItsShardLosesQuorum(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 5, 8, reg, func(cfg *Config) { cfg.DeadNodeGrace = 0 })
	// Five meta voters, so that the meta group keeps its quorum with two
	// nodes down. The shards are on the three nodes that formed the
	// cluster; the other two hold nothing until the rebalance.
	c.waitMetaVoters(5, 60*time.Second)
	m := c.metaLeader().cluster.metaFSM.Map()
	var old, fresh []int
	for i, cfg := range c.cfgs {
		if len(m.ShardsOf(placement.NodeID(cfg.NodeID))) > 0 {
			old = append(old, i)
		} else {
			fresh = append(fresh, i)
		}
	}
	if len(old) != 3 || len(fresh) != 2 {
		t.Fatalf("shards on nodes %v, none on %v; want them on three nodes", old, fresh)
	}
	// stuck never catches up: it is cut off from the old nodes' Raft
	// groups (gossip still sees it alive). boss leads the meta group and
	// runs the rebalance; it reaches every node, and with stuck and one
	// old node it is a quorum of the meta group.
	stuck, boss := fresh[0], fresh[1]
	stuckID := placement.NodeID(c.cfgs[stuck].NodeID)
	if ld := c.metaLeader(); ld.cfg.NodeID != c.cfgs[boss].NodeID {
		if err := ld.cluster.meta.Raft().LeadershipTransferToServer(raft.ServerID(c.cfgs[boss].NodeID), raft.ServerAddress(c.cfgs[boss].GRPCAddr)).Error(); err != nil {
			t.Fatalf("moving the meta leadership to %s: %v", c.cfgs[boss].NodeID, err)
		}
	}
	if ld := c.metaLeader(); ld.cfg.NodeID != c.cfgs[boss].NodeID {
		t.Fatalf("the meta leader is %s, want %s", ld.cfg.NodeID, c.cfgs[boss].NodeID)
	}
	// boss, draining (it holds nothing), is given no replica, so every
	// step of the rebalance is onto stuck, of a shard on the three old
	// nodes, and loses its live quorum with two of them. Had boss taken a
	// shard first, that shard's later step onto stuck would keep a live
	// quorum (boss, the third old node, stuck) and rightly wait out
	// convergeTimeout for stuck, cut off from a leader on the old node.
	if op := c.runOp(boss, "/v1/nodes/"+c.cfgs[boss].NodeID+"/drain", nil, nil); op.State != "done" {
		t.Fatalf("draining %s, which holds nothing: %s %q", c.cfgs[boss].NodeID, op.State, op.Error)
	}
	// A replica that far behind is promoted without catching up
	// (reconcile.go): every shard's log must be longer first.
	c.fillLogs(catchUpLag + 40)
	for _, o := range old {
		c.faults.Partition(raft.ServerAddress(c.cfgs[stuck].GRPCAddr), raft.ServerAddress(c.cfgs[o].GRPCAddr))
	}
	defer c.faults.Heal()

	id, waited := c.rebalanceWaitingOn(boss, stuckID, 1)
	// Two of the waiting shard's three old replicas die; with stuck it
	// has two of four replicas alive, short of a quorum.
	c.stop(old[0])
	c.stop(old[1])
	start := time.Now()
	op, _ := c.waitOp(boss, id, convergeTimeout+time.Minute)
	t.Logf("rebalance %s, waiting on shard %d (%s), ended %s after %s: %s", id, waited.Shard, waited.Reason, op.State, time.Since(start).Round(time.Second), op.Error)
	if op.State != "failed" || !strings.Contains(op.Error, "too few of their replicas are alive") || strings.Contains(op.Error, "did not converge") {
		t.Fatalf("the rebalance ended %s: %q, want failed for shards without a quorum, not for a step that timed out", op.State, op.Error)
	}
	held := c.metaLeader().cluster.metaFSM.Map().ShardMap[waited.Shard]
	named := ""
	if _, rest, ok := strings.Cut(op.Error, "shard(s) ("); ok {
		named, _, _ = strings.Cut(rest, ")")
	}
	if !slices.Contains(held.Replicas, stuckID) || !slices.Contains(strings.Split(named, ", "), fmt.Sprint(waited.Shard)) {
		t.Fatalf("shard %d is %v and the error %q, want it left with its step onto %s and named", waited.Shard, held.Replicas, op.Error, stuckID)
	}

	// Everything back: a rebalance carries the half-moved shard through.
	c.faults.Heal()
	c.start(old[0])
	c.start(old[1])
	// Shards left with two of three voters down elect once they are back,
	// which takes longer than a start under this package's load.
	c.waitReadyWithin(2 * time.Minute)
	c.waitMetaLeaderSees(true, old[0], old[1])
	if op := c.runOp(boss, "/v1/rebalance", map[string]any{}, nil); op.State != "done" {
		t.Fatalf("rebalance with every node back: %s %q", op.State, op.Error)
	}
	if s := c.metaLeader().cluster.metaFSM.Map().ShardMap[waited.Shard]; len(s.Replicas) != 3 {
		t.Fatalf("shard %d has replicas %v after the rebalance, want three", waited.Shard, s.Replicas)
	}
}

// waitMetaLeaderSees waits (30 s at most) until the meta leader's gossip
// shows every node of nodes (indexes in c) alive, or every one gone.
func (c *testCluster) waitMetaLeaderSees(alive bool, nodes ...int) {
	c.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		seen := c.metaLeader().cluster.aliveIDs()
		wrong := slices.DeleteFunc(slices.Clone(nodes), func(i int) bool { return seen[placement.NodeID(c.cfgs[i].NodeID)] == alive })
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after 30 s the meta leader's gossip still shows %s alive: %v", c.cfgs[wrong[0]].NodeID, !alive)
		}
	}
}

// rebalanceWaitingOn starts a rebalance through node i and returns its ID
// once it has waited at least minSeconds on a step for node; it fails the test if the rebalance ends first, or after
// 30 s without such a wait.
func (c *testCluster) rebalanceWaitingOn(i int, node placement.NodeID, minSeconds int) (string, opWaitJSON) {
	c.t.Helper()
	var out struct {
		Operation opJSON `json:"operation"`
		Error     string `json:"error"`
	}
	if code := c.admin(i, "POST", "/v1/rebalance", map[string]any{}, &out); code != 202 {
		c.t.Fatalf("POST /v1/rebalance: %d %s", code, out.Error)
	}
	id := out.Operation.ID
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if code := c.admin(i, "GET", "/v1/operations/"+id, nil, &out); code != 200 {
			c.t.Fatalf("GET /v1/operations/%s: %d %s", id, code, out.Error)
		}
		op := out.Operation
		if op.State != "running" {
			c.t.Fatalf("the rebalance ended while %s cannot catch up: %+v", node, op)
		}
		// Any waiting step onto node will do: under load, steps onto
		// other nodes may wait longer and be listed first.
		for _, w := range op.Waiting {
			if w.Seconds >= minSeconds && strings.Contains(w.Reason, string(node)) {
				return id, w
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after 30 s the rebalance waits on no step for %s: %+v", node, op)
		}
	}
}

// fillLogs increments counters until every shard's log has at least n
// applied entries on some replica.
func (c *testCluster) fillLogs(n uint64) {
	c.t.Helper()
	shortest := func() uint64 {
		low := uint64(math.MaxUint64)
		for idx := range c.cfgs[0].Shards {
			var most uint64
			for i := range c.nodes {
				if g := c.localGroup(i, idx); g != nil {
					most = max(most, g.Raft().AppliedIndex())
				}
			}
			low = min(low, most)
		}
		return low
	}
	for round := 0; shortest() < n; round++ {
		if round > 100 {
			c.t.Fatalf("after %d rounds of increments a shard has %d entries, want %d", round, shortest(), n)
		}
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for k := range 8 {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					c.do(ctx, w%len(c.nodes), "/increment", fmt.Sprintf("fill-%d", w*8+k))
					cancel()
				}
			})
		}
		wg.Wait()
	}
}

// drainingAndDead starts three nodes and, of the two that do not lead the
// meta group, marks one draining and stops the other. li is the meta
// leader once it sees the stopped one dead.
func drainingAndDead(t *testing.T) (c *testCluster, li, dead, draining int) {
	c = newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}}, func(cfg *Config) { cfg.DeadNodeGrace = 0 })
	c.waitMetaVoters(3, 60*time.Second)
	leader := c.metaLeader()
	li = c.nodeIndex(placement.NodeID(leader.cfg.NodeID))
	dead, draining = (li+1)%3, (li+2)%3
	drainingID := placement.NodeID(c.cfgs[draining].NodeID)
	if _, err := leader.admin.proposeMeta(placement.Command{SetNodeState: &placement.SetNodeStateCmd{ID: drainingID, State: placement.NodeDraining}}); err != nil {
		t.Fatalf("marking %s draining: %v", drainingID, err)
	}
	c.stop(dead)
	c.waitMetaLeaderSees(false, dead)
	return c, c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID)), dead, draining
}

// TestRebalanceNamesAShardItCannotShrink: a rebalance whose only moves
// are bare removals that would leave their shards without a live quorum
// (three nodes, one draining, another dead: the planner wants the shards
// on the two active nodes, one of them dead) makes none of them, and
// fails naming those shards, rather than ending done with the draining
// node still holding them.
func TestRebalanceNamesAShardItCannotShrink(t *testing.T) {
	t.Parallel()
	c, li, _, draining := drainingAndDead(t)
	drainingID := placement.NodeID(c.cfgs[draining].NodeID)
	before := c.metaLeader().cluster.metaFSM.Map()
	if len(before.ShardsOf(drainingID)) == 0 {
		t.Fatalf("%s holds nothing: %+v", drainingID, before.ShardMap)
	}
	op := c.runOp(li, "/v1/rebalance", map[string]any{}, nil)
	after := c.metaLeader().cluster.metaFSM.Map()
	for i, s := range before.ShardMap {
		if got := after.ShardMap[i]; !slices.Equal(got.Replicas, s.Replicas) {
			t.Errorf("shard %d was changed: %v -> %v", s.ID, s.Replicas, got.Replicas)
		}
	}
	if op.State != "failed" || !strings.Contains(op.Error, "did not move 4 shard(s) (0, 1, 2, 3)") {
		t.Fatalf("the rebalance ended %s: %q, want failed naming the shards it could not shrink", op.State, op.Error)
	}
	t.Logf("rebalance: %s", op.Error)
}

// TestCarriedOnDrainOfAnActiveNode: a drain is recorded in the meta group
// before its node is marked draining; a meta leader that stopped between
// the two left the record of a drain whose node is still active. The meta
// leader that carries it on drains the node, rather than failing at once
// because the planner moves nothing off an active node.
func TestCarriedOnDrainOfAnActiveNode(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 4, reg, func(cfg *Config) { cfg.DeadNodeGrace = 0 })
	c.waitMetaVoters(3, 60*time.Second)
	leader, li, victim := c.metaLeaderAndAHolder()
	m := leader.cluster.metaFSM.Map()
	if victim == "" {
		t.Fatalf("no node but the meta leader holds a shard: %+v", m.ShardMap)
	}
	// What the old meta leader wrote before it stopped: the record, not
	// yet the node's state. It planned two moves more than are left, as
	// if it had made them: the progress goes on from there, not from 0.
	held := len(m.ShardsOf(victim))
	rec := placement.Operation{ID: "drain-carried-1", Kind: placement.OperationDrain, Node: victim, MaxConcurrent: 4, Started: time.Now().UTC().Round(0), Planned: held + 2}
	if _, err := leader.admin.proposeMeta(placement.Command{BeginOperation: &placement.BeginOperationCmd{Operation: rec}}); err != nil {
		t.Fatalf("recording the drain: %v", err)
	}
	leader.admin.resumeRecorded()
	if cur := leader.admin.current(); cur == nil || cur.ID != rec.ID {
		t.Fatalf("carrying the drain on: running %+v", cur)
	} else if cur.Total != rec.Planned || cur.Done < 2 {
		t.Errorf("carried on with %d/%d moves, want at least 2/%d (%d made before)", cur.Done, cur.Total, rec.Planned, 2)
	}
	op, lost := c.waitOp(li, rec.ID, 2*time.Minute)
	if lost || op.State != "done" {
		t.Fatalf("the carried-on drain of %s ended %s: %q", victim, op.State, op.Error)
	}
	if op.Done != rec.Planned || op.Total != rec.Planned {
		t.Errorf("the carried-on drain ended with %d/%d moves, want %d/%d", op.Done, op.Total, rec.Planned, rec.Planned)
	}
	after := c.metaLeader().cluster.metaFSM.Map()
	if held := after.ShardsOf(victim); len(held) > 0 || after.Nodes[victim].State != placement.NodeDraining {
		t.Fatalf("after its drain %s is %s and holds shards %v", victim, after.Nodes[victim].State, held)
	}
}

// metaLeaderAndAHolder returns the meta leader, its index, and another
// node that holds replicas ("" if none does).
func (c *testCluster) metaLeaderAndAHolder() (leader *Node, index int, holder placement.NodeID) {
	leader = c.metaLeader()
	m := leader.cluster.metaFSM.Map()
	for _, cfg := range c.cfgs {
		if id := placement.NodeID(cfg.NodeID); id != placement.NodeID(leader.cfg.NodeID) && len(m.ShardsOf(id)) > 0 {
			holder = id
			break
		}
	}
	return leader, c.nodeIndex(placement.NodeID(leader.cfg.NodeID)), holder
}

// TestDrainRefusedWithNoLiveNodeToTakeIt: a drain whose node holds
// replicas while every other active node is dead is refused with 409 and
// changes nothing: it could move nothing (a drain sends replicas only to
// nodes gossip sees alive), and would leave the node draining for good.
func TestDrainRefusedWithNoLiveNodeToTakeIt(t *testing.T) {
	t.Parallel()
	c, li, dead, draining := drainingAndDead(t)
	victim := placement.NodeID(c.cfgs[li].NodeID)
	before := c.metaLeader().cluster.metaFSM.Map()
	var e apiErrorJSON
	code := c.admin(li, "POST", "/v1/nodes/"+string(victim)+"/drain", nil, &e)
	if code != 409 || !strings.Contains(e.Error, "no other active node is alive") {
		t.Errorf("draining %s with %s dead and %s draining: %d %q, want 409", victim, c.cfgs[dead].NodeID, c.cfgs[draining].NodeID, code, e.Error)
	}
	after := c.metaLeader().cluster.metaFSM.Map()
	if st := after.Nodes[victim].State; st != placement.NodeActive || after.Version != before.Version {
		t.Fatalf("after the refused drain %s is %s (map version %d -> %d)", victim, st, before.Version, after.Version)
	}
}

// TestRebalanceOntoADeadNodeFailsNamingIt: a rebalance whose moves add
// replicas on a node gossip does not see alive makes none of them (the
// node could not catch up; splitToDead), waits for it, and ends failed
// naming the moves and the node, with them in its total (0/3, as a failed
// operation shows what it did not do). Before, it ended "done" with 0 of 0
// moves and the imbalance unsaid.
func TestRebalanceOntoADeadNodeFailsNamingIt(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	// Four nodes: every shard is on the three that formed the cluster,
	// and the plan moves replicas onto the fourth, which is stopped.
	c := newTestCluster(t, 4, 4, reg, func(cfg *Config) { cfg.DeadNodeGrace = 0 })
	c.waitMetaVoters(3, 60*time.Second)
	c.stop(3)
	c.waitMetaLeaderSees(false, 3)
	li := c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))
	moves := placement.Plan(c.metaLeader().cluster.metaFSM.Map())
	if len(moves) == 0 || slices.ContainsFunc(moves, func(mv placement.Move) bool { return mv.Add != "n4" }) {
		t.Fatalf("want a plan that only moves replicas onto n4: %+v", moves)
	}
	op := c.runOp(li, "/v1/rebalance", map[string]any{}, nil)
	if op.State != "failed" || op.Done != 0 || op.Total != len(moves) ||
		!strings.Contains(op.Error, fmt.Sprintf("did not make %d move(s)", len(moves))) ||
		!strings.Contains(op.Error, "they add replicas on n4, which gossip sees down; start the operation again once it is back") {
		t.Fatalf("the rebalance ended %+v, want failed, 0/%d, naming n4", op, len(moves))
	}
	t.Logf("the rebalance ended %d/%d: %s", op.Done, op.Total, op.Error)
}

// TestActivateUndoesADrainMark: a draining node can be made active again
// (a drain started by mistake, or a node back from maintenance), from any
// node; a removed or unknown node cannot.
func TestActivateUndoesADrainMark(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}})
	c.waitMetaVoters(3, 60*time.Second)
	leader := c.metaLeader()
	li := c.nodeIndex(placement.NodeID(leader.cfg.NodeID))
	other := (li + 1) % 3
	victim := placement.NodeID(c.cfgs[(li+2)%3].NodeID)
	if _, err := leader.admin.proposeMeta(placement.Command{SetNodeState: &placement.SetNodeStateCmd{ID: victim, State: placement.NodeDraining}}); err != nil {
		t.Fatalf("marking %s draining: %v", victim, err)
	}
	for round := range 2 { // the second is a no-op on an active node
		var out struct{ ID, State string }
		if code := c.admin(other, "POST", "/v1/nodes/"+string(victim)+"/activate", nil, &out); code != 200 || out.State != "active" {
			t.Fatalf("round %d: activate %s through a node that does not lead the meta group: %d %+v", round, victim, code, out)
		}
		if st := c.metaLeader().cluster.metaFSM.Map().Nodes[victim].State; st != placement.NodeActive {
			t.Fatalf("round %d: %s is %s after activate", round, victim, st)
		}
	}
	var e apiErrorJSON
	if code := c.admin(li, "POST", "/v1/nodes/n9/activate", nil, &e); code != 400 || !strings.Contains(e.Error, "unknown node n9") {
		t.Errorf("activate an unknown node: %d %q, want 400", code, e.Error)
	}
	if code := c.admin(li, "POST", "/v1/nodes/"+string(victim)+"/activate", map[string]any{"max_concurrent": 2}, &e); code != 400 {
		t.Errorf("activate with a body: %d %q, want 400", code, e.Error)
	}
}

// Operation IDs name the meta leader that started them: each leader counts
// its operations from 1, so two leaders starting one in the same second
// gave both the same ID.
func TestOperationIDsOfTwoMetaLeadersDiffer(t *testing.T) {
	at := time.Date(2026, 12, 5, 8, 15, 0, 0, time.FixedZone("CET", 3600))
	if got, want := operationID("drain", "n2", at, 3), "drain-20261205t071500-n2-3"; got != want {
		t.Fatalf("operationID = %q, want %q", got, want)
	}
	if a, b := operationID("rebalance", "n1", at, 1), operationID("rebalance", "n3", at, 1); a == b {
		t.Fatalf("two meta leaders' first rebalance in one second are both %q", a)
	}
}

// An operation refused because another runs takes no number: the next
// one started is numbered right after the last that ran.
func TestRefusedOperationTakesNoNumber(t *testing.T) {
	a := newAdmin(&Node{cfg: Config{NodeID: "n1"}})
	first, err := a.startOp("rebalance", "", 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		// The refusal says how far the running one is: its planned moves
		// count from its start (before, "0 of 0" until it first planned).
		if _, err := a.startOp("drain", "n2", 1, 1); err == nil {
			t.Fatal("a second operation started while one runs")
		} else if !strings.Contains(err.Error(), "(rebalance, 0 of 3 moves done)") {
			t.Fatalf("refused with %q, want it to name the running rebalance's 0 of 3 moves", err)
		}
	}
	a.mu.Lock()
	a.running = nil
	a.mu.Unlock()
	second, err := a.startOp("rebalance", "", 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(first.id, "-1") || !strings.HasSuffix(second.id, "-2") {
		t.Fatalf("operations %s and %s, want numbers 1 and 2", first.id, second.id)
	}
}

// A failed operation the meta group recorded shows the moves it had
// planned, not its moves done as if they were all (2/10, not 2/2); a
// record written before the total was kept shows done as the total.
func TestEndedOperationKeepsItsTotal(t *testing.T) {
	op := placement.Operation{ID: "drain-x-n1-1", Kind: placement.OperationDrain, Node: "n5"}
	failed := endedOpJSON(placement.EndedOperation{Operation: op, OperationOutcome: placement.OperationOutcome{State: placement.OperationFailed, Done: 2, Total: 10}})
	if failed.Done != 2 || failed.Total != 10 {
		t.Fatalf("failed operation: %d/%d moves, want 2/10", failed.Done, failed.Total)
	}
	old := endedOpJSON(placement.EndedOperation{Operation: op, OperationOutcome: placement.OperationOutcome{State: placement.OperationDone, Done: 4}})
	if old.Done != 4 || old.Total != 4 {
		t.Fatalf("a record without a total: %d/%d moves, want 4/4", old.Done, old.Total)
	}
}

// heldFSM is a meta state machine whose applies can be held back, as a
// busy node's lag behind what its group committed.
type heldFSM struct {
	raft.FSM
	mu   sync.Mutex
	open chan struct{} // applies wait until it is closed
}

func newHeldFSM(f raft.FSM) *heldFSM {
	h := &heldFSM{FSM: f, open: make(chan struct{})}
	close(h.open)
	return h
}

func (h *heldFSM) Apply(l *raft.Log) any {
	h.mu.Lock()
	open := h.open
	h.mu.Unlock()
	<-open
	return h.FSM.Apply(l)
}

func (h *heldFSM) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.open = make(chan struct{})
}

func (h *heldFSM) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.open:
	default:
		close(h.open)
	}
}

// A meta leader elected a moment ago may not have applied what its
// predecessor's group committed: here the operation the old leader ran
// and ended. Asked for it, it answered 400 "unknown operation"; it now
// applies what is committed first, and answers for it.
func TestNewMetaLeaderAnswersForAnOperationItHasYetToApply(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	fsms := map[string]*heldFSM{}
	c := newTestClusterWith(t, 3, 4, &turnRegistry{active: map[string]string{}}, func(nd *Node) {
		nd.metaFSMWrap = func(f raft.FSM) raft.FSM {
			h := newHeldFSM(f)
			mu.Lock()
			fsms[nd.cfg.NodeID] = h
			mu.Unlock()
			return h
		}
	})
	old := c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))
	next := (old + 1) % len(c.nodes)
	mu.Lock()
	lagging := fsms[c.cfgs[next].NodeID]
	mu.Unlock()
	lagging.hold()
	defer lagging.release()
	op := c.runOp(old, "/v1/rebalance", nil, nil)
	if err := c.nodes[old].cluster.meta.Raft().LeadershipTransferToServer(raft.ServerID(c.cfgs[next].NodeID), raft.ServerAddress(c.cfgs[next].GRPCAddr)).Error(); err != nil {
		t.Fatalf("moving the meta leadership to %s: %v", c.cfgs[next].NodeID, err)
	}
	time.AfterFunc(time.Second, lagging.release)
	var out struct {
		Operation opJSON `json:"operation"`
		Error     string `json:"error"`
	}
	if code := c.admin(next, "GET", "/v1/operations/"+op.ID, nil, &out); code != 200 || out.Operation.ID != op.ID || out.Operation.State != op.State {
		t.Fatalf("the new meta leader on operation %s (%s): %d %+v %s", op.ID, op.State, code, out.Operation, out.Error)
	}
}

// A move onto a node that gossip sees alive but the Raft transport cannot
// reach (its TLS set up wrong; here its Raft traffic cut) is refused: its
// replica could never catch up. Before, only a node dead in gossip was.
func TestMoveRefusedOntoANodeRaftCannotReach(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 4, 4, &turnRegistry{active: map[string]string{}})
	c.waitMetaVoters(3, 60*time.Second)
	leader, li, _ := c.metaLeaderAndAHolder()
	m := leader.cluster.metaFSM.Map()
	// cut: a node other than the meta leader, and a shard it does not hold.
	cut, shard := -1, -1
	for i, cfg := range c.cfgs {
		if i == li {
			continue
		}
		for _, s := range m.ShardMap {
			if !slices.Contains(s.Replicas, placement.NodeID(cfg.NodeID)) {
				cut, shard = i, int(s.ID)
				break
			}
		}
		if cut >= 0 {
			break
		}
	}
	if cut < 0 {
		t.Fatalf("every node holds every shard: %v", m.ShardMap)
	}
	for i := range c.cfgs {
		if i != cut {
			c.faults.Partition(raft.ServerAddress(c.cfgs[cut].GRPCAddr), raft.ServerAddress(c.cfgs[i].GRPCAddr))
		}
	}
	defer c.faults.Heal()
	cutID := c.cfgs[cut].NodeID
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var st statusJSON
		if code := c.admin(li, "GET", "/v1/status", nil, &st); code == 200 && slices.Contains(st.Unreachable, cutID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the meta leader does not show %s unreachable 30 s after its Raft traffic was cut", cutID)
		}
	}
	if !leader.cluster.aliveIDs()[placement.NodeID(cutID)] {
		t.Skipf("gossip also lost %s: the refusal would be for a dead node", cutID)
	}
	from := string(m.ShardMap[shard].Replicas[0])
	var e apiErrorJSON
	code := c.admin(li, "POST", fmt.Sprintf("/v1/shards/%d/move", shard), map[string]string{"from": from, "to": cutID}, &e)
	if code != 409 || !strings.Contains(e.Error, "cannot reach it") {
		t.Fatalf("moving shard %d onto %s, alive in gossip but cut from Raft: %d %q, want 409 saying it cannot be reached", shard, cutID, code, e.Error)
	}
	if got := c.metaLeader().cluster.metaFSM.Map().ShardMap[shard].Replicas; !slices.Equal(got, m.ShardMap[shard].Replicas) {
		t.Fatalf("shard %d is %v after the refused move, was %v", shard, got, m.ShardMap[shard].Replicas)
	}
}

package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/roostdb/roost/placement"
)

// TestDrainWithADeadNodeKeepsQuorums: draining n4 while another node is
// dead (not yet healed) must not take n4's replica off a shard whose other
// replicas include the dead node without putting one elsewhere: the shard
// would be left with one live replica of two, without a quorum. Nor off a
// shard whose only other place is the dead node: the drain keeps that
// replica and ends failed naming the node, instead of leaving the shard
// one replica short while the node is only briefly down (QA: it ended
// "done" with shards on two replicas).
func TestDrainWithADeadNodeKeepsQuorums(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 8, reg, func(cfg *Config) { cfg.DeadNodeGrace = 0; cfg.AdminToken = testAdminToken })
	c.waitMetaVoters(3, 60*time.Second)
	if op := c.runOp(0, "/v1/rebalance", map[string]any{}, nil); op.State != "done" {
		t.Fatalf("rebalance: %+v", op)
	}
	c.waitBalanced(60 * time.Second)

	// The dead node: a meta voter (n1 or n2: the first node not leading
	// the meta group) that does not lead the meta group.
	victim := c.notMetaLeader()
	vid := placement.NodeID(c.cfgs[victim].NodeID)
	c.stop(victim)
	c.waitMetaLeaderSees(false, victim)

	li := c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))
	op := c.runOp(li, "/v1/nodes/n4/drain", map[string]any{}, nil)
	t.Logf("drain of n4 with %s dead: %s %q", vid, op.State, op.Error)

	m := c.metaLeader().cluster.metaFSM.Map()
	alive := map[placement.NodeID]bool{}
	for i, nd := range c.nodes {
		if nd != nil {
			alive[placement.NodeID(c.cfgs[i].NodeID)] = true
		}
	}
	var bad []string
	for _, s := range m.ShardMap {
		if err := liveQuorumErr(s, alive); err != nil {
			bad = append(bad, err.Error())
		}
	}
	if len(bad) > 0 {
		t.Fatalf("after draining n4 with %s dead, shards without a live quorum: %v", vid, bad)
	}
	for _, s := range m.ShardMap {
		if len(s.Replicas) < 3 {
			t.Fatalf("after draining n4 with %s dead, shard %d has replicas %v: fewer than 3 with 3 active nodes", vid, s.ID, s.Replicas)
		}
	}
	if op.State != "failed" || !strings.Contains(op.Error, "replicas on "+string(vid)+", which gossip sees down") {
		t.Fatalf("the drain ended %s %q, want failed naming %s", op.State, op.Error, vid)
	}
	// Every shard still takes writes.
	for i := range 16 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, body, err := c.do(ctx, li, "/increment", fmt.Sprintf("drain-%d", i))
		cancel()
		if err != nil || code != 200 {
			t.Fatalf("increment drain-%d after the drain: %d %q %v", i, code, body, err)
		}
	}
}

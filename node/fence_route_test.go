package node

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
)

// TestFencedLeaderRefusesForwardedAtOnce: a shard leader cut off from the
// other replicas (but not from the node that forwards to it) is fenced;
// a request forwarded to it must get a routing error at once, so the
// sender retries at the new leader, instead of waiting there up to
// shardWait (10 s) and failing.
func TestFencedLeaderRefusesForwardedAtOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 1, reg)
	gid := groupOf(0)
	var reps []placement.NodeID
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := c.metaLeader().cluster.metaFSM.Map()
		if len(m.Nodes) == 4 && len(m.ShardMap) == 1 && len(m.ShardMap[0].Replicas) == 3 {
			reps = m.ShardMap[0].Replicas
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no map with 4 nodes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	sender := -1
	for i, cfg := range c.cfgs {
		if !slices.Contains(reps, placement.NodeID(cfg.NodeID)) {
			sender = i
		}
	}
	// Wait for the sender to know the map, then learn the leader.
	for {
		code, body, err := c.doRetrying(sender, "/increment", "a")
		if err == nil && code == 200 && body == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("increment: %d %q %v", code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	li := c.waitLeaderOf(t, gid)
	// Make sure the sender's hint names the leader.
	c.nodes[sender].cluster.observe(0, c.cfgs[li].NodeID)
	c.nodes[li].cluster.mu.Lock()
	old := c.nodes[li].cluster.groups[0].shard
	c.nodes[li].cluster.mu.Unlock()
	for _, r := range reps {
		if string(r) != c.cfgs[li].NodeID {
			c.faults.Partition(raft.ServerAddress(c.cfgs[li].GRPCAddr), raft.ServerAddress(c.cfgs[c.nodeIndex(r)].GRPCAddr))
		}
	}
	start := time.Now()
	for {
		newLeader := false
		for _, r := range reps {
			if i := c.nodeIndex(r); i != li && c.localGroup(i, 0).Raft().State() == raft.Leader {
				newLeader = true
			}
		}
		if newLeader && old.isFenced() {
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("no fence and new leader after %v (fenced %v)", time.Since(start), old.isFenced())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := c.localGroup(li, 0).Raft().State(); st != raft.Leader {
		t.Skipf("old leader already stepped down (%v): the window is gone", st)
	}
	t.Logf("fenced, new leader elected %v after the cut", time.Since(start))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	t0 := time.Now()
	code, body, err := c.do(ctx, sender, "/increment", "a")
	took := time.Since(t0)
	if err != nil || code != 200 || body != "2" {
		t.Fatalf("increment through %s after %v: %d %q %v, want 200 \"2\"", c.cfgs[sender].NodeID, took, code, body, err)
	}
	if took > 3*time.Second {
		t.Fatalf("increment took %v: the fenced leader held the forwarded request", took)
	}
	t.Logf("answered in %v", took)
}

package node

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
)

// TestRestartedNodeRunsAReplicaItsGroupStillNeeds: a node restarted while
// the map no longer names its replica of a shard, but the group still
// counts it as a voter (its removal waits for the replica that replaces
// it to catch up), runs that replica again until the group no longer
// needs it. Not running it, the node left the group a voter short for
// good: here, with one more replica's node down, the shard had one live
// voter of three, and took no writes while two of them were up.
func TestRestartedNodeRunsAReplicaItsGroupStillNeeds(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 1, reg, func(cfg *Config) { cfg.DeadNodeGrace = 0 })
	for range 3 {
		if code, body, err := c.doRetrying(0, "/increment", "kept"); err != nil || code != 200 {
			t.Fatalf("increment: %d %q %v", code, body, err)
		}
	}
	gid := groupOf(0)
	li := c.waitLeaderOf(t, gid)
	if li == 3 {
		t.Fatalf("n4 leads the shard, which it should not hold")
	}
	var others []int // the shard's other replicas
	for i := range 3 {
		if i != li {
			others = append(others, i)
		}
	}
	stay, restarted := others[0], others[1]
	leaving := placement.NodeID(c.cfgs[restarted].NodeID)

	// n4 is down: the replica it is given never catches up, so the
	// leaving replica stays a voter.
	c.stop(3)
	leader := c.metaLeader()
	cur := leader.cluster.metaFSM.Map().ShardMap[0]
	next := placement.Move{Shard: 0, Add: "n4", Remove: leaving}.Apply(cur.Replicas)
	leader.cluster.applyMeta(leader.cluster.meta.Raft(), placement.Command{SetShardReplicas: &placement.SetShardReplicasCmd{
		Shard: 0, Replicas: next, ExpectedVersion: cur.Version}})
	waitFor(t, 20*time.Second, "n4 a non-voter of the shard, "+string(leaving)+" still a voter", func() bool {
		g := c.localGroup(li, 0)
		if g == nil {
			return false
		}
		var n4, left bool
		for _, s := range g.Raft().GetConfiguration().Configuration().Servers {
			n4 = n4 || s.ID == "n4" && s.Suffrage == raft.Nonvoter
			left = left || s.ID == raft.ServerID(leaving) && s.Suffrage == raft.Voter
		}
		return n4 && left
	})

	// The leaving replica's node restarts, and learns the map.
	c.stop(restarted)
	c.start(restarted)
	waitFor(t, 20*time.Second, string(leaving)+" has the new map", func() bool {
		m := c.nodes[restarted].cluster.metaFSM.Map()
		return len(m.ShardMap) > 0 && slices.Equal(m.ShardMap[0].Replicas, next)
	})
	time.Sleep(2 * time.Second) // a few control ticks

	// Another replica's node goes down: the shard's voters alive are the
	// leader and the restarted node, a quorum of three.
	c.stop(stay)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code, body, err := c.do(ctx, li, "/increment", "kept")
		cancel()
		if err == nil && code == 200 {
			if body != "4" {
				t.Fatalf("increment after the restart: %q, want 4", body)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shard takes no writes with two of its three voters' nodes up: last %d %q %v", code, body, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitFor polls ok until it holds, failing t after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

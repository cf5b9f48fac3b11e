package node

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
)

// TestRemovedMetaVoterStaysWhileAnotherIsDead: a drained node that is
// removed while another meta voter is dead, with no spare to take its vote,
// stays a voter. Taken out of the meta group, it left two voters of which
// one answers: the meta group committed nothing, not even that removal,
// while two of its three voters' nodes were alive.
func TestRemovedMetaVoterStaysWhileAnotherIsDead(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 4, reg, func(cfg *Config) { cfg.DeadNodeGrace = 0; cfg.AdminToken = testAdminToken })
	c.waitMetaVoters(3, 60*time.Second)
	if op := c.runOp(0, "/v1/nodes/n3/drain", map[string]any{}, nil); op.State != "done" {
		t.Fatalf("drain of n3: %+v", op)
	}
	dead := c.notMetaLeader() // n1 or n2
	c.stop(dead)
	c.waitMetaLeaderSees(false, dead)

	c.removeThroughMetaLeader("n3")
	time.Sleep(3 * time.Second) // control ticks: the removal would have been proposed

	// The meta group still commits, with n3 among its voters.
	var voters []string
	for _, s := range c.committedMetaConfig(15*time.Second, fmt.Sprintf("with %s dead and n3 removed", c.cfgs[dead].NodeID)) {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		}
	}
	if !slices.Contains(voters, "n3") {
		t.Fatalf("meta voters %v: n3 left although %s is dead", voters, c.cfgs[dead].NodeID)
	}
}

// A node removed from the cluster while it was down, restarted from its
// data dir, is never ready: its own map, from before the removal, cannot
// tell it, so it asks the other nodes before it counts as ready. It stops
// when they say it was removed, or when the meta group sends it a map that
// says so. Before, it served as ready on its old map meanwhile; then, told
// by the meta group, it ran on unready, as a node removed while running
// does, though the docs say it exits.
func TestNodeRemovedWhileAwayIsNeverReady(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 4, 4, &turnRegistry{active: map[string]string{}})
	m := c.metaLeader().cluster.metaFSM.Map()
	away := -1
	for i, cfg := range c.cfgs {
		if len(m.ShardsOf(placement.NodeID(cfg.NodeID))) == 0 && cfg.NodeID != c.metaLeader().cfg.NodeID {
			away = i
		}
	}
	if away < 0 {
		t.Fatal("every node holds a shard or leads the meta group")
	}
	awayID := c.cfgs[away].NodeID
	c.stop(away)
	c.waitMetaLeaderSees(false, away)
	c.removeThroughMetaLeader(awayID)

	c.start(away)
	nd := c.nodes[away]
	deadline := time.Now().Add(45 * time.Second)
	for {
		select {
		case err := <-nd.Failed():
			if !errors.Is(err, placement.ErrNodeRemoved) {
				t.Fatalf("the node removed while away stopped with %v, want ErrNodeRemoved", err)
			}
			return
		default:
		}
		ok, why := nd.cluster.ready()
		switch {
		case ok:
			t.Fatal("the node removed while it was away is ready on its old map")
		case time.Now().After(deadline):
			t.Fatalf("the node removed while away did not stop within 45 s; readiness: %s", why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeThroughMetaLeader removes node id from the map with the admin API
// of the meta leader.
func (c *testCluster) removeThroughMetaLeader(id string) {
	c.t.Helper()
	li := c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))
	var rm struct {
		State string `json:"state"`
		Error string `json:"error"`
	}
	if code := c.admin(li, "POST", "/v1/nodes/"+id+"/remove", nil, &rm); code != 200 || rm.State != "removed" {
		c.t.Fatalf("remove %s: %d %+v", id, code, rm)
	}
}

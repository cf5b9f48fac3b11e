package node

import (
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

	li := c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))
	var rm struct {
		State string `json:"state"`
		Error string `json:"error"`
	}
	if code := c.admin(li, "POST", "/v1/nodes/n3/remove", nil, &rm); code != 200 || rm.State != "removed" {
		t.Fatalf("remove n3: %d %+v", code, rm)
	}
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

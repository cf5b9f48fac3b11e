package node

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestDeadMetaVoterNotReplacedByUnreachableSpare: a meta voter dead past
// the grace is replaced by a non-voter only if that one has caught up. The
// spare here, n4, is alive in gossip but cut off from Raft: promoted, it
// would make the meta group four voters of which two answer, and the map
// could no longer change — where the two voters left were a quorum.
func TestDeadMetaVoterNotReplacedByUnreachableSpare(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 4, reg, func(cfg *Config) { cfg.DeadNodeGrace = 2 * time.Second })
	c.waitMetaVoters(3, 60*time.Second)
	if v := c.metaVoters(); slices.Contains(v, "n4") {
		t.Fatalf("meta voters %v: n4 is one", v)
	}
	victim := c.notMetaLeader() // n1 or n2, a meta voter
	c.faults.Isolate(raft.ServerAddress(c.cfgs[3].GRPCAddr))
	defer c.faults.Heal()
	c.stop(victim)
	c.waitMetaLeaderSees(false, victim)
	time.Sleep(2*time.Second + 5*time.Second) // the grace, and a few control ticks

	// The meta group still commits.
	for _, s := range c.committedMetaConfig(15*time.Second, fmt.Sprintf("with %s dead and n4 cut off", c.cfgs[victim].NodeID)) {
		if s.ID == "n4" && s.Suffrage == raft.Voter {
			t.Fatalf("n4, cut off from Raft, was made a meta voter")
		}
	}
}

package node

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestDeadMetaVoterReplacedBySpare: a meta voter whose node dies is, once
// DeadNodeGrace has passed, replaced by the alive non-voter (healMeta):
// n4, which joined after the three that bootstrapped the group, becomes a
// voter, and the dead node leaves the configuration. The meta group ends
// with three voters, all alive, and commits.
func TestDeadMetaVoterReplacedBySpare(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 4, reg, func(cfg *Config) { cfg.DeadNodeGrace = 2 * time.Second })
	c.waitMetaVoters(3, 60*time.Second)
	if v := c.metaVoters(); slices.Contains(v, "n4") {
		t.Fatalf("meta voters %v: n4 is one already", v)
	}
	victim := c.notMetaLeader() // a voter: n1 or n2
	vid := c.cfgs[victim].NodeID
	if v := c.metaVoters(); !slices.Contains(v, vid) {
		t.Fatalf("meta voters %v: the victim %s is not one", v, vid)
	}
	killed := time.Now()
	c.stop(victim)
	t.Logf("%s closed in %s", vid, time.Since(killed).Round(100*time.Millisecond))

	var want []string
	for i, cfg := range c.cfgs {
		if i != victim {
			want = append(want, cfg.NodeID)
		}
	}
	var servers []raft.Server
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		servers = c.committedMetaConfig(15*time.Second, fmt.Sprintf("with %s dead", vid))
		var voters, others []string
		for _, s := range servers {
			if s.Suffrage == raft.Voter {
				voters = append(voters, string(s.ID))
			} else {
				others = append(others, string(s.ID))
			}
		}
		slices.Sort(voters)
		if slices.Equal(voters, want) && len(others) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after %s died (grace 2s), the meta group has voters %v and non-voters %v; want voters %v and none else",
				time.Since(killed).Round(time.Second), vid, voters, others, want)
		}
	}
	t.Logf("%s replaced in the meta group %s after it died: %v", vid, time.Since(killed).Round(100*time.Millisecond), servers)
}

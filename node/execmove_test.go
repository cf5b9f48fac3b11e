package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roostdb/roost/placement"
)

// TestMoveRefusedWhenItsRemovalLacksALiveQuorum: a move planned while
// every node was alive — taking a live replica off a shard of three — is
// refused by execMove once another replica's node has died: the removal
// would leave two replicas of which one is alive, short of a quorum, and
// the shard's group could never carry it out (nextConfigStep holds it). The
// move ends at once with errNoLiveQuorum naming the shard and the dead
// node, and writes nothing: the map keeps the shard's replicas and
// version, and its group's configuration is unchanged.
func TestMoveRefusedWhenItsRemovalLacksALiveQuorum(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 2, reg, func(cfg *Config) { cfg.DeadNodeGrace = 0 })
	c.waitMetaVoters(3, 60*time.Second)

	const idx = 0
	leader := c.metaLeader()
	li := c.nodeIndex(placement.NodeID(leader.cfg.NodeID))
	before := leader.cluster.metaFSM.Map().ShardMap[idx]
	if len(before.Replicas) != 3 {
		t.Fatalf("shard %d has replicas %v, want three", idx, before.Replicas)
	}
	// dead dies after the move is planned; kept is the live replica the
	// move takes off.
	dead, kept := (li+1)%3, (li+2)%3
	deadID, keptID := placement.NodeID(c.cfgs[dead].NodeID), placement.NodeID(c.cfgs[kept].NodeID)
	mv := placement.Move{Shard: before.ID, Remove: keptID}
	if err := liveQuorumErr(placement.Shard{ID: mv.Shard, Replicas: mv.Apply(before.Replicas)}, c.metaLeader().cluster.aliveIDs()); err != nil {
		t.Fatalf("with every node alive the move %s is already refused: %v", mv, err)
	}
	confBefore := c.shardVoters(idx)

	c.stop(dead)
	c.waitMetaLeaderSees(false, dead)
	if l := c.metaLeader(); l != leader {
		t.Fatalf("the meta leadership moved from %s to %s", leader.cfg.NodeID, l.cfg.NodeID)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	op := &operation{id: "test", kind: "rebalance", maxConc: 1, state: "running", started: time.Now(), since: time.Now()}
	start := time.Now()
	err := leader.admin.execMove(ctx, op, mv)
	t.Logf("%s with %s dead: %v (after %s)", mv, deadID, err, time.Since(start).Round(time.Millisecond))
	if !errors.Is(err, errNoLiveQuorum) {
		t.Fatalf("%s with %s dead: %v, want errNoLiveQuorum", mv, deadID, err)
	}
	if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("shard %d:", mv.Shard)) || !strings.Contains(msg, fmt.Sprintf("(%s down)", deadID)) {
		t.Errorf("the refusal %q does not name shard %d and %s down", msg, mv.Shard, deadID)
	}

	// Nothing was written: a few control ticks later the map and the
	// group are as they were.
	time.Sleep(2 * time.Second)
	after := c.metaLeader().cluster.metaFSM.Map().ShardMap[idx]
	if after.Version != before.Version || !slices.Equal(after.Replicas, before.Replicas) {
		t.Errorf("the refused move changed the map: shard %d %v (v%d) -> %v (v%d)",
			idx, before.Replicas, before.Version, after.Replicas, after.Version)
	}
	if confAfter := c.shardVoters(idx); !slices.Equal(confAfter, confBefore) {
		t.Errorf("the refused move changed shard %d's group: %v -> %v", idx, confBefore, confAfter)
	}
}

// shardVoters returns shard idx's configuration, as its leader has it, as
// sorted "id:suffrage" strings.
func (c *testCluster) shardVoters(idx int) []string {
	c.t.Helper()
	li := c.waitLeaderOf(c.t, groupOf(idx))
	g := c.localGroup(li, idx)
	if g == nil {
		c.t.Fatalf("node %d leads shard %d but runs no replica of it", li+1, idx)
	}
	cf := g.Raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		c.t.Fatal(err)
	}
	var out []string
	for _, s := range cf.Configuration().Servers {
		out = append(out, fmt.Sprintf("%s:%s", s.ID, s.Suffrage))
	}
	slices.Sort(out)
	return out
}

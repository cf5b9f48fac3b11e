package node

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// leadsShard reports whether nd runs shard idx's replica as its leader.
func leadsShard(nd *Node, idx int) bool {
	nd.cluster.mu.Lock()
	ls := nd.cluster.groups[idx]
	nd.cluster.mu.Unlock()
	return ls != nil && ls.group.Raft().State() == raft.Leader
}

// TestCloseHandsOffShardLeaderships: a node's Close hands the leadership
// of each shard it leads to another replica (handOff) before its groups
// stop. The two other nodes are cut off from each other, so that they
// cannot elect a leader between themselves: a shard the closing node led
// gets a leader only through a transfer, whose election the closing node
// grants. Each does, by the time Close returns or soon after.
func TestCloseHandsOffShardLeaderships(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	const shards = 6
	c := newTestCluster(t, 3, shards, reg)
	c.waitMetaVoters(3, 60*time.Second)
	for idx := range shards {
		c.waitLeaderOf(t, groupOf(idx))
	}
	// x, the node closed, leads the most shards.
	x, most := -1, 0
	for i, nd := range c.nodes {
		n := 0
		for idx := range shards {
			if leadsShard(nd, idx) {
				n++
			}
		}
		if n > most {
			x, most = i, n
		}
	}
	if x < 0 {
		t.Fatal("no node leads a shard")
	}
	y, z := (x+1)%3, (x+2)%3
	ny, nz := c.nodes[y], c.nodes[z]
	c.faults.Partition(raft.ServerAddress(c.cfgs[y].GRPCAddr), raft.ServerAddress(c.cfgs[z].GRPCAddr))
	defer c.faults.Heal()
	var led []int
	for idx := range shards {
		if leadsShard(c.nodes[x], idx) {
			led = append(led, idx)
		}
	}
	if len(led) == 0 {
		t.Fatalf("%s no longer leads a shard", c.cfgs[x].NodeID)
	}

	// Watch ny and nz (not c.nodes, which c.stop writes) while x closes:
	// the new leader of a shard may step down again after its lease,
	// with no quorum once x is gone.
	seen := make(chan []int)
	closed := make(chan struct{})
	go func() {
		var got []int
		var after <-chan time.Time
		for {
			for _, idx := range led {
				if !slices.Contains(got, idx) && (leadsShard(ny, idx) || leadsShard(nz, idx)) {
					got = append(got, idx)
				}
			}
			select {
			case <-closed:
				closed, after = nil, time.After(5*time.Second)
			case <-after:
				seen <- got
				return
			case <-time.After(10 * time.Millisecond):
			}
			if len(got) == len(led) && closed == nil {
				seen <- got
				return
			}
		}
	}()
	start := time.Now()
	c.stop(x)
	took := time.Since(start)
	close(closed)
	got := <-seen
	slices.Sort(got)
	t.Logf("%s, closed in %s, led shards %v; led by another node since: %v", c.cfgs[x].NodeID, took.Round(100*time.Millisecond), led, got)
	if !slices.Equal(got, led) {
		t.Fatalf("%s led shards %v when it closed; only %v got a leader among %s and %s, which cannot elect one without it",
			c.cfgs[x].NodeID, led, got, c.cfgs[y].NodeID, c.cfgs[z].NodeID)
	}
}

// TestCloseGivesUpAStalledHandOff: a leadership transfer at Close whose
// target accepts it (TimeoutNow) and is then cut off would last until
// raft's own limit, ElectionTimeout (30 s with QuietTiming); handOff gives
// it up after transferGiveUp (2 s), and Close returns well before raft's
// limit.
func TestCloseGivesUpAStalledHandOff(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 1, reg)
	c.waitMetaVoters(3, 60*time.Second)
	// x leads the shard and not the meta group: a meta transfer to the
	// other node would cut x off from both, and x would lose the shard's
	// leadership with its lease (10 s) rather than only by the give-up.
	x := c.waitLeaderOf(t, groupOf(0))
	if ml := c.metaLeader(); ml == c.nodes[x] {
		o := (x + 1) % 3
		if err := ml.cluster.meta.Raft().LeadershipTransferToServer(raft.ServerID(c.cfgs[o].NodeID), raft.ServerAddress(c.cfgs[o].GRPCAddr)).Error(); err != nil {
			t.Fatalf("moving the meta leadership to %s: %v", c.cfgs[o].NodeID, err)
		}
	}
	if c.metaLeader() == c.nodes[x] || !leadsShard(c.nodes[x], 0) {
		t.Fatalf("%s leads the meta group, or not the shard", c.cfgs[x].NodeID)
	}
	// Whichever replica the transfer picks is cut off once it accepts.
	y, z := (x+1)%3, (x+2)%3
	ny, nz := c.nodes[y], c.nodes[z]
	c.faults.IsolateAfterTimeoutNow(raft.ServerAddress(c.cfgs[y].GRPCAddr))
	c.faults.IsolateAfterTimeoutNow(raft.ServerAddress(c.cfgs[z].GRPCAddr))
	defer c.faults.Heal()

	nd := c.nodes[x]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	err := nd.Close(ctx)
	took := time.Since(start)
	c.nodes[x] = nil
	t.Logf("%s closed in %s: %v", c.cfgs[x].NodeID, took.Round(100*time.Millisecond), err)

	// The transfer did stall: its target took it and stays a candidate,
	// cut off.
	stalled := false
	for _, o := range []*Node{ny, nz} {
		o.cluster.mu.Lock()
		ls := o.cluster.groups[0]
		o.cluster.mu.Unlock()
		if ls != nil && ls.group.Raft().State() == raft.Candidate {
			stalled = true
		}
	}
	if !stalled {
		t.Fatalf("no replica took the transfer and was cut off: the hand-off did not stall")
	}
	if took > 15*time.Second {
		t.Fatalf("Close took %s with a stalled hand-off; it gives the transfer up after %s", took.Round(100*time.Millisecond), defaultTransferGiveUp)
	}
}

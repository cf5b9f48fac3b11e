package node

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/raftstore"
)

// A node that comes back at a new gRPC address (its port changed, or its
// host's IP) is reached there: every group it is a member of, the meta
// group's too, has the new address in its configuration, so the node
// counts toward its groups' quorums again. Before, the map learnt the new
// address from gossip but the groups' configurations kept the old one, and
// with one more node down the node's shards had no quorum.
func TestNodeBackAtANewAddressIsReachedThere(t *testing.T) {
	t.Parallel()
	const shards = 4
	c := newTestClusterWith(t, 3, shards, &turnRegistry{active: map[string]string{}}, movingAddresses)
	c.stop(2)
	old := c.cfgs[2].GRPCAddr
	c.cfgs[2].GRPCAddr = freeAddr(t)
	c.start(2)
	want := raft.ServerAddress(c.cfgs[2].GRPCAddr)

	addressOfN3 := func(g *raftstore.Group) raft.ServerAddress {
		cf := g.Raft().GetConfiguration()
		if cf.Error() != nil {
			return ""
		}
		for _, s := range cf.Configuration().Servers {
			if s.ID == "n3" {
				return s.Address
			}
		}
		return ""
	}
	stale := func() string {
		for idx := range shards {
			li := c.leaderOf(groupOf(idx))
			if li < 0 {
				return fmt.Sprintf("shard %d has no leader", idx)
			}
			if got := addressOfN3(c.localGroup(li, idx)); got != want {
				return fmt.Sprintf("shard %d's configuration has n3 at %q", idx, got)
			}
		}
		meta := c.metaLeader()
		meta.cluster.mu.Lock()
		g := meta.cluster.meta
		meta.cluster.mu.Unlock()
		if got := addressOfN3(g); got != want {
			return fmt.Sprintf("the meta group's configuration has n3 at %q", got)
		}
		return ""
	}
	deadline := time.Now().Add(30 * time.Second)
	for why := stale(); why != ""; why = stale() {
		if time.Now().After(deadline) {
			t.Fatalf("n3 moved from %s to %s, and 30 s later %s", old, want, why)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// What the address is for: with n1 down, n2 and n3 are every group's
	// quorum.
	c.stop(0)
	for i := range 20 {
		name := fmt.Sprintf("k%d", i)
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, body, err := c.do(context.Background(), 1, "/increment", name)
			if err == nil && code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("increment of %s with n1 down, for 20 s: %d %q %v", name, code, body, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// movingAddresses is the node tweak of tests that move a node's gRPC
// address: raft's pipelined appends off (Node.noPipelines), since
// hashicorp/raft races on the peer's address when a pipelined send fails
// while the address changes (hashicorp/raft#681), which -race reports.
func movingAddresses(nd *Node) { nd.noPipelines = true }

package node

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
)

func TestMetaVoterTarget(t *testing.T) {
	for _, tc := range []struct{ voters, spares, want int }{
		{1, 0, 1},
		{1, 1, 1}, // two voters survive no more than one
		{1, 2, 3},
		{3, 0, 3},
		{3, 1, 3}, // four would need three of four
		{3, 2, 5},
		{3, 7, 5}, // never past maxMetaVoters
		{4, 0, 4}, // bootstrapped with four: not shrunk to an odd count
		{4, 1, 5},
		{4, 3, 5},
		{5, 3, 5},
		{7, 2, 7}, // bootstrapped with seven: kept
	} {
		if got := metaVoterTarget(tc.voters, tc.spares); got != tc.want {
			t.Errorf("metaVoterTarget(%d voters, %d spares) = %d, want %d", tc.voters, tc.spares, got, tc.want)
		}
	}
}

// TestMetaVoterRemoval: which voter may leave the meta group without a
// spare taking its vote. A removed voter leaves only if the voters left
// that are alive make a quorum (with another voter dead, taking it out of
// three left one of two); a dead voter leaves only from an even group
// (four with one dead, after a spare was promoted but the dead voter's
// removal failed, need all three others).
func TestMetaVoterRemoval(t *testing.T) {
	voter := func(id string) raft.Server { return raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id)} }
	nonvoter := func(id string) raft.Server { return raft.Server{Suffrage: raft.Nonvoter, ID: raft.ServerID(id)} }
	conf := func(s ...raft.Server) []raft.Server { return s }
	alive := func(ids ...string) map[placement.NodeID]bool {
		m := map[placement.NodeID]bool{}
		for _, id := range ids {
			m[placement.NodeID(id)] = true
		}
		return m
	}
	three := conf(voter("a"), voter("b"), voter("c"), nonvoter("d"))
	four := conf(voter("a"), voter("b"), voter("c"), voter("s"))
	for _, tc := range []struct {
		name       string
		servers    []raft.Server
		id         raft.ServerID
		alive      map[placement.NodeID]bool
		keeps      bool // removalKeepsLiveQuorum (a removed node)
		deadLeaves bool // deadVoterRemovable (were id dead, with no spare)
	}{
		{"removed voter, all alive", three, "c", alive("a", "b", "c", "d"), true, false},
		{"removed voter, another voter dead", three, "c", alive("b", "c", "d"), false, false},
		{"removed voter of four, another dead", four, "s", alive("b", "c", "s"), true, true},
		{"removed voter of four, two others dead", four, "s", alive("c", "s"), false, false},
		{"removed non-voter, voters dead", three, "d", alive("d"), true, false},
		{"dead voter of three", three, "a", alive("b", "c", "d"), true, false},
		{"dead voter of four", four, "a", alive("b", "c", "s"), true, true},
		{"dead voter of four, another dead", four, "a", alive("b", "c"), true, true},
		{"dead voter of four, two others dead", four, "a", alive("b"), false, false},
		{"lone voter", conf(voter("a")), "a", alive(), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := removalKeepsLiveQuorum(tc.servers, tc.id, tc.alive); got != tc.keeps {
				t.Errorf("removalKeepsLiveQuorum = %v, want %v", got, tc.keeps)
			}
			if got := deadVoterRemovable(tc.servers, tc.id, tc.alive); got != tc.deadLeaves {
				t.Errorf("deadVoterRemovable = %v, want %v", got, tc.deadLeaves)
			}
		})
	}
}

// metaVoters returns the meta group's voters as the meta leader sees them.
func (c *testCluster) metaVoters() []string {
	c.t.Helper()
	cf := c.metaLeader().cluster.meta.Raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		c.t.Fatal(err)
	}
	var voters []string
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		}
	}
	slices.Sort(voters)
	return voters
}

// waitMetaVoters waits until the meta group has n voters.
func (c *testCluster) waitMetaVoters(n int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for len(c.metaVoters()) < n {
		if time.Now().After(deadline) {
			c.t.Fatalf("the meta group has voters %v, want %d", c.metaVoters(), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMetaGrowsToFiveVoters: a cluster bootstrapped with three nodes that
// grows to five gives the meta group five voters, so that it survives the
// loss of two of them — its leader among them — and still changes the map.
// With the three voters it was bootstrapped with, losing two would leave it
// without a quorum.
func TestMetaGrowsToFiveVoters(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 5, 4, reg)

	c.waitMetaVoters(5, 60*time.Second)
	t.Logf("meta voters: %v", c.metaVoters())
	deadline := time.Now().Add(30 * time.Second)
	// A follower learns the configuration a moment after its leader.
	for shown := c.members(1); ; shown = c.members(1) {
		voters := 0
		for _, m := range shown {
			if m.Meta == "voter" {
				voters++
			}
		}
		if voters == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /v1/members on n2 shows %d meta voters, want 5: %+v", voters, shown)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Stop two voters, the meta leader one of them: n4 and n5, which hold
	// no replicas (nothing was rebalanced onto them), so that every shard
	// keeps its quorum and only the meta group's is in question.
	if ld := c.metaLeader(); ld.cfg.NodeID != "n4" {
		if err := ld.cluster.meta.Raft().LeadershipTransferToServer("n4", raft.ServerAddress(c.cfgs[3].GRPCAddr)).Error(); err != nil {
			t.Fatalf("moving the meta leadership to n4: %v", err)
		}
	}
	if ld := c.metaLeader(); ld.cfg.NodeID != "n4" {
		t.Fatalf("the meta leader is %s, want n4", ld.cfg.NodeID)
	}
	c.stop(3)
	c.stop(4)

	// The three left elect a leader and change the map: draining n5
	// commits its new state to the meta group.
	if err := c.metaLeader().cluster.meta.Raft().Barrier(10 * time.Second).Error(); err != nil {
		t.Fatalf("the meta group commits nothing with three of five voters left: %v", err)
	}
	if op := c.runOp(0, "/v1/nodes/n5/drain", nil, nil); op.State != "done" {
		t.Fatalf("draining n5 with two of five nodes down: %+v", op)
	}
	if st := c.metaLeader().cluster.metaFSM.Map().Nodes["n5"].State; st != placement.NodeDraining {
		t.Fatalf("n5 is %v after its drain, want draining", st)
	}
	for i := range 4 {
		name := fmt.Sprintf("grow-%d", i)
		if code, body, err := c.doRetrying(i%3, "/increment", name); err != nil || code != 200 || body != "1" {
			t.Fatalf("increment %s: %d %q %v", name, code, body, err)
		}
	}
}

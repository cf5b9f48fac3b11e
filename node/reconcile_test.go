package node

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
)

// TestRemovedCanStop is the rule for a replica the map no longer names
// (self "a"): it stops on a leader's word that the group's committed
// configuration leaves it out, or at once if it has no configuration, and
// never while it leads. Whatever it sees itself — its own configuration
// without it, every new replica voting, a long silence — is not enough:
// each of those let it stop before its removal committed, and a leader
// that died then left the group without a quorum (session 33's QA).
func TestRemovedCanStop(t *testing.T) {
	voter := func(id string) raft.Server { return raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id)} }
	nonvoter := func(id string) raft.Server { return raft.Server{Suffrage: raft.Nonvoter, ID: raft.ServerID(id)} }
	conf := func(s ...raft.Server) []raft.Server { return s }
	// Configurations as "a" has them: d being added, then voting, then a gone.
	adding := conf(voter("a"), voter("b"), voter("c"), nonvoter("d"))
	allVote := conf(voter("a"), voter("b"), voter("c"), voter("d"))
	gone := conf(voter("b"), voter("c"), voter("d"))
	tests := []struct {
		name      string
		state     raft.RaftState
		servers   []raft.Server
		confirmed bool // a leader confirmed a is out of the committed configuration
		want      bool
	}{
		{"follower, new replica not yet voting", raft.Follower, adding, false, false},
		{"follower, every wanted replica votes", raft.Follower, allVote, false, false},
		{"follower, removed from its own configuration", raft.Follower, gone, false, false},
		{"follower, a non-voter itself", raft.Follower, conf(nonvoter("a"), voter("b"), voter("c"), voter("d")), false, false},
		{"candidate, no leader for long", raft.Candidate, adding, false, false},
		{"follower, fresh, no configuration", raft.Follower, nil, false, true},
		{"follower, confirmed left", raft.Follower, adding, true, true},
		{"follower, removed from its own configuration, confirmed", raft.Follower, gone, true, true},
		{"candidate, confirmed left", raft.Candidate, allVote, true, true},
		{"leader, removed from its own configuration", raft.Leader, gone, false, false},
		{"leader, confirmed left", raft.Leader, gone, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := removedCanStop(tt.state, tt.servers, tt.confirmed); got != tt.want {
				t.Fatalf("removedCanStop = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSplitToDead: an operation's moves onto nodes gossip does not see
// alive are set apart, every other move kept in order.
func TestSplitToDead(t *testing.T) {
	moves := []placement.Move{
		{Shard: 0, Add: "b", Remove: "a"},
		{Shard: 1, Remove: "c"}, // removes only: no node to reach
		{Shard: 2, Add: "d"},
		{Shard: 3, Add: "e", Remove: "b"},
		{Shard: 4, Add: "b", Remove: "e"},
	}
	alive := func(ids ...placement.NodeID) map[placement.NodeID]bool {
		m := map[placement.NodeID]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	shardsOf := func(got []placement.Move) []placement.ShardID {
		var ids []placement.ShardID
		for _, mv := range got {
			if !slices.Contains(moves, mv) {
				t.Fatalf("move %s is not one the plan made", mv)
			}
			ids = append(ids, mv.Shard)
		}
		return ids
	}
	tests := []struct {
		name            string
		alive           map[placement.NodeID]bool
		toAlive, toDead []placement.ShardID
	}{
		{"all alive", alive("a", "b", "c", "d", "e"), []placement.ShardID{0, 1, 2, 3, 4}, nil},
		{"d down", alive("a", "b", "c", "e"), []placement.ShardID{0, 1, 3, 4}, []placement.ShardID{2}},
		{"b and e down", alive("a", "c", "d"), []placement.ShardID{1, 2}, []placement.ShardID{0, 3, 4}},
		{"the removed nodes down", alive("b", "d", "e"), []placement.ShardID{0, 1, 2, 3, 4}, nil},
		{"nobody alive", alive(), []placement.ShardID{1}, []placement.ShardID{0, 2, 3, 4}},
	}
	for _, tt := range tests {
		toAlive, toDead := splitToDead(slices.Clone(moves), tt.alive)
		if got := shardsOf(toAlive); !slices.Equal(got, tt.toAlive) {
			t.Errorf("%s: moves onto live nodes of shards %v, want %v", tt.name, got, tt.toAlive)
		}
		if got := shardsOf(toDead); !slices.Equal(got, tt.toDead) {
			t.Errorf("%s: moves onto dead nodes of shards %v, want %v", tt.name, got, tt.toDead)
		}
	}
}

// TestNextConfigStep: the order in which a shard leader moves its group's
// configuration toward the map, and that it removes no voter whose removal
// would leave the voters alive fewer than a quorum of the voters left.
func TestNextConfigStep(t *testing.T) {
	voter := func(id string) raft.Server { return raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id)} }
	nonvoter := func(id string) raft.Server { return raft.Server{Suffrage: raft.Nonvoter, ID: raft.ServerID(id)} }
	conf := func(s ...raft.Server) []raft.Server { return s }
	ids := func(s ...placement.NodeID) []placement.NodeID { return s }
	set := func(s ...placement.NodeID) map[placement.NodeID]bool {
		m := map[placement.NodeID]bool{}
		for _, id := range s {
			m[id] = true
		}
		return m
	}
	all := set("a", "b", "c", "d", "e")
	tests := []struct {
		name     string
		servers  []raft.Server
		want     []placement.NodeID
		caughtUp map[placement.NodeID]bool
		alive    map[placement.NodeID]bool
		step     configStep
	}{
		{"settled", conf(voter("a"), voter("b"), voter("c")), ids("a", "b", "c"), nil, all, configStep{stepNone, ""}},
		{"add", conf(voter("a"), voter("b"), voter("c")), ids("a", "b", "c", "d"), nil, all, configStep{stepAddNonvoter, "d"}},
		{"catching up", conf(voter("a"), voter("b"), voter("c"), nonvoter("d")), ids("a", "b", "d"), nil, all, configStep{stepCatchUp, "d"}},
		{"promote", conf(voter("a"), voter("b"), voter("c"), nonvoter("d")), ids("a", "b", "d"), set("d"), all, configStep{stepPromote, "d"}},
		{"remove", conf(voter("a"), voter("b"), voter("c"), voter("d")), ids("a", "b", "d"), nil, all, configStep{stepRemove, "c"}},
		{"hand over", conf(voter("a"), voter("b"), voter("c"), voter("d")), ids("b", "c", "d"), nil, all, configStep{stepHandOver, "a"}},
		{"unknown node not added", conf(voter("a"), voter("b"), voter("c")), ids("a", "b", "c", "x"), nil, all, configStep{stepNone, ""}},
		{"remove a dead replica", conf(voter("a"), voter("b"), voter("c"), voter("d")), ids("a", "b", "d"), nil, set("a", "b", "d"), configStep{stepRemove, "c"}},
		{"remove, another dead of four", conf(voter("a"), voter("b"), voter("c"), voter("d")), ids("a", "b", "d"), nil, set("a", "c", "d"), configStep{stepRemove, "c"}},
		{"remove a non-voter, others dead", conf(voter("a"), voter("b"), nonvoter("c")), ids("a", "b"), nil, set("a"), configStep{stepRemove, "c"}},
		// Two replicas {a,b} moved to {a,c} through {a,b,c}, and a died
		// after c was promoted: removing b would leave [a c] with one live
		// voter of two, and the group could commit nothing, not even that
		// removal.
		{"hold: two left, one dead", conf(voter("a"), voter("b"), voter("c")), ids("a", "c"), nil, set("b", "c"), configStep{stepHold, "b"}},
		{"hold: the leader's removal of another, one left dead", conf(voter("a"), voter("b"), voter("c")), ids("a", "b"), nil, set("a", "c"), configStep{stepHold, "c"}},
		// Two removals (the map changed twice): c's would leave [a b d] with
		// one live, d's leaves [a b c] with two.
		{"hold one, remove the other", conf(voter("a"), voter("b"), voter("c"), voter("d")), ids("a", "b"), nil, set("a", "c"), configStep{stepRemove, "d"}},
		// d, added first, cannot catch up (its node died while it did):
		// the replica added after it is still added and promoted, and
		// removals wait for both.
		{"add past one catching up", conf(voter("a"), voter("b"), voter("c"), nonvoter("d")), ids("a", "b", "c", "d", "e"), nil, all, configStep{stepAddNonvoter, "e"}},
		{"promote past one catching up", conf(voter("a"), voter("b"), voter("c"), nonvoter("d"), nonvoter("e")), ids("a", "b", "d", "e"), set("e"), all, configStep{stepPromote, "e"}},
		{"no removal while one catches up", conf(voter("a"), voter("b"), voter("c"), nonvoter("d"), voter("e")), ids("a", "b", "d", "e"), nil, all, configStep{stepCatchUp, "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			known := func(id placement.NodeID) bool { return id != "x" }
			caughtUp := func(id placement.NodeID) bool { return tt.caughtUp[id] }
			if got := nextConfigStep("a", tt.servers, tt.want, known, caughtUp, tt.alive); got != tt.step {
				t.Fatalf("nextConfigStep = %+v, want %+v", got, tt.step)
			}
		})
	}
}

// TestAnswering: a node alive in gossip but unreachable over Raft counts
// towards no quorum when a voter is taken out of a group (nextConfigStep,
// removedCanStop, the meta group's removals): with b cut off from Raft,
// the leader of {a,b,c} does not remove c to leave [a b].
func TestAnswering(t *testing.T) {
	servers := []raft.Server{
		{Suffrage: raft.Voter, ID: "a", Address: "a:1"},
		{Suffrage: raft.Voter, ID: "b", Address: "b:1"},
		{Suffrage: raft.Voter, ID: "c", Address: "c:1"},
	}
	alive := map[placement.NodeID]bool{"a": true, "b": true, "c": true, "x": true}
	reachable := func(addr raft.ServerAddress) bool { return addr != "b:1" }
	got := answering(alive, servers, reachable)
	if want := map[placement.NodeID]bool{"a": true, "c": true, "x": true}; !maps.Equal(got, want) {
		t.Fatalf("answering = %v, want %v", got, want)
	}
	if !alive["b"] {
		t.Fatal("answering changed its argument")
	}
	never := func(placement.NodeID) bool { return false }
	known := func(placement.NodeID) bool { return true }
	if step := nextConfigStep("a", servers, []placement.NodeID{"a", "b"}, known, never, got); step != (configStep{stepHold, "c"}) {
		t.Fatalf("with b cut off from Raft, nextConfigStep = %+v, want c's removal held", step)
	}
}

// TestCatchUpStalled is the rule for waking the replication of a shard
// whose new replica makes no progress catching up: each row is one look
// by the control loop, in order, on one track.
func TestCatchUpStalled(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var track catchUpTrack
	for i, look := range []struct {
		node    placement.NodeID
		applied uint64
		now     time.Time
		want    bool
	}{
		{"d", 0, at(0), false},                             // first seen (not running yet: 0)
		{"d", 0, at(time.Second), false},                   // no progress, not for long
		{"d", 0, at(stalledAfter), true},                   // no progress for stalledAfter: nudge
		{"d", 0, at(stalledAfter + time.Second), false},    // the wait starts again
		{"d", 0, at(2 * stalledAfter), true},               // still stuck: nudged again
		{"d", 40, at(2*stalledAfter + time.Second), false}, // it moved: a new wait
		{"d", 40, at(3*stalledAfter + 500*time.Millisecond), false},
		{"d", 40, at(3*stalledAfter + time.Second), true},
		{"e", 40, at(4 * stalledAfter), false}, // another replica: a new wait
		{"e", 40, at(5 * stalledAfter), true},
	} {
		if got := track.stalled(look.node, look.applied, look.now); got != look.want {
			t.Fatalf("look %d (%s at %d, %s): stalled = %v, want %v", i, look.node, look.applied, look.now.Sub(t0), got, look.want)
		}
	}
}

// A replica added to a quiet shard whose node starts it late (here 2 s
// after the map names it) misses the leader's first sends (NotFound) and
// nothing new is written to the shard; the leader nudges the group's
// replication while the replica makes no progress, so the drain that
// moves it ends soon after the replica runs. Before, hashicorp/raft sent
// again only after CommitTimeout (QuietTiming: 30-60 s), and each such
// shard held the drain that long (QA, on Docker).
func TestReplicaStartedLateCatchesUpSoon(t *testing.T) {
	t.Parallel()
	const lateBy = 2 * time.Second
	c := newTestClusterWith(t, 4, 4, &turnRegistry{active: map[string]string{}}, func(n *Node) {
		n.beforeJoiningShard = func(int) { time.Sleep(lateBy) }
	})
	c.waitMetaVoters(3, 60*time.Second)
	// Give every shard more entries than a replica may lag and still
	// count as caught up (catchUpLag): a replica of a shard with fewer is
	// promoted as soon as it runs, and the promotion's own entry wakes
	// the replication.
	for _, nd := range c.nodes {
		nd.cluster.mu.Lock()
		groups := slices.Collect(maps.Values(nd.cluster.groups))
		nd.cluster.mu.Unlock()
		for _, ls := range groups {
			for range 2 * catchUpLag {
				if ls.group.Raft().State() != raft.Leader {
					break
				}
				if err := ls.group.Raft().Barrier(5 * time.Second).Error(); err != nil {
					t.Fatalf("writing to shard %d: %v", ls.shard.id, err)
				}
			}
		}
	}
	_, li, victim := c.metaLeaderAndAHolder()
	start := time.Now()
	op := c.runOp(li, "/v1/nodes/"+string(victim)+"/drain", nil, nil)
	took := time.Since(start)
	if op.State != "done" {
		t.Fatalf("the drain of %s ended %s: %q", victim, op.State, op.Error)
	}
	// The late node starts the new replicas one at a time (at most 4,
	// lateBy each), each caught up within about stalledAfter of its
	// start; one stall waits out CommitTimeout, 30-60 s.
	if limit := 28 * time.Second; took > limit {
		t.Fatalf("the drain of %s (%d moves) took %s: a new replica's catch-up waited for CommitTimeout", victim, op.Total, took.Round(time.Second))
	}
	t.Logf("the drain of %s (%d moves) took %s", victim, op.Total, took.Round(100*time.Millisecond))
}

// With more nodes than replicas, no node holds every shard, so each sees
// only part of the others' leaderships. Leaders must still settle, spread
// evenly. Before, a node handed leaderships to voters that led few of the
// shards it held itself, though they led more than their share overall,
// and leaders moved between nodes for ever (every move closing the
// shard's WebSockets).
func TestLeadersSettleWithMoreNodesThanReplicas(t *testing.T) {
	t.Parallel()
	const nodes, shards = 4, 16
	c := newTestCluster(t, nodes, shards, &turnRegistry{active: map[string]string{}})
	if op := c.runOp(0, "/v1/rebalance", map[string]any{}, nil); op.State != "done" {
		t.Fatalf("rebalance onto the fourth node: %s %q", op.State, op.Error)
	}
	c.waitConverged(0, time.Minute)
	const share, stableFor = shards / nodes, 15 * time.Second
	var last []int
	changes := 0
	stableSince := time.Now()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		leaders := make([]int, shards)
		counts := make([]int, nodes)
		balanced := true
		for s := range shards {
			leaders[s] = c.leaderOf(groupOf(s))
			if leaders[s] < 0 {
				balanced = false
				continue
			}
			counts[leaders[s]]++
		}
		for _, n := range counts {
			balanced = balanced && n <= share
		}
		switch {
		case last != nil && !slices.Equal(leaders, last):
			changes++
			stableSince = time.Now()
		case !balanced:
			stableSince = time.Now()
		case time.Since(stableSince) >= stableFor:
			t.Logf("leaders settled after %d changes: %v a node", changes, counts)
			return
		}
		last = leaders
		if time.Now().After(deadline) {
			t.Fatalf("leaders did not settle within 2 min: %d changes seen; leaders a node now %v (share %d)", changes, counts, share)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

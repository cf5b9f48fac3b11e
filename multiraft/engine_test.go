package multiraft

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

func TestConfigValidate(t *testing.T) {
	valid := DefaultConfig()
	valid.NodeID, valid.Transport = 1, NewMemNetwork().Transport(1)
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"no node id", func(c *Config) { c.NodeID = 0 }},
		{"no transport", func(c *Config) { c.Transport = nil }},
		{"zero tick", func(c *Config) { c.TickInterval = 0 }},
		{"election not above heartbeat", func(c *Config) { c.ElectionTicks = c.HeartbeatTicks }},
		{"no entry bytes", func(c *Config) { c.MaxEntryBytes = 0 }},
		{"no inflight", func(c *Config) { c.MaxInflightMsgs = 0 }},
		{"no retention", func(c *Config) { c.LogRetention = 0 }},
		{"negative round interval", func(c *Config) { c.RoundInterval = -time.Millisecond }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.edit(&c)
			if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
		})
	}
	// The DB is the one thing valid lacks.
	if err := valid.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate() without a DB = %v", err)
	}
}

func TestProposeReadAndConverge(t *testing.T) {
	c := newCluster(t, 3, nil)
	for id := uint64(1); id <= 3; id++ {
		c.startGroup(id, 7, 1, 2, 3)
	}
	if err := c.groups[2][7].Campaign(); err != nil {
		t.Fatal(err)
	}
	lead := c.leader(7)
	for i := uint64(1); i <= 20; i++ {
		v, err := c.increment(lead, 7, "a")
		if err != nil || v != i {
			t.Fatalf("increment %d = %d, %v", i, v, err)
		}
	}
	follower := lead%3 + 1
	if _, err := c.increment(follower, 7, "a"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("increment on a follower: %v, want ErrNotLeader", err)
	}
	ctx := context.Background()
	if err := c.groups[follower][7].ReadIndex(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("ReadIndex on a follower: %v, want ErrNotLeader", err)
	}
	if err := c.groups[lead][7].ReadIndex(ctx); err != nil {
		t.Fatalf("ReadIndex on the leader: %v", err)
	}
	if got := c.sms[lead][7].get("a"); got != 20 {
		t.Fatalf("leader's counter after ReadIndex = %d, want 20", got)
	}
	if got := c.converged(7); got["a"] != 20 {
		t.Fatalf("converged on %v, want a=20", got)
	}
	if _, err := c.groups[lead][7].Propose(ctx, make([]byte, DefaultConfig().MaxEntryBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized proposal: %v, want ErrTooLarge", err)
	}
	st := c.groups[follower][7].Status()
	if st.Role != Follower || st.Leader != lead || len(st.Voters) != 3 {
		t.Fatalf("follower's status %+v", st)
	}
}

// Many groups, many proposers at once: every increment is answered with
// its own new value, and every replica ends the same.
func TestManyGroupsConcurrently(t *testing.T) {
	c := newCluster(t, 3, nil)
	const groups = 12
	for g := GroupID(1); g <= groups; g++ {
		for id := uint64(1); id <= 3; id++ {
			c.startGroup(id, g, 1, 2, 3)
		}
		if err := c.groups[uint64(g)%3+1][g].Campaign(); err != nil {
			t.Fatal(err)
		}
	}
	const perProposer = 40
	var wg sync.WaitGroup
	errs := make(chan error, groups*2)
	for g := GroupID(1); g <= groups; g++ {
		for p := range 2 {
			wg.Go(func() {
				name := fmt.Sprintf("p%d", p)
				for i := uint64(1); i <= perProposer; i++ {
					v, err := c.increment(c.leader(g), g, name)
					if err != nil {
						errs <- fmt.Errorf("group %s %s #%d: %w", g, name, i, err)
						return
					}
					if v != i {
						errs <- fmt.Errorf("group %s %s #%d returned %d", g, name, i, v)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for g := GroupID(1); g <= groups; g++ {
		got := c.converged(g)
		if got["p0"] != perProposer || got["p1"] != perProposer {
			t.Errorf("group %s converged on %v", g, got)
		}
	}
}

// A node stopped and started again, and a whole cluster crashed (unsynced
// writes lost) and started again, keep every acknowledged increment and
// go on.
func TestRestartKeepsAcknowledgedWrites(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.LogRetention = 8 })
	for id := uint64(1); id <= 3; id++ {
		c.startGroup(id, 1, 1, 2, 3)
	}
	for range 30 {
		c.mustIncrement(1, "x")
	}
	victim := c.leader(1)%3 + 1
	c.stop(victim)
	for range 30 {
		c.mustIncrement(1, "x")
	}
	c.start(victim)
	c.startGroup(victim, 1, 1, 2, 3)
	if got := c.converged(1); got["x"] != 60 {
		t.Fatalf("after a restart: %v, want x=60", got)
	}
	for id := uint64(1); id <= 3; id++ {
		c.crash(id)
	}
	for id := uint64(1); id <= 3; id++ {
		c.start(id)
		c.startGroup(id, 1, 1, 2, 3)
	}
	if v := c.mustIncrement(1, "x"); v != 61 {
		t.Fatalf("first increment after every node crashed = %d, want 61", v)
	}
	if got := c.converged(1); got["x"] != 61 {
		t.Fatalf("after a crash of every node: %v, want x=61", got)
	}
	// No replica applied a command twice across the restarts.
	for id := uint64(1); id <= 3; id++ {
		seen := map[uint64]bool{}
		for _, idx := range c.sms[id][1].appliedIndexes() {
			if seen[idx] {
				t.Fatalf("node %d applied index %d twice", id, idx)
			}
			seen[idx] = true
		}
	}
}

// A new node joins an existing group whose log was compacted: it catches
// up from a snapshot as a learner, is promoted, takes the leadership, and
// an old voter is removed.
func TestMembershipAndSnapshot(t *testing.T) {
	c := newCluster(t, 4, func(cfg *Config) { cfg.LogRetention = 4 })
	for id := uint64(1); id <= 3; id++ {
		c.startGroup(id, 3, 1, 2, 3)
	}
	for range 40 {
		c.mustIncrement(3, "k")
	}
	c.startGroup(4, 3) // joins: no voters
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	change := func(typ raftpb.ConfChangeType, node uint64) {
		t.Helper()
		for {
			err := c.groups[c.leader(3)][3].ChangeConf(ctx, raftpb.ConfChangeV2{Changes: []raftpb.ConfChangeSingle{{Type: typ, NodeID: node}}})
			if err == nil {
				return
			}
			if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrConfChangePending) || ctx.Err() != nil {
				t.Fatalf("%v of node %d: %v", typ, node, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	change(raftpb.ConfChangeAddLearnerNode, 4)
	if got := c.converged(3); got["k"] != 40 {
		t.Fatalf("after adding a learner: %v, want k=40", got)
	}
	if st := c.groups[4][3].Status(); len(st.Learners) != 1 || st.Learners[0] != 4 {
		t.Fatalf("learner's status %+v", st)
	}
	change(raftpb.ConfChangeAddNode, 4)
	// A transfer to a node that has not applied its promotion fails: it
	// still takes itself for a learner and does not campaign.
	for !slices.Contains(c.groups[4][3].Status().Voters, 4) {
		if ctx.Err() != nil {
			t.Fatalf("node 4 never saw itself promoted: %+v", c.groups[4][3].Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.groups[c.leader(3)][3].TransferLeadership(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if lead := c.leader(3); lead != 4 {
		t.Fatalf("leader after the transfer: %d, want 4", lead)
	}
	change(raftpb.ConfChangeRemoveNode, 1)
	if v := c.mustIncrement(3, "k"); v != 41 {
		t.Fatalf("increment after the changes = %d, want 41", v)
	}
	if st := c.groups[4][3].Status(); len(st.Voters) != 3 || slices.Contains(st.Voters, 1) {
		t.Fatalf("voters after removing node 1: %v", st.Voters)
	}
}

// Closing the engines and the network ends every goroutine they started.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		c := newCluster(t, 3, nil)
		for id := uint64(1); id <= 3; id++ {
			c.startGroup(id, 1, 1, 2, 3)
		}
		c.mustIncrement(1, "x")
		for _, id := range c.running() {
			c.stop(id)
		}
		c.net.Close()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPowerCutUnderLoad: every node loses power at once while proposals
// are in flight. Every increment acknowledged before the cut is there
// after it: an acknowledgement rests only on synced copies (a follower
// answers an append only after its sync; a leader counts its own copy
// only after its own), even though leaders send their appends before they
// sync. The followers' syncs are slowed and the leader's are not, so that
// a follower that answered before its sync would let the leader
// acknowledge what only the leader holds: the cut then loses it whenever
// a follower wins the next election.
func TestPowerCutUnderLoad(t *testing.T) {
	const groups, proposers, cuts = 2, 6, 5
	c := newCluster(t, 3, nil)
	c.syncDelays[2].Store(int64(5 * time.Millisecond))
	c.syncDelays[3].Store(int64(5 * time.Millisecond))
	for id := uint64(1); id <= 3; id++ {
		for g := GroupID(1); g <= groups; g++ {
			c.startGroup(id, g, 1, 2, 3)
		}
	}
	// leadOnOne makes node 1, the one with fast syncs, every group's leader.
	leadOnOne := func() {
		for g := GroupID(1); g <= groups; g++ {
			for range 20 {
				lead := c.leader(g)
				if lead == 1 {
					break
				}
				h, _ := c.handle(lead, g)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := h.TransferLeadership(ctx, 1)
				cancel()
				if err != nil {
					t.Logf("moving group %s's leadership to node 1: %v", g, err)
				}
			}
			if lead := c.leader(g); lead != 1 {
				t.Fatalf("group %s: node %d leads, not node 1", g, lead)
			}
		}
	}
	type key struct {
		g    GroupID
		name string
	}
	for cut := range cuts {
		leadOnOne()
		var mu sync.Mutex
		acked := map[key]uint64{} // the largest value acknowledged, by counter
		var cutting atomic.Bool
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for p := range proposers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k := key{GroupID(p%groups + 1), fmt.Sprintf("k%d", p%3)}
				for {
					select {
					case <-stop:
						return
					default:
					}
					v, err := c.increment(1, k.g, k.name)
					// Only an answer seen before the cut began counts.
					if err == nil && !cutting.Load() {
						mu.Lock()
						acked[k] = max(acked[k], v)
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(200+rand.IntN(300)) * time.Millisecond)
		cutting.Store(true)
		c.powerCut()
		close(stop)
		wg.Wait()
		for id := uint64(1); id <= 3; id++ {
			c.start(id)
			for g := GroupID(1); g <= groups; g++ {
				c.startGroup(id, g, 1, 2, 3)
			}
		}
		if len(acked) == 0 {
			t.Fatalf("cut %d: nothing was acknowledged before it", cut)
		}
		// A restarted node has applied only what its last synced state
		// shows; what the log holds beyond it commits again with the new
		// leader's first entry of its term.
		for g := GroupID(1); g <= groups; g++ {
			c.mustIncrement(g, "after-cut")
		}
		for k, v := range acked {
			if got := c.converged(k.g)[k.name]; got < v {
				t.Fatalf("cut %d: group %s counter %s is %d after the power cut, but %d was acknowledged before it", cut, k.g, k.name, got, v)
			}
		}
		t.Logf("cut %d: %d counters checked, e.g. %v", cut, len(acked), acked)
	}
}

package node

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/raftstore"
)

type fakeFenceGroup struct {
	state         raft.RaftState
	quorum        bool
	applied, last uint64
	barrierErr    error
	barriers      int
	nudges        int
}

func (g *fakeFenceGroup) State() raft.RaftState          { return g.state }
func (g *fakeFenceGroup) QuorumReachable() (bool, error) { return g.quorum, nil }
func (g *fakeFenceGroup) Barrier() error                 { g.barriers++; return g.barrierErr }
func (g *fakeFenceGroup) Nudge()                         { g.nudges++ }
func (g *fakeFenceGroup) Progress() (uint64, uint64)     { return g.applied, g.last }

var _ fencedShard = (*fakeFenceGroup)(nil)

func TestCheckFence(t *testing.T) {
	tests := []struct {
		name                 string
		leading, fenced      bool // the shard before the check
		group                fakeFenceGroup
		wantReady, wantFence bool
		wantDrops, barriers  int
	}{
		{name: "leader with its quorum stays ready",
			leading: true, group: fakeFenceGroup{state: raft.Leader, quorum: true},
			wantReady: true},
		{name: "leader cut off is fenced and its instances dropped",
			leading: true, group: fakeFenceGroup{state: raft.Leader},
			wantFence: true, wantDrops: 1},
		{name: "fenced leader still cut off: nothing more",
			leading: true, fenced: true, group: fakeFenceGroup{state: raft.Leader},
			wantFence: true},
		{name: "fenced leader with its quorum back: unfenced after a barrier",
			leading: true, fenced: true, group: fakeFenceGroup{state: raft.Leader, quorum: true},
			wantReady: true, barriers: 1},
		{name: "fenced leader whose barrier fails stays fenced",
			leading: true, fenced: true, group: fakeFenceGroup{state: raft.Leader, quorum: true, barrierErr: raft.ErrLeadershipLost},
			wantFence: true, barriers: 1},
		{name: "a follower is never fenced",
			fenced: true, group: fakeFenceGroup{state: raft.Follower},
		},
		// Raft stepped down, and followLeadership has not taken the loss
		// yet: lifting the fence now would make the shard ready on a
		// node that no longer leads it, until the loss is taken.
		{name: "a fenced leader that stepped down stays fenced until its loss is taken",
			leading: true, fenced: true, group: fakeFenceGroup{state: raft.Follower},
			wantFence: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sh := newShard(groupOf(0), nil, 1, nil)
			sh.setFenced(tt.fenced)
			sh.setLeading(tt.leading)
			drops := 0
			unfence := checkFence(sh, &tt.group, func(got *shard) {
				if got != sh {
					t.Errorf("dropped another shard")
				}
				drops++
			})
			if unfence != nil {
				unfence()
			}
			if got := sh.isReady(); got != tt.wantReady {
				t.Errorf("ready = %v, want %v", got, tt.wantReady)
			}
			if got := sh.isFenced(); got != tt.wantFence {
				t.Errorf("fenced = %v, want %v", got, tt.wantFence)
			}
			if drops != tt.wantDrops {
				t.Errorf("%d drops, want %d", drops, tt.wantDrops)
			}
			if tt.group.barriers != tt.barriers {
				t.Errorf("%d barriers, want %d", tt.group.barriers, tt.barriers)
			}
		})
	}
}

// A shard leader cut off from the other nodes stops serving within a few
// seconds, long before raft's 10 s lease steps it down, and drops its
// instances; once the network heals the cluster serves every shard again.
func TestIsolatedLeaderIsFenced(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}})
	// An instance on the leader of the shard that "a" lands on.
	if code, body, err := c.doRetrying(0, "/increment", "a"); err != nil || code != 200 || body != "1" {
		t.Fatalf("increment: %d %q %v, want 200 \"1\"", code, body, err)
	}
	var victim int
	var sh *shard
	var g *raftstore.Group
	for i, nd := range c.nodes {
		nd.manager.mu.Lock()
		for _, in := range nd.manager.instances {
			victim, sh = i, in.shard
		}
		nd.manager.mu.Unlock()
	}
	if sh == nil || !sh.isReady() {
		t.Fatal("no ready shard with an instance after a request")
	}
	g = sh.group
	c.faults.Isolate(raft.ServerAddress(c.cfgs[victim].GRPCAddr))
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	for sh.isReady() {
		if time.Now().After(deadline) {
			t.Fatalf("the isolated leader of shard %s still serves after %v", sh.id, time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	fencedAfter := time.Since(start)
	if st := g.State(); st != raft.Leader {
		t.Fatalf("shard %s stopped serving as a %v: raft's lease, not the fence, stopped it", sh.id, st)
	}
	t.Logf("fenced %v after the isolation", fencedAfter)
	nd := c.nodes[victim]
	nd.manager.mu.Lock()
	left := 0
	for _, in := range nd.manager.instances {
		if in.shard == sh && !in.retired.Load() {
			left++
		}
	}
	nd.manager.mu.Unlock()
	if left > 0 {
		t.Fatalf("%d live instances of the fenced shard", left)
	}
	c.faults.Heal()
	c.waitReady()
	// Leaders may still be moving after the heal: a 503 (refused before
	// the object ran) is retried, anything else is the answer.
	deadline = time.Now().Add(15 * time.Second)
	for {
		code, body, err := c.doRetrying(victim, "/increment", "a")
		if err == nil && code == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			continue
		}
		if err != nil || code != 200 || body != "2" {
			t.Fatalf("increment after the heal: %d %q %v, want 200 \"2\"", code, body, err)
		}
		return
	}
}

// TestFenceAnswersTurnsInFlight: turns waiting at the output gate on a
// shard leader that is cut off from the other nodes are answered once the
// fence comes (within about 2.2 s): a write, that it may or may not have
// committed (a 500); a read, that its answer is withheld and it may be
// retried (a 503), whether it waits for an earlier write's commit or for
// its leadership check. Raft itself gives the commit and the check up
// only when its lease steps the leader down, 10 s or more after the cut,
// and the clients waited that long before.
func TestFenceAnswersTurnsInFlight(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}})
	c.waitReady()
	name, other := c.counterLedBy(0, "in-flight-"), c.counterLedBy(0, "read-only-")
	for _, n := range []string{name, other} {
		if code, body, err := c.doRetrying(0, "/increment", n); err != nil || code != http.StatusOK || body != "1" {
			t.Fatalf("increment of %s before the cut: %d %q %v, want 200 \"1\"", n, code, body, err)
		}
	}
	c.faults.Isolate(raft.ServerAddress(c.cfgs[0].GRPCAddr))
	defer c.faults.Heal()
	start := time.Now()
	turns := []struct {
		path, name string
		wantCode   int
		wantText   string
	}{
		{"/increment", name, http.StatusInternalServerError, "may or may not have committed"},
		{"/peek", name, http.StatusServiceUnavailable, "response withheld"},  // behind the write's commit
		{"/peek", other, http.StatusServiceUnavailable, "response withheld"}, // its own leadership check
	}
	var wg sync.WaitGroup
	for i, turn := range turns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 20 * time.Millisecond) // the write's turn first
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			code, body, err := c.do(ctx, 0, turn.path, turn.name)
			cancel()
			took := time.Since(start)
			t.Logf("%s of %s at the cut-off leader: %d %q %v after %v", turn.path, turn.name, code, strings.TrimSpace(body), err, took.Round(time.Millisecond))
			if err != nil || code != turn.wantCode || !strings.Contains(body, turn.wantText) {
				t.Errorf("%s of %s at the cut-off leader: %d %q %v, want %d %q", turn.path, turn.name, code, body, err, turn.wantCode, turn.wantText)
			}
			if took > 6*time.Second {
				t.Errorf("%s of %s at the cut-off leader was answered %v after the cut: the fence comes within about 2.2 s", turn.path, turn.name, took)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	c.faults.Heal()
	c.waitReadyWithin(30 * time.Second)
	// Leaders may still be moving after the heal: a 503 (refused before
	// the object ran) is retried, anything else is the answer.
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body, err := c.doRetrying(1, "/increment", name)
		if err == nil && code == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			continue
		}
		// The write answered early is 2 if it committed, else this one is.
		if n, _ := strconv.Atoi(strings.TrimSpace(body)); err != nil || code != http.StatusOK || n < 2 || n > 3 {
			t.Fatalf("increment after the heal: %d %q %v, want 200 and 2 or 3", code, body, err)
		}
		return
	}
}

// TestNudgeStalled: a leader holding uncommitted entries, applying
// nothing, with its quorum reachable is nudged once that has lasted
// stalledAfter, and again each stalledAfter it stays so (the fake's nudges
// never commit: a nudge whose append failed must not hold back the next),
// and never otherwise.
func TestNudgeStalled(t *testing.T) {
	t0 := time.Unix(1000, 0)
	stalled := fakeFenceGroup{state: raft.Leader, quorum: true, applied: 5, last: 6}
	for _, tt := range []struct {
		name     string
		group    fakeFenceGroup
		checks   []time.Duration // when nudgeStalled runs, after t0
		progress bool            // the applied index moves between checks
		nudges   int
	}{
		{"stalled long enough: one nudge", stalled, []time.Duration{0, stalledAfter}, false, 1},
		{"not yet long enough", stalled, []time.Duration{0, stalledAfter - time.Millisecond}, false, 0},
		{"stalled again after a nudge: another", stalled, []time.Duration{0, stalledAfter, stalledAfter + time.Second, 2*stalledAfter + time.Second}, false, 2},
		{"under load, applying: none", stalled, []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second, time.Minute}, true, 0},
		{"nothing uncommitted", fakeFenceGroup{state: raft.Leader, quorum: true, applied: 6, last: 6}, []time.Duration{0, time.Minute}, false, 0},
		{"quorum unreachable: the fence's business", fakeFenceGroup{state: raft.Leader, applied: 5, last: 6}, []time.Duration{0, time.Minute}, false, 0},
		{"a follower", fakeFenceGroup{state: raft.Follower, quorum: true, applied: 5, last: 6}, []time.Duration{0, time.Minute}, false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sh := newShard(groupOf(0), nil, 1, nil)
			g := tt.group
			for _, at := range tt.checks {
				if nudgeStalled(sh, &g, t0.Add(at)) {
					g.Nudge()
				}
				if tt.progress {
					g.applied++
					g.last++
				}
			}
			if g.nudges != tt.nudges {
				t.Fatalf("%d nudges, want %d", g.nudges, tt.nudges)
			}
		})
	}
}

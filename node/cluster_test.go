package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/internal/linearize"
	"github.com/roostdb/roost/internal/testnet"
	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/proto"
	"github.com/roostdb/roost/raftstore"
)

// turnRegistry records which node runs a turn of which object, to check
// invariant 1: never two live instances of one object at once.
type turnRegistry struct {
	mu         sync.Mutex
	active     map[string]string // object → node running a turn of it
	violations []string
}

func (r *turnRegistry) enter(obj, node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if other, ok := r.active[obj]; ok && other != node {
		r.violations = append(r.violations, fmt.Sprintf("object %s ran on %s and %s at once", obj[:12], other, node))
	}
	r.active[obj] = node
}

func (r *turnRegistry) exit(obj, node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active[obj] == node {
		delete(r.active, obj)
	}
}

// clusterApp is the counter whose turns report to reg; a request's "hold"
// parameter (a duration) keeps its turn running that long first.
func clusterApp(reg *turnRegistry) *durable.App {
	app := testApp()
	app.Classes["Counter"] = func(state *durable.State, env *durable.Env) durable.Object {
		node, _ := env.Var("NODE")
		inner := testCounter(state, env)
		obj := state.ID.String()
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reg.enter(obj, node)
			defer reg.exit(obj, node)
			if hold, err := time.ParseDuration(r.URL.Query().Get("hold")); err == nil {
				time.Sleep(hold) // a slow turn: ?hold=30ms
			}
			inner.ServeHTTP(w, r)
		})
	}
	return app
}

type testCluster struct {
	t      *testing.T
	app    *durable.App
	faults *raftstore.Faults
	logs   *logTail // the nodes' last log lines, shown when readiness fails
	cfgs   []Config
	nodes  []*Node
	// nodeTweak, if set, adjusts every node before it starts.
	nodeTweak func(*Node)
}

// freeAddr is a loopback address a node can restart at.
func freeAddr(t testing.TB) string { return testnet.FreeAddr(t) }

// newTestCluster starts n nodes in this process on fixed loopback ports
// (so a node restarts at the same addresses), sharing one fault injector.
// tweaks, if any, adjust every node's configuration.
//
// The package's tests that take more than a few seconds call t.Parallel:
// they spend nearly all of it waiting on elections, timeouts and
// convergence (the whole suite used a quarter of two cores under -race),
// so running them side by side (go test's -parallel, GOMAXPROCS by
// default) halves the suite's wall time. A cluster is its own: its ports
// come from testnet, its faults from its own injector, and the package
// has no mutable globals, so such tests share nothing but the CPU.
func newTestCluster(t *testing.T, n, shards int, reg *turnRegistry, tweaks ...func(*Config)) *testCluster {
	return newTestClusterWith(t, n, shards, reg, nil, tweaks...)
}

// newTestClusterWith is newTestCluster with nodeTweak adjusting every node
// (what its Config does not hold) before it starts, restarts included.
func newTestClusterWith(t *testing.T, n, shards int, reg *turnRegistry, nodeTweak func(*Node), tweaks ...func(*Config)) *testCluster {
	c := &testCluster{t: t, app: clusterApp(reg), faults: &raftstore.Faults{}, logs: newLogTail(400), nodeTweak: nodeTweak}
	var seed string
	for i := range n {
		cfg := DefaultClusterConfig(fmt.Sprintf("n%d", i+1))
		cfg.DataDir = t.TempDir()
		cfg.HTTPAddr, cfg.AdminAddr, cfg.GRPCAddr, cfg.GossipAddr = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
		cfg.Shards = shards
		cfg.Vars = map[string]string{"NODE": cfg.NodeID}
		cfg.Logger = c.logs.logger(cfg.NodeID)
		for _, tweak := range tweaks {
			tweak(&cfg)
		}
		if i == 0 {
			seed = cfg.GossipAddr
		} else {
			cfg.Join = []string{seed}
		}
		c.cfgs = append(c.cfgs, cfg)
		c.nodes = append(c.nodes, nil)
	}
	for i := range n {
		c.start(i)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the nodes' last log lines:\n%s", c.logs)
		}
		for i := range c.nodes {
			c.stop(i)
		}
	})
	c.waitReady()
	return c
}

func (c *testCluster) start(i int) {
	c.t.Helper()
	nd, err := New(c.cfgs[i], c.app)
	if err != nil {
		c.t.Fatal(err)
	}
	nd.faults = c.faults
	if c.nodeTweak != nil {
		c.nodeTweak(nd)
	}
	if err := nd.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.nodes[i] = nd
}

func (c *testCluster) stop(i int) {
	if c.nodes[i] == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.nodes[i].Close(ctx); err != nil {
		// Not a failure by itself (a test may stop a node mid-request),
		// but a node whose Close gave up keeps its listeners until its
		// stragglers end, and a restart at its addresses then fails:
		// what still runs says why.
		c.t.Logf("closing node %d: %v", i+1, err)
		if errors.Is(err, ErrCloseIncomplete) {
			// Every node's, other parallel tests' included: the
			// straggler is among them.
			c.t.Logf("goroutines in the package's types still running:\n%s", strings.Join(goroutinesIn("roost/node.(*"), "\n\n"))
		}
	}
	c.nodes[i] = nil
}

func (c *testCluster) waitReady() {
	c.t.Helper()
	c.waitReadyWithin(30 * time.Second)
}

// waitReadyWithin is waitReady with its own bound.
func (c *testCluster) waitReadyWithin(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for i, nd := range c.nodes {
		if nd == nil {
			continue
		}
		for {
			ok, why := nd.cluster.ready()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				c.t.Errorf("node %d not ready: %s", i+1, why)
				c.logReadiness()
				c.t.FailNow()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// logReadiness logs every shard's replicas, for a test whose cluster did
// not become ready (a failed test logs the nodes' last lines as it ends).
func (c *testCluster) logReadiness() {
	c.t.Logf("the meta group:\n%s", c.metaStatus())
	for idx := range c.cfgs[0].Shards {
		c.t.Logf("shard %d:\n%s", idx, c.shardStatus(idx))
	}
}

// do sends path for the counter name to node i.
func (c *testCluster) do(ctx context.Context, i int, path, name string) (int, string, error) {
	return getBody(ctx, "http://"+c.cfgs[i].HTTPAddr+path+"?"+url.Values{"ns": {"COUNTER"}, "name": {name}}.Encode())
}

// getBody GETs u and returns the status and body.
func getBody(ctx context.Context, u string) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// runCounterLoad increments keys through random nodes until stop.
func (c *testCluster) runCounterLoad(rec *linearize.Recorder, keys []string, clients int, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cl), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[rng.IntN(len(keys))]
				i := rng.IntN(len(c.cfgs))
				call := rec.Begin(cl, key, linearize.Op{Kind: linearize.Increment})
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				code, body, err := c.do(ctx, i, "/increment", key)
				cancel()
				switch {
				case err == nil && code == 200:
					v, perr := strconv.Atoi(body)
					if perr != nil {
						call.Unknown()
						continue
					}
					call.Ok(v)
				case err == nil && code == http.StatusServiceUnavailable:
					call.Failed() // routing or overload: refused before the object ran
					time.Sleep(20 * time.Millisecond)
				default:
					call.Unknown()
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	return &wg
}

// finalValues reads every key through a healthy node (each read increments
// nothing: "/" writes the same value back).
func (c *testCluster) finalValues(keys []string) map[string]int {
	c.t.Helper()
	out := map[string]int{}
	for _, k := range keys {
		deadline := time.Now().Add(20 * time.Second)
		var last string // the last failed read's answer, for the failure message
		for {
			i := rand.IntN(len(c.nodes))
			if c.nodes[i] != nil {
				code, body, err := c.do(context.Background(), i, "/", k)
				if err == nil && code == 200 {
					out[k], _ = strconv.Atoi(body)
					break
				}
				last = fmt.Sprintf("through n%d: %d %q %v", i+1, code, body, err)
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("cannot read %s after the run; last: %s", k, last)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return out
}

func (c *testCluster) check(rec *linearize.Recorder, reg *turnRegistry, keys []string) {
	c.t.Helper()
	final := c.finalValues(keys)
	if lost := linearize.LostWrites(rec, final); len(lost) > 0 {
		c.t.Errorf("lost or phantom writes: %v", lost)
	}
	res := linearize.Check(rec, 30*time.Second)
	c.t.Logf("history: %d ops on %d keys, %d of unknown outcome; final %v", res.Ops, res.Keys, res.Unknown, final)
	if !res.Ok {
		c.t.Errorf("history not linearizable (key %s, timed out: %v, visualization: %s)", res.BadKey, res.CheckTimedOut, res.Visualization)
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if len(reg.violations) > 0 {
		c.t.Errorf("two live instances of one object: %v", reg.violations)
	}
}

// leaderOf returns the index of the node leading shard group gid, or -1.
func (c *testCluster) leaderOf(gid raftstore.GroupID) int {
	for i, nd := range c.nodes {
		if nd == nil {
			continue
		}
		nd.cluster.mu.Lock()
		ls := nd.cluster.groups[int(gid)-1]
		nd.cluster.mu.Unlock()
		if ls != nil && ls.group.Raft().State() == raft.Leader {
			return i
		}
	}
	return -1
}

// waitLeaderOf waits up to 10 s for gid to have a leader and returns it: a
// group may be between leaders when a test looks (a leadership the
// balancer moves, a new cluster's first election).
func (c *testCluster) waitLeaderOf(t testing.TB, gid raftstore.GroupID) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if li := c.leaderOf(gid); li >= 0 {
			return li
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %v has no leader", gid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClusterServesFromEveryNode(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 8, reg)
	for i := range 30 {
		code, body, err := c.doRetrying(i%3, "/increment", "shared")
		if err != nil || code != 200 || body != strconv.Itoa(i+1) {
			t.Fatalf("increment %d via node %d: %d %q %v", i+1, i%3+1, code, body, err)
		}
	}
	// Every forwarded call was answered, so no node owes one: a Close
	// waits for the answers owed (forwardServer.waitAnswered).
	for i, nd := range c.nodes {
		for deadline := time.Now().Add(10 * time.Second); nd.cluster.fwdSrv.owed.Load() != 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("node %d owes %d forwarded answers with none in flight", i+1, nd.cluster.fwdSrv.owed.Load())
			}
		}
	}
}

// doRetrying is do, retried while the answer is 503: the request had no
// effect (a leader moving, a commit refused), and clients are meant to
// retry it, as its Retry-After says.
func (c *testCluster) doRetrying(i int, path, name string) (int, string, error) {
	for attempt := 0; ; attempt++ {
		code, body, err := c.do(context.Background(), i, path, name)
		if err != nil || code != http.StatusServiceUnavailable || attempt == 20 {
			return code, body, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClusterLinearizableUnderFaults(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 8, reg)
	rec := linearize.NewRecorder()
	keys := []string{"a", "b", "c", "d", "e", "f"}
	stop := make(chan struct{})
	wg := c.runCounterLoad(rec, keys, 12, stop)
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 6 {
		time.Sleep(1500 * time.Millisecond)
		switch round % 3 {
		case 0: // partition a node away from the others' Raft traffic
			victim := rng.IntN(3)
			c.faults.Isolate(raft.ServerAddress(c.cfgs[victim].GRPCAddr))
			time.Sleep(2 * time.Second)
			c.faults.Heal()
		case 1: // kill the leader of a shard and bring it back
			victim := c.leaderOf(groupOf(0))
			if victim < 0 {
				victim = rng.IntN(3)
			}
			c.stop(victim)
			time.Sleep(2 * time.Second)
			c.start(victim)
		case 2: // a lossy, slow network between every pair
			c.faults.SetDrop(0.05)
			c.faults.SetDelay(5 * time.Millisecond)
			time.Sleep(2 * time.Second)
			c.faults.Heal()
		}
	}
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	c.waitReady()
	c.check(rec, reg, keys)
}

// metaLeader returns a node whose meta group is the leader.
func (c *testCluster) metaLeader() *Node {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, nd := range c.nodes {
			if nd == nil {
				continue
			}
			nd.cluster.mu.Lock()
			meta := nd.cluster.meta
			nd.cluster.mu.Unlock()
			if meta != nil && meta.Raft().State() == raft.Leader {
				return nd
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatal("no meta leader")
	return nil
}

// nodeIndex returns the index in c of the node with ID id.
func (c *testCluster) nodeIndex(id placement.NodeID) int {
	c.t.Helper()
	for i, cfg := range c.cfgs {
		if cfg.NodeID == string(id) {
			return i
		}
	}
	c.t.Fatalf("no node %s", id)
	return -1
}

// localGroup returns node i's running replica of shard idx, or nil.
func (c *testCluster) localGroup(i, idx int) *raftstore.Group {
	nd := c.nodes[i]
	if nd == nil {
		return nil
	}
	nd.cluster.mu.Lock()
	defer nd.cluster.mu.Unlock()
	if ls := nd.cluster.groups[idx]; ls != nil {
		return ls.group
	}
	return nil
}

// moveShard makes next, one safe change away from the current replicas,
// shard idx's replica set in the map, and waits until the shard's group
// has exactly next as its voters and done reports true.
func (c *testCluster) moveShard(idx int, next []placement.NodeID, done func() bool) {
	c.t.Helper()
	leader := c.metaLeader()
	cur := leader.cluster.metaFSM.Map().ShardMap[idx]
	leader.cluster.applyMeta(leader.cluster.meta.Raft(), placement.Command{SetShardReplicas: &placement.SetShardReplicasCmd{
		Shard: cur.ID, Replicas: next, ExpectedVersion: cur.Version}})
	if got := leader.cluster.metaFSM.Map().ShardMap[idx].Replicas; !slices.Equal(got, next) {
		c.t.Fatalf("shard %d: the map holds %v, not %v", idx, got, next)
	}
	want := slices.Sorted(slices.Values(toStrings(next)))
	gid := groupOf(idx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if li := c.leaderOf(gid); li >= 0 {
			if g := c.localGroup(li, idx); g != nil {
				var voters []string
				servers := g.Raft().GetConfiguration().Configuration().Servers
				for _, s := range servers {
					if s.Suffrage == raft.Voter {
						voters = append(voters, string(s.ID))
					}
				}
				slices.Sort(voters)
				if slices.Equal(voters, want) && len(servers) == len(want) && done() {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("shard %d did not converge to %v", idx, next)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestShardMoveConvergesAndKeepsData(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 4, reg) // bootstrap-expect 3: n4 joins later and holds nothing
	for i := 1; i <= 5; i++ {
		if code, body, err := c.doRetrying(0, "/increment", "moved"); err != nil || code != 200 || body != strconv.Itoa(i) {
			t.Fatalf("increment %d: %d %q %v", i, code, body, err)
		}
	}
	ns, _ := c.nodes[0].Env().Namespace("COUNTER")
	key := ns.IDFromName("moved").Bytes()
	shardIdx := shardOf(key, 4)

	leader := c.metaLeader()
	m := leader.cluster.metaFSM.Map()
	if _, ok := m.Nodes["n4"]; !ok {
		t.Fatalf("n4 is not in the map: %v", m.Nodes)
	}
	cur := m.ShardMap[shardIdx]
	if slices.Contains(cur.Replicas, "n4") {
		t.Fatalf("n4 already holds shard %d", shardIdx)
	}
	removed := cur.Replicas[0]
	next := append(slices.Clone(cur.Replicas[1:]), "n4")
	// The shard's group converges to the new replica set, all voters, and
	// n4 holds the object's data.
	gid := groupOf(shardIdx)
	c.moveShard(shardIdx, next, func() bool {
		v, err := c.nodes[3].store.ObjectVersion(gid, key)
		return err == nil && v >= 5
	})
	// Without the replica that left, the object still has its count.
	c.stop(c.nodeIndex(removed))
	for i := range c.nodes {
		if c.nodes[i] == nil {
			continue
		}
		code, body, err := c.doRetrying(i, "/increment", "moved")
		if err != nil || code != 200 {
			t.Fatalf("after the move, via node %d: %d %q %v", i+1, code, body, err)
		}
	}
}

// TestLeftReplicaDataDeleted moves a shard off a node and checks that the
// node deletes its data of the shard (and nothing else), then moves the
// shard back and checks that the node starts empty, catches up by snapshot
// and serves the object's count.
func TestLeftReplicaDataDeleted(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 4, reg) // n4 joins later and holds nothing
	increment := func(via, want int) {
		t.Helper()
		if code, body, err := c.doRetrying(via, "/increment", "left"); err != nil || code != 200 || body != strconv.Itoa(want) {
			t.Fatalf("increment %d via node %d: %d %q %v", want, via+1, code, body, err)
		}
	}
	for i := 1; i <= 5; i++ {
		increment(0, i)
	}
	ns, _ := c.nodes[0].Env().Namespace("COUNTER")
	key := ns.IDFromName("left").Bytes()
	idx := shardOf(key, 4)
	gid := groupOf(idx)
	groupsOf := func(i int) []raftstore.GroupID {
		t.Helper()
		gs, err := c.nodes[i].store.Groups()
		if err != nil {
			t.Fatal(err)
		}
		return gs
	}
	cur := c.metaLeader().cluster.metaFSM.Map().ShardMap[idx].Replicas
	x := c.nodeIndex(cur[0])
	// Only the shard's leader vouches for its configuration, and only when asked.
	for vouched, deadline := false, time.Now().Add(10*time.Second); !vouched; {
		if time.Now().After(deadline) {
			t.Fatalf("no replica of shard %d vouches for its configuration", idx)
		}
		for _, id := range cur {
			i := c.nodeIndex(id)
			st, err := c.nodes[i].cluster.groupStatus(&proto.ForwardGroupStatusRequest{GroupId: uint64(gid), ConfirmConfig: true})
			if err != nil {
				t.Fatal(err)
			}
			if st.ConfigCommitted && st.State != raft.Leader.String() {
				t.Fatalf("%s, a %s, answers config_committed", id, st.State)
			}
			vouched = vouched || st.ConfigCommitted
			if st, _ := c.nodes[i].cluster.groupStatus(&proto.ForwardGroupStatusRequest{GroupId: uint64(gid)}); st.ConfigCommitted {
				t.Fatalf("%s answers config_committed unasked", id)
			}
		}
	}
	before := groupsOf(x)
	if !slices.Contains(before, gid) {
		t.Fatalf("%s holds no data of shard %d: groups %v", cur[0], idx, before)
	}

	// Off x: once the group no longer has it, x deletes that group's data,
	// and only that.
	off := append(slices.Clone(cur[1:]), "n4")
	c.moveShard(idx, off, func() bool {
		v, err := c.nodes[3].store.ObjectVersion(gid, key)
		return err == nil && v >= 5
	})
	deadline := time.Now().Add(30 * time.Second)
	for slices.Contains(groupsOf(x), gid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still holds data of shard %d, which it left", cur[0], idx)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Deleted only once the group had removed x: a voter must keep its log.
	for _, id := range off {
		if g := c.localGroup(c.nodeIndex(id), idx); g != nil {
			for _, s := range g.Raft().GetConfiguration().Configuration().Servers {
				if s.ID == raft.ServerID(cur[0]) {
					t.Fatalf("%s deleted its data of shard %d while %s still has it in the group as %v", cur[0], idx, id, s.Suffrage)
				}
			}
		}
	}
	if got, want := groupsOf(x), slices.DeleteFunc(slices.Clone(before), func(g raftstore.GroupID) bool { return g == gid }); !slices.Equal(got, want) {
		t.Fatalf("%s holds data of groups %v, want %v", cur[0], got, want)
	}
	if v, err := c.nodes[x].store.ObjectVersion(gid, key); err != nil || v != 0 {
		t.Fatalf("%s still has the object's version: %d, %v", cur[0], v, err)
	}

	// More writes while x has nothing, then every replica snapshots and
	// drops its whole log, so that x can only catch up by snapshot.
	for i := 6; i <= 8; i++ {
		increment(1, i)
	}
	for _, id := range off {
		r := c.localGroup(c.nodeIndex(id), idx).Raft()
		rc := r.ReloadableConfig()
		rc.TrailingLogs = 0
		if err := r.ReloadConfig(rc); err != nil {
			t.Fatal(err)
		}
		if err := r.Snapshot().Error(); err != nil {
			t.Fatalf("snapshot on %s: %v", id, err)
		}
	}

	// Back onto x, in place of n4.
	back := append(slices.Clone(cur[1:]), cur[0])
	c.moveShard(idx, back, func() bool {
		v, err := c.nodes[x].store.ObjectVersion(gid, key)
		return err == nil && v >= 8
	})
	g := c.localGroup(x, idx)
	if g == nil {
		t.Fatalf("%s runs no replica of shard %d after it came back", cur[0], idx)
	}
	if snap := g.Raft().Stats()["last_snapshot_index"]; snap == "0" {
		t.Fatalf("%s caught up without a snapshot", cur[0])
	}
	// x serves the count, leading the shard, and holds what the others hold.
	if li := c.leaderOf(gid); li >= 0 && li != x {
		if err := c.localGroup(li, idx).Raft().LeadershipTransferToServer(raft.ServerID(c.cfgs[x].NodeID), raft.ServerAddress(c.cfgs[x].GRPCAddr)).Error(); err != nil {
			t.Fatalf("handing shard %d's leadership to %s: %v", idx, cur[0], err)
		}
	}
	for i := range c.nodes {
		increment((x+i)%len(c.nodes), 9+i)
	}
	ref := c.nodeIndex(cur[1])
	// An idle follower learns the last commit with the leader's next
	// append, 30-60 s away with the quiet timing when nothing is written
	// (the leader balancer may have moved the leadership off x again): a
	// barrier carries it at once.
	if li := c.leaderOf(gid); li >= 0 {
		raftstore.PublishCommits(c.localGroup(li, idx).Raft())
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		want, _ := c.nodes[ref].store.List(gid, key, durable.ListOptions{})
		got, _ := c.nodes[x].store.List(gid, key, durable.ListOptions{})
		v, _ := c.nodes[x].store.ObjectVersion(gid, key)
		if v == 12 && reflect.DeepEqual(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds version %d, %v; %s holds %v", cur[0], v, got, cur[1], want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A node in a planned stop serves no shard, even one it leads (say one a
// peer's leader spreading moved to it after its hand-off): a request gets
// a routing error before anything runs, so the sender tries elsewhere
// instead of seeing its commit fail when the groups shut down.
func TestStoppingNodeServesNoShard(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}})
	key := durable.DeriveNamespaceKey("Counter", "")
	// Leaders may be moving (leader spreading after the cluster formed):
	// look until some node leads some shard.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i, nd := range c.nodes {
			for idx := range 4 {
				if sh, _, err := nd.cluster.route(idx); err != nil || sh == nil {
					continue // not the leader here
				}
				var id durable.ID
				for n := 0; ; n++ {
					if id = durable.IDFromName(key, fmt.Sprint(n)); shardOf(id.Bytes(), 4) == idx {
						break
					}
				}
				req, _ := http.NewRequest(http.MethodGet, "http://x/increment", nil)
				nd.cluster.stopping.Store(true)
				_, err := nd.manager.fetchHere(context.Background(), "Counter", id, req, 1)
				nd.cluster.stopping.Store(false)
				var re *routingError
				if errors.As(err, &re) && !re.notReady {
					continue // its leadership moved away meanwhile: NOT_LEADER
				}
				if !errors.As(err, &re) {
					t.Fatalf("node %d, shard %d it leads, while stopping: %v, want a not-ready routing error", i+1, idx, err)
				}
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no node led a shard within 10 s")
}

// handOffEveryShard moves the leadership of every shard node i leads to
// another replica, and fails the test if it still leads one after 20 s.
func (c *testCluster) handOffEveryShard(i int) {
	c.t.Helper()
	cl := c.nodes[i].cluster
	led := func() []*localShard {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		var mine []*localShard
		for _, ls := range cl.groups {
			if ls.group.Raft().State() == raft.Leader {
				mine = append(mine, ls)
			}
		}
		return mine
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mine := led()
		if len(mine) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("n%d still leads %d shards", i+1, len(mine))
		}
		for _, ls := range mine {
			if err := cl.transferNow(ls, raft.Server{}); err != nil {
				c.t.Logf("handing a shard off: %v", err)
			}
		}
	}
}

// TestSilentlyCutOffNodeRefusesAtOnce: a node cut off from every other by
// a partition that drops packets (iptables DROP: nothing fails, nothing
// arrives) answers the requests sent to it with a 503 before anything
// runs, for as long as the partition lasts. Before, once the transport's
// report of the lost peers was lostAvoidance old, it forwarded them into
// the silent connection again, and they ended as 500s of unknown outcome
// (or hung) instead.
func TestSilentlyCutOffNodeRefusesAtOnce(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 6, &turnRegistry{active: map[string]string{}})
	c.waitReady()
	c.handOffEveryShard(0)
	cut := c.nodes[0].cluster
	c.faults.Freeze(raft.ServerAddress(c.cfgs[0].GRPCAddr))
	healed := false
	defer func() {
		if !healed {
			c.faults.Heal()
		}
	}()
	frozenAt := time.Now()
	// Until it has found every peer silent, a request n1 forwards to one it
	// has not yet found so may end as a 500 of unknown outcome: n1 cannot
	// tell that peer from a slow one. (n1 turns unready at the first peer
	// it loses; under load the second has come 2 s later.)
	for {
		ok, _ := cut.ready()
		if !ok && !cut.trans.PeerReachable(raft.ServerAddress(c.cfgs[1].GRPCAddr)) && !cut.trans.PeerReachable(raft.ServerAddress(c.cfgs[2].GRPCAddr)) {
			break
		}
		if time.Since(frozenAt) > 10*time.Second {
			t.Fatal("n1 is ready, or finds a peer reachable, 10 s after it was cut off from every other node")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Past lostAvoidance, until gossip has long declared the others dead:
	// every request is refused, none runs.
	for i := 0; time.Since(frozenAt) < lostAvoidance+5*time.Second; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), routeWait+3*time.Second)
		start := time.Now()
		code, body, err := c.do(ctx, 0, "/increment", "silent-"+strconv.Itoa(i%4))
		cancel()
		if err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("+%v: an increment at n1, silently cut off: %d %q %v after %v, want a 503", time.Since(frozenAt).Round(time.Millisecond), code, strings.TrimSpace(body), err, time.Since(start).Round(time.Millisecond))
		}
		t.Logf("+%v: an increment at n1, silently cut off: %d after %v: %s", time.Since(frozenAt).Round(time.Millisecond), code, time.Since(start).Round(time.Millisecond), strings.TrimSpace(body))
		time.Sleep(200 * time.Millisecond)
	}
	c.faults.Heal()
	healed = true
	c.waitReadyWithin(30 * time.Second)
	for i := 0; i < 4; i++ {
		name := "silent-" + strconv.Itoa(i)
		if code, body, err := c.doRetrying(0, "/increment", name); err != nil || code != http.StatusOK || strings.TrimSpace(body) != "1" {
			t.Fatalf("the first increment of %s after the heal: %d %q %v, want 200 and 1 (none at the cut-off node may have run)", name, code, body, err)
		}
	}
}

// TestReadyFollowsLiveLeaders: a node cut off from the others stops being
// ready within seconds, although raft's own view of its shards' leaders
// stays as it was for the quiet timing's 30-60 s; the others are ready
// again once they have elected leaders for its shards, and it is once it
// is back. n1 leads no shard when it is cut off, so what it notices is
// that the leaders it follows are gone (a leader's fence has its own
// tests).
func TestReadyFollowsLiveLeaders(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 6, &turnRegistry{active: map[string]string{}})
	cut := c.nodes[0].cluster
	c.handOffEveryShard(0)
	c.faults.Isolate(raft.ServerAddress(c.cfgs[0].GRPCAddr))
	defer c.faults.Heal()
	deadline := time.Now().Add(8 * time.Second)
	for {
		ok, why := cut.ready()
		if !ok {
			if !strings.Contains(why, "no live leader") {
				t.Fatalf("n1 cut off: not ready, but because %q", why)
			}
			t.Logf("n1 cut off: not ready: %s", why)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("n1 is ready 8 s after it was cut off from every other node")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// n1 leads nothing, so it would forward: a partition cuts forwarded
	// requests too, and it must answer without the object running.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	code, body, err := c.do(ctx, 0, "/increment", "cut-off")
	cancel()
	if err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("an increment at n1, cut off from every other node: %d %q %v, want a 503", code, body, err)
	}
	t.Logf("an increment at n1, cut off: %d %s", code, strings.TrimSpace(body))
	saved := c.nodes[0]
	c.nodes[0] = nil // waitReady skips it
	c.waitReadyWithin(20 * time.Second)
	c.nodes[0] = saved
	c.faults.Heal()
	c.waitReadyWithin(30 * time.Second)
	if code, body, err := c.doRetrying(0, "/increment", "cut-off"); err != nil || code != http.StatusOK || strings.TrimSpace(body) != "1" {
		t.Fatalf("the first increment of cut-off after the heal: %d %q %v, want 200 and 1 (the one at the cut-off node must not have run)", code, body, err)
	}
}

// TestFrozenLeaderIsPassedOver: a node that forwards a shard's requests
// (it holds no replica) stops sending them to the shard's leader once the
// transport reports that leader lost, when the leader froze (SIGSTOP,
// docker pause) rather than died: its connections stay up, so the
// forwarded requests hang instead of failing as routing errors, and
// before, the forwarder's hint kept naming the frozen node until gRPC's
// keepalive gave up on it.
func TestFrozenLeaderIsPassedOver(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 4, 4, reg) // bootstrap-expect 3: n4 joins later and holds nothing
	c.waitReady()
	const via = 3 // n4
	for i := 1; i <= 3; i++ {
		if code, body, err := c.doRetrying(via, "/increment", "frozen"); err != nil || code != 200 || body != strconv.Itoa(i) {
			t.Fatalf("increment %d via n4: %d %q %v", i, code, body, err)
		}
	}
	ns, _ := c.nodes[0].Env().Namespace("COUNTER")
	idx := shardOf(ns.IDFromName("frozen").Bytes(), 4)
	li := c.waitLeaderOf(t, groupOf(idx))
	if li == via {
		t.Fatalf("n4 leads shard %d; it should hold no replica", idx)
	}
	frozenAt := time.Now()
	c.faults.Freeze(raft.ServerAddress(c.cfgs[li].GRPCAddr))
	healed := false
	defer func() {
		if !healed {
			c.faults.Heal()
		}
	}()
	// The requests in flight when the transport reports the leader lost
	// fail (outcome unknown); from then on none may hang: each goes to a
	// replica that answers, or is held only until the new leader serves.
	want, failed := 4, false
	for {
		if time.Since(frozenAt) > 15*time.Second {
			t.Fatalf("no increment through n4 succeeded within 15 s of freezing shard %d's leader n%d", idx, li+1)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		code, body, err := c.do(ctx, via, "/increment", "frozen")
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && failed {
			t.Fatalf("+%v: an increment through n4 hung for 4 s after the frozen leader's requests had failed: n4 still forwards to n%d", time.Since(frozenAt).Round(time.Millisecond), li+1)
		}
		failed = failed || code == http.StatusInternalServerError
		if err == nil && code == http.StatusOK {
			// An increment whose answer was lost may have run: the count
			// only has to be past the last one acknowledged.
			if n, _ := strconv.Atoi(strings.TrimSpace(body)); n < want {
				t.Fatalf("increment after the freeze: %q, want at least %d", body, want)
			}
			break
		}
		t.Logf("+%v: %d %q %v", time.Since(frozenAt).Round(time.Millisecond), code, strings.TrimSpace(body), err)
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the first increment through n4 succeeded %v after shard %d's leader n%d froze", time.Since(frozenAt).Round(time.Millisecond), idx, li+1)
	c.faults.Heal()
	healed = true
	c.waitReadyWithin(30 * time.Second)
}

// A request that finds no leader for its shard says, when too few of the
// shard's replicas are alive for a quorum, which are down.
func TestLostQuorum(t *testing.T) {
	s := placement.Shard{ID: 3, Replicas: []placement.NodeID{"n1", "n2", "n3"}}
	for _, tt := range []struct {
		alive []placement.NodeID
		want  string
	}{
		{[]placement.NodeID{"n1", "n2", "n3"}, ""},
		{[]placement.NodeID{"n1", "n3"}, ""},
		{[]placement.NodeID{"n1"}, "it has lost its quorum: 2 of its 3 replicas are down or cannot be reached from this node (n2, n3)"},
		{nil, "it has lost its quorum: 3 of its 3 replicas are down or cannot be reached from this node (n1, n2, n3)"},
	} {
		alive := map[placement.NodeID]bool{}
		for _, id := range tt.alive {
			alive[id] = true
		}
		if got := lostQuorum(s, alive); got != tt.want {
			t.Errorf("alive %v: %q, want %q", tt.alive, got, tt.want)
		}
	}
}

// TestLostQuorumAnswersEarly: with two of three nodes gone, a request
// for a shard they held answers 503 naming them once it has tried for
// quorumCheckAfter, instead of after the whole routing wait.
func TestLostQuorumAnswersEarly(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 2, &turnRegistry{active: map[string]string{}})
	c.waitReady()
	if code, body, err := c.doRetrying(0, "/increment", "q"); err != nil || code != http.StatusOK {
		t.Fatalf("increment: %d %q %v", code, body, err)
	}
	c.stop(1)
	c.stop(2)
	// Gossip shows them gone, and n1 no longer serves what it led (its
	// fence: a write there would fail as of unknown outcome).
	servesNothing := func() bool {
		cl := c.nodes[0].cluster
		cl.mu.Lock()
		defer cl.mu.Unlock()
		for _, ls := range cl.groups {
			if ls.group.Raft().State() == raft.Leader && !ls.shard.isFenced() {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ok, _ := c.nodes[0].cluster.ready()
		if !ok && len(c.nodes[0].cluster.aliveMembers()) == 1 && servesNothing() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("n1 still ready, or gossip still shows the stopped nodes alive, or n1 still serves a shard it led")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	code, body, err := c.do(ctx, 0, "/increment", "q")
	took := time.Since(began)
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "it has lost its quorum: 2 of its 3 replicas are down or cannot be reached from this node (n2, n3)") {
		t.Fatalf("an increment with two of three nodes gone: %d %q %v", code, body, err)
	}
	if took >= routeWait {
		t.Fatalf("the 503 took %v, the whole routing wait (%v)", took, routeWait)
	}
	t.Logf("503 after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(body))
}

// A dead node's ID can be taken at a new address well before its replicas
// would be re-created elsewhere.
func TestDeadNodeReclaimComesBeforeHealing(t *testing.T) {
	for _, tt := range []struct{ grace, want time.Duration }{
		{30 * time.Second, 10 * time.Second},
		{9 * time.Second, 3 * time.Second},
		{time.Second, time.Second},
		{0, 10 * time.Second},
	} {
		if got := deadNodeReclaim(tt.grace); got != tt.want {
			t.Errorf("deadNodeReclaim(%v) = %v, want %v", tt.grace, got, tt.want)
		}
	}
}

// TestReadyThroughLeaderChanges: planned leadership transfers, each leaving
// its shard without a leader for a moment, do not make a ready node
// unready (leaderChangeGrace): a load balancer polling /readyz would
// otherwise take every node out for it.
func TestReadyThroughLeaderChanges(t *testing.T) {
	t.Parallel()
	const shards = 6
	c := newTestCluster(t, 3, shards, &turnRegistry{active: map[string]string{}})
	c.waitReady()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var unready sync.Map // reason → node
	var polls atomic.Int64
	for i, nd := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				polls.Add(1)
				if ok, why := nd.cluster.ready(); !ok {
					unready.LoadOrStore(why, i+1)
				}
			}
		}()
	}
	transfers := 0
	for round := 0; round < 3; round++ {
		for idx := 0; idx < shards; idx++ {
			li := c.waitLeaderOf(t, raftstore.GroupID(idx+1))
			cl := c.nodes[li].cluster
			cl.mu.Lock()
			ls := cl.groups[idx]
			cl.mu.Unlock()
			if err := cl.transferNow(ls, raft.Server{}); err != nil {
				t.Logf("shard %d: transfer: %v", idx, err)
				continue
			}
			transfers++
		}
	}
	close(stop)
	wg.Wait()
	if transfers < shards {
		t.Fatalf("only %d leadership transfers succeeded; the test needs at least %d", transfers, shards)
	}
	t.Logf("%d transfers, %d readiness checks", transfers, polls.Load())
	unready.Range(func(why, node any) bool {
		t.Errorf("n%d not ready during planned transfers: %s", node, why)
		return true
	})
}

// A seed that answers with something other than gossip (--join at an app,
// admin or gRPC port) gets a hint naming the gossip listener, not the
// gossip key.
func TestJoinHintFor(t *testing.T) {
	for _, tt := range []struct {
		err  string
		want string
	}{
		{"failed to join 127.0.0.1:8789: received invalid msgType (72), expected pushPullMsg (6)", "--join takes the address of a node's --gossip listener"},
		{"failed to join 127.0.0.1:7946: EOF", joinHint},
	} {
		if got := joinHintFor(errors.New(tt.err)); !strings.Contains(got, tt.want) {
			t.Errorf("joinHintFor(%q) = %q, want it to contain %q", tt.err, got, tt.want)
		}
	}
}

// counterLedBy is the name, prefix and a number, of a counter whose shard
// node i leads, waiting up to 20 s for it to lead one.
func (c *testCluster) counterLedBy(i int, prefix string) string {
	c.t.Helper()
	ns, _ := c.nodes[i].Env().Namespace("COUNTER")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		for k := 0; k < 200; k++ {
			name := prefix + strconv.Itoa(k)
			if c.leaderOf(groupOf(shardOf(ns.IDFromName(name).Bytes(), c.cfgs[i].Shards))) == i {
				return name
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("n%d leads no shard 20 s after the cluster was ready", i+1)
		}
	}
}

// goroutineStacks is the stack of every goroutine of the process, one
// string each.
func goroutineStacks() []string {
	buf := make([]byte, 1<<24)
	return strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
}

// goroutinesIn is the stacks of goroutines that have a frame whose name
// contains frame.
func goroutinesIn(frame string) []string {
	var in []string
	for _, g := range goroutineStacks() {
		if strings.Contains(g, frame) {
			in = append(in, g)
		}
	}
	return in
}

// TestLeaderTheOthersCannotReachHandsOver: a node the others cannot open
// connections to while it reaches them (a firewall that drops only the
// connections others open to it) goes on heartbeating its followers over
// its own connections, so raft sees nothing wrong; but no other node can
// forward it a request. Its followers count such a leader as gone, and
// elect another, so that its shards are served again through every node.
// Before, they were refused through the other nodes for the whole fault
// (503s after 5 s each, under an iptables one-way partition too).
func TestLeaderTheOthersCannotReachHandsOver(t *testing.T) {
	t.Parallel()
	const shards = 6
	c := newTestCluster(t, 3, shards, &turnRegistry{active: map[string]string{}})
	c.waitReady()
	name := c.counterLedBy(0, "unreachable-")
	if code, body, err := c.doRetrying(1, "/increment", name); err != nil || code != http.StatusOK || body != "1" {
		t.Fatalf("increment via n2 before the fault: %d %q %v", code, body, err)
	}
	c.faults.CutInbound(raft.ServerAddress(c.cfgs[0].GRPCAddr))
	healed := false
	defer func() {
		if !healed {
			c.faults.Heal()
		}
	}()
	took := c.firstIncrementAfter(time.Now(), 1, name, 2, 20*time.Second)
	t.Logf("the first increment of %s through n2 succeeded %v after n1 became unreachable", name, took)
	// The shard has a new leader, which n2 and n3 reach. (A shard n1 was
	// handing over when the fault began stays with it a few seconds more:
	// it hears of the target's election only in answers to its
	// heartbeats, and raft refuses the barrier that would make it step
	// down while the transfer runs, so it asks the other voters first;
	// TestTransferringLeaderCutOffInboundStepsDown.)
	for via := 1; via < 3; via++ {
		for i := 0; i < 3; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			code, body, err := c.do(ctx, via, "/increment", name)
			cancel()
			if err != nil || code != http.StatusOK {
				t.Fatalf("increment via n%d with n1 still unreachable: %d %q %v", via+1, code, strings.TrimSpace(body), err)
			}
		}
	}
	// n1 learns that it lost the shard from its first append after the
	// election (a request it ran meanwhile ends as of unknown outcome, as
	// at any deposed leader), and hears the others only through the
	// answers to its own calls: it serves through them once its elector
	// has asked them.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		code, body, err := c.do(ctx, 0, "/increment", name)
		cancel()
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("increment via n1, unreachable itself: %d %q %v; none succeeded within 10 s", code, strings.TrimSpace(body), err)
		}
		t.Logf("via n1: %d %q %v", code, strings.TrimSpace(body), err)
	}
	c.faults.Heal()
	healed = true
	c.waitReadyWithin(30 * time.Second)
}

// A one-way partition of a node that leads the meta group and every shard
// (the others lead nothing it follows, so they send it no pings, and hear
// its own): the others cannot forward it a request. Their failed forwards
// count as evidence that it cannot be reached, and the shard moves.
func TestLeaderOnlyForwardsFailToHandsOver(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 1, &turnRegistry{active: map[string]string{}})
	c.waitReady()
	if code, body, err := c.doRetrying(1, "/increment", "k"); err != nil || code != http.StatusOK || body != "1" {
		t.Fatalf("increment before the fault: %d %q %v", code, body, err)
	}
	mi := c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))
	if li := c.waitLeaderOf(t, groupOf(0)); li != mi {
		nd := c.nodes[li]
		nd.cluster.mu.Lock()
		ls := nd.cluster.groups[0]
		nd.cluster.mu.Unlock()
		if err := nd.cluster.transferNow(ls, raft.Server{ID: raft.ServerID(c.cfgs[mi].NodeID), Address: raft.ServerAddress(c.cfgs[mi].GRPCAddr)}); err != nil {
			t.Fatalf("moving the shard's leadership to the meta leader %s: %v", c.cfgs[mi].NodeID, err)
		}
	}
	if li := c.waitLeaderOf(t, groupOf(0)); li != mi {
		t.Fatalf("shard 0 led by %s, want the meta leader %s", c.cfgs[li].NodeID, c.cfgs[mi].NodeID)
	}
	via := (mi + 1) % 3
	c.faults.CutInbound(raft.ServerAddress(c.cfgs[mi].GRPCAddr))
	defer c.faults.Heal()
	took := c.firstIncrementAfter(time.Now(), via, "k", 2, 30*time.Second)
	t.Logf("the first increment through %s succeeded %v after %s became unreachable", c.cfgs[via].NodeID, took, c.cfgs[mi].NodeID)
}

// firstIncrementAfter increments name through node via until one
// succeeds, within limit of the fault at cutAt, and returns how long after
// the fault that was. The count must be at least want: an increment whose
// answer was lost may have run.
func (c *testCluster) firstIncrementAfter(cutAt time.Time, via int, name string, want int, limit time.Duration) time.Duration {
	c.t.Helper()
	for ; ; time.Sleep(200 * time.Millisecond) {
		if time.Since(cutAt) > limit {
			c.t.Fatalf("no increment of %s through %s succeeded within %s of the fault", name, c.cfgs[via].NodeID, limit)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		code, body, err := c.do(ctx, via, "/increment", name)
		cancel()
		if err == nil && code == http.StatusOK {
			if n, _ := strconv.Atoi(strings.TrimSpace(body)); n < want {
				c.t.Fatalf("increment after the fault: %q, want at least %d", body, want)
			}
			return time.Since(cutAt).Round(time.Millisecond)
		}
		c.t.Logf("+%v: %d %q %v", time.Since(cutAt).Round(time.Millisecond), code, strings.TrimSpace(body), err)
	}
}

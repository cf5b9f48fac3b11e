package e2e

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/roostdb/roost/internal/linearize"
)

// testCluster is a cluster of real `roost node` processes on loopback.
type testCluster struct {
	t     *testing.T
	specs []nodeSpec
	procs []*process // the current process of each node
	runs  []int      // how many times each node has been started
}

// startCluster starts n nodes (n2.. join n1's gossip address) and waits
// until every one answers /readyz with 200.
func startCluster(t *testing.T, n, shards int, timeout time.Duration) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	for i := range n {
		var join []string
		if i > 0 {
			join = []string{c.specs[0].gossip}
		}
		c.specs = append(c.specs, newNodeSpec(t, fmt.Sprintf("n%d", i+1), n, shards, join...))
	}
	c.procs = make([]*process, n)
	c.runs = make([]int, n)
	roostBinary(t) // built before the clock starts
	start := time.Now()
	for i := range n {
		c.launch(i)
	}
	deadline := start.Add(timeout)
	for _, p := range c.procs {
		p.waitReady(time.Until(deadline))
	}
	t.Logf("cluster of %d nodes ready in %v", n, time.Since(start).Round(time.Millisecond))
	return c
}

// launch starts node i (again) with its spec, without waiting.
func (c *testCluster) launch(i int) *process {
	c.runs[i]++
	name := fmt.Sprintf("node %s (run %d)", c.specs[i].id, c.runs[i])
	c.procs[i] = launchNode(c.t, name, c.specs[i])
	return c.procs[i]
}

// proposals reads roost_raft_entries_proposed_total from node i's
// /metrics: it grows on the nodes that lead busy shards.
func (c *testCluster) proposals(i int) (float64, error) {
	resp, err := client.Get("http://" + c.specs[i].admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics of %s: %s", c.specs[i].id, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "roost_raft_entries_proposed_total "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no roost_raft_entries_proposed_total in /metrics of %s", c.specs[i].id)
}

// busiestLeader returns the node that proposed the most Raft entries over
// window (it leads the shards the load uses most), or fallback if the
// metrics cannot tell.
func (c *testCluster) busiestLeader(window time.Duration, fallback int) (int, []float64) {
	before := make([]float64, len(c.specs))
	for i := range c.specs {
		v, err := c.proposals(i)
		if err != nil {
			c.t.Logf("choosing the node to kill: %v; killing %s", err, c.specs[fallback].id)
			return fallback, nil
		}
		before[i] = v
	}
	time.Sleep(window)
	best, deltas := fallback, make([]float64, len(c.specs))
	for i := range c.specs {
		v, err := c.proposals(i)
		if err != nil {
			c.t.Logf("choosing the node to kill: %v; killing %s", err, c.specs[fallback].id)
			return fallback, nil
		}
		deltas[i] = v - before[i]
		if deltas[i] > deltas[best] {
			best = i
		}
	}
	return best, deltas
}

// loopbackAddr blanks the addresses in error messages so that alike ones
// are counted together.
var loopbackAddr = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)

// clusterLoad increments keys through random nodes from several clients.
type clusterLoad struct {
	stopCh   chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	counts [][linearize.NumOutcomes]atomic.Int64 // per node, per outcome

	start time.Time
	mu    sync.Mutex
	// troubles counts the answers other than 200, by node, outcome and
	// message (addresses blanked).
	troubles  map[string]int
	badBodies []string
	acks      map[string][]time.Duration // per key, when each 200 arrived (since start)
}

func (c *testCluster) runLoad(t *testing.T, cc *linearize.HTTPCounter, keys []string, clients int) *clusterLoad {
	l := &clusterLoad{stopCh: make(chan struct{}), counts: make([][linearize.NumOutcomes]atomic.Int64, len(c.specs)),
		start: time.Now(), troubles: map[string]int{}, acks: map[string][]time.Duration{}}
	for cl := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cl), 42))
			for {
				select {
				case <-l.stopCh:
					return
				default:
				}
				key := keys[rng.IntN(len(keys))]
				i := rng.IntN(len(c.specs))
				out, _, detail := cc.Do(cl, "http://"+c.specs[i].http, linearize.Increment, key)
				l.counts[i][out].Add(1)
				l.mu.Lock()
				if out == linearize.OutcomeOk {
					l.acks[key] = append(l.acks[key], time.Since(l.start))
				} else {
					l.troubles[fmt.Sprintf("%s %v: %s", c.specs[i].id, out, loopbackAddr.ReplaceAllString(detail, "<addr>"))]++
					if out == linearize.OutcomeBadBody && len(l.badBodies) < 10 {
						l.badBodies = append(l.badBodies, fmt.Sprintf("%s via %s: %q", key, c.specs[i].id, detail))
					}
				}
				l.mu.Unlock()
				if out != linearize.OutcomeOk {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

func (l *clusterLoad) stop() {
	l.stopOnce.Do(func() { close(l.stopCh) })
	l.wg.Wait()
}

// snapshot returns the outcome counts so far, per node.
func (l *clusterLoad) snapshot() [][linearize.NumOutcomes]int64 {
	out := make([][linearize.NumOutcomes]int64, len(l.counts))
	for i := range l.counts {
		for o := range linearize.NumOutcomes {
			out[i][o] = l.counts[i][o].Load()
		}
	}
	return out
}

func describeCounts(ids []string, before, after [][linearize.NumOutcomes]int64) string {
	var b strings.Builder
	for i, id := range ids {
		var d [linearize.NumOutcomes]int64
		for o := range linearize.NumOutcomes {
			d[o] = after[i][o]
			if before != nil {
				d[o] -= before[i][o]
			}
		}
		fmt.Fprintf(&b, " %s: %d ok, %d failed, %d unknown;", id, d[linearize.OutcomeOk], d[linearize.OutcomeFailed], d[linearize.OutcomeUnknown]+d[linearize.OutcomeBadBody])
	}
	return strings.TrimSuffix(b.String(), ";")
}

// report logs the troubles the load met, most frequent first, and for each
// key how many increments were acknowledged and its longest stretch
// without one (times since the load started). The clients wait for each
// answer, so while every one of them waits on a node that holds requests
// (a restarting node does until its 3 s timeout), no key sees an ack.
func (l *clusterLoad) report(t *testing.T, keys []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	type trouble struct {
		what string
		n    int
	}
	var ts []trouble
	for what, n := range l.troubles {
		ts = append(ts, trouble{what, n})
	}
	sort.Slice(ts, func(a, b int) bool { return ts[a].n > ts[b].n || ts[a].n == ts[b].n && ts[a].what < ts[b].what })
	for k, tr := range ts {
		if k == 10 {
			t.Logf("... and %d other kinds of answer", len(ts)-k)
			break
		}
		t.Logf("%5d × %s", tr.n, tr.what)
	}
	var b strings.Builder
	for _, key := range keys {
		acks := l.acks[key]
		slices.Sort(acks)
		var gap, from, prev time.Duration
		for _, at := range append(acks, time.Since(l.start)) {
			if at-prev > gap {
				gap, from = at-prev, prev
			}
			prev = at
		}
		fmt.Fprintf(&b, " %s: %d acked, longest without %v from %v;", key, len(acks), gap.Round(time.Millisecond), from.Round(time.Millisecond))
	}
	t.Logf("per key (times since the load started):%s", strings.TrimSuffix(b.String(), ";"))
}

// readAll reads every key through node i (retrying refusals and unknown
// outcomes for up to 20 s per key), recorded as client clientID.
func (c *testCluster) readAll(cc *linearize.HTTPCounter, clientID, i int, keys []string) map[string]int {
	c.t.Helper()
	out := map[string]int{}
	for _, k := range keys {
		deadline := time.Now().Add(20 * time.Second)
		for {
			o, n, detail := cc.Do(clientID, "http://"+c.specs[i].http, linearize.Read, k)
			if o == linearize.OutcomeOk {
				out[k] = n
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("cannot read %s through %s after the run: %s", k, c.specs[i].id, detail)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return out
}

// TestClusterSurvivesSIGKILL runs a counter load against three real nodes,
// SIGKILLs one mid-load, restarts it on the same data dir and checks that
// the history stays linearizable, that no acknowledged write is lost, and
// that the restarted node catches up and serves the same counts.
func TestClusterSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster SIGKILL test skipped in -short mode")
	}
	c := startCluster(t, 3, 16, 60*time.Second)
	ids := []string{c.specs[0].id, c.specs[1].id, c.specs[2].id}

	rec := linearize.NewRecorder()
	cc := linearize.NewHTTPCounter(rec, 3*time.Second)
	defer cc.CloseIdleConnections()
	keys := []string{"a", "b", "c", "d", "e", "f", "Zürich", "東京"}
	l := c.runLoad(t, cc, keys, 12)

	// Warm up, then kill the node that leads the busiest shards: it is the
	// one the others forward most to.
	time.Sleep(2 * time.Second)
	victim, deltas := c.busiestLeader(time.Second, 1)
	vid := c.specs[victim].id
	beforeKill := l.snapshot()
	t.Logf("before the kill:%s; Raft entries proposed in the last second %v: killing %s %v after the load started",
		describeCounts(ids, nil, beforeKill), deltas, vid, time.Since(l.start).Round(time.Millisecond))

	if err := c.procs[victim].stop(syscall.SIGKILL); err == nil {
		t.Fatalf("%s exited cleanly after SIGKILL", vid)
	}
	killedAt := time.Now()
	time.Sleep(3 * time.Second)
	down := l.snapshot()
	t.Logf("while %s was down:%s", vid, describeCounts(ids, beforeKill, down))

	restartedAt := time.Now()
	p := c.launch(victim)
	p.waitReady(30 * time.Second)
	readyAfter := time.Since(restartedAt)
	t.Logf("%s ready %v after its restart (%v after the kill, %v after the load started)", vid, readyAfter.Round(time.Millisecond),
		time.Since(killedAt).Round(time.Millisecond), time.Since(l.start).Round(time.Millisecond))
	ready := l.snapshot()
	t.Logf("while %s was restarting:%s", vid, describeCounts(ids, down, ready))

	time.Sleep(3 * time.Second)
	l.stop()
	end := l.snapshot()
	t.Logf("after %s was ready again:%s", vid, describeCounts(ids, ready, end))
	l.report(t, keys)
	l.mu.Lock()
	if len(l.badBodies) > 0 {
		t.Errorf("200 answers that are not a count: %q", l.badBodies)
	}
	l.mu.Unlock()
	if served := end[victim][linearize.OutcomeOk] - ready[victim][linearize.OutcomeOk]; served == 0 {
		t.Errorf("%s answered no request with 200 after it was ready again", vid)
	}
	total := int64(0)
	for i := range end {
		total += end[i][linearize.OutcomeOk]
	}
	if total == 0 {
		t.Fatal("the load saw no acknowledged increment")
	}

	// Every node must give the same final counts: the restarted one has
	// caught up and serves.
	var final map[string]int
	for i := range c.specs {
		got := c.readAll(cc, 1000+i, i, keys)
		if final == nil {
			final = got
			continue
		}
		for _, k := range keys {
			if got[k] != final[k] {
				t.Errorf("%q: %s reads %d, %s reads %d", k, c.specs[i].id, got[k], c.specs[0].id, final[k])
			}
		}
	}
	t.Logf("final counts: %v", final)

	for _, loss := range linearize.Losses(rec, final) {
		t.Errorf("%v", loss)
	}
	if res := linearize.Check(rec, 30*time.Second); res.Ok {
		t.Logf("history: %v", res)
	} else {
		t.Errorf("history: %v", res)
	}
	// Ready, not necessarily at this instant: leader balancing moves
	// leaders back to the restarted node, and a shard has no live leader
	// for the moment of each transfer. A CI run once found "shard 0 has
	// no live leader" here, 3 s after the node was ready (the cause was
	// not logged; a transfer is the likely one).
	p.waitReady(15 * time.Second)
}

// TestClusterRefusesBadStarts checks that a data dir stays with the node
// that made it: another node id, or `roost dev`, is refused.
func TestClusterRefusesBadStarts(t *testing.T) {
	spec := newNodeSpec(t, "n1", 3, 16)
	n1 := launchNode(t, "node n1", spec)
	// The node binds its listeners after claiming the data dir; /readyz
	// answers (503: no cluster yet) once they are bound.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, _, err := n1.readyz(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node n1 never answered /readyz")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(spec.dataDir, "node.json")); err != nil {
		t.Fatalf("node n1 has not claimed its data dir: %v", err)
	}
	if err := n1.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("node n1 exited with %v after SIGTERM; want a clean exit", err)
	}

	t.Run("other node id", func(t *testing.T) {
		other := newNodeSpec(t, "nx", 3, 16)
		other.dataDir = spec.dataDir
		p := launchNode(t, "node nx", other)
		err := p.waitExit(15 * time.Second)
		out := p.log.String()
		if err == nil {
			t.Fatalf("node nx on node n1's data dir exited 0:\n%s", out)
		}
		if !strings.Contains(out, `"n1"`) || !strings.Contains(out, `"nx"`) {
			t.Errorf("node nx on node n1's data dir exited with %v, but its output names not both ids:\n%s", err, out)
		}
		t.Logf("%v: %s", err, strings.TrimSpace(out))
	})

	t.Run("roost dev", func(t *testing.T) {
		p := launchDev(t, roostBinary(t), spec.dataDir)
		err := p.waitExit(15 * time.Second)
		out := p.log.String()
		if err == nil {
			t.Fatalf("roost dev on node n1's data dir exited 0:\n%s", out)
		}
		if !strings.Contains(out, spec.dataDir) || !strings.Contains(out, "cluster node") {
			t.Errorf("roost dev on node n1's data dir exited with %v, but its output does not say the dir belongs to a cluster node:\n%s", err, out)
		}
		t.Logf("%v: %s", err, strings.TrimSpace(out))
	})

	// The refusals left the data dir to n1: it starts again.
	p := launchNode(t, "node n1 (again)", spec)
	deadline = time.Now().Add(15 * time.Second)
	for {
		code, _, err := p.readyz()
		if err == nil && code == http.StatusServiceUnavailable {
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("node n1 exited when started again on its own data dir: %v\n%s", p.exitErr, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("node n1 never answered /readyz after the refusals")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNodeCrashedAndMovedKeepsItsReplicas: a node SIGKILLed and started
// again at once with its data dir but new addresses is back in
// gossip, and serving, before the meta leader would re-create its replicas
// elsewhere (dead_node_grace, 30 s). Gossip takes a crashed node's ID at a
// new address only after it declared the old one dead and a reclaim time
// passed; with that time equal to the grace, the heal always won and the
// node came back holding nothing. It is given --join, as a compose file
// gives it: the seed refuses its ID while the old self is alive in gossip,
// which made it exit at once.
func TestNodeCrashedAndMovedKeepsItsReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster restart test skipped in -short mode")
	}
	c := startCluster(t, 3, 8, 60*time.Second)
	const victim = 2
	vid := c.specs[victim].id
	type shards struct {
		Shards []struct {
			ID       int      `json:"id"`
			Replicas []string `json:"replicas"`
		} `json:"shards"`
	}
	held := func() int {
		var out shards
		if code := adminJSON(t, c.specs[0].admin, http.MethodGet, "/v1/shards", nil, &out); code != http.StatusOK {
			t.Fatalf("GET /v1/shards: %d", code)
		}
		n := 0
		for _, s := range out.Shards {
			if slices.Contains(s.Replicas, vid) {
				n++
			}
		}
		return n
	}
	before := held()
	if before == 0 {
		t.Fatalf("%s holds no replica to keep", vid)
	}
	if err := c.procs[victim].stop(syscall.SIGKILL); err == nil {
		t.Fatalf("%s exited cleanly after SIGKILL", vid)
	}
	s := &c.specs[victim]
	s.http, s.admin, s.grpc, s.gossip = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	s.join = []string{c.specs[0].gossip}
	restarted := time.Now()
	c.launch(victim).waitReady(50 * time.Second)
	t.Logf("%s ready at its new addresses %v after its restart", vid, time.Since(restarted).Round(time.Millisecond))
	// Past the grace: a heal, had it started, has taken the replicas.
	if wait := 40*time.Second - time.Since(restarted); wait > 0 {
		time.Sleep(wait)
	}
	if after := held(); after != before {
		t.Fatalf("%s held %d replicas before its crash and %d after its restart at a new address", vid, before, after)
	}
	if code, body := c.procs[victim].mustGet("/increment" + nameQuery("moved")); code != http.StatusOK {
		t.Fatalf("an increment through the moved node: %d %q", code, body)
	}
}

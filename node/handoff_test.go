package node

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	dto "github.com/prometheus/client_model/go"

	"github.com/roostdb/roost/durable"
)

// TestPlannedTransferFailsNoRequest: a planned leadership hand-over waits
// for the turns already running on the shard and their commits, and
// re-routes the requests that had not begun a turn, so slow turns caught
// by a transfer still succeed and no request fails. Without the turn count
// (shard.turns) the transfer starts while turns sleep, and their commits
// are refused: 503 "leadership transfer in progress" or "not the leader".
func TestPlannedTransferFailsNoRequest(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 1, reg)
	const clients = 12
	stop := make(chan struct{})
	var (
		mu       sync.Mutex
		acked    = map[string]int{}
		failures []string
		wg       sync.WaitGroup
	)
	for cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("held-%d", cl)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				u := "http://" + c.cfgs[(cl+i)%len(c.cfgs)].HTTPAddr + "/increment?" +
					url.Values{"ns": {"COUNTER"}, "name": {name}, "hold": {"30ms"}}.Encode()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				code, body, err := getBody(ctx, u)
				cancel()
				mu.Lock()
				if err != nil || code != 200 {
					failures = append(failures, fmt.Sprintf("%s: %d %q %v", name, code, body, err))
				} else {
					acked[name]++
				}
				mu.Unlock()
			}
		}()
	}
	for range 4 {
		time.Sleep(200 * time.Millisecond) // turns are in flight
		li := c.waitLeaderOf(t, groupOf(0))
		nd := c.nodes[li]
		nd.cluster.mu.Lock()
		ls := nd.cluster.groups[0]
		nd.cluster.mu.Unlock()
		for {
			err := nd.cluster.transferNow(ls, raft.Server{})
			if err == nil {
				break
			}
			if !errors.Is(err, raft.ErrLeadershipTransferInProgress) { // the leader balancer's may be under way
				t.Fatalf("transfer from %s: %v", c.cfgs[li].NodeID, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d requests failed across planned transfers, first: %s", len(failures), failures[0])
	}
	var names []string
	for name := range acked {
		names = append(names, name)
	}
	for name, v := range c.finalValues(names) {
		if v != acked[name] {
			t.Errorf("%s: %d increments acknowledged, counter is %d", name, acked[name], v)
		}
	}
	t.Logf("acknowledged %v", acked)
}

// TestTransferToATargetCutOffAfterAcceptingEndsSoon: a leadership
// transfer whose target accepts it (TimeoutNow) and is cut off before its
// election reaches anyone must not leave the shard without writes for
// raft's ElectionTimeout (30 s with QuietTiming): raft refuses every Apply
// until the transfer ends, so the leader re-routes the shard's requests
// meanwhile, and each is refused 503 after routeWait (5 s). The leader
// ends the transfer after transferGiveUp with an election it wins back
// (awaitTransfer), so the requests held meanwhile all succeed.
func TestTransferToATargetCutOffAfterAcceptingEndsSoon(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 1, reg)
	if code, body, err := c.doRetrying(0, "/increment", "k"); code != 200 || body != "1" || err != nil {
		t.Fatalf("first increment: %d %q %v", code, body, err)
	}
	li := c.waitLeaderOf(t, groupOf(0))
	ti, oi := (li+1)%3, (li+2)%3
	nd := c.nodes[li]
	nd.transferGiveUp = time.Second // read only by the transfer below
	nd.cluster.mu.Lock()
	ls := nd.cluster.groups[0]
	nd.cluster.mu.Unlock()
	taddr := raft.ServerAddress(c.cfgs[ti].GRPCAddr)
	c.faults.IsolateAfterTimeoutNow(taddr)
	defer c.faults.Heal()

	start := time.Now()
	ended := make(chan error, 1)
	go func() {
		ended <- nd.cluster.transferNow(ls, raft.Server{ID: raft.ServerID(c.cfgs[ti].NodeID), Address: taddr})
	}()
	want, transferErr := 1, error(nil)
	var slowest time.Duration
	for rounds := 0; rounds < 2; { // until one round after the transfer ended
		select {
		case transferErr = <-ended:
			ended = nil
		default:
		}
		if ended == nil {
			rounds++
		}
		for _, i := range []int{li, oi} {
			sent := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			code, body, err := c.do(ctx, i, "/increment", "k")
			cancel()
			took := time.Since(sent)
			if err != nil || code != 200 {
				t.Fatalf("increment via %s sent %s after the transfer began: %d %q %v after %s",
					c.cfgs[i].NodeID, sent.Sub(start).Round(time.Millisecond), code, body, err, took.Round(time.Millisecond))
			}
			if want++; body != fmt.Sprint(want) {
				t.Fatalf("increment via %s: counter %s, want %d", c.cfgs[i].NodeID, body, want)
			}
			slowest = max(slowest, took)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the transfer has not ended after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if g := c.localGroup(ti, 0); g == nil || g.State() != raft.Candidate {
		t.Fatalf("the target did not accept the transfer and stay cut off (its replica: %v)", g)
	}
	if !errors.Is(transferErr, errTransferEnded) {
		t.Errorf("transfer to a target cut off: %v, want errTransferEnded", transferErr)
	}
	// Requests wait out the stalled transfer, well within routeWait.
	if slowest > 3*time.Second {
		t.Errorf("slowest increment took %s", slowest)
	}
	t.Logf("slowest increment %s; transfer: %v", slowest.Round(time.Millisecond), transferErr)
}

// A leader cut off from what the others send it (a one-way partition) as
// it hands its shard over: the target wins its election without it, and
// the leader hears of the new term only in answers to its heartbeats.
// Raft refuses, while the transfer runs, the barrier that would make it
// step down, and the transfer ran until raft's ElectionTimeout (30 s with
// QuietTiming), the leader refusing the shard's writes. It now asks the
// other voters and, once a quorum follows the new leader, ends the
// transfer (awaitTransfer, quorumFollowsAnother).
func TestTransferringLeaderCutOffInboundStepsDown(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 1, &turnRegistry{active: map[string]string{}})
	if code, body, err := c.doRetrying(0, "/increment", "k"); code != 200 || body != "1" || err != nil {
		t.Fatalf("first increment: %d %q %v", code, body, err)
	}
	li := c.waitLeaderOf(t, groupOf(0))
	ti, oi := (li+1)%3, (li+2)%3
	nd := c.nodes[li]
	nd.cluster.mu.Lock()
	ls := nd.cluster.groups[0]
	nd.cluster.mu.Unlock()
	c.faults.CutInbound(raft.ServerAddress(c.cfgs[li].GRPCAddr))
	defer c.faults.Heal()
	start := time.Now()
	ended := make(chan error, 1)
	go func() {
		ended <- nd.cluster.transferNow(ls, raft.Server{ID: raft.ServerID(c.cfgs[ti].NodeID), Address: raft.ServerAddress(c.cfgs[ti].GRPCAddr)})
	}()
	select {
	case err := <-ended:
		// errTransferEnded: the leader missed its pings' answers for a
		// moment (a loaded machine) and ended the transfer as one to a
		// target out of reach; that too leaves it out of leader state.
		if err != nil && !errors.Is(err, errTransferEnded) {
			t.Fatalf("transfer from %s, cut off inbound: %v after %s", c.cfgs[li].NodeID, err, time.Since(start).Round(time.Millisecond))
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the transfer from %s, cut off inbound, still runs 15 s after it began", c.cfgs[li].NodeID)
	}
	took := time.Since(start)
	if g := c.localGroup(li, 0); g != nil && g.State() == raft.Leader {
		t.Fatalf("%s still leads the shard after its transfer returned", c.cfgs[li].NodeID)
	}
	if code, body, err := c.doRetrying(oi, "/increment", "k"); code != 200 || err != nil {
		t.Fatalf("increment via %s after the transfer: %d %q %v", c.cfgs[oi].NodeID, code, body, err)
	} else if n, _ := strconv.Atoi(body); n < 2 {
		t.Fatalf("increment via %s after the transfer: %q, want at least 2", c.cfgs[oi].NodeID, body)
	}
	t.Logf("the transfer returned %s after it began", took.Round(time.Millisecond))
}

// When a planned leadership transfer returns, the old leader serves the
// shard no more and its instances are gone: raft answers the transfer when
// its leader loop ends, before the loss reaches LeaderCh, and a turn let
// in meanwhile would run on an instance of the term that ended while the
// new leader serves the object (two live instances).
func TestPlannedTransferDropsInstancesBeforeItReturns(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 1, &turnRegistry{active: map[string]string{}})
	key := durable.IDFromName(durable.DeriveNamespaceKey("Counter", ""), "moved").Bytes()
	for round := range 6 {
		if code, body, err := c.doRetrying(round%3, "/increment", "moved"); err != nil || code != 200 || body != strconv.Itoa(round+1) {
			t.Fatalf("round %d: increment: %d %q %v", round, code, body, err)
		}
		li := c.waitLeaderOf(t, groupOf(0))
		nd := c.nodes[li]
		nd.cluster.mu.Lock()
		ls := nd.cluster.groups[0]
		nd.cluster.mu.Unlock()
		if liveInstance(nd.manager, key) == nil {
			t.Fatalf("round %d: no live instance at the leader %s after an increment", round, nd.cfg.NodeID)
		}
		if err := nd.cluster.transferNow(ls, raft.Server{}); err != nil {
			t.Fatalf("round %d: transfer: %v", round, err)
		}
		if ls.shard.isReady() || liveInstance(nd.manager, key) != nil {
			t.Fatalf("round %d: the transfer from %s returned with the shard ready there (%v) or the object's instance live (%v)",
				round, nd.cfg.NodeID, ls.shard.isReady(), liveInstance(nd.manager, key) != nil)
		}
	}
}

// A request queued behind a turn at a leader that then loses the shard
// never ran: it is routed to the new leader and answered there, not held
// for the old leader's shard to be ready again (shardWait, 10 s) and then
// refused with a 503, nor until the turn ahead of it ends.
func TestRequestQueuedAtALostShardIsRerouted(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 1, &turnRegistry{active: map[string]string{}})
	li := c.waitLeaderOf(t, groupOf(0))
	nd := c.nodes[li]
	at := func(path string, q url.Values) string {
		q.Set("ns", "PINGPONG")
		q.Set("name", "queued")
		return "http://" + c.cfgs[li].HTTPAddr + path + "?" + q.Encode()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slept := make(chan error, 1)
	go func() { // holds the object's gate for 6 s
		_, _, err := getBody(ctx, at("/sleep", url.Values{"d": {"6s"}}))
		slept <- err
	}()
	time.Sleep(300 * time.Millisecond)
	type answer struct {
		code int
		body string
		err  error
		took time.Duration
	}
	queued := make(chan answer, 1)
	go func() { // queued behind the sleep
		start := time.Now()
		code, body, err := getBody(ctx, at("/leaf", url.Values{}))
		queued <- answer{code, body, err, time.Since(start)}
	}()
	time.Sleep(300 * time.Millisecond)
	nd.cluster.mu.Lock()
	ls := nd.cluster.groups[0]
	nd.cluster.mu.Unlock()
	if err := nd.cluster.transferNow(ls, raft.Server{}); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	var a answer
	select {
	case a = <-queued:
	case <-slept:
		t.Fatal("the queued request waited for the turn ahead of it at the old leader to end")
	}
	t.Logf("the queued request: %d %q %v after %s", a.code, a.body, a.err, a.took.Round(time.Millisecond))
	if a.err != nil || a.code != 200 || a.body != "leaf" {
		t.Fatalf("the request queued at %s when it lost the shard: %d %q %v, want it answered by the new leader", nd.cfg.NodeID, a.code, a.body, a.err)
	}
	<-slept
}

// TestLostLeadershipLeavesNoInstanceBehind: the instances a node drops with
// a shard's leadership leave its memory once their commits settle, counted
// as resets only. They stayed in the map until idle eviction (a minute by
// default), so roost_instances counted them on the old leader and the new
// one at once, and eviction counted them a second time.
func TestLostLeadershipLeavesNoInstanceBehind(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}}, func(cfg *Config) { cfg.IdleTimeout = 10 * time.Minute })
	c.waitReady()
	name := c.counterLedBy(0, "left-")
	if code, body, err := c.doRetrying(0, "/increment", name); err != nil || code != 200 {
		t.Fatalf("increment: %d %q %v", code, body, err)
	}
	old := c.nodes[0]
	if n := old.manager.count(); n != 1 {
		t.Fatalf("%d instances on the leader after one request, want 1", n)
	}
	ns, _ := old.Env().Namespace("COUNTER")
	shard := shardOf(ns.IDFromName(name).Bytes(), c.cfgs[0].Shards)
	var out struct{ Error string }
	if code := c.admin(0, "POST", fmt.Sprintf("/v1/shards/%d/transfer-leader", shard), map[string]string{"to": c.cfgs[1].NodeID}, &out); code != 200 {
		t.Fatalf("transfer-leader: %d %s", code, out.Error)
	}
	for deadline := time.Now().Add(10 * time.Second); old.manager.count() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d instances still on the old leader 10 s after it handed the shard over", old.manager.count())
		}
	}
	var m dto.Metric
	if err := old.metrics.evictions.Write(&m); err != nil || m.GetCounter().GetValue() != 0 {
		t.Fatalf("the old leader counted %v evictions, want 0 (the instance was reset, not evicted idle)", m.GetCounter().GetValue())
	}
}

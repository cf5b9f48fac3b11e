package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/roostdb/roost/multiraft"
)

// enode is a Store with a multiraft engine served over gRPC.
type enode struct {
	id     uint64
	store  *Store
	engine *multiraft.Engine
	addr   string
}

// newEngineCluster starts size Stores, each with an engine, whose
// transports find each other through one address book. tweaks, if any,
// adjust every engine's configuration.
func newEngineCluster(t testing.TB, size int, tweaks ...func(*multiraft.Config)) []*enode {
	t.Helper()
	var mu sync.Mutex
	addrs := map[uint64]string{}
	resolve := func(id uint64) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		a, ok := addrs[id]
		return a, ok
	}
	nodes := make([]*enode, size)
	for i := range nodes {
		n := &enode{id: uint64(i + 1), store: openTest(t)}
		tcfg := multiraft.DefaultGRPCConfig()
		tcfg.NodeID, tcfg.Resolve = n.id, resolve
		tcfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		tr, err := multiraft.NewGRPCTransport(tcfg)
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := multiraft.DefaultConfig()
		cfg.NodeID, cfg.Transport = n.id, tr
		for _, tweak := range tweaks {
			tweak(&cfg)
		}
		srv := grpc.NewServer(multiraft.ServerOptions(cfg)...)
		tr.Register(srv)
		go func() { _ = srv.Serve(lis) }()
		if n.engine, err = n.store.NewEngine(cfg); err != nil {
			t.Fatal(err)
		}
		tr.Attach(n.engine)
		n.addr = lis.Addr().String()
		mu.Lock()
		addrs[n.id] = n.addr
		mu.Unlock()
		// Cleanups run last-in first-out: the engine closes before the
		// Store it writes to (registered earlier, by openTest).
		t.Cleanup(func() {
			srv.Stop()
			tr.Close()
			n.engine.Close()
		})
		nodes[i] = n
	}
	return nodes
}

// startEngineGroup starts group g on every node with all of them as voters
// and makes node lead it; it returns the group's handle on each node.
func startEngineGroup(t testing.TB, nodes []*enode, g GroupID, lead int) []*multiraft.Group {
	t.Helper()
	voters := make([]uint64, len(nodes))
	for i, n := range nodes {
		voters[i] = n.id
	}
	hs := make([]*multiraft.Group, len(nodes))
	for i, n := range nodes {
		h, err := n.engine.StartGroup(multiraft.GroupConfig{ID: multiraft.GroupID(g), StateMachine: n.store.NewShardFSM(g).Machine(), Voters: voters})
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = h
	}
	if err := hs[lead].Campaign(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for hs[lead].Status().Role != multiraft.Leader {
		if time.Now().After(deadline) {
			t.Fatalf("group %s: node %d did not become leader: %+v", g, nodes[lead].id, hs[lead].Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return hs
}

// The shard FSM on the engine applies entries and fences stale versions
// as on hashicorp/raft, and a node added later gets its state from a
// snapshot.
func TestShardMachineOnEngine(t *testing.T) {
	// A short log retention: the snapshot path is the same as with the
	// default's 1024, and the log is compacted after tens of entries, not
	// thousands (about 2,000 synced proposals took 15-20 s under -race,
	// and the test failed now and then at its 20 s deadline).
	const retention = 16
	nodes := newEngineCluster(t, 4, func(c *multiraft.Config) { c.LogRetention = retention })
	hs := startEngineGroup(t, nodes[:3], 5, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	propose := func(e Entry) ApplyResult {
		t.Helper()
		res, err := hs[0].Propose(ctx, encode(t, e))
		if err != nil {
			t.Fatal(err)
		}
		return res.(ApplyResult)
	}
	obj := oid(1)
	for v := uint64(1); v <= 5; v++ {
		if res := propose(Entry{Batches: []ObjectBatch{batch(obj, v, put("k", fmt.Sprint(v)))}}); len(res.Rejected) != 0 {
			t.Fatalf("version %d rejected", v)
		}
	}
	if res := propose(Entry{Batches: []ObjectBatch{batch(obj, 3, put("k", "stale"))}}); len(res.Rejected) != 1 {
		t.Fatalf("a stale version was not rejected: %+v", res)
	}
	if res, err := hs[0].Propose(ctx, []byte{0xff}); err != nil || !errors.Is(res.(error), ErrCorruptEntry) {
		t.Fatalf("a corrupt entry: %v, %v", res, err)
	}
	if err := hs[0].ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := nodes[0].store.Get(5, obj, "k"); err != nil || !ok || string(v) != "5" {
		t.Fatalf("leader's k = %q, %v, %v", v, ok, err)
	}
	// A fourth node joins after more than twice the log retention was
	// applied, so the log it would need is compacted: it gets a snapshot.
	for v := uint64(6); v <= 2*retention+10; v++ {
		propose(Entry{Batches: []ObjectBatch{batch(oid(int(v%7)+2), v/7+1, put("n", fmt.Sprint(v)))}})
	}
	restored := &restoreCounter{StateMachine: nodes[3].store.NewShardFSM(5).Machine()}
	joiner, err := nodes[3].engine.StartGroup(multiraft.GroupConfig{ID: 5, StateMachine: restored})
	if err != nil {
		t.Fatal(err)
	}
	if err := hs[0].ChangeConf(ctx, raftpb.ConfChangeV2{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddLearnerNode, NodeID: 4}}}); err != nil {
		t.Fatal(err)
	}
	for joiner.Applied() < hs[0].Applied() {
		if ctx.Err() != nil {
			t.Fatalf("the joiner applied %d of %d", joiner.Applied(), hs[0].Applied())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if restored.n.Load() == 0 {
		t.Fatal("the joiner caught up without a snapshot")
	}
	want, got := rawState(t, nodes[0].store, 5), rawState(t, nodes[3].store, 5)
	if len(want) == 0 || fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatalf("the joiner's state differs from the leader's:\nleader %v\njoiner %v", want, got)
	}
}

// restoreCounter counts a state machine's snapshot restores.
type restoreCounter struct {
	multiraft.StateMachine
	n atomic.Int32
}

func (r *restoreCounter) Restore(b *pebble.Batch, data []byte) error {
	r.n.Add(1)
	return r.StateMachine.Restore(b, data)
}

// BenchmarkEngineSpread is BenchmarkTransportSpread's load on the
// multiraft engine instead of hashicorp/raft: three Stores in one process
// over real gRPC, 48 groups with leaders spread evenly, 64 proposers each
// committing its own object's versions in its group, one apply in flight
// each. Run the two alternately to compare:
//
//	go test -run XXX -bench 'EngineSpread|TransportSpread' -benchtime 30000x ./raftstore
func BenchmarkEngineSpread(b *testing.B) {
	const ngroups, proposers = 48, 64
	nodes := newEngineCluster(b, 3)
	groups := make([][]*multiraft.Group, ngroups) // [group][node]
	for g := range ngroups {
		groups[g] = startEngineGroup(b, nodes, GroupID(g+1), g%len(nodes))
	}
	runSpread(b, ngroups, proposers, func(g int, data []byte) error {
		_, err := groups[g][g%len(nodes)].Propose(context.Background(), data)
		return err
	})
}

// BenchmarkEngineOneGroup is one group's commits on the engine, 8
// proposers with one apply in flight each: bound by how long an entry
// takes to commit (the leader's and the followers' synced writes, the
// messages), not by CPU, as under load on one object.
//
//	go test -run XXX -bench EngineOneGroup -benchtime 5000x ./raftstore
func BenchmarkEngineOneGroup(b *testing.B) {
	const proposers = 8
	nodes := newEngineCluster(b, 3)
	group := startEngineGroup(b, nodes, 1, 0)
	runSpread(b, 1, proposers, func(_ int, data []byte) error {
		_, err := group[0].Propose(context.Background(), data)
		return err
	})
}

// BenchmarkEngineIdle measures what three engines with 64 idle groups
// (leaders spread, no proposals) cost: the share of one core the process
// uses over 10 s after a 5 s settle, for each iteration. The figure to
// hold against is issue 4's idle target for a 3-node, 64-shard cluster
// (< 5 % of one core, docs/benchmarks.md), which hashicorp/raft meets
// only with quiet timing and batched heartbeats; the engine has neither
// yet (docs/multiraft.md):
//
//	go test -run XXX -bench EngineIdle -benchtime 1x ./raftstore
func BenchmarkEngineIdle(b *testing.B) {
	const ngroups = 64
	nodes := newEngineCluster(b, 3)
	var groups [][]*multiraft.Group
	for g := range ngroups {
		groups = append(groups, startEngineGroup(b, nodes, GroupID(g+1), g%len(nodes)))
	}
	// terms sums the terms every replica is in: it grows with every
	// election, so an idle cluster whose leaders churn shows it.
	terms := func() (sum uint64) {
		for _, hs := range groups {
			for _, h := range hs {
				sum += h.Status().Term
			}
		}
		return sum
	}
	time.Sleep(5 * time.Second)
	b.ResetTimer()
	var cores float64 // summed over the iterations
	term0 := terms()
	for range b.N {
		cpu0, start := processCPU(), time.Now()
		time.Sleep(10 * time.Second)
		cores += (processCPU() - cpu0).Seconds() / time.Since(start).Seconds()
	}
	b.ReportMetric(100*cores/float64(b.N), "cpu-%-of-a-core")
	b.ReportMetric(float64(terms()-term0)/float64(b.N), "term-changes/op")
}

package raftstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/roostdb/roost/proto"
)

// Three voters over gRPC: replication of concurrent applies, failover when
// the leader is isolated, and the old leader catching up after Heal.
func TestTransportThreeNodesFailover(t *testing.T) {
	const workers, perWorker = 50, 20 // 1000 applies
	faults := &Faults{}
	nodes := newCluster(t, 3, faults)
	groups := startAll(t, nodes, 1, testTiming)
	li := leaderIndex(t, groups, -1, 10*time.Second)

	proposeAll(t, groups[li].Raft(), workers, 1, perWorker)
	waitApplied(t, nodes, nodes[li], 1)
	for _, n := range nodes {
		checkObjects(t, n.store, 1, workers, perWorker)
	}
	// Replication went through the followers' group views.
	for i, n := range nodes {
		if i == li {
			continue
		}
		if got := n.tr.lookup(1).received.Load(); got == 0 {
			t.Fatalf("%s: group view received no RPCs", n.id)
		}
	}

	old := li
	faults.Isolate(nodes[old].addr)
	cut := time.Now()
	li = leaderIndex(t, groups, old, 5*time.Second)
	t.Logf("new leader %s elected %v after isolating %s", nodes[li].id, time.Since(cut).Round(time.Millisecond), nodes[old].id)
	// The isolated leader loses its lease and steps down on its own.
	waitFor(t, 5*time.Second, "the isolated leader to step down", func() bool {
		return groups[old].Raft().State() != raft.Leader
	})
	proposeAll(t, groups[li].Raft(), workers, perWorker+1, perWorker+3)
	if got, _ := nodes[old].store.ObjectVersion(1, oid(0)); got != perWorker {
		t.Fatalf("isolated node applied version %d, want %d", got, perWorker)
	}

	faults.Heal()
	waitApplied(t, nodes, nodes[li], 1)
	for _, n := range nodes {
		checkObjects(t, n.store, 1, workers, perWorker+3)
	}
	if st := groups[old].Raft().State(); st == raft.Leader {
		t.Fatalf("old leader is leader again (state %v)", st)
	}
	// And the healed cluster still commits.
	proposeAll(t, groups[li].Raft(), workers, perWorker+4, perWorker+4)
	waitApplied(t, nodes, nodes[li], 1)
	checkObjects(t, nodes[old].store, 1, workers, perWorker+4)
}

// Two groups share each node's transport; a third view has no raft at
// all. Nothing of one group reaches another.
func TestTransportGroupsAreSeparate(t *testing.T) {
	nodes := newCluster(t, 3, nil)
	ga := startAll(t, nodes, 1, testTiming)
	gb := startAll(t, nodes, 2, testTiming)
	// Group 7 is registered on n3 only, with a fake raft that records
	// whatever reaches it.
	idle := serveFake(t, nodes[2].tr.Group(7), nil)

	la := leaderIndex(t, ga, -1, 10*time.Second)
	lb := leaderIndex(t, gb, -1, 10*time.Second)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); proposeAll(t, ga[la].Raft(), 8, 1, 10) }()
	go func() { defer wg.Done(); proposeAll(t, gb[lb].Raft(), 4, 1, 3) }()
	wg.Wait()
	waitApplied(t, nodes, nodes[la], 1)
	waitApplied(t, nodes, nodes[lb], 2)

	for _, n := range nodes {
		checkObjects(t, n.store, 1, 8, 10)
		checkObjects(t, n.store, 2, 4, 3)
		// Objects 4..7 were only written in group 1.
		for w := 4; w < 8; w++ {
			if v, err := n.store.ObjectVersion(2, oid(w)); err != nil || v != 0 {
				t.Fatalf("%s: object %d in group 2 has version %d (%v)", n.id, w, v, err)
			}
		}
		a, _ := n.store.AppliedIndex(1)
		b, _ := n.store.AppliedIndex(2)
		if a <= b {
			t.Fatalf("%s: applied index of group 1 (%d) not above group 2's (%d)", n.id, a, b)
		}
	}
	// Every node ends with the same state per group.
	for g := GroupID(1); g <= 2; g++ {
		want := rawState(t, nodes[0].store, g)
		for _, n := range nodes[1:] {
			if got := rawState(t, n.store, g); !maps.Equal(got, want) {
				t.Fatalf("%s: group %d state differs from n1's", n.id, g)
			}
		}
	}
	if cmds := idle.commands(); len(cmds) != 0 {
		t.Fatalf("unrelated group 7 received %d RPCs", len(cmds))
	}
	if got := nodes[2].tr.lookup(7).received.Load(); got != 0 {
		t.Fatalf("group 7's counter = %d", got)
	}

	// A group no node runs: NotFound at once, for each kind of call.
	c := rawClient(t, nodes[0].addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.AppendEntries(ctx, &pb.RaftAppendEntriesRequest{GroupId: 99, Header: &pb.RaftRPCHeader{}})
	wantCode(t, "AppendEntries to group 99", err, codes.NotFound)
	_, err = c.RequestVote(ctx, &pb.RaftRequestVoteRequest{GroupId: 7, Header: &pb.RaftRPCHeader{}}) // 7 is on n3 only
	wantCode(t, "RequestVote to group 7 on n1", err, codes.NotFound)
	ps, err := c.AppendEntriesPipeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Send(&pb.RaftAppendEntriesRequest{GroupId: 99, Header: &pb.RaftRPCHeader{}}); err != nil {
		t.Fatal(err)
	}
	_, err = ps.Recv()
	wantCode(t, "pipeline to group 99", err, codes.NotFound)
	ss, err := c.InstallSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = ss.Send(&pb.RaftInstallSnapshotChunk{Msg: &pb.RaftInstallSnapshotChunk_Request{Request: &pb.RaftInstallSnapshotRequest{GroupId: 99, Header: &pb.RaftRPCHeader{}}}})
	_, err = ss.CloseAndRecv()
	wantCode(t, "InstallSnapshot to group 99", err, codes.NotFound)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("NotFound answers took %v", d)
	}

	// The shared transport's client side reports the same to raft.
	var resp raft.RequestVoteResponse
	err = nodes[0].tr.Group(99).(raft.Transport).RequestVote("n2", nodes[1].addr, &raft.RequestVoteRequest{RPCHeader: header("n1", nodes[0].addr)}, &resp)
	wantCode(t, "view RequestVote to group 99", err, codes.NotFound)
	_ = nodes[0].tr.Group(99).(raft.WithClose).Close()
}

func wantCode(t testing.TB, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want code %v", what, err, code)
	}
}

// A closed view unregisters itself, and Group makes a fresh one after.
func TestTransportClosedGroupView(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	v := nodes[1].tr.Group(5)
	if again := nodes[1].tr.Group(5); again != v {
		t.Fatal("Group returned a second view while the first is open")
	}
	client := nodes[0].tr.Group(5)
	args := &raft.RequestVoteRequest{RPCHeader: header("n1", nodes[0].addr), Term: 3}
	var resp raft.RequestVoteResponse

	// Registered but nobody consumes: the call waits for raft until the
	// view closes, then fails with NotFound.
	errc := make(chan error, 1)
	go func() { errc <- client.RequestVote("n2", nodes[1].addr, args, &resp) }()
	time.Sleep(100 * time.Millisecond)
	if err := v.(raft.WithClose).Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		wantCode(t, "RequestVote while the view closed", err, codes.NotFound)
	case <-time.After(3 * time.Second):
		t.Fatal("RequestVote still blocked after the view closed")
	}
	wantCode(t, "RequestVote to a closed view", client.RequestVote("n2", nodes[1].addr, args, &resp), codes.NotFound)

	v2 := nodes[1].tr.Group(5)
	if v2 == v {
		t.Fatal("Group returned the closed view")
	}
	serveFake(t, v2, nil)
	if err := client.RequestVote("n2", nodes[1].addr, args, &resp); err != nil || !resp.Granted {
		t.Fatalf("RequestVote to the new view: %v, %+v", err, resp)
	}

	// Transport.Close closes its views and fails calls.
	if err := nodes[0].tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := client.RequestVote("n2", nodes[1].addr, args, &resp); err != raft.ErrTransportShutdown {
		t.Fatalf("RequestVote after Transport.Close: %v", err)
	}
	if _, err := nodes[0].tr.Group(6).AppendEntriesPipeline("n2", nodes[1].addr); err != raft.ErrTransportShutdown {
		t.Fatalf("pipeline after Transport.Close: %v", err)
	}
}

// A 4th voter joins a group whose log was truncated by a snapshot: it can
// only catch up through InstallSnapshot, streamed in chunks.
func TestTransportSnapshotInstall(t *testing.T) {
	const workers, versions = 8, 40
	nodes := newCluster(t, 4, nil)
	tune := func(c *raft.Config) {
		testTiming(c)
		c.SnapshotThreshold = 64
		c.SnapshotInterval = 100 * time.Millisecond
		c.TrailingLogs = 16
	}
	first := nodes[:3]
	groups := startAll(t, first, 1, tune)
	leaderIndex(t, groups, -1, 10*time.Second)

	// 320 entries with 4 KiB values: a snapshot of over 1 MiB.
	value := strings.Repeat("v", 4096)
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for v := uint64(1); v <= versions; v++ {
				e := Entry{Batches: []ObjectBatch{batch(oid(w), v, put("n", fmt.Sprint(v)), put(fmt.Sprintf("k%03d", v), value))}}
				if err := applyAtLeader(groups, e, 10*time.Second); err != nil {
					failed.Store(fmt.Errorf("worker %d version %d: %w", w, v, err))
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	li := leaderIndex(t, groups, -1, 10*time.Second)
	leader := groups[li].Raft()
	if err := leader.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	firstIndex, err := nodes[li].store.LogStore(1).FirstIndex()
	if err != nil || firstIndex <= 1 {
		t.Fatalf("leader's log not truncated: first index %d, %v", firstIndex, err)
	}

	n4 := nodes[3]
	g4 := n4.start(t, 1, nil, tune)
	if err := leader.AddVoter(n4.id, n4.addr, 0, 20*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, nodes, nodes[li], 1)
	for w := 0; w < workers; w++ {
		st := readObject(t, n4.store, 1, oid(w))
		if st.Version != versions || st.Keys["n"] != fmt.Sprint(versions) || st.Keys["k001"] != value {
			t.Fatalf("n4 object %d: version %d, n=%q", w, st.Version, st.Keys["n"])
		}
	}
	if got, want := rawState(t, n4.store, 1), rawState(t, nodes[li].store, 1); !maps.Equal(got, want) {
		t.Fatalf("n4's state (%d keys) differs from the leader's (%d keys)", len(got), len(want))
	}
	if got := n4.tr.lookup(1).snapshotBytes.Load(); got <= snapshotChunkSize {
		t.Fatalf("n4 received %d snapshot bytes; want more than one chunk", got)
	}
	if s := g4.Raft().Stats()["last_snapshot_index"]; s == "0" || s == "" {
		t.Fatalf("n4 last_snapshot_index = %q", s)
	}
	// The new voter takes part: the group still commits with it.
	proposeAll(t, leader, 2, versions+1, versions+2)
	waitApplied(t, nodes, nodes[li], 1)
}

// BenchmarkTransportApply3: three voters over the gRPC transport on
// loopback, 64 proposers each committing its own object's versions, with
// the default raft config; reports applies/s. On a loaded machine the
// default 250 ms leader lease can run out; proposers then follow the new
// leader (reported as leader-changes) instead of failing the run.
func BenchmarkTransportApply3(b *testing.B) {
	nodes := newCluster(b, 3, nil)
	groups := startAll(b, nodes, 1, nil)
	var leader atomic.Int64
	leader.Store(int64(leaderIndex(b, groups, -1, 10*time.Second)))
	var changes atomic.Int64
	// current returns the leader's index, looking for a new one if needed.
	current := func() (int, error) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			li := int(leader.Load())
			if groups[li].Raft().State() == raft.Leader {
				return li, nil
			}
			for i, g := range groups {
				if g.Raft().State() == raft.Leader {
					leader.Store(int64(i))
				}
			}
			if time.Now().After(deadline) {
				return 0, errors.New("no leader for 10s")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	var next atomic.Int64
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((64 + procs - 1) / procs)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		obj := oid(int(next.Add(1)))
		v := uint64(1)
		for pb.Next() {
			for {
				li, err := current()
				if err != nil {
					b.Error(err)
					return
				}
				r := groups[li].Raft()
				data, err := (&Entry{Batches: []ObjectBatch{batch(obj, v, put("counter", fmt.Sprint(v)))}}).AppendBinary(nil)
				if err != nil {
					b.Error(err)
					return
				}
				f := r.Apply(data, 10*time.Second)
				err = f.Error()
				if err == nil {
					if res, ok := f.Response().(ApplyResult); ok && len(res.Rejected) == 0 {
						v++
						break
					}
					// Rejected: an attempt lost to a leader change committed after all.
				} else if errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrNotLeader) {
					changes.Add(1)
				} else {
					b.Error(err)
					return
				}
				// Continue from the object's committed version.
				if li, err = current(); err == nil {
					err = groups[li].Raft().Barrier(10 * time.Second).Error()
				}
				var cur uint64
				if err == nil {
					cur, err = nodes[li].store.ObjectVersion(1, obj)
				}
				if err != nil && !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, raft.ErrNotLeader) {
					b.Error(err)
					return
				}
				if err == nil {
					v = cur + 1
				}
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "applies/s")
	b.ReportMetric(float64(changes.Load()), "leader-changes")
}

// BenchmarkTransportSpread: three nodes running 48 groups over the gRPC
// transport (default timing, leaders spread evenly), 64 proposers each
// committing its own object's versions in group (proposer mod 48), one
// apply in flight each: the Raft side of a load spread over many shards,
// where each entry carries one write and groups replicate side by side.
// Reports applies/s, the process's CPU (user+system, all three nodes) per
// apply, and the WAL syncs of all three nodes per apply (each apply is a
// synced log write on each node; the sync window lets several share one).
func BenchmarkTransportSpread(b *testing.B) {
	const ngroups, proposers = 48, 64
	nodes := newCluster(b, 3, nil)
	groups := make([][]*Group, ngroups) // [group][node]
	for g := range ngroups {
		groups[g] = startAll(b, nodes, GroupID(g+1), nil)
	}
	for g := range ngroups {
		li := leaderIndex(b, groups[g], -1, 20*time.Second)
		if want := g % len(nodes); li != want {
			if err := groups[g][li].Raft().LeadershipTransferToServer(nodes[want].id, nodes[want].addr).Error(); err != nil {
				b.Fatalf("group %d: %v", g+1, err)
			}
			if got := leaderIndex(b, groups[g], -1, 10*time.Second); got != want {
				b.Fatalf("group %d: leader %d after the transfer, want %d", g+1, got, want)
			}
		}
	}
	syncs := func() (n uint64) {
		for _, nd := range nodes {
			n += nd.store.syncWindow.syncs.Load()
		}
		return n
	}
	syncs0 := syncs()
	runSpread(b, ngroups, proposers, func(g int, data []byte) error {
		return groups[g][g%len(nodes)].Raft().Apply(data, 10*time.Second).Error()
	})
	b.ReportMetric(float64(syncs()-syncs0)/float64(b.N), "wal-syncs/apply")
}

// runSpread is the load of the spread benchmarks: proposers, each with
// one apply in flight, each committing its own object's versions in group
// (its number mod ngroups) through apply, which the group's leader runs.
// It reports applies/s and the process's CPU an apply.
func runSpread(b *testing.B, ngroups, proposers int, apply func(g int, data []byte) error) {
	var next atomic.Int64
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((proposers + procs - 1) / procs)
	cpu0 := processCPU()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		p := int(next.Add(1))
		g := p % ngroups
		obj := oid(p)
		v := uint64(1)
		for pb.Next() {
			data, err := (&Entry{Batches: []ObjectBatch{batch(obj, v, put("counter", fmt.Sprint(v)))}}).AppendBinary(nil)
			if err != nil {
				b.Error(err)
				return
			}
			if err := apply(g, data); err != nil {
				b.Errorf("group %d: %v (leaders must not move in this benchmark)", g+1, err)
				return
			}
			v++
		}
	})
	b.StopTimer()
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "applies/s")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/apply")
}

// processCPU is the user and system time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestLargeEntriesReachALaggingFollower: a follower that fell behind while
// large entries were committed catches up, because an AppendEntries never
// carries more entries than fit in the peer's receive limit
// (appendEntriesWithin). Scaled down: a 1 MiB limit and entries of
// 128 KiB, 40 of them. With raft's count alone (256 entries an append) the
// first append to the follower carries all 40 (5 MiB), is refused at
// every retry, and the follower never catches up.
func TestLargeEntriesReachALaggingFollower(t *testing.T) {
	const limit, entryBytes, entries = 1 << 20, 128 << 10, 40
	faults := &Faults{}
	nodes := make([]*tnode, 3)
	for i := range nodes {
		nodes[i] = newTNodeServing(t, fmt.Sprintf("n%d", i+1), faults, []grpc.ServerOption{grpc.MaxRecvMsgSize(limit)})
	}
	groups := startAll(t, nodes, 1, func(c *raft.Config) {
		testTiming(c)
		// One leader throughout: with a follower cut off, testTiming's
		// 150 ms lease on the other alone was lost under -race on a busy
		// machine (5 MB of entries to write), and with it the test.
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, time.Second
		c.MaxAppendEntries = appendEntriesWithin(limit, entryBytes)
	})
	li := leaderIndex(t, groups, -1, 10*time.Second)
	lagging := (li + 1) % len(nodes)
	faults.Isolate(nodes[lagging].addr)
	waitFor(t, 5*time.Second, "a leader without the isolated follower", func() bool {
		return groups[li].Raft().State() == raft.Leader
	})
	value := strings.Repeat("v", entryBytes-100)
	for v := uint64(1); v <= entries; v++ {
		e := Entry{Batches: []ObjectBatch{batch(oid(1), v, put("big", value))}}
		if n := EntryLen(1, e.Batches[0].EncodedLen()); n > entryBytes {
			t.Fatalf("entry of %d bytes, over %d", n, entryBytes)
		}
		data, err := e.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := groups[li].Raft().Apply(data, 10*time.Second).Error(); err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
	}
	faults.Heal()
	waitApplied(t, nodes, nodes[li], 1)
	if got, err := nodes[lagging].store.ObjectVersion(1, oid(1)); err != nil || got != entries {
		t.Fatalf("the lagging follower has version %d (%v), want %d", got, err, entries)
	}
}

func TestEncodedLen(t *testing.T) {
	for _, b := range []ObjectBatch{
		batch(oid(1), 1),
		batch(oid(2), 300, put("k", "v"), del("gone"), setAlarm(1_700_000_000_000), deleteAlarm(), deleteAll()),
		batch(oid(3), 1<<40, put(strings.Repeat("k", 200), strings.Repeat("v", 70_000)), setAlarm(-5)),
	} {
		e := Entry{Batches: []ObjectBatch{b, b}}
		data, err := e.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := EntryLen(2, 2*b.EncodedLen()); got != len(data) {
			t.Errorf("batch of version %d: EntryLen %d, encoding %d bytes", b.Version, got, len(data))
		}
	}
	if n := appendEntriesWithin(MaxRaftMessageSize, MaxEntryBytes); n < 8 || n*(MaxEntryBytes+entryFraming)+appendFraming > MaxRaftMessageSize {
		t.Fatalf("%d entries of %d bytes an append, within %d bytes", n, MaxEntryBytes, MaxRaftMessageSize)
	}
}

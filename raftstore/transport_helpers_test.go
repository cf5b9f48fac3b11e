package raftstore

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/roostdb/roost/proto"
)

// tnode is one node of an in-process cluster over the gRPC transport: a
// Store, a Transport and a gRPC server on 127.0.0.1.
type tnode struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	store *Store
	tr    *Transport
	srv   *grpc.Server
}

func newTNode(t testing.TB, id string, faults *Faults, opts ...func(*TransportConfig)) *tnode {
	t.Helper()
	return newTNodeServing(t, id, faults, nil, opts...)
}

// newTNodeServing is newTNode with serverOpts after the transport's own
// (a smaller receive limit, say).
func newTNodeServing(t testing.TB, id string, faults *Faults, serverOpts []grpc.ServerOption, opts ...func(*TransportConfig)) *tnode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &tnode{id: raft.ServerID(id), addr: raft.ServerAddress(lis.Addr().String())}
	n.srv = grpc.NewServer(append(TransportServerOptions(), serverOpts...)...)
	cfg := TransportConfig{LocalAddr: n.addr, Faults: faults}
	for _, o := range opts {
		o(&cfg)
	}
	n.tr = NewTransport(cfg)
	n.tr.Register(n.srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = n.srv.Serve(lis)
	}()
	// Cleanups run last-in first-out: the Store (and its groups) closes
	// first, then the transport, then the server.
	t.Cleanup(func() {
		n.srv.Stop()
		<-served
	})
	t.Cleanup(func() { _ = n.tr.Close() })
	n.store = openTest(t)
	return n
}

func newCluster(t testing.TB, size int, faults *Faults) []*tnode {
	t.Helper()
	nodes := make([]*tnode, size)
	for i := range nodes {
		nodes[i] = newTNode(t, fmt.Sprintf("n%d", i+1), faults)
	}
	return nodes
}

func voters(nodes []*tnode) []raft.Server {
	var s []raft.Server
	for _, n := range nodes {
		s = append(s, raft.Server{Suffrage: raft.Voter, ID: n.id, Address: n.addr})
	}
	return s
}

// start runs group g on n; bootstrap may be nil (the node waits to be
// contacted).
func (n *tnode) start(t testing.TB, g GroupID, bootstrap []raft.Server, tune func(*raft.Config)) *Group {
	t.Helper()
	grp, err := n.store.StartGroup(GroupConfig{ID: g, LocalID: n.id, Transport: n.tr.Group(g), Bootstrap: bootstrap, Tune: tune})
	if err != nil {
		t.Fatal(err)
	}
	return grp
}

func startAll(t testing.TB, nodes []*tnode, g GroupID, tune func(*raft.Config)) []*Group {
	t.Helper()
	groups := make([]*Group, len(nodes))
	for i, n := range nodes {
		groups[i] = n.start(t, g, voters(nodes), tune)
	}
	return groups
}

// testTiming is quicker than the defaults but loose enough for -race on
// two cores.
func testTiming(c *raft.Config) {
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.CommitTimeout = 20 * time.Millisecond
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leaderIndex waits for exactly one group of groups (skipping skip) to
// lead and returns its index.
func leaderIndex(t testing.TB, groups []*Group, skip int, timeout time.Duration) int {
	t.Helper()
	found := -1
	waitFor(t, timeout, "a leader", func() bool {
		found = -1
		for i, g := range groups {
			if i == skip || g.Raft().State() != raft.Leader {
				continue
			}
			if found >= 0 {
				return false
			}
			found = i
		}
		return found >= 0
	})
	return found
}

// applyAtLeader applies e at whichever of groups leads, retrying at the
// new leader when leadership moves meanwhile: testTiming's 150 ms leader
// lease runs out when -race and a busy machine starve the leader, and a
// test that is not about failover must not fail for that. An attempt that
// failed with the leadership may have committed all the same; its retry is
// then rejected by the version fence, which counts as applied. It may run
// on any goroutine (it does not call t.Fatal).
func applyAtLeader(groups []*Group, e Entry, timeout time.Duration) error {
	data, err := e.AppendBinary(nil)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	retry := false
	for {
		var leader *raft.Raft
		for _, g := range groups {
			if g.Raft().State() == raft.Leader {
				leader = g.Raft()
				break
			}
		}
		if leader != nil {
			f := leader.Apply(data, time.Until(deadline))
			err = f.Error()
			if err == nil {
				res, ok := f.Response().(ApplyResult)
				switch {
				case !ok:
					return fmt.Errorf("response %v", f.Response())
				case len(res.Rejected) != 0 && !retry:
					return fmt.Errorf("rejected: %+v", res)
				}
				return nil
			}
			if !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipTransferInProgress) {
				return err
			}
			retry = true
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no leader applied the entry within %v (last error: %v)", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitApplied waits until every node's FSM of g has applied what the
// leader's has.
func waitApplied(t testing.TB, nodes []*tnode, leader *tnode, g GroupID) {
	t.Helper()
	want, err := leader.store.AppliedIndex(g)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitFor(t, 20*time.Second, fmt.Sprintf("%s to apply %d of group %d", n.id, want, g), func() bool {
			got, err := n.store.AppliedIndex(g)
			return err == nil && got >= want
		})
	}
}

// rawClient is a plain client of a node's RaftTransport service.
func rawClient(t testing.TB, addr raft.ServerAddress) pb.RaftTransportClient {
	t.Helper()
	cc, err := grpc.NewClient(string(addr), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return pb.NewRaftTransportClient(cc)
}

// fakeRaft answers the RPCs of a group view in place of raft.
type fakeRaft struct {
	mu   sync.Mutex
	got  []any
	stop chan struct{}
	done chan struct{}
}

// serveFake consumes v's RPCs until the test ends, recording each command
// and answering with answer (nil answer: a default response of the
// command's type).
func serveFake(t testing.TB, v raft.Transport, answer func(rpc raft.RPC)) *fakeRaft {
	f := &fakeRaft{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for {
			select {
			case rpc := <-v.Consumer():
				f.mu.Lock()
				f.got = append(f.got, rpc.Command)
				f.mu.Unlock()
				if answer != nil {
					answer(rpc)
					continue
				}
				rpc.Respond(defaultResponse(rpc), nil)
			case <-f.stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(f.stop)
		<-f.done
	})
	return f
}

func (f *fakeRaft) commands() []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]any(nil), f.got...)
}

func defaultResponse(rpc raft.RPC) any {
	switch rpc.Command.(type) {
	case *raft.AppendEntriesRequest:
		return &raft.AppendEntriesResponse{Success: true}
	case *raft.RequestVoteRequest:
		return &raft.RequestVoteResponse{Granted: true}
	case *raft.RequestPreVoteRequest:
		return &raft.RequestPreVoteResponse{Granted: true}
	case *raft.TimeoutNowRequest:
		return &raft.TimeoutNowResponse{}
	case *raft.InstallSnapshotRequest:
		return &raft.InstallSnapshotResponse{Success: true}
	}
	return nil
}

func header(id string, addr raft.ServerAddress) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(addr)}
}

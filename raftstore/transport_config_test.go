package raftstore

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/roostdb/roost/proto"
)

// garbageConfigurationEnv makes the test binary, run again by
// TestMalformedConfigurationDoesNotCrashTheNode, do the crash-prone part.
const garbageConfigurationEnv = "RAFTSTORE_GARBAGE_CONFIGURATION"

// hashicorp/raft decodes a configuration entry's data, and an
// InstallSnapshot's configuration, with DecodeConfiguration, which panics
// on bytes that are not one: a single malformed message from the network
// would take the whole node down (and a stored configuration entry would
// do it again at every start). The transport refuses them instead.
func TestMalformedConfigurationDoesNotCrashTheNode(t *testing.T) {
	if mode := os.Getenv(garbageConfigurationEnv); mode != "" {
		sendGarbageConfiguration(t, mode)
		return
	}
	for _, mode := range []string{"append", "snapshot"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMalformedConfigurationDoesNotCrashTheNode$", "-test.count=1")
		cmd.Env = append(os.Environ(), garbageConfigurationEnv+"="+mode)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: a malformed configuration crashed the node: %v\n%s", mode, err, lastLines(out, 15))
		}
	}
}

func lastLines(b []byte, n int) string {
	lines := 0
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			if lines++; lines > n {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}

func sendGarbageConfiguration(t *testing.T, mode string) {
	n := newTNode(t, "n1", nil)
	g := n.start(t, 1, []raft.Server{{Suffrage: raft.Voter, ID: n.id, Address: n.addr}}, testTiming)
	waitLeader(t, g.Raft())
	c := rawClient(t, n.addr)
	h := headerToProto(header("n9", "127.0.0.1:1"))
	term := g.Raft().CurrentTerm() + 10
	last := g.Raft().LastIndex()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	garbage := []byte{0xc1, 0xff, 0x00, 0x13}
	switch mode {
	case "append":
		var lastTerm uint64
		var l raft.Log
		if err := n.store.LogStore(1).GetLog(last, &l); err == nil {
			lastTerm = l.Term
		}
		_, err := c.AppendEntries(ctx, &pb.RaftAppendEntriesRequest{
			GroupId: 1, Header: h, Term: term, Leader: []byte("127.0.0.1:1"),
			PrevLogEntry: last, PrevLogTerm: lastTerm,
			Entries: []*pb.RaftLog{{Index: last + 1, Term: term, Type: pb.RaftLogType_RAFT_LOG_TYPE_CONFIGURATION, Data: garbage}},
		})
		t.Logf("AppendEntries: %v", err)
	case "snapshot":
		st, err := c.InstallSnapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req := &pb.RaftInstallSnapshotRequest{GroupId: 1, Header: h, SnapshotVersion: int64(raft.SnapshotVersionMax), Term: term,
			Leader: []byte("127.0.0.1:1"), LastLogIndex: last + 100, LastLogTerm: term, Configuration: garbage, ConfigurationIndex: last + 100, Size: 0}
		if err := st.Send(&pb.RaftInstallSnapshotChunk{Msg: &pb.RaftInstallSnapshotChunk_Request{Request: req}}); err != nil {
			t.Fatal(err)
		}
		_, err = st.CloseAndRecv()
		t.Logf("InstallSnapshot: %v", err)
	}
	// Give raft the time to act on it; the node must still be up.
	time.Sleep(500 * time.Millisecond)
	if err := g.Raft().GetConfiguration().Error(); err != nil {
		t.Fatal(err)
	}
}

// With NoPipelines raft is told pipelining is not supported, and falls
// back to one AppendEntries at a time; without, it gets a pipeline.
func TestNoPipelinesRefusesPipelines(t *testing.T) {
	peer := newTNode(t, "b", nil)
	for _, off := range []bool{false, true} {
		tr := NewTransport(TransportConfig{LocalAddr: "127.0.0.1:1", NoPipelines: off})
		p, err := tr.Group(1).AppendEntriesPipeline("b", peer.addr)
		if off && err != raft.ErrPipelineReplicationNotSupported || !off && err != nil {
			t.Errorf("NoPipelines %v: AppendEntriesPipeline = %v, %v", off, p, err)
		}
		if p != nil {
			_ = p.Close()
		}
		_ = tr.Close()
	}
}

// An append's timeout grows with its entries' bytes: a follower catching
// up is sent hundreds of MiB at once, which under the bare timeout timed
// out after the follower stored them and sent raft round a loop of
// snapshots (appendTimeout).
func TestAppendTimeoutGrowsWithTheEntries(t *testing.T) {
	tr := &Transport{timeout: 5 * time.Second}
	entries := func(n, size int) *raft.AppendEntriesRequest {
		req := &raft.AppendEntriesRequest{}
		for range n {
			req.Entries = append(req.Entries, &raft.Log{Data: make([]byte, size)})
		}
		return req
	}
	for _, c := range []struct {
		req  *raft.AppendEntriesRequest
		want time.Duration
	}{
		{entries(0, 0), 5 * time.Second},
		{entries(10, 1<<10), 5 * time.Second},
		{entries(1, 5<<20), 5 * time.Second},
		{entries(90, 5<<20), 5 * time.Second * (1 + 90*5/8)},
	} {
		if got := tr.appendTimeout(c.req); got != c.want {
			t.Errorf("appendTimeout of %d entries = %v, want %v", len(c.req.Entries), got, c.want)
		}
	}
}

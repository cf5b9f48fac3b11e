package raftstore

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
)

// Each side enforces Faults on its own: a client whose Faults cut a peer
// cannot reach it, and a server whose Faults cut a caller refuses it, for
// unary calls, established pipelines, heartbeat streams and snapshots.
func TestFaultsEnforcedBySenderAndReceiver(t *testing.T) {
	for _, side := range []string{"client", "server"} {
		t.Run(side, func(t *testing.T) {
			f := &Faults{}
			var a, b *tnode
			if side == "client" {
				a, b = newTNode(t, "n1", f), newTNode(t, "n2", nil)
			} else {
				a, b = newTNode(t, "n1", nil), newTNode(t, "n2", f)
			}
			serveFake(t, b.tr.Group(1), nil)
			b.tr.Group(1).SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })
			v := a.tr.Group(1)
			vote := func() error {
				var resp raft.RequestVoteResponse
				return v.RequestVote("n2", b.addr, &raft.RequestVoteRequest{RPCHeader: header("n1", a.addr), Term: 1}, &resp)
			}
			beat := func() error {
				var resp raft.AppendEntriesResponse
				return v.AppendEntries("n2", b.addr, &raft.AppendEntriesRequest{RPCHeader: header("n1", a.addr), Term: 1, Leader: []byte(a.addr)}, &resp)
			}
			snapshot := func() error {
				data := bytes.Repeat([]byte("s"), 2*snapshotChunkSize)
				var resp raft.InstallSnapshotResponse
				return v.InstallSnapshot("n2", b.addr, &raft.InstallSnapshotRequest{RPCHeader: header("n1", a.addr), SnapshotVersion: 1, Term: 1, Size: int64(len(data)),
					Configuration: raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: a.addr}}})}, &resp, bytes.NewReader(data))
			}
			p, err := v.AppendEntriesPipeline("n2", b.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			pipelined := func() error {
				fut, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header("n1", a.addr), Term: 1, PrevLogEntry: 1}, &raft.AppendEntriesResponse{})
				if err != nil {
					return err
				}
				<-p.Consumer()
				return fut.Error()
			}
			for name, call := range map[string]func() error{"vote": vote, "heartbeat": beat, "snapshot": snapshot, "pipeline": pipelined} {
				if err := call(); err != nil {
					t.Fatalf("%s before the cut: %v", name, err)
				}
			}

			f.Partition(a.addr, b.addr)
			wantCode(t, "vote across the cut", vote(), codes.Unavailable)
			wantCode(t, "heartbeat across the cut", beat(), codes.Unavailable)
			wantCode(t, "snapshot across the cut", snapshot(), codes.Unavailable)
			if err := pipelined(); err == nil {
				t.Fatal("established pipeline not cut")
			}
			f.Heal()
			for name, call := range map[string]func() error{"vote": vote, "heartbeat": beat, "snapshot": snapshot} {
				if err := call(); err != nil {
					t.Fatalf("%s after Heal: %v", name, err)
				}
			}
			f.Isolate(a.addr)
			wantCode(t, "vote from an isolated node", vote(), codes.Unavailable)
			f.Heal()
			if err := vote(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// voter starts n1, whose transport f applies to, and n2, and returns a
// vote request from n1 to n2 and n2's address.
func voter(t *testing.T, f *Faults) (vote func() error, n2 raft.ServerAddress) {
	a, b := newTNode(t, "n1", f), newTNode(t, "n2", nil)
	serveFake(t, b.tr.Group(1), nil)
	v := a.tr.Group(1)
	return func() error {
		var resp raft.RequestVoteResponse
		return v.RequestVote("n2", b.addr, &raft.RequestVoteRequest{RPCHeader: header("n1", a.addr), Term: 1}, &resp)
	}, b.addr
}

func TestFaultsDropAndDelay(t *testing.T) {
	f := &Faults{}
	vote, _ := voter(t, f)
	f.SetDrop(1)
	wantCode(t, "vote with drop 1", vote(), codes.Unavailable)
	f.SetDrop(0.5)
	failed := 0
	for range 200 {
		if vote() != nil {
			failed++
		}
	}
	if failed < 60 || failed > 140 {
		t.Fatalf("drop 0.5 failed %d of 200 calls", failed)
	}
	f.SetDrop(0)
	f.SetDelay(150 * time.Millisecond)
	start := time.Now()
	if err := vote(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("delayed call took %v", d)
	}
	f.Heal()
	start = time.Now()
	if err := vote(); err != nil || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("after Heal: %v in %v", err, time.Since(start))
	}
	// A nil *Faults injects nothing.
	var none *Faults
	if err := none.send(t.Context(), "a", "b"); err != nil {
		t.Fatal(err)
	}
}

// Freeze holds a call to the frozen node, neither failing it nor letting
// it through, until Heal; a call whose context ends first fails with it.
func TestFaultsFreeze(t *testing.T) {
	f := &Faults{}
	vote, n2 := voter(t, f)
	if err := vote(); err != nil {
		t.Fatal(err)
	}
	f.Freeze(n2)
	done := make(chan error, 1)
	go func() { done <- vote() }()
	select {
	case err := <-done:
		t.Fatalf("a call to a frozen node returned: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	wantCode(t, "a frozen call whose context ends", f.send(ctx, "n1", n2), codes.DeadlineExceeded)
	f.Heal()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the held call after Heal: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the held call did not go through after Heal")
	}
}

// IsolateAfterTimeoutNow: the target's own calls are cut at once, the
// calls it answers are not, and once it has accepted a TimeoutNow it is
// cut off from everyone.
func TestFaultsIsolateAfterTimeoutNow(t *testing.T) {
	f := &Faults{}
	a, b := newTNode(t, "n1", f), newTNode(t, "n2", f)
	serveFake(t, a.tr.Group(1), nil)
	serveFake(t, b.tr.Group(1), nil)
	vote := func(from, to *tnode, id raft.ServerID) error {
		var resp raft.RequestVoteResponse
		return from.tr.Group(1).RequestVote(id, to.addr, &raft.RequestVoteRequest{RPCHeader: header(string(from.addr), from.addr), Term: 1}, &resp)
	}
	f.IsolateAfterTimeoutNow(b.addr)
	if err := vote(b, a, "n1"); err == nil {
		t.Fatal("the target's own call went through before it accepted a TimeoutNow")
	}
	if err := vote(a, b, "n2"); err != nil {
		t.Fatalf("a call to the target before it accepted a TimeoutNow: %v", err)
	}
	var resp raft.TimeoutNowResponse
	if err := a.tr.Group(1).TimeoutNow("n2", b.addr, &raft.TimeoutNowRequest{RPCHeader: header("n1", a.addr)}, &resp); err != nil {
		t.Fatalf("TimeoutNow to the target: %v", err)
	}
	if err := vote(a, b, "n2"); err == nil {
		t.Fatal("a call to the target went through after it accepted a TimeoutNow")
	}
	f.Heal()
	if err := vote(b, a, "n1"); err != nil {
		t.Fatalf("after Heal: %v", err)
	}
}

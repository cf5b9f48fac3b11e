package raftstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	pb "github.com/roostdb/roost/proto"
)

// fullAppend is an AppendEntriesRequest with every field set.
func fullAppend(addr raft.ServerAddress, first uint64, n int) *raft.AppendEntriesRequest {
	a := &raft.AppendEntriesRequest{
		RPCHeader:         header("n1", addr),
		Term:              7,
		Leader:            []byte(addr),
		PrevLogEntry:      first - 1,
		PrevLogTerm:       6,
		LeaderCommitIndex: first - 2,
	}
	types := []raft.LogType{raft.LogCommand, raft.LogNoop, raft.LogAddPeerDeprecated, raft.LogRemovePeerDeprecated, raft.LogBarrier, raft.LogConfiguration}
	for i := range n {
		l := &raft.Log{Index: first + uint64(i), Term: 7, Type: types[i%len(types)], Data: []byte{byte(i), 1, 2}}
		if l.Type == raft.LogConfiguration { // the transport refuses one that does not decode
			l.Data = raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprint("n", i)), Address: addr}}})
		}
		if i%2 == 0 { // odd entries keep the zero time and no extensions
			l.Extensions = []byte("ext")
			l.AppendedAt = time.Unix(1700000000, int64(i)*1000+123)
		}
		a.Entries = append(a.Entries, l)
	}
	return a
}

// Every field of every RPC crosses the wire intact, both ways.
func TestTransportRoundTrip(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	client := nodes[0].tr.Group(3)
	hdr := header("n2", nodes[1].addr)
	snapData := make([]byte, 3*snapshotChunkSize+17)
	_, _ = rand.Read(snapData)
	var gotSnap []byte
	fake := serveFake(t, nodes[1].tr.Group(3), func(rpc raft.RPC) {
		switch cmd := rpc.Command.(type) {
		case *raft.AppendEntriesRequest:
			rpc.Respond(&raft.AppendEntriesResponse{RPCHeader: hdr, Term: cmd.Term + 1, LastLog: 42, Success: true, NoRetryBackoff: true}, nil)
		case *raft.RequestVoteRequest:
			rpc.Respond(&raft.RequestVoteResponse{RPCHeader: hdr, Term: 9, Peers: []byte("peers"), Granted: true}, nil)
		case *raft.RequestPreVoteRequest:
			rpc.Respond(&raft.RequestPreVoteResponse{RPCHeader: hdr, Term: 10, Granted: true}, nil)
		case *raft.TimeoutNowRequest:
			rpc.Respond(&raft.TimeoutNowResponse{RPCHeader: hdr}, nil)
		case *raft.InstallSnapshotRequest:
			b, err := io.ReadAll(rpc.Reader)
			gotSnap = b
			rpc.Respond(&raft.InstallSnapshotResponse{RPCHeader: hdr, Term: 11, Success: true}, err)
		}
	})
	target := nodes[1].addr

	ae := fullAppend(nodes[0].addr, 100, 12)
	var aer raft.AppendEntriesResponse
	if err := client.AppendEntries("n2", target, ae, &aer); err != nil {
		t.Fatal(err)
	}
	if want := (raft.AppendEntriesResponse{RPCHeader: hdr, Term: 8, LastLog: 42, Success: true, NoRetryBackoff: true}); !reflect.DeepEqual(aer, want) {
		t.Fatalf("AppendEntries response %+v, want %+v", aer, want)
	}
	rv := &raft.RequestVoteRequest{RPCHeader: header("n1", nodes[0].addr), Term: 5, Candidate: []byte("c"), LastLogIndex: 8, LastLogTerm: 4, LeadershipTransfer: true}
	var rvr raft.RequestVoteResponse
	if err := client.RequestVote("n2", target, rv, &rvr); err != nil {
		t.Fatal(err)
	}
	if want := (raft.RequestVoteResponse{RPCHeader: hdr, Term: 9, Peers: []byte("peers"), Granted: true}); !reflect.DeepEqual(rvr, want) {
		t.Fatalf("RequestVote response %+v", rvr)
	}
	pv := &raft.RequestPreVoteRequest{RPCHeader: header("n1", nodes[0].addr), Term: 6, LastLogIndex: 9, LastLogTerm: 5}
	var pvr raft.RequestPreVoteResponse
	if err := client.(raft.WithPreVote).RequestPreVote("n2", target, pv, &pvr); err != nil {
		t.Fatal(err)
	}
	if want := (raft.RequestPreVoteResponse{RPCHeader: hdr, Term: 10, Granted: true}); !reflect.DeepEqual(pvr, want) {
		t.Fatalf("RequestPreVote response %+v", pvr)
	}
	tn := &raft.TimeoutNowRequest{RPCHeader: header("n1", nodes[0].addr)}
	var tnr raft.TimeoutNowResponse
	if err := client.TimeoutNow("n2", target, tn, &tnr); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tnr, raft.TimeoutNowResponse{RPCHeader: hdr}) {
		t.Fatalf("TimeoutNow response %+v", tnr)
	}
	is := &raft.InstallSnapshotRequest{RPCHeader: header("n1", nodes[0].addr), SnapshotVersion: 1, Term: 7, Leader: []byte("l"), LastLogIndex: 99,
		LastLogTerm: 6, Peers: []byte("p"), Configuration: raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: "a"}}}), ConfigurationIndex: 50, Size: int64(len(snapData))}
	var isr raft.InstallSnapshotResponse
	if err := client.InstallSnapshot("n2", target, is, &isr, bytes.NewReader(snapData)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(isr, raft.InstallSnapshotResponse{RPCHeader: hdr, Term: 11, Success: true}) {
		t.Fatalf("InstallSnapshot response %+v", isr)
	}
	if !bytes.Equal(gotSnap, snapData) {
		t.Fatalf("snapshot: got %d bytes, sent %d", len(gotSnap), len(snapData))
	}

	cmds := fake.commands()
	if len(cmds) != 5 {
		t.Fatalf("server got %d commands", len(cmds))
	}
	gotAE := cmds[0].(*raft.AppendEntriesRequest)
	for i, l := range gotAE.Entries {
		// time.Unix is in the local zone and drops the monotonic clock.
		if !l.AppendedAt.Equal(ae.Entries[i].AppendedAt) {
			t.Fatalf("entry %d AppendedAt %v, sent %v", i, l.AppendedAt, ae.Entries[i].AppendedAt)
		}
		l.AppendedAt = ae.Entries[i].AppendedAt
	}
	for i, want := range []any{ae, rv, pv, tn} {
		if !reflect.DeepEqual(cmds[i], want) {
			t.Fatalf("command %d:\n got %#v\nwant %#v", i, cmds[i], want)
		}
	}
	gotIS := *cmds[4].(*raft.InstallSnapshotRequest)
	if !reflect.DeepEqual(&gotIS, is) {
		t.Fatalf("InstallSnapshot request %+v", gotIS)
	}

	// An error raft returns comes back to the caller with its message.
	errView := nodes[1].tr.Group(4)
	serveFake(t, errView, func(rpc raft.RPC) { rpc.Respond(nil, errors.New("log store exploded")) })
	err := nodes[0].tr.Group(4).RequestVote("n2", target, rv, &rvr)
	wantCode(t, "RequestVote answered with an error", err, codes.Unknown)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("log store exploded")) {
		t.Fatalf("error %v lacks raft's message", err)
	}
}

// Heartbeats take the fast path when raft set one; other appends do not.
func TestTransportHeartbeatFastPath(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	v := nodes[1].tr.Group(1)
	fake := serveFake(t, v, nil)
	var beats sync.Map
	v.SetHeartbeatHandler(func(rpc raft.RPC) {
		beats.Store(rpc.Command, true)
		rpc.Respond(&raft.AppendEntriesResponse{Term: 77, Success: true}, nil)
	})
	client := nodes[0].tr.Group(1)
	hb := &raft.AppendEntriesRequest{RPCHeader: header("n1", nodes[0].addr), Term: 77, Leader: []byte(nodes[0].addr)}
	var resp raft.AppendEntriesResponse
	if err := client.AppendEntries("n2", nodes[1].addr, hb, &resp); err != nil || resp.Term != 77 {
		t.Fatalf("heartbeat: %v %+v", err, resp)
	}
	if len(fake.commands()) != 0 {
		t.Fatal("heartbeat went to the consumer")
	}
	// A heartbeat as a unary call (raft's own sends them on a stream).
	c := rawClient(t, nodes[1].addr)
	out, err := c.AppendEntries(context.Background(), appendEntriesRequestToProto(1, hb))
	if err != nil || out.Term != 77 {
		t.Fatalf("unary heartbeat: %v %v", err, out)
	}
	if len(fake.commands()) != 0 {
		t.Fatal("unary heartbeat went to the consumer")
	}
	if err := client.AppendEntries("n2", nodes[1].addr, fullAppend(nodes[0].addr, 5, 1), &resp); err != nil || resp.Term == 77 {
		t.Fatalf("append: %v %+v", err, resp)
	}
	if len(fake.commands()) != 1 {
		t.Fatal("append did not go to the consumer")
	}
	n := 0
	beats.Range(func(any, any) bool { n++; return true })
	if n != 2 {
		t.Fatalf("heartbeat handler ran %d times", n)
	}
	if got := v.(*groupTransport).received.Load(); got != 3 {
		t.Fatalf("received = %d", got)
	}
}

// The pipeline: futures come out in order with their own responses,
// sends block at the in-flight limit, a partition cuts an established
// stream, and Close ends it.
func TestTransportPipeline(t *testing.T) {
	faults := &Faults{}
	nodes := newCluster(t, 2, faults)
	release := make(chan struct{}, 1000)
	var held sync.WaitGroup
	serveFake(t, nodes[1].tr.Group(2), func(rpc raft.RPC) {
		cmd := rpc.Command.(*raft.AppendEntriesRequest)
		held.Add(1)
		go func() { // answer asynchronously, as raft may
			defer held.Done()
			<-release
			rpc.Respond(&raft.AppendEntriesResponse{Term: cmd.Term, LastLog: cmd.PrevLogEntry, Success: true}, nil)
		}()
	})
	t.Cleanup(func() { close(release); held.Wait() })
	client := nodes[0].tr.Group(2)
	p, err := client.AppendEntriesPipeline("n2", nodes[1].addr)
	if err != nil {
		t.Fatal(err)
	}

	// With responses held back, the pipeline takes pipelineMaxInFlight
	// requests and then blocks the next send.
	sent := make(chan raft.AppendFuture, 100)
	go func() {
		for i := uint64(1); i <= 50; i++ {
			f, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header("n1", nodes[0].addr), Term: 3, PrevLogEntry: i, LeaderCommitIndex: 1}, &raft.AppendEntriesResponse{})
			if err != nil {
				t.Error(err)
				close(sent)
				return
			}
			sent <- f
		}
		close(sent)
	}()
	time.Sleep(200 * time.Millisecond)
	if n := len(sent); n != pipelineMaxInFlight {
		t.Fatalf("%d sends completed with no responses; want %d", n, pipelineMaxInFlight)
	}
	for range 50 {
		release <- struct{}{}
	}
	var want uint64 = 1
	for f := range sent {
		var done raft.AppendFuture
		select {
		case done = <-p.Consumer():
		case <-time.After(5 * time.Second):
			t.Fatalf("no future for request %d", want)
		}
		if done != f || f.Error() != nil || done.Request().PrevLogEntry != want || done.Response().LastLog != want || !done.Response().Success {
			t.Fatalf("future %d: %v %+v (%v)", want, f.Error(), done.Response(), done != f)
		}
		if done.Start().IsZero() {
			t.Fatal("Start is zero")
		}
		want++
	}
	if want != 51 {
		t.Fatalf("got %d futures", want-1)
	}

	// A partition cuts the established stream at the next message.
	faults.Partition(nodes[0].addr, nodes[1].addr)
	_, err = p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header("n1", nodes[0].addr), Term: 3, PrevLogEntry: 60}, &raft.AppendEntriesResponse{})
	wantCode(t, "pipelined append across a partition", err, codes.Unavailable)
	if _, err := client.AppendEntriesPipeline("n2", nodes[1].addr); err == nil {
		t.Fatal("new pipeline across a partition")
	}
	var resp raft.AppendEntriesResponse
	wantCode(t, "append across a partition", client.AppendEntries("n2", nodes[1].addr, fullAppend(nodes[0].addr, 5, 1), &resp), codes.Unavailable)
	_ = p.Close()
	_ = p.Close()

	// After Heal a new pipeline works; Close stops it, and a send on a
	// closed pipeline fails.
	faults.Heal()
	p2, err := client.AppendEntriesPipeline("n2", nodes[1].addr)
	if err != nil {
		t.Fatal(err)
	}
	release <- struct{}{}
	f, err := p2.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header("n1", nodes[0].addr), Term: 3, PrevLogEntry: 70}, &raft.AppendEntriesResponse{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Error(); err != nil || f.Response().LastLog != 70 {
		t.Fatalf("after heal: %v %+v", err, f.Response())
	}
	_ = p2.Close()
	if _, err := p2.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header("n1", nodes[0].addr), Term: 3}, &raft.AppendEntriesResponse{}); err == nil {
		t.Fatal("send on a closed pipeline succeeded")
	}
}

// A pipeline whose stream ended while nothing was in flight (its peer
// restarted) sends the next request on a new stream, instead of failing
// it: raft would resend that entry only at its next append, 30-60 s away
// with QuietTiming. A request in flight when a stream breaks still fails.
func TestPipelineReplacesAStreamThatEndedIdle(t *testing.T) {
	a := newTNode(t, "n1", nil)
	b := newTNode(t, "n2", nil)
	serveFake(t, b.tr.Group(1), func(rpc raft.RPC) {
		cmd := rpc.Command.(*raft.AppendEntriesRequest)
		if cmd.PrevLogEntry == 4 {
			return // held: in flight when the stream breaks
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: cmd.Term, LastLog: cmd.PrevLogEntry, Success: true}, nil)
	})
	rp, err := a.tr.Group(1).AppendEntriesPipeline("n2", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	p := rp.(*pipeline)
	send := func(i uint64) error {
		f, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header("n1", a.addr), Term: 1, PrevLogEntry: i}, &raft.AppendEntriesResponse{})
		if err != nil {
			return err
		}
		select {
		case done := <-p.Consumer():
			if done != f || done.Error() != nil || done.Response().LastLog != i {
				return fmt.Errorf("request %d answered %+v (%v)", i, done.Response(), done.Error())
			}
			return nil
		case <-time.After(5 * time.Second):
			return fmt.Errorf("no answer to request %d", i)
		}
	}
	if err := send(1); err != nil {
		t.Fatal(err)
	}

	// The peer's server restarts on the same address: every stream to it ends.
	restart := func() {
		b.srv.Stop()
		lis, err := net.Listen("tcp", string(b.addr))
		if err != nil {
			t.Fatal(err)
		}
		b.srv = grpc.NewServer(TransportServerOptions()...) // the node's cleanup stops it
		b.tr.Register(b.srv)
		go func() { _ = b.srv.Serve(lis) }()
	}
	restart()
	waitFor(t, 3*time.Second, "the pipeline to see its stream end", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.ended || p.err != nil
	})
	if err := send(2); err != nil {
		t.Fatalf("after the peer restarted: %v", err)
	}
	if err := send(3); err != nil {
		t.Fatal(err)
	}

	// A stream that breaks under a request in flight fails the request
	// and the pipeline: raft resends from the follower's last answer.
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header("n1", a.addr), Term: 1, PrevLogEntry: 4}, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	restart()
	select {
	case done := <-p.Consumer():
		if done.Error() == nil {
			t.Fatalf("a request in flight when the stream broke was answered: %+v", done.Response())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request in flight neither answered nor failed")
	}
	if err := send(5); err == nil {
		t.Fatal("a pipeline whose stream broke under a request still sends")
	}
}

// A pipeline whose responses never come fails after the timeout, and a
// closing view closes its pipelines.
func TestTransportPipelineTimeoutAndViewClose(t *testing.T) {
	a := newTNode(t, "n1", nil)
	b := newTNode(t, "n2", nil)
	a.tr.timeout = 300 * time.Millisecond
	stuck := make(chan raft.RPC, 10)
	serveFake(t, b.tr.Group(1), func(rpc raft.RPC) { stuck <- rpc }) // never answers
	p, err := a.tr.Group(1).AppendEntriesPipeline("n2", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	f, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header("n1", a.addr), Term: 1, PrevLogEntry: 1}, &raft.AppendEntriesResponse{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case done := <-p.Consumer():
		if done != f || !errors.Is(done.Error(), errPipelineTimeout) || done.Response().Success {
			t.Fatalf("future error %v", done.Error())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no timeout")
	}
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header("n1", a.addr), Term: 1}, &raft.AppendEntriesResponse{}); !errors.Is(err, errPipelineTimeout) {
		t.Fatalf("send after timeout: %v", err)
	}
	_ = p.Close()

	v := a.tr.Group(2)
	serveFake(t, b.tr.Group(2), nil)
	p2, err := v.AppendEntriesPipeline("n2", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = v.(raft.WithClose).Close()
	if _, err := p2.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header("n1", a.addr), Term: 1}, &raft.AppendEntriesResponse{}); err == nil {
		t.Fatal("pipeline of a closed view still sends")
	}
	if _, err := v.AppendEntriesPipeline("n2", b.addr); err != raft.ErrTransportShutdown {
		t.Fatalf("pipeline from a closed view: %v", err)
	}
}

// Malformed requests get InvalidArgument, not a panic, and change nothing.
func TestTransportBadRequests(t *testing.T) {
	n := newTNode(t, "n1", nil)
	fake := serveFake(t, n.tr.Group(1), nil)
	c := rawClient(t, n.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := &pb.RaftRPCHeader{ProtocolVersion: 3, Id: []byte("x"), Addr: []byte("y")}

	_, err := c.AppendEntries(ctx, &pb.RaftAppendEntriesRequest{GroupId: 1, Term: 1})
	wantCode(t, "AppendEntries without header", err, codes.InvalidArgument)
	_, err = c.AppendEntries(ctx, &pb.RaftAppendEntriesRequest{GroupId: 1, Header: h, Entries: []*pb.RaftLog{{Index: 1, Type: 6}}})
	wantCode(t, "unknown log type", err, codes.InvalidArgument)
	_, err = c.AppendEntries(ctx, &pb.RaftAppendEntriesRequest{GroupId: 1, Header: h, Entries: []*pb.RaftLog{{Index: 1, Type: -1}}})
	wantCode(t, "negative log type", err, codes.InvalidArgument)
	_, err = c.AppendEntries(ctx, &pb.RaftAppendEntriesRequest{GroupId: 1, Header: &pb.RaftRPCHeader{ProtocolVersion: 99}})
	wantCode(t, "unknown protocol version", err, codes.InvalidArgument)
	_, err = c.RequestVote(ctx, &pb.RaftRequestVoteRequest{GroupId: 1})
	wantCode(t, "RequestVote without header", err, codes.InvalidArgument)
	_, err = c.RequestPreVote(ctx, &pb.RaftRequestPreVoteRequest{GroupId: 1})
	wantCode(t, "RequestPreVote without header", err, codes.InvalidArgument)
	_, err = c.TimeoutNow(ctx, &pb.RaftTimeoutNowRequest{GroupId: 1})
	wantCode(t, "TimeoutNow without header", err, codes.InvalidArgument)

	ps, err := c.AppendEntriesPipeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = ps.Send(&pb.RaftAppendEntriesRequest{GroupId: 1, Header: h, Entries: []*pb.RaftLog{{Type: 100}}})
	_, err = ps.Recv()
	wantCode(t, "pipelined unknown log type", err, codes.InvalidArgument)

	snapshot := func(msgs ...*pb.RaftInstallSnapshotChunk) error {
		s, err := c.InstallSnapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if s.Send(m) != nil {
				break
			}
		}
		_, err = s.CloseAndRecv()
		return err
	}
	data := &pb.RaftInstallSnapshotChunk{Msg: &pb.RaftInstallSnapshotChunk_Data{Data: []byte("abc")}}
	req := func(r *pb.RaftInstallSnapshotRequest) *pb.RaftInstallSnapshotChunk {
		return &pb.RaftInstallSnapshotChunk{Msg: &pb.RaftInstallSnapshotChunk_Request{Request: r}}
	}
	wantCode(t, "snapshot without messages", snapshot(), codes.InvalidArgument)
	wantCode(t, "snapshot starting with data", snapshot(data), codes.InvalidArgument)
	wantCode(t, "snapshot with an empty first message", snapshot(&pb.RaftInstallSnapshotChunk{}), codes.InvalidArgument)
	wantCode(t, "snapshot without header", snapshot(req(&pb.RaftInstallSnapshotRequest{GroupId: 1, Size: 3}), data), codes.InvalidArgument)
	wantCode(t, "snapshot of negative size", snapshot(req(&pb.RaftInstallSnapshotRequest{GroupId: 1, Header: h, Size: -1})), codes.InvalidArgument)
	if got := fake.commands(); len(got) != 0 {
		t.Fatalf("malformed requests reached raft: %d", len(got))
	}

	// A stream that ends short of Size, carries a second request, or runs
	// past Size fails the reader raft consumes; one of Size bytes, however
	// split, does not.
	var readErrs []error
	var mu sync.Mutex
	n2 := newTNode(t, "n2", nil)
	serveFake(t, n2.tr.Group(1), func(rpc raft.RPC) {
		_, err := io.ReadAll(rpc.Reader)
		mu.Lock()
		readErrs = append(readErrs, err)
		mu.Unlock()
		rpc.Respond(&raft.InstallSnapshotResponse{}, err)
	})
	c = rawClient(t, n2.addr) // snapshot() now sends to n2
	wantCode(t, "short snapshot", snapshot(req(&pb.RaftInstallSnapshotRequest{GroupId: 1, Header: h, Size: 10}), data), codes.Unknown)
	wantCode(t, "snapshot with two requests", snapshot(req(&pb.RaftInstallSnapshotRequest{GroupId: 1, Header: h, Size: 10}), data, req(&pb.RaftInstallSnapshotRequest{})), codes.Unknown)
	wantCode(t, "long snapshot", snapshot(req(&pb.RaftInstallSnapshotRequest{GroupId: 1, Header: h, Size: 4}), data, data), codes.Unknown)
	wantCode(t, "snapshot long by a message", snapshot(req(&pb.RaftInstallSnapshotRequest{GroupId: 1, Header: h, Size: 3}), data, data), codes.Unknown)
	empty := &pb.RaftInstallSnapshotChunk{Msg: &pb.RaftInstallSnapshotChunk_Data{}}
	wantCode(t, "snapshot of its size", snapshot(req(&pb.RaftInstallSnapshotRequest{GroupId: 1, Header: h, Size: 6}), data, empty, data, empty), codes.OK)
	wantCode(t, "empty snapshot", snapshot(req(&pb.RaftInstallSnapshotRequest{GroupId: 1, Header: h})), codes.OK)
	mu.Lock()
	defer mu.Unlock()
	if len(readErrs) != 6 || !errors.Is(readErrs[0], io.ErrUnexpectedEOF) || readErrs[1] == nil || readErrs[2] == nil || readErrs[3] == nil || readErrs[4] != nil || readErrs[5] != nil {
		t.Fatalf("reader errors %v", readErrs)
	}
	for _, err := range readErrs[2:4] {
		if !strings.Contains(err.Error(), "more data than the request's size") {
			t.Fatalf("a snapshot longer than its size: %v", err)
		}
	}
}

// An InstallSnapshot whose sender stops sending, or dribbles, while its
// connection stays alive fails raft's read of the snapshot (which holds the
// group's main goroutine) within the transport's bounds, with an error.
func TestTransportSnapshotStalled(t *testing.T) {
	h := &pb.RaftRPCHeader{ProtocolVersion: 3, Id: []byte("x"), Addr: []byte("y")}
	for _, tc := range []struct {
		name  string
		size  int64
		every time.Duration // a byte this often; 0: none after the first
		want  string
	}{
		{"stalled", 1 << 30, 0, "no data for"},
		{"dribbling", 1 << 20, 50 * time.Millisecond, "not all of it arrived in time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTNode(t, "n1", nil, func(c *TransportConfig) { c.Timeout = 100 * time.Millisecond })
			readErr := make(chan error, 1)
			serveFake(t, n.tr.Group(1), func(rpc raft.RPC) {
				_, err := io.Copy(io.Discard, rpc.Reader)
				readErr <- err
				rpc.Respond(nil, err)
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := rawClient(t, n.addr).InstallSnapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			data := &pb.RaftInstallSnapshotChunk{Msg: &pb.RaftInstallSnapshotChunk_Data{Data: []byte("a")}}
			if err := s.Send(&pb.RaftInstallSnapshotChunk{Msg: &pb.RaftInstallSnapshotChunk_Request{Request: &pb.RaftInstallSnapshotRequest{
				GroupId: 1, Header: h, Size: tc.size}}}); err != nil {
				t.Fatal(err)
			}
			_ = s.Send(data)
			if tc.every > 0 {
				go func() {
					for ctx.Err() == nil && s.Send(data) == nil {
						time.Sleep(tc.every)
					}
				}()
			}
			select {
			case err := <-readErr:
				if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("raft's read failed with %v, want DeadlineExceeded: %s", err, tc.want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("raft's read of a stalled snapshot stream is still blocked")
			}
			if _, err := s.CloseAndRecv(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("the sender got %v, want an error saying %s", err, tc.want)
			}
		})
	}
}

// Random bytes on the gRPC port do not hurt the node: it still serves.
func TestTransportGarbageOnPort(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	serveFake(t, nodes[1].tr.Group(1), nil)
	rng := mrand.New(mrand.NewPCG(1, 2))
	preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	for i := range 30 {
		conn, err := net.Dial("tcp", string(nodes[1].addr))
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, 1+rng.IntN(64<<10))
		for j := range junk {
			junk[j] = byte(rng.Uint32())
		}
		if i%2 == 1 { // past the HTTP/2 preface, into the frame parser
			junk = append(append([]byte(nil), preface...), junk...)
		}
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = conn.Write(junk)
		_, _ = io.Copy(io.Discard, conn)
		_ = conn.Close()
	}
	// A well-formed gRPC call whose body is not a valid message.
	cc, err := grpc.NewClient(string(nodes[1].addr), grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for range 20 {
		body := make([]byte, rng.IntN(300))
		for j := range body {
			body[j] = byte(rng.Uint32())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var out rawBytes
		err := cc.Invoke(ctx, pb.RaftTransport_AppendEntries_FullMethodName, rawBytes(body), &out, grpc.ForceCodec(rawCodec{}))
		cancel()
		if err == nil {
			continue // the bytes happened to decode to something harmless
		}
		if c := codesOf(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
			t.Fatalf("garbage message: %v", err)
		}
	}
	var resp raft.RequestVoteResponse
	if err := nodes[0].tr.Group(1).RequestVote("n2", nodes[1].addr, &raft.RequestVoteRequest{RPCHeader: header("n1", nodes[0].addr), Term: 1}, &resp); err != nil || !resp.Granted {
		t.Fatalf("after garbage: %v %+v", err, resp)
	}
}

// FuzzTransportDecode: whatever bytes arrive as a request, decoding and
// converting them never panics.
func FuzzTransportDecode(f *testing.F) {
	seed := appendEntriesRequestToProto(1, fullAppend("127.0.0.1:1", 10, 4))
	b, _ := gproto.Marshal(seed)
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x00, 0x3a, 0x02, 0x18, 0x09})
	f.Fuzz(func(t *testing.T, b []byte) {
		var ae pb.RaftAppendEntriesRequest
		if gproto.Unmarshal(b, &ae) == nil {
			if a, err := appendEntriesRequestFromProto(&ae); err == nil {
				_ = isHeartbeat(a)
				for _, l := range a.Entries {
					if l.Type > raft.LogConfiguration {
						t.Fatalf("accepted log type %d", l.Type)
					}
					if l.Type == raft.LogConfiguration {
						raft.DecodeConfiguration(l.Data) // raft does, and panics on garbage
					}
				}
			}
		}
		var is pb.RaftInstallSnapshotChunk
		if gproto.Unmarshal(b, &is) == nil && is.GetRequest() != nil {
			if r, err := installSnapshotRequestFromProto(is.GetRequest()); err == nil {
				if r.Size < 0 {
					t.Fatal("accepted a negative size")
				}
				if r.SnapshotVersion > 0 {
					raft.DecodeConfiguration(r.Configuration)
				}
			}
		}
	})
}

// rawCodec sends rawBytes as they are, under the proto content type, so
// the server's proto codec has to decode them.
type rawCodec struct{}

type rawBytes []byte

func (rawCodec) Marshal(v any) ([]byte, error) { return []byte(v.(rawBytes)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*rawBytes)) = append(rawBytes(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

func codesOf(err error) codes.Code { return status.Code(err) }

// Heartbeats to a peer ride one long-lived stream shared by every group:
// reused while it works, replaced after a timeout or a cut; a group the
// peer does not run fails alone.
func TestTransportHeartbeatStream(t *testing.T) {
	faults := &Faults{}
	a := newTNode(t, "n1", faults)
	b := newTNode(t, "n2", faults)
	a.tr.timeout = 300 * time.Millisecond
	client := a.tr.Group(1).(*groupTransport)
	hb := &raft.AppendEntriesRequest{RPCHeader: header("n1", a.addr), Term: 4, Leader: []byte(a.addr)}
	beat := func() error {
		var resp raft.AppendEntriesResponse
		err := client.AppendEntries("n2", b.addr, hb, &resp)
		if err == nil && (resp.Term != 4 || !resp.Success) {
			t.Fatalf("heartbeat response %+v", resp)
		}
		return err
	}
	streams := func() uint64 {
		bt, err := a.tr.batcher(b.addr)
		if err != nil {
			t.Fatal(err)
		}
		return bt.streams.Load()
	}

	wantCode(t, "heartbeat to a group b does not run", beat(), codes.NotFound)
	v := b.tr.Group(1)
	answer := func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Term: 4, Success: true}, nil) }
	v.SetHeartbeatHandler(answer)
	for range 20 {
		if err := beat(); err != nil {
			t.Fatal(err)
		}
	}
	if got := streams(); got != 1 {
		t.Fatalf("%d streams for 21 heartbeats, want 1 (a group's NotFound does not end it)", got)
	}
	if got := v.(*groupTransport).received.Load(); got != 20 {
		t.Fatalf("received %d heartbeats", got)
	}

	// No answer: DeadlineExceeded after the timeout, then a fresh stream.
	start := time.Now()
	v.SetHeartbeatHandler(func(raft.RPC) {})
	wantCode(t, "unanswered heartbeat", beat(), codes.DeadlineExceeded)
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("unanswered heartbeat failed after %v", d)
	}
	v.SetHeartbeatHandler(answer)
	if err := beat(); err != nil {
		t.Fatal(err)
	}
	if got := streams(); got != 2 {
		t.Fatalf("%d streams after a timeout, want 2", got)
	}

	// A partition cuts the stream; Heal restores heartbeats.
	faults.Isolate(b.addr)
	wantCode(t, "heartbeat to an isolated node", beat(), codes.Unavailable)
	faults.Heal()
	if err := beat(); err != nil {
		t.Fatal(err)
	}
	// The peer's group closes and starts again.
	_ = v.(raft.WithClose).Close()
	wantCode(t, "heartbeat to a closed group", beat(), codes.NotFound)
	b.tr.Group(1).SetHeartbeatHandler(answer)
	if err := beat(); err != nil {
		t.Fatal(err)
	}
	_ = client.Close()
	if err := beat(); err != raft.ErrTransportShutdown {
		t.Fatalf("heartbeat from a closed view: %v", err)
	}
}

// Heartbeats of many groups sent within the window go in one message; a
// leadership check sends its group's at once, and the ones pending with
// them.
func TestTransportHeartbeatBatching(t *testing.T) {
	a := newTNode(t, "n1", nil)
	b := newTNode(t, "n2", nil)
	const groups = 16
	answer := func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Term: 2, Success: true}, nil) }
	for g := GroupID(1); g <= groups; g++ {
		b.tr.Group(g).SetHeartbeatHandler(answer)
	}
	beat := func(g GroupID) error {
		var resp raft.AppendEntriesResponse
		return a.tr.Group(g).AppendEntries("n2", b.addr, &raft.AppendEntriesRequest{RPCHeader: header("n1", a.addr), Term: 2, Leader: []byte(a.addr)}, &resp)
	}
	beatAll := func() {
		t.Helper()
		errs := make(chan error, groups)
		for g := GroupID(1); g <= groups; g++ {
			go func() { errs <- beat(g) }()
		}
		for range groups {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}

	a.tr.window.Store(int64(200 * time.Millisecond))
	beatAll()
	bt, _ := a.tr.batcher(b.addr)
	if n := bt.batches.Load(); n > 2 {
		t.Fatalf("%d heartbeats in %d batches, want them together", groups, n)
	}

	// With a window far longer than the test, only a leadership check
	// gets a heartbeat through.
	a.tr.window.Store(int64(time.Hour))
	pending := make(chan error, 1)
	go func() { pending <- beat(3) }()
	select {
	case err := <-pending:
		t.Fatalf("a heartbeat did not wait for the window: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	end := a.tr.Group(5).(*groupTransport).beginVerify()
	select {
	case err := <-pending:
		t.Fatalf("another group's check sent group 3's heartbeat: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := beat(5); err != nil { // goes at once, taking group 3's along
		t.Fatal(err)
	}
	end()
	if err := <-pending; err != nil {
		t.Fatal(err)
	}
	go func() { pending <- beat(7) }()
	time.Sleep(50 * time.Millisecond)
	end = a.tr.Group(7).(*groupTransport).beginVerify() // hurries the pending one
	defer end()
	select {
	case err := <-pending:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a leadership check did not hurry its group's pending heartbeat")
	}

	// Closing the transport fails what waits, and stops the batchers.
	go func() { pending <- beat(9) }()
	time.Sleep(50 * time.Millisecond)
	_ = a.tr.Close()
	if err := <-pending; err != raft.ErrTransportShutdown {
		t.Fatalf("pending heartbeat after Close: %v", err)
	}
	if err := beat(9); err != raft.ErrTransportShutdown {
		t.Fatalf("heartbeat after Close: %v", err)
	}
}

// A node that declines leadership (it is about to stop) refuses a
// transfer to it, and the leader keeps its leadership; a transfer to
// another node still works.
func TestDeclinedLeadershipTransfer(t *testing.T) {
	nodes := newCluster(t, 3, nil)
	groups := startAll(t, nodes, 1, testTiming)
	li := leaderIndex(t, groups, -1, 10*time.Second)
	stopping, other := (li+1)%3, (li+2)%3
	nodes[stopping].tr.DeclineLeadership()
	r := groups[li].Raft()
	if err := r.LeadershipTransferToServer(nodes[stopping].id, nodes[stopping].addr).Error(); err == nil {
		t.Fatal("a transfer to a node that declines leadership succeeded")
	}
	if groups[stopping].Raft().State() == raft.Leader {
		t.Fatal("the declining node leads")
	}
	if err := r.LeadershipTransferToServer(nodes[other].id, nodes[other].addr).Error(); err != nil {
		t.Fatalf("transfer to a willing node: %v", err)
	}
	if got := leaderIndex(t, groups, -1, 10*time.Second); got != other {
		t.Fatalf("replica %d leads after the transfer to %d", got, other)
	}
}

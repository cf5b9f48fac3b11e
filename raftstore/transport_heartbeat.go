package raftstore

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/roostdb/roost/proto"
)

// heartbeatStream carries one group's heartbeats to one peer over an
// AppendEntriesPipeline stream of their own. raft sends a heartbeat to
// each follower of each group it leads every HeartbeatTimeout/10, so most
// of an idle node's raft traffic is heartbeats; as messages on a long-lived
// stream they cost about half of what unary calls do (no HTTP/2 stream,
// headers or server goroutine per call). raft's heartbeat loop waits for
// each answer before it sends the next, so the stream carries one at a time.
// They do not share the group's replication pipeline, whose requests wait
// behind the follower's disk writes.
type heartbeatStream struct {
	mu      sync.Mutex // held for a whole exchange
	stream  grpc.BidiStreamingClient[pb.RaftAppendEntriesRequest, pb.RaftAppendEntriesResponse]
	timer   *time.Timer // cancels an exchange that takes longer than the timeout
	expired atomic.Bool

	cmu    sync.Mutex
	cancel context.CancelFunc // of stream
}

// reset cancels the current stream; the next heartbeat opens a new one.
func (h *heartbeatStream) reset() {
	h.cmu.Lock()
	if h.cancel != nil {
		h.cancel()
	}
	h.cmu.Unlock()
}

func (h *heartbeatStream) expire() {
	h.expired.Store(true)
	h.reset()
}

// heartbeat sends a heartbeat AppendEntries to target and waits for the
// answer, for at most the transport's Timeout.
func (v *groupTransport) heartbeat(target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	v.mu.Lock()
	if v.heartbeats == nil {
		v.mu.Unlock()
		return raft.ErrTransportShutdown
	}
	h := v.heartbeats[target]
	if h == nil {
		h = &heartbeatStream{}
		h.timer = time.AfterFunc(time.Hour, h.expire)
		h.timer.Stop()
		v.heartbeats[target] = h
	}
	v.mu.Unlock()

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stream != nil && h.stream.Context().Err() != nil {
		h.stream = nil // reset, or expired after its last answer
	}
	if h.stream == nil {
		c, err := v.t.peer(target)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(v.t.callCtx)
		stream, err := c.AppendEntriesPipeline(ctx)
		if err != nil {
			cancel()
			return err
		}
		h.cmu.Lock()
		h.stream, h.cancel = stream, cancel
		h.cmu.Unlock()
		// A view closing meanwhile has reset the streams it knew of.
		if v.isClosed() {
			cancel()
			return raft.ErrTransportShutdown
		}
	}

	h.expired.Store(false)
	h.timer.Reset(v.t.timeout)
	out, err := exchange(h.stream, appendEntriesRequestToProto(v.id, args))
	h.timer.Stop()
	if err != nil {
		h.reset()
		h.stream = nil
		if h.expired.Load() {
			return status.Errorf(codes.DeadlineExceeded, "raftstore: heartbeat to %s: no answer within %v", target, v.t.timeout)
		}
		return err
	}
	appendEntriesResponseFromProto(out, resp)
	return nil
}

// exchange sends req and receives its answer.
func exchange(s grpc.BidiStreamingClient[pb.RaftAppendEntriesRequest, pb.RaftAppendEntriesResponse], req *pb.RaftAppendEntriesRequest) (*pb.RaftAppendEntriesResponse, error) {
	err := s.Send(req)
	if err != nil && err != io.EOF {
		return nil, err
	}
	// io.EOF from Send: the server ended the stream; Recv has its status.
	out, rerr := s.Recv()
	if rerr != nil {
		if rerr == io.EOF {
			rerr = status.Error(codes.Unavailable, "raftstore: heartbeat stream ended")
		}
		return nil, rerr
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, "raftstore: heartbeat stream ended")
	}
	return out, nil
}

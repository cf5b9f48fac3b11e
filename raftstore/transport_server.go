package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/roostdb/roost/proto"
)

// transportServer serves RaftTransport: it routes each request by its
// group_id to that group's view and hands it to raft.
type transportServer struct {
	pb.UnimplementedRaftTransportServer
	t *Transport
}

// group returns the open view of id or a NotFound status, after applying
// Faults to the caller.
func (s *transportServer) group(ctx context.Context, id uint64) (*groupTransport, error) {
	return s.groupFor(callerAddr(ctx), id)
}

// groupFor is group for a request of caller (a stream reads its caller
// from the metadata once: FromIncomingContext copies the metadata).
func (s *transportServer) groupFor(caller raft.ServerAddress, id uint64) (*groupTransport, error) {
	if s.t.faults != nil {
		if err := s.t.faults.cut(caller, s.t.local); err != nil {
			return nil, err
		}
	}
	v := s.t.lookup(GroupID(id))
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "raftstore: group %d is not running on %s", id, s.t.local)
	}
	// Any request to a group running here shows the caller alive (a new
	// leader's first append, say); one to no group shows nothing of it.
	s.t.markHeard(caller)
	return v, nil
}

// callerAddr is the advertised address the caller put in the metadata.
func callerAddr(ctx context.Context) raft.ServerAddress {
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get(fromMetadataKey); len(vals) > 0 {
		return raft.ServerAddress(vals[0])
	}
	return ""
}

func invalid(err error) error { return status.Error(codes.InvalidArgument, "raftstore: "+err.Error()) }

func groupClosed(v *groupTransport) error {
	return status.Errorf(codes.NotFound, "raftstore: group %d is shutting down on %s", v.id, v.t.local)
}

// isHeartbeat is NetworkTransport's test for raft's heartbeat: an
// AppendEntries with a term and a leader but no entries or log position.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	leader := a.Addr
	if len(leader) == 0 {
		leader = a.Leader
	}
	return a.Term != 0 && leader != nil && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 &&
		len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

// dispatch hands cmd to the group's raft and waits for its answer.
// Heartbeats go to the heartbeat handler if raft set one. While ctx is
// live nothing blocks past the group's shutdown; once raft has taken an
// InstallSnapshot (waitCtx false), the wait outlives ctx, since raft reads
// the stream until it responds.
func (v *groupTransport) dispatch(ctx context.Context, cmd any, reader io.Reader, heartbeat, waitCtx bool) (any, error) {
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: cmd, Reader: reader, RespChan: respCh}
	v.received.Add(1)
	handled := false
	if heartbeat {
		if fn := v.heartbeatFn.Load(); fn != nil {
			(*fn)(rpc)
			handled = true
		}
	}
	if !handled {
		select {
		case v.consumeCh <- rpc:
		case <-v.shutdownCh:
			return nil, groupClosed(v)
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	var done <-chan struct{}
	if waitCtx {
		done = ctx.Done()
	}
	select {
	case r := <-respCh:
		if r.Error != nil {
			return nil, status.Error(codes.Unknown, r.Error.Error())
		}
		return r.Response, nil
	case <-v.shutdownCh:
		return nil, groupClosed(v)
	case <-done:
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func wrongResponse(got any) error {
	return status.Errorf(codes.Internal, "raftstore: raft answered with %T", got)
}

func (s *transportServer) AppendEntries(ctx context.Context, req *pb.RaftAppendEntriesRequest) (*pb.RaftAppendEntriesResponse, error) {
	return s.appendEntries(ctx, callerAddr(ctx), req, false)
}

// appendEntries hands one AppendEntries to its group's raft, heartbeats
// by the fast path; heartbeatOnly refuses anything else.
func (s *transportServer) appendEntries(ctx context.Context, caller raft.ServerAddress, req *pb.RaftAppendEntriesRequest, heartbeatOnly bool) (*pb.RaftAppendEntriesResponse, error) {
	v, err := s.groupFor(caller, req.GroupId)
	if err != nil {
		return nil, err
	}
	args, err := appendEntriesRequestFromProto(req)
	if err != nil {
		return nil, invalid(err)
	}
	heartbeat := isHeartbeat(args)
	if heartbeatOnly && !heartbeat {
		return nil, invalid(errors.New("a heartbeat batch carries an AppendEntries that is not a heartbeat"))
	}
	resp, err := answer[*raft.AppendEntriesResponse](v.dispatch(ctx, args, nil, heartbeat, true))
	if err != nil {
		return nil, err
	}
	return appendEntriesResponseToProto(resp), nil
}

// answer is raft's answer to an RPC as the response type R it must have.
func answer[R any](out any, err error) (R, error) {
	var zero R
	if err != nil {
		return zero, err
	}
	resp, ok := out.(R)
	if !ok {
		return zero, wrongResponse(out)
	}
	return resp, nil
}

// AppendEntriesPipeline answers each request before it reads the next, so
// responses are in request order; raft handles a group's appends one at a
// time anyway, and the client has the next request in flight meanwhile.
func (s *transportServer) AppendEntriesPipeline(stream pb.RaftTransport_AppendEntriesPipelineServer) error {
	ctx := stream.Context()
	caller := callerAddr(ctx)
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := s.appendEntries(ctx, caller, req, false)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// maxHeartbeatBatch bounds the heartbeats of one batch: one per group of
// the sending node, and a node runs at most a few thousand groups.
const maxHeartbeatBatch = 1 << 16

// Heartbeats answers each batch of heartbeats, in order, before it reads
// the next. A group's failure (not running here, say) is that group's
// result; the stream goes on. A stream that breaks reports its sender
// lost; so does one that carries no batch (liveness pings, empty batches,
// count) for the transport's SilenceTimeout while this node waits for one,
// unless the sender's other requests showed it alive meanwhile
// (silenceWatch).
func (s *transportServer) Heartbeats(stream pb.RaftTransport_HeartbeatsServer) error {
	ctx := stream.Context()
	peer := callerAddr(ctx)
	if peer == "" {
		// Not a peer's transport, which names itself on every call: its
		// stream must not count as anyone's liveness, nor its end as a
		// peer lost.
		return invalid(errors.New("a heartbeat stream must name its sender (" + fromMetadataKey + " metadata)"))
	}
	l := s.t.peerState(peer)
	l.pinging.Add(1)
	defer l.pinging.Add(-1)
	reportLost := func(why error) { s.t.reportLost(peer, why) }
	var silence *silenceWatch
	if s.t.silence > 0 {
		silence = newSilenceWatch(s.t.silence, &l.heard, func() { reportLost(ErrPeerSilent) })
		defer silence.stop()
	}
	// broke ends the stream with err, reporting the caller lost if its
	// connection or stream broke. Either a Recv or a Send can be the
	// first to see that: a caller that dies while this node answers its
	// batch fails the Send.
	broke := func(err error) error {
		if ctx.Err() != nil {
			s.t.markBroken(peer)
			reportLost(ErrPeerStreamBroke)
		}
		return err
	}
	for {
		batch, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return broke(err)
		}
		heard := s.t.faults == nil || s.t.faults.cut(peer, s.t.local) == nil
		if heard {
			s.t.markHeard(peer)
			if silence != nil {
				// Silence is counted while this node waits for the peer,
				// not while it answers: the peer sends its next batch only
				// once it has this one's answer, so a node slow to answer
				// (a busy machine, a term change's fsync) would otherwise
				// report its peer lost for its own slowness.
				silence.answeringBatch()
			}
		}
		if n := len(batch.Requests); n > maxHeartbeatBatch {
			return invalid(fmt.Errorf("a heartbeat batch of %d requests (at most %d)", n, maxHeartbeatBatch))
		}
		out := &pb.RaftHeartbeatBatchResponse{Results: make([]*pb.RaftHeartbeatResult, len(batch.Requests))}
		for i, req := range batch.Requests {
			resp, err := s.appendEntries(ctx, peer, req, true)
			if err != nil {
				st := status.Convert(err)
				out.Results[i] = &pb.RaftHeartbeatResult{Code: uint32(st.Code()), Message: st.Message()}
				continue
			}
			out.Results[i] = &pb.RaftHeartbeatResult{Response: resp}
		}
		if err := stream.Send(out); err != nil {
			return broke(err)
		}
		if heard {
			// It was there when this node began answering, however long
			// the answer took.
			s.t.markHeard(peer)
			if silence != nil {
				silence.answered()
			}
		}
	}
}

func (s *transportServer) RequestVote(ctx context.Context, req *pb.RaftRequestVoteRequest) (*pb.RaftRequestVoteResponse, error) {
	v, err := s.group(ctx, req.GroupId)
	if err != nil {
		return nil, err
	}
	h, err := requestHeader(req.Header)
	if err != nil {
		return nil, invalid(err)
	}
	resp, err := answer[*raft.RequestVoteResponse](v.dispatch(ctx, &raft.RequestVoteRequest{
		RPCHeader:          h,
		Term:               req.Term,
		Candidate:          req.Candidate,
		LastLogIndex:       req.LastLogIndex,
		LastLogTerm:        req.LastLogTerm,
		LeadershipTransfer: req.LeadershipTransfer,
	}, nil, false, true))
	if err != nil {
		return nil, err
	}
	return &pb.RaftRequestVoteResponse{Header: headerToProto(resp.RPCHeader), Term: resp.Term, Peers: resp.Peers, Granted: resp.Granted}, nil
}

func (s *transportServer) RequestPreVote(ctx context.Context, req *pb.RaftRequestPreVoteRequest) (*pb.RaftRequestPreVoteResponse, error) {
	v, err := s.group(ctx, req.GroupId)
	if err != nil {
		return nil, err
	}
	h, err := requestHeader(req.Header)
	if err != nil {
		return nil, invalid(err)
	}
	resp, err := answer[*raft.RequestPreVoteResponse](v.dispatch(ctx, &raft.RequestPreVoteRequest{
		RPCHeader:    h,
		Term:         req.Term,
		LastLogIndex: req.LastLogIndex,
		LastLogTerm:  req.LastLogTerm,
	}, nil, false, true))
	if err != nil {
		return nil, err
	}
	return &pb.RaftRequestPreVoteResponse{Header: headerToProto(resp.RPCHeader), Term: resp.Term, Granted: resp.Granted}, nil
}

func (s *transportServer) TimeoutNow(ctx context.Context, req *pb.RaftTimeoutNowRequest) (*pb.RaftTimeoutNowResponse, error) {
	if s.t.declining.Load() {
		return nil, status.Errorf(codes.FailedPrecondition, "raftstore: %s declines leadership transfers (it is stopping)", s.t.local)
	}
	v, err := s.group(ctx, req.GroupId)
	if err != nil {
		return nil, err
	}
	h, err := requestHeader(req.Header)
	if err != nil {
		return nil, invalid(err)
	}
	resp, err := answer[*raft.TimeoutNowResponse](v.dispatch(ctx, &raft.TimeoutNowRequest{RPCHeader: h}, nil, false, true))
	if err != nil {
		return nil, err
	}
	return &pb.RaftTimeoutNowResponse{Header: headerToProto(resp.RPCHeader)}, nil
}

func (s *transportServer) InstallSnapshot(stream pb.RaftTransport_InstallSnapshotServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		if err == io.EOF {
			return invalid(errors.New("InstallSnapshot stream without a request"))
		}
		return err
	}
	req := first.GetRequest()
	if req == nil {
		return invalid(errors.New("InstallSnapshot stream must start with the request"))
	}
	v, err := s.group(ctx, req.GroupId)
	if err != nil {
		return err
	}
	args, err := installSnapshotRequestFromProto(req)
	if err != nil {
		return invalid(err)
	}
	// The sender bounds the whole call by snapshotTimeout (transport.go);
	// the receiver bounds its read of the data the same way, and a stream
	// silent for snapshotTimeout(0) fails sooner. Raft reads the snapshot
	// on the group's main goroutine: a sender that stalls, its connection
	// kept alive, would otherwise hold the group still forever.
	r := &snapshotReader{s: s, ctx: ctx, stream: stream, v: v, left: args.Size, stall: s.t.snapshotTimeout(0),
		deadline: time.Now().Add(s.t.snapshotTimeout(args.Size)), stop: make(chan struct{})}
	defer close(r.stop)
	resp, err := answer[*raft.InstallSnapshotResponse](v.dispatch(ctx, args, r, false, false))
	if err != nil {
		return err
	}
	return stream.SendAndClose(&pb.RaftInstallSnapshotResponse{Header: headerToProto(resp.RPCHeader), Term: resp.Term, Success: resp.Success})
}

// snapshotReader is the io.Reader raft's InstallSnapshot handler reads the
// snapshot from: it receives the stream's data messages as it goes.
type snapshotReader struct {
	s      *transportServer
	ctx    context.Context
	stream pb.RaftTransport_InstallSnapshotServer
	v      *groupTransport
	buf    []byte
	err    error
	left   int64 // the bytes of the request's Size not yet read

	// stall and deadline bound the wait for each data message and for all
	// of them; msgs carries what the receiving goroutine got, until stop.
	stall    time.Duration
	deadline time.Time
	msgs     chan received
	stop     chan struct{}
}

type received struct {
	msg *pb.RaftInstallSnapshotChunk
	err error
}

// recv is the stream's next message, or an error once the sender has sent
// nothing for stall or the deadline has passed. The stream is read on a
// goroutine of its own, which ends with the stream (the handler returning
// ends it).
func (r *snapshotReader) recv() (*pb.RaftInstallSnapshotChunk, error) {
	if r.msgs == nil {
		r.msgs = make(chan received, 1)
		go func() {
			for {
				msg, err := r.stream.Recv()
				select {
				case r.msgs <- received{msg, err}:
				case <-r.stop:
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	wait := min(r.stall, max(time.Until(r.deadline), 0))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case m := <-r.msgs:
		return m.msg, m.err
	case <-timer.C:
		what := fmt.Sprintf("no data for %v", r.stall)
		if wait < r.stall {
			what = "not all of it arrived in time"
		}
		return nil, status.Errorf(codes.DeadlineExceeded, "raftstore: InstallSnapshot from %s: %s", callerAddr(r.ctx), what)
	}
}

// Read reads the request's Size bytes of data, then io.EOF once the
// stream has ended there: a sender whose data runs past its Size (or
// short of it) has sent no snapshot raft should install.
func (r *snapshotReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, r.end()
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		msg, err := r.recv()
		switch {
		case err == io.EOF:
			r.err = io.ErrUnexpectedEOF // raft reads exactly Size bytes
		case err != nil:
			r.err = err
		case msg.GetRequest() != nil:
			r.err = errors.New("raftstore: InstallSnapshot: a second request in the stream")
		default:
			r.buf = msg.GetData()
			if r.s.t.faults != nil {
				if err := r.s.t.faults.cut(callerAddr(r.ctx), r.s.t.local); err != nil {
					r.err, r.buf = err, nil
				}
			}
			r.v.snapshotBytes.Add(uint64(len(r.buf)))
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	r.left -= int64(n)
	return n, nil
}

// end is io.EOF if the stream ends after Size bytes of data, else an error.
func (r *snapshotReader) end() error {
	for r.err == nil {
		if len(r.buf) > 0 {
			r.err = errors.New("raftstore: InstallSnapshot: more data than the request's size")
			break
		}
		msg, err := r.recv()
		switch {
		case err != nil:
			r.err = err // io.EOF: the end, where it should be
		case msg.GetRequest() != nil:
			r.err = errors.New("raftstore: InstallSnapshot: a second request in the stream")
		default:
			r.buf = msg.GetData() // an empty message is skipped
		}
	}
	return r.err
}

// silenceWatch reports a heartbeat stream's sender lost (ErrPeerSilent)
// once this node has heard nothing from it for the window while waiting
// for its next batch. Anything the transport hears from the sender counts
// (peerLiveness.heard: a batch, or a request to a group running here, such
// as its leaders' appends), so a report never contradicts PeerAlive: a
// peer whose pings lag behind a busy machine while its appends keep coming
// is not lost. Time spent answering a batch does not count (the sender
// waits for the answer before it sends again): answering stops the watch,
// and answered restarts it.
type silenceWatch struct {
	window time.Duration
	heard  *atomic.Int64 // the sender's peerLiveness.heard
	report func()

	mu        sync.Mutex
	timer     *time.Timer // fires check; nil once stopped for good
	answering bool
}

func newSilenceWatch(window time.Duration, heard *atomic.Int64, report func()) *silenceWatch {
	w := &silenceWatch{window: window, heard: heard, report: report}
	w.mu.Lock() // check may run before AfterFunc has returned
	defer w.mu.Unlock()
	w.timer = time.AfterFunc(window, w.check)
	return w
}

// check runs when the timer fires: it re-arms for what is left of the
// window if the sender was heard meanwhile, and reports it otherwise.
func (w *silenceWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer == nil || w.answering {
		// Stopped, or an answer began after the timer fired: answered
		// re-arms it.
		return
	}
	if left := w.window - time.Since(time.Unix(0, w.heard.Load())); left > 0 {
		w.timer.Reset(left)
		return
	}
	w.report()
}

// answering stops the watch while this node answers a batch.
func (w *silenceWatch) answeringBatch() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.answering = true
	if w.timer != nil {
		w.timer.Stop()
	}
}

// answered restarts the watch for a whole window once a batch is answered.
func (w *silenceWatch) answered() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.answering = false
	if w.timer != nil {
		w.timer.Reset(w.window)
	}
}

// stop ends the watch for good; a check already running reports nothing.
func (w *silenceWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}

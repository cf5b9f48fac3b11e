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

// Heartbeats are most of an idle node's raft traffic: raft sends one to
// each follower of each group it leads every HeartbeatTimeout/10, which for
// 64 groups on three nodes is hundreds to thousands of messages a second,
// each a gRPC message with its syscalls and goroutine wake-ups. So the
// heartbeats of every group to one peer node go together: a
// heartbeatBatcher per peer sends them on one long-lived stream, at most
// one message per TransportConfig.HeartbeatWindow, and the peer answers
// each message's heartbeats all in one message.
//
// Raft's heartbeat loop waits for each answer, so the window delays each
// heartbeat by at most HeartbeatWindow: well inside the leader lease and
// the heartbeat timeout. A heartbeat wakes the batcher only when it would
// otherwise not look in time: at 64 groups, waking a goroutine per
// heartbeat was a good part of an idle node's CPU. A leadership check
// (Group.VerifyLeader) must not wait for the window, since reads wait for
// it: while one runs, the
// group's heartbeats go at once, together with whatever is pending.
// Sending early is always safe; what VerifyLeader needs is that a follower
// answers after the check began, which holds for any heartbeat sent after
// it.
//
// Node liveness. The same stream tells the peer that this node is alive:
// when nothing has gone to it for LivenessInterval, the batcher sends an
// empty batch, and the peer's server calls PeerLost when a stream breaks
// or carries nothing for SilenceTimeout. That is a failure detector per
// pair of nodes rather than per group, so groups can run with long
// heartbeat timeouts (few heartbeats while idle) and still fail over
// quickly: PeerLost tells the node, which forces elections in the groups
// the lost node led (liveness.go). A batcher pings only while its node's
// groups heartbeat or append to the peer (pingFor): a node that follows
// none of our groups has no use for our liveness. When the pings stop, the batcher ends its
// stream cleanly, so that the peer does not report the silence as a loss.

// DefaultHeartbeatWindow is TransportConfig.HeartbeatWindow's default.
const DefaultHeartbeatWindow = 20 * time.Millisecond

// Defaults of TransportConfig.LivenessInterval and SilenceTimeout: a peer
// misses three or four pings before it counts this node as lost.
const (
	DefaultLivenessInterval = 300 * time.Millisecond
	DefaultSilenceTimeout   = 1200 * time.Millisecond
)

// defaultPingFor is how long after its last heartbeat to a peer a batcher
// keeps pinging it (Transport.pingFor; tests shorten it).
const defaultPingFor = time.Minute

// heartbeatCall is one group's heartbeat waiting for its batch's answer.
type heartbeatCall struct {
	group GroupID
	req   *pb.RaftAppendEntriesRequest
	done  chan heartbeatResult // buffered: the batcher never waits on it
}

type heartbeatResult struct {
	resp *pb.RaftAppendEntriesResponse
	err  error
}

// heartbeatBatcher sends the heartbeats of every group of this node to
// one peer. Its goroutine (run) owns the stream; mu guards what callers
// add and when run means to send next.
//
// Batches to the peer go at most one per window (TransportConfig.HeartbeatWindow)
// unless one is urgent: a heartbeat waits for the window's end, and with
// it every other heartbeat that came meanwhile, and a liveness ping is a
// batch that found none. With the window equal to the liveness interval,
// an idle node sends each peer one message per interval, heartbeats and
// pings together.
type heartbeatBatcher struct {
	t      *Transport
	target raft.ServerAddress
	kick   chan struct{} // capacity 1: something changed, look again

	// Counters, for tests: streams opened and batches sent.
	streams, batches atomic.Uint64

	// answered is when (unix nanoseconds) the peer last answered a batch,
	// or when the pings (re)started: PeerReachable.
	answered atomic.Int64
	// reallyAnswered is when the peer last answered a batch, and only that.
	reallyAnswered atomic.Int64

	mu       sync.Mutex
	pending  []*heartbeatCall
	lastCall time.Time // when the newest call came
	lastSent time.Time // when the last batch went
	wakeAt   time.Time // when run looks again on its own; zero: only when kicked
	urgent   bool      // send without waiting for the window
	stopped  bool      // run has returned: fail new calls at once
	resting  bool      // the pings are over (pingFor); the next call restarts them
}

// add queues call; urgent sends it, and all pending, without waiting for
// the window. run is woken only when it would not look in time on its own:
// most heartbeats wake nobody and go with the next batch.
func (b *heartbeatBatcher) add(call *heartbeatCall, urgent bool) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		call.done <- heartbeatResult{err: raft.ErrTransportShutdown}
		return
	}
	b.lastCall = time.Now()
	b.restartLocked()
	b.pending = append(b.pending, call)
	b.urgent = b.urgent || urgent
	kick := urgent || b.wakeAt.IsZero() || b.windowEnd().Before(b.wakeAt)
	b.mu.Unlock()
	if kick {
		b.wake()
	}
}

// keepPinging starts or prolongs the pings, as a heartbeat does.
func (b *heartbeatBatcher) keepPinging() {
	b.mu.Lock()
	b.lastCall = time.Now()
	b.restartLocked()
	kick := b.wakeAt.IsZero() && !b.stopped
	b.mu.Unlock()
	if kick {
		b.wake()
	}
}

// hurry sends the pending heartbeats at once if one is group g's.
func (b *heartbeatBatcher) hurry(g GroupID) {
	b.mu.Lock()
	found := false
	for _, c := range b.pending {
		if c.group == g {
			found = true
			break
		}
	}
	b.urgent = b.urgent || found
	b.mu.Unlock()
	if found {
		b.wake()
	}
}

// restartLocked, under b.mu, starts the answered clock afresh when the
// batcher was resting: a peer that was not pinged has not had a chance to
// answer, which says nothing about whether it can.
func (b *heartbeatBatcher) restartLocked() {
	if b.resting {
		b.resting = false
		b.answered.Store(b.lastCall.UnixNano())
	}
}

// isResting reports whether the pings to the peer are over: its answers,
// or their absence, say nothing then.
func (b *heartbeatBatcher) isResting() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.resting
}

func (b *heartbeatBatcher) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// windowEnd is when, under b.mu, the next batch may go unless urgent.
func (b *heartbeatBatcher) windowEnd() time.Time {
	return b.lastSent.Add(time.Duration(b.t.window.Load()))
}

// next decides, under b.mu, what run does now: send (batch may be empty:
// a ping), or wait; wait < 0 means until kicked.
func (b *heartbeatBatcher) next(now time.Time) (batch []*heartbeatCall, send bool, wait time.Duration) {
	wait = -1
	switch {
	case len(b.pending) > 0:
		wait = b.windowEnd().Sub(now)
		if b.urgent || wait <= 0 {
			batch, b.pending, b.urgent = b.pending, nil, false
			return batch, true, 0
		}
	case b.t.ping > 0 && now.Sub(b.lastCall) < b.t.pingFor:
		wait = b.lastSent.Add(b.t.ping).Sub(now)
		if wait <= 0 {
			return nil, true, 0
		}
	}
	return nil, false, wait
}

// run sends batches until ctx ends, then fails what is still pending. A
// batch is sent when the window since the last one is over and something
// is pending, or at once when urgent, and an empty one (a liveness ping)
// when nothing has been sent for the liveness interval.
func (b *heartbeatBatcher) run(ctx context.Context) {
	var s batchStream
	defer func() {
		s.close()
		b.mu.Lock()
		b.stopped = true
		left := b.pending
		b.pending = nil
		b.mu.Unlock()
		for _, c := range left {
			c.done <- heartbeatResult{err: raft.ErrTransportShutdown}
		}
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		now := time.Now()
		b.mu.Lock()
		batch, send, wait := b.next(now)
		b.wakeAt = time.Time{}
		if !send && wait >= 0 {
			b.wakeAt = now.Add(wait)
		}
		pingsOver := !send && wait < 0 && b.t.ping > 0
		b.resting = pingsOver
		b.mu.Unlock()
		if !send {
			var fire <-chan time.Time
			if wait >= 0 {
				timer.Reset(wait)
				fire = timer.C
			}
			if pingsOver {
				// End the stream cleanly, so that the peer does not take
				// the silence that follows for this node's loss.
				s.finish(b.t.timeout)
			}
			select {
			case <-ctx.Done():
				return
			case <-b.kick:
			case <-fire:
			}
			timer.Stop()
			continue
		}
		b.mu.Lock()
		b.lastSent = now
		b.mu.Unlock()
		out, err := s.exchange(ctx, b, batch)
		if err == nil {
			now := time.Now().UnixNano()
			b.answered.Store(now)
			b.reallyAnswered.Store(now)
		}
		b.deliver(batch, out, err)
	}
}

// deliver hands each call its result: the batch's error, or its own answer.
func (b *heartbeatBatcher) deliver(batch []*heartbeatCall, out *pb.RaftHeartbeatBatchResponse, err error) {
	if err == nil && len(out.Results) != len(batch) {
		err = status.Errorf(codes.Internal, "raftstore: %s answered %d heartbeats with %d results", b.target, len(batch), len(out.Results))
	}
	for i, c := range batch {
		switch {
		case err != nil:
			c.done <- heartbeatResult{err: err}
		case out.Results[i].Code != uint32(codes.OK):
			r := out.Results[i]
			c.done <- heartbeatResult{err: status.Error(codes.Code(r.Code), r.Message)}
		case out.Results[i].Response == nil:
			c.done <- heartbeatResult{err: status.Errorf(codes.Internal, "raftstore: %s sent a heartbeat result without a response", b.target)}
		default:
			c.done <- heartbeatResult{resp: out.Results[i].Response}
		}
	}
}

// batchStream is a batcher's Heartbeats stream, opened on first use and
// after each failure.
type batchStream struct {
	stream grpc.BidiStreamingClient[pb.RaftHeartbeatBatch, pb.RaftHeartbeatBatchResponse]
	cancel context.CancelFunc
	failed bool // an exchange failed since the last that was answered
}

// finish ends an open stream the way a stopping client should: it closes
// its side and waits (at most timeout) for the server to end the stream,
// which the server does without reporting this node lost.
func (s *batchStream) finish(timeout time.Duration) {
	if s.stream == nil {
		return
	}
	if s.stream.CloseSend() == nil {
		t := time.AfterFunc(timeout, s.cancel)
		_, _ = s.stream.Recv() // io.EOF once the server has returned
		t.Stop()
	}
	s.close()
}

func (s *batchStream) close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.stream, s.cancel = nil, nil
}

// exchange sends batch and waits for its answer, for at most the
// transport's Timeout; a failure closes the stream.
func (s *batchStream) exchange(ctx context.Context, b *heartbeatBatcher, batch []*heartbeatCall) (*pb.RaftHeartbeatBatchResponse, error) {
	if s.stream == nil {
		// A peer that is down (restarting) is waited for rather than failed
		// at once: raft backs off after each failed heartbeat, up to half
		// its heartbeat timeout, so failing fast while the connection is
		// re-established would leave a restarted follower without word from
		// its leaders for seconds.
		stream, cancel, err := openStream(b.t, b.target, ctx, "heartbeats", pb.RaftTransportClient.Heartbeats)
		if err != nil {
			// A batcher started while the peer was away fails here, never
			// having had a stream to break; its first answer must publish
			// the commits all the same.
			s.failed = true
			return nil, err
		}
		s.stream, s.cancel = stream, cancel
		b.streams.Add(1)
	}
	b.batches.Add(1)
	reqs := make([]*pb.RaftAppendEntriesRequest, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	var expired atomic.Bool
	cancel := s.cancel
	timer := time.AfterFunc(b.t.timeout, func() {
		expired.Store(true)
		cancel()
	})
	out, err := sendRecv(s.stream, &pb.RaftHeartbeatBatch{Requests: reqs})
	timer.Stop()
	if err != nil {
		s.close()
		s.failed = true
		if expired.Load() {
			return nil, status.Errorf(codes.DeadlineExceeded, "raftstore: heartbeats to %s: no answer within %v", b.target, b.t.timeout)
		}
		return nil, err
	}
	if s.failed {
		// The peer answers again after a stream to it failed: it restarted,
		// or its network came back. Its replicas of the groups led here may
		// lag what was committed meanwhile, and idle groups would tell them
		// only with their next AppendEntries (publishCommitsTo).
		s.failed = false
		go b.t.publishCommitsTo(b.target)
	}
	return out, nil
}

// sendRecv sends req on a stream and receives its answer.
func sendRecv[Req, Resp any](s grpc.BidiStreamingClient[Req, Resp], req *Req) (*Resp, error) {
	err := s.Send(req)
	if err != nil && err != io.EOF {
		return nil, err
	}
	// io.EOF from Send: the server ended the stream; Recv has its status.
	out, rerr := s.Recv()
	if rerr != nil {
		if rerr == io.EOF {
			rerr = status.Error(codes.Unavailable, "raftstore: stream ended by the server")
		}
		return nil, rerr
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, "raftstore: stream ended by the server")
	}
	return out, nil
}

// batcher returns target's heartbeat batcher, starting it on first use.
func (t *Transport) batcher(target raft.ServerAddress) (*heartbeatBatcher, error) {
	t.mu.RLock()
	b, closed := t.batchers[target], t.closed
	t.mu.RUnlock()
	if b != nil {
		return b, nil
	}
	if closed {
		return nil, raft.ErrTransportShutdown
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, raft.ErrTransportShutdown
	}
	if b := t.batchers[target]; b != nil {
		return b, nil
	}
	b = &heartbeatBatcher{t: t, target: target, kick: make(chan struct{}, 1)}
	b.answered.Store(time.Now().UnixNano())
	t.batchers[target] = b
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		b.run(t.runCtx)
	}()
	return b, nil
}

// leads notes that one of this node's groups sends target appends as its
// leader, which needs target to see this node alive: the pings start then,
// not with the group's first heartbeat, which QuietTiming sends seconds
// after an election.
func (t *Transport) leads(target raft.ServerAddress) {
	if t.ping <= 0 {
		return
	}
	if b, err := t.batcher(target); err == nil {
		b.keepPinging()
	}
}

// heartbeat sends a heartbeat AppendEntries to target with the other
// groups' and waits for its answer.
func (v *groupTransport) heartbeat(target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if v.isClosed() {
		return raft.ErrTransportShutdown
	}
	b, err := v.t.batcher(target)
	if err != nil {
		return err
	}
	call := &heartbeatCall{group: v.id, req: appendEntriesRequestToProto(v.id, args), done: make(chan heartbeatResult, 1)}
	b.add(call, v.verifying.Load() > 0)
	select {
	case r := <-call.done:
		if r.err != nil {
			return r.err
		}
		appendEntriesResponseFromProto(r.resp, resp)
		if resp.Term > args.Term {
			v.heardNewerTerm(resp.Term)
		}
		return nil
	case <-v.shutdownCh:
		return raft.ErrTransportShutdown
	case <-v.waiting.Done():
		return raft.ErrTransportShutdown
	}
}

// heardNewerTerm is told that a follower answered this group's leader's
// heartbeat with a newer term than the leader's: it campaigned (a forced
// election that failed, say) and can follow no leader of an older term.
// Raft says the leader must step down then, so that a new election brings
// every voter to one term, but hashicorp/raft's heartbeat loop ignores the
// answer's term; only its replication of entries looks. In an idle group
// nothing is replicated, and that voter stayed a candidate for good,
// without a leader it could follow. A barrier entry makes the leader
// replicate to it, see the newer term and step down; the node's elector
// then forces an election (node/elect.go).
//
// Raft refuses that barrier while the leader transfers its leadership:
// the term is kept (newerTermHeard) for the node, which ends such a
// transfer once the other voters follow another leader
// (node/cluster.go awaitTransfer).
func (v *groupTransport) heardNewerTerm(term uint64) {
	for {
		seen := v.newerTerm.Load()
		if term <= seen || v.newerTerm.CompareAndSwap(seen, term) {
			break
		}
	}
	r := v.raft.Load()
	if r == nil || r.State() != raft.Leader || !v.steppingDown.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer v.steppingDown.Store(false)
		_ = r.Barrier(v.t.timeout).Error() // resolves once committed, or at the step-down or shutdown
	}()
}

// beginVerify marks a leadership check of the group under way until the
// returned func is called: its heartbeats, pending and new, go at once.
func (v *groupTransport) beginVerify() (end func()) {
	v.verifying.Add(1)
	// Lock order: Transport.mu, then heartbeatBatcher.mu (nothing takes
	// them the other way round).
	v.t.mu.RLock()
	for _, b := range v.t.batchers {
		b.hurry(v.id)
	}
	v.t.mu.RUnlock()
	return func() { v.verifying.Add(-1) }
}

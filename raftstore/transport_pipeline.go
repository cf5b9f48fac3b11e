package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	pb "github.com/roostdb/roost/proto"
)

// errPipelineTimeout ends a pipeline whose oldest request got no response
// within the transport's Timeout.
var errPipelineTimeout = errors.New("raftstore: pipelined AppendEntries timed out")

// errStreamEnded: the server ended the stream (its status, if any, is what
// the stream's pending responses fail with).
var errStreamEnded = errors.New("raftstore: stream ended by the peer")

// AppendEntriesPipeline implements raft.Transport: a bidi stream to target
// for this group. Responses come back in request order.
func (v *groupTransport) AppendEntriesPipeline(_ raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if v.isClosed() {
		return nil, raft.ErrTransportShutdown
	}
	if v.t.noPipes {
		return nil, raft.ErrPipelineReplicationNotSupported
	}
	p := &pipeline{
		v:          v,
		target:     target,
		queue:      make(chan *appendFuture, pipelineMaxInFlight),
		doneCh:     make(chan raft.AppendFuture, pipelineMaxInFlight),
		shutdownCh: make(chan struct{}),
		timeout:    v.t.timeout,
	}
	p.timer = time.AfterFunc(time.Hour, func() { p.fail(errPipelineTimeout) })
	p.timer.Stop()
	ps, err := p.open()
	if err != nil {
		return nil, err
	}
	p.cur = ps
	v.mu.Lock()
	if v.pipelines == nil { // the view closed meanwhile
		v.mu.Unlock()
		ps.cancel()
		return nil, raft.ErrTransportShutdown
	}
	v.pipelines[p] = struct{}{}
	v.mu.Unlock()
	go p.receive(ps)
	return p, nil
}

// pipeline implements raft.AppendPipeline over an AppendEntriesPipeline
// stream. AppendEntries counts a request in flight, queues its future and
// sends; receive matches each response with the oldest future and hands it
// to Consumer. The queue's capacity is the back-pressure: a send blocks
// while pipelineMaxInFlight requests await responses.
//
// A stream that ends while nothing is in flight — its peer restarted, say —
// is replaced by a new one at the next send. raft would otherwise give the
// pipeline up at that send and resend the entry only on its next append to
// the peer, which on a group with QuietTiming may be 30–60 s away. A stream
// that fails with requests in flight fails the pipeline: raft then falls
// back to single appends from the follower's last answered index.
type pipeline struct {
	v       *groupTransport
	target  raft.ServerAddress
	timeout time.Duration

	sendMu     sync.Mutex // raft sends from one goroutine; this makes it a rule
	queue      chan *appendFuture
	doneCh     chan raft.AppendFuture
	closeOnce  sync.Once
	shutdownCh chan struct{}

	mu       sync.Mutex
	cur      *pipeStream // changes only under sendMu too
	inFlight int         // requests counted by AppendEntries, not yet matched by receive
	ended    bool        // cur ended with nothing in flight: the next send opens another
	err      error       // why the pipeline failed, once it has
	// timer fails the pipeline when the oldest request in flight has had
	// no response for the timeout: armed when a request is counted into an
	// idle pipeline and at each response that leaves some in flight.
	timer *time.Timer
}

// pipeStream is one stream of a pipeline.
type pipeStream struct {
	stream grpc.BidiStreamingClient[pb.RaftAppendEntriesRequest, pb.RaftAppendEntriesResponse]
	cancel context.CancelFunc
}

// open starts a stream to the pipeline's target, waiting for a connection
// being re-established as other appends do; it ends when the group shuts
// down (groupTransport.waiting).
func (p *pipeline) open() (*pipeStream, error) {
	p.v.t.leads(p.target)
	stream, cancel, err := openStream(p.v.t, p.target, p.v.waiting, "pipeline", pb.RaftTransportClient.AppendEntriesPipeline)
	if err != nil {
		return nil, err
	}
	return &pipeStream{stream: stream, cancel: cancel}, nil
}

// AppendEntries implements raft.AppendPipeline.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	f := &appendFuture{start: time.Now(), args: args, resp: resp, done: make(chan struct{})}
	req := appendEntriesRequestToProto(p.v.id, args)
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	ps, err := p.count()
	if err != nil {
		return nil, err
	}
	// Queue before sending, so that receive expects the response before
	// it can arrive.
	select {
	case p.queue <- f:
	case <-p.shutdownCh:
		return nil, raft.ErrPipelineShutdown
	}
	if err := ps.stream.Send(req); err != nil {
		if err == io.EOF { // gRPC's way of saying the server ended the stream
			err = errStreamEnded
		}
		// The queued future fails in receive, as does every later call.
		p.fail(err)
		return nil, fmt.Errorf("raftstore: pipeline to %s: %w", p.target, p.failure())
	}
	return f, nil
}

// count counts a request in flight on the current stream, first replacing
// a stream that ended with nothing in flight. Checking and counting under
// one lock is what makes the replacement safe: receive either sees the
// request counted and fails it with the stream, or has marked the stream
// ended before, and the request goes on a new one.
func (p *pipeline) count() (*pipeStream, error) {
	for {
		p.mu.Lock()
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			return nil, err
		}
		if !p.ended {
			if p.inFlight == 0 {
				p.timer.Reset(p.timeout)
			}
			p.inFlight++
			ps := p.cur
			p.mu.Unlock()
			return ps, nil
		}
		p.mu.Unlock()
		ps, err := p.open()
		if err != nil {
			p.fail(err)
			return nil, fmt.Errorf("raftstore: pipeline to %s: %w", p.target, err)
		}
		p.mu.Lock()
		if p.err != nil { // closed meanwhile
			p.mu.Unlock()
			ps.cancel()
			continue
		}
		p.cur, p.ended = ps, false
		p.mu.Unlock()
		go p.receive(ps)
	}
}

// Consumer implements raft.AppendPipeline.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.doneCh }

// Close implements raft.AppendPipeline: it cancels the stream; futures not
// yet answered are dropped (raft stops reading Consumer before closing).
func (p *pipeline) Close() error {
	p.closeOnce.Do(func() {
		close(p.shutdownCh)
		p.timer.Stop()
		p.fail(raft.ErrPipelineShutdown)
		p.v.mu.Lock()
		delete(p.v.pipelines, p)
		p.v.mu.Unlock()
	})
	return nil
}

// fail records the first error and cancels the current stream.
func (p *pipeline) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	ps := p.cur
	p.mu.Unlock()
	ps.cancel()
}

func (p *pipeline) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// receive reads ps's responses until it ends.
func (p *pipeline) receive(ps *pipeStream) {
	defer ps.cancel()
	for {
		out, err := ps.stream.Recv()
		p.mu.Lock()
		if p.inFlight == 0 {
			switch {
			case err == nil:
				if p.err == nil {
					p.err = fmt.Errorf("raftstore: pipeline to %s: a response to no request", p.target)
				}
			case p.err == nil:
				p.ended = true
			}
			p.mu.Unlock()
			return
		}
		p.inFlight--
		if p.inFlight > 0 {
			p.timer.Reset(p.timeout)
		} else {
			p.timer.Stop()
		}
		if err != nil && p.err == nil {
			if err == io.EOF {
				err = errStreamEnded
			}
			p.err = err
		}
		p.mu.Unlock()
		var f *appendFuture
		select {
		case f = <-p.queue: // counted, so queued or about to be
		case <-p.shutdownCh:
			return
		}
		if err != nil {
			// A response lost to a timeout or a Close surfaces as the
			// stream's cancellation; report the reason instead.
			f.respond(fmt.Errorf("raftstore: pipeline to %s: %w", p.target, p.failure()))
		} else {
			appendEntriesResponseFromProto(out, f.resp)
			f.respond(nil)
		}
		select {
		case p.doneCh <- f:
		case <-p.shutdownCh:
			return
		}
	}
}

// appendFuture implements raft.AppendFuture.
type appendFuture struct {
	start time.Time
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error
	done  chan struct{}
}

func (f *appendFuture) respond(err error) {
	f.err = err
	close(f.done)
}

// Error blocks until the response (or the pipeline's failure) arrived.
func (f *appendFuture) Error() error {
	<-f.done
	return f.err
}

func (f *appendFuture) Start() time.Time                      { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest   { return f.args }
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }

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
	c, err := v.t.peer(target)
	if err != nil {
		return nil, err
	}
	v.t.leads(target)
	ctx, cancel := context.WithCancel(v.t.callCtx)
	stream, err := c.AppendEntriesPipeline(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	p := &pipeline{
		v:          v,
		target:     target,
		stream:     stream,
		cancel:     cancel,
		queue:      make(chan *appendFuture, pipelineMaxInFlight-1),
		doneCh:     make(chan raft.AppendFuture, pipelineMaxInFlight),
		shutdownCh: make(chan struct{}),
		timeout:    v.t.timeout,
	}
	v.mu.Lock()
	if v.pipelines == nil { // the view closed meanwhile
		v.mu.Unlock()
		cancel()
		return nil, raft.ErrTransportShutdown
	}
	v.pipelines[p] = struct{}{}
	v.mu.Unlock()
	go p.receive()
	return p, nil
}

// pipeline implements raft.AppendPipeline over one AppendEntriesPipeline
// stream. AppendEntries queues a future and sends; receive takes the
// futures in order, matches each with the next response and hands it to
// Consumer. The queue's capacity is the back-pressure: a send blocks while
// pipelineMaxInFlight requests await responses.
type pipeline struct {
	v       *groupTransport
	target  raft.ServerAddress
	stream  grpc.BidiStreamingClient[pb.RaftAppendEntriesRequest, pb.RaftAppendEntriesResponse]
	cancel  context.CancelFunc
	timeout time.Duration

	sendMu     sync.Mutex // raft sends from one goroutine; this makes it a rule
	queue      chan *appendFuture
	doneCh     chan raft.AppendFuture
	closeOnce  sync.Once
	shutdownCh chan struct{}

	errMu sync.Mutex
	err   error // why the stream failed, once it has
}

// AppendEntries implements raft.AppendPipeline.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	f := &appendFuture{start: time.Now(), args: args, resp: resp, done: make(chan struct{})}
	req := appendEntriesRequestToProto(p.v.id, args)
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	if err := p.failure(); err != nil {
		return nil, err
	}
	// Queue before sending, so that receive expects the response before
	// it can arrive.
	select {
	case p.queue <- f:
	case <-p.shutdownCh:
		return nil, raft.ErrPipelineShutdown
	}
	if err := p.stream.Send(req); err != nil {
		if err == io.EOF { // gRPC's way of saying the server ended the stream
			err = errStreamEnded
		}
		// The queued future fails in receive, as does every later call.
		p.fail(err)
		return nil, fmt.Errorf("raftstore: pipeline to %s: %w", p.target, p.failure())
	}
	return f, nil
}

// Consumer implements raft.AppendPipeline.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.doneCh }

// Close implements raft.AppendPipeline: it cancels the stream; futures not
// yet answered are dropped (raft stops reading Consumer before closing).
func (p *pipeline) Close() error {
	p.closeOnce.Do(func() {
		close(p.shutdownCh)
		p.fail(raft.ErrPipelineShutdown)
		p.v.mu.Lock()
		delete(p.v.pipelines, p)
		p.v.mu.Unlock()
	})
	return nil
}

// fail records the first error and cancels the stream.
func (p *pipeline) fail(err error) {
	p.errMu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.errMu.Unlock()
	p.cancel()
}

func (p *pipeline) failure() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}

func (p *pipeline) receive() {
	timer := time.AfterFunc(time.Hour, func() { p.fail(errPipelineTimeout) })
	timer.Stop()
	defer timer.Stop()
	for {
		var f *appendFuture
		select {
		case f = <-p.queue:
		case <-p.shutdownCh:
			return
		}
		timer.Reset(p.timeout)
		out, err := p.stream.Recv()
		timer.Stop()
		if err != nil {
			p.fail(err)
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

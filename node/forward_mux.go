package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	"github.com/roostdb/roost/proto"
)

// A callMux carries the small forwarded requests to one peer over one
// Forward.Calls stream, so a request costs a share of one message each way
// instead of a stream of its own (headers, stream setup and a server
// goroutine per request were about a fifth of a node's CPU when every
// request to an object went through one leader).
//
// One goroutine writes: it takes every call queued since its last send and
// sends them as one batch. One goroutine reads and hands each reply to the
// caller waiting on its tag. The first error on either side fails the mux:
// every call it holds fails, those certainly never sent as routing errors
// (the peer did not see them), the others as of unknown outcome. A failed
// mux takes no more calls; the forwarder opens a new one.
type callMux struct {
	peerID string
	sent   func(calls int) // observes each batch sent; may be nil
	stream grpc.BidiStreamingClient[proto.ForwardCallBatch, proto.ForwardReplyBatch]
	end    context.CancelFunc // ends the stream
	heard  func()             // told of each reply batch; may be nil

	mu        sync.Mutex
	nextTag   uint64
	pending   map[uint64]*muxCall // queued or sent, not answered
	queue     []*muxCall          // not yet given to the writer
	cancelled []uint64            // tags sent whose callers gave up
	err       error               // why the mux failed; nil while it works
	wake      chan struct{}       // 1-buffered: the writer has work
	done      chan struct{}       // closed when the mux failed
}

// muxCall is one request in a callMux. sent and the delivery are guarded
// by the mux's mu; reply is written once.
type muxCall struct {
	tag   uint64
	msg   *proto.ForwardTaggedCall
	sent  bool // given to the stream: the peer may have seen it
	reply chan muxReply
}

type muxReply struct {
	reply *proto.ForwardTaggedReply
	err   error // set instead of reply: see muxFailure
}

// muxFailure is why a call got no reply. sent says whether the peer may
// have seen the request.
type muxFailure struct {
	err  error
	sent bool
}

func (e *muxFailure) Error() string { return e.err.Error() }
func (e *muxFailure) Unwrap() error { return e.err }

// errNoCalls: the peer does not serve Forward.Calls, so it ran nothing sent
// on the stream.
var errNoCalls = errors.New("the peer does not serve Forward.Calls")

// maxMuxBatch bounds the encoded size of one batch: a request or response
// may be up to 64 KiB plus headers, and gRPC refuses messages over 4 MiB.
const maxMuxBatch = 1 << 20

// openCallMux opens a Calls stream on cc. The stream lives until the mux
// fails or close is called, whatever ctx of the caller who opened it.
func openCallMux(cc *grpc.ClientConn, peerID string, sent func(calls int), heard func()) (*callMux, error) {
	ctx, end := context.WithCancel(context.Background())
	stream, err := proto.NewForwardClient(cc).Calls(ctx)
	if err != nil {
		end()
		return nil, err
	}
	m := &callMux{
		peerID: peerID, sent: sent, heard: heard, stream: stream, end: end,
		pending: make(map[uint64]*muxCall),
		wake:    make(chan struct{}, 1), done: make(chan struct{}),
	}
	go m.write()
	go m.read()
	return m, nil
}

// call sends req and waits for its reply, the mux's failure or ctx.
func (m *callMux) call(ctx context.Context, req *proto.ForwardCall) (*proto.ForwardTaggedReply, error) {
	c := &muxCall{reply: make(chan muxReply, 1)}
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return nil, &muxFailure{err: err}
	}
	m.nextTag++
	c.tag = m.nextTag
	c.msg = &proto.ForwardTaggedCall{Tag: c.tag, Call: req}
	m.pending[c.tag] = c
	m.queue = append(m.queue, c)
	m.mu.Unlock()
	m.poke()

	select {
	case r := <-c.reply:
		return r.reply, r.err
	case <-ctx.Done():
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.pending[c.tag]; !ok { // answered or failed meanwhile
		r := <-c.reply
		return r.reply, r.err
	}
	delete(m.pending, c.tag)
	if c.sent {
		m.cancelled = append(m.cancelled, c.tag)
		m.poke()
	} else {
		m.queue = slices.DeleteFunc(m.queue, func(q *muxCall) bool { return q == c })
	}
	return nil, &muxFailure{err: ctx.Err(), sent: c.sent}
}

func (m *callMux) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// write sends what is queued, one batch per turn, until the mux fails.
func (m *callMux) write() {
	err := drainLoop(m.wake, m.done, func() (func() error, bool) {
		batch := m.takeBatch()
		if batch == nil {
			return nil, false
		}
		if m.sent != nil && len(batch.Calls) > 0 {
			m.sent(len(batch.Calls))
		}
		return func() error { return m.stream.Send(batch) }, true
	})
	// io.EOF: the server ended the stream, and read gets the status that
	// says why (Unimplemented, say).
	if err != nil && err != io.EOF {
		m.fail(err)
	}
}

// drainLoop is the loop of a batching writer: at each wake it takes
// batches with next and sends them until next has none, and it returns
// when stop is closed (nil) or a send fails (its error).
//
// Before taking the first batch it yields once, so that the goroutines
// ready to run add theirs first and go in the same message: without it
// nearly every forwarded call went alone (1.07 a message under the
// one-object load), with it about 3.5 calls and 8 replies do, for 15 %
// more throughput (docs/benchmarks.md, session 7). It costs nothing when
// no one else is ready.
func drainLoop(wake, stop <-chan struct{}, next func() (send func() error, ok bool)) error {
	for {
		select {
		case <-wake:
		case <-stop:
			return nil
		}
		runtime.Gosched()
		for {
			send, ok := next()
			if !ok {
				break
			}
			if err := send(); err != nil {
				return err
			}
		}
	}
}

// takeBatch takes queued calls up to maxMuxBatch (at least one) and the
// cancellations, marking the calls sent; nil if there is nothing to send.
func (m *callMux) takeBatch() *proto.ForwardCallBatch {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil || (len(m.queue) == 0 && len(m.cancelled) == 0) {
		return nil
	}
	batch := &proto.ForwardCallBatch{Cancelled: m.cancelled}
	m.cancelled = nil
	var calls []*muxCall
	calls, m.queue = splitBatch(m.queue, func(c *muxCall) int { return gproto.Size(c.msg) })
	for _, c := range calls {
		c.sent = true
		batch.Calls = append(batch.Calls, c.msg)
	}
	return batch
}

// splitBatch returns the longest prefix of items whose sizes add up to at
// most maxMuxBatch (but at least one item), and the rest. The rest reuses
// items' array.
func splitBatch[T any](items []T, size func(T) int) (batch, rest []T) {
	total, n := 0, 0
	for ; n < len(items); n++ {
		s := size(items[n])
		if n > 0 && total+s > maxMuxBatch {
			break
		}
		total += s
	}
	batch = append([]T(nil), items[:n]...)
	return batch, append(items[:0], items[n:]...)
}

// errMuxEnded: the peer ended the Calls stream with status OK, which its
// handler does only when the stream's client half-closes (and a callMux
// never does): gRPC reports it as a bare io.EOF, which said nothing to
// whoever read the call's error.
var errMuxEnded = errors.New("the peer ended the Calls stream without an error, before answering")

// read hands each reply to its caller until the stream fails.
func (m *callMux) read() {
	for {
		b, err := m.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errMuxEnded
			}
			m.fail(err)
			return
		}
		if m.heard != nil {
			m.heard()
		}
		m.mu.Lock()
		for _, r := range b.Replies {
			if c, ok := m.pending[r.Tag]; ok {
				delete(m.pending, r.Tag)
				c.reply <- muxReply{reply: r}
			}
		}
		m.mu.Unlock()
	}
}

// fail ends the mux with err and fails every call it holds.
func (m *callMux) fail(err error) {
	if status.Code(err) == codes.Unimplemented {
		err = errNoCalls
	}
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = err
	for tag, c := range m.pending {
		delete(m.pending, tag)
		// A peer without Calls ran none of them, sent or not.
		c.reply <- muxReply{err: &muxFailure{err: err, sent: c.sent && err != errNoCalls}}
	}
	m.queue = nil
	m.mu.Unlock()
	close(m.done)
	m.end()
}

// failed reports whether the mux takes no more calls.
func (m *callMux) failed() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

func (m *callMux) close() { m.fail(fmt.Errorf("forwarding to node %s stopped", m.peerID)) }

// replyWriter sends the replies of a Calls stream, batching those that are
// ready together. Replies added after stop are dropped: their stream is
// gone.
type replyWriter struct {
	stream proto.Forward_CallsServer
	sent   func(replies int) // observes each batch sent; may be nil
	// settled is told of replies sent (or failed to send) and dropped;
	// may be nil.
	settled func(replies int)

	mu      sync.Mutex
	replies []*proto.ForwardTaggedReply
	stopped bool

	wake   chan struct{} // 1-buffered: replies are waiting
	quit   chan struct{} // closed by stop
	exited chan struct{} // closed when run returns
}

func newReplyWriter(stream proto.Forward_CallsServer, sent, settled func(replies int)) *replyWriter {
	w := &replyWriter{stream: stream, sent: sent, settled: settled, wake: make(chan struct{}, 1), quit: make(chan struct{}), exited: make(chan struct{})}
	go w.run()
	return w
}

func (w *replyWriter) settle(replies int) {
	if w.settled != nil && replies > 0 {
		w.settled(replies)
	}
}

func (w *replyWriter) add(r *proto.ForwardTaggedReply) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		w.settle(1)
		return
	}
	w.replies = append(w.replies, r)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run sends the replies until stop; a failed send ends it (the stream is
// broken, so its Recv fails too and ends the handler).
func (w *replyWriter) run() {
	defer close(w.exited)
	_ = drainLoop(w.wake, w.quit, func() (func() error, bool) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.replies) == 0 {
			return nil, false
		}
		var batch []*proto.ForwardTaggedReply
		batch, w.replies = splitBatch(w.replies, func(r *proto.ForwardTaggedReply) int { return gproto.Size(r) })
		if w.sent != nil {
			w.sent(len(batch))
		}
		return func() error {
			err := w.stream.Send(&proto.ForwardReplyBatch{Replies: batch})
			w.settle(len(batch))
			return err
		}, true
	})
}

// stop ends the writer and waits for it: the stream may not be written to
// once its handler has returned.
func (w *replyWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	close(w.quit)
	<-w.exited
	w.mu.Lock()
	dropped := len(w.replies)
	w.replies = nil
	w.mu.Unlock()
	w.settle(dropped)
}

// parkFor is how long a response body of a Calls reply waits for Collect.
const parkFor = 30 * time.Second

// parkedBodies keeps response bodies that did not fit their Calls reply
// until the caller collects them or parkFor passes.
type parkedBodies struct {
	mu     sync.Mutex
	last   uint64
	bodies map[uint64]parkedBody
}

type parkedBody struct {
	body  io.ReadCloser
	timer *time.Timer
}

// park keeps body and returns its token (never 0).
func (p *parkedBodies) park(body io.ReadCloser) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bodies == nil {
		p.bodies = make(map[uint64]parkedBody)
	}
	p.last++
	token := p.last
	timer := time.AfterFunc(parkFor, func() {
		if b := p.take(token); b != nil {
			b.Close()
		}
	})
	p.bodies[token] = parkedBody{body: body, timer: timer}
	return token
}

// take removes and returns the body kept under token, or nil.
func (p *parkedBodies) take(token uint64) io.ReadCloser {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.bodies[token]
	if !ok {
		return nil
	}
	delete(p.bodies, token)
	b.timer.Stop()
	return b.body
}

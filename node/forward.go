package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/proto"
	"github.com/roostdb/roost/raftstore"
)

// Forwarding carries a request to the node that leads its object's shard
// (proto/forward.proto). Routing errors come back before the object runs,
// so the sender may try another node without running it twice.

// maxHops bounds how often one request is re-routed (DESIGN §5).
const maxHops = 3

// forwardChunk is the size of the body chunks sent in each direction;
// firstChunk that of the first chunk of a body of unknown size.
const (
	forwardChunk = 64 << 10
	firstChunk   = 4 << 10
)

// replayableBody is how much of a request body is kept in memory so the
// request can be re-sent after a routing error; larger bodies stream and
// are not re-sent.
const replayableBody = 1 << 20

// routingError says a request did not run because it reached the wrong
// node (or one not ready); hint names the leader if the node knew it.
type routingError struct {
	notReady bool
	hint     string
	msg      string
}

func (e *routingError) Error() string { return e.msg }

// peer is a node to forward to.
type peer struct {
	id   string
	addr string // gRPC address
}

// forwarder sends requests to other nodes, one gRPC connection per peer.
type forwarder struct {
	dialOpts []grpc.DialOption
	// faults and local, set by tests, put the forwarded requests under the
	// same injected faults as the Raft transport (raftstore.Faults).
	faults *raftstore.Faults
	local  raft.ServerAddress
	// heard, if set, is told of each reply batch a peer's Calls stream
	// brings: the Raft transport counts the peer alive by it
	// (raftstore.Transport.MarkHeard), so that a peer answering calls is
	// not reported lost for a heartbeat stream gone quiet.
	heard func(addr string)
	// unreachable, if set, is told of each stream to a peer that gRPC
	// could not open (reachFailed; raftstore.Transport.MarkUnreachable):
	// a peer whose incoming connections are dropped may still be heard,
	// over the connections it opens, by a node that sends it nothing else.
	// A call that failed on an open stream is not counted: a message lost
	// on a working connection says little of the peer.
	unreachable func(addr string)
	// dialer, set by tests (Node.forwardDialer), opens the connections to
	// peers.
	dialer func(ctx context.Context, addr string) (net.Conn, error)

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// alive holds, per peer address, a context that peerLost cancels (and
	// replaces): the requests in flight to a peer the raft transport
	// reported lost fail at once instead of waiting for gRPC's keepalive
	// (a paused or cut-off peer does not reset its connections).
	alive map[string]peerAlive
	// muxes holds the Calls stream of each peer address that has one;
	// noCalls, until when a peer that answered Calls with Unimplemented (an
	// older roost) is sent Call instead.
	muxes   map[string]*callMux
	noCalls map[string]time.Time
	// opening holds the Calls streams being opened, by peer address, so
	// that concurrent callers wait for one instead of opening one each.
	opening map[string]*muxOpening
	// tunnels holds the WebSocket tunnels open from this node, for
	// goAwayTunnels when it stops.
	tunnels map[*tunnelBody]struct{}
	closed  bool

	metrics *metrics // nil in tests that make a forwarder alone
}

// muxOpening is a Calls stream being opened; m and err are set before
// done is closed.
type muxOpening struct {
	done chan struct{}
	m    *callMux
	err  error
}

type peerAlive struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// errPeerLost is why requests in flight to a lost peer were abandoned.
var errPeerLost = errors.New("the node stopped answering (its heartbeats broke off or went silent)")

// peerContext is the context the requests forwarded to addr now run under.
func (f *forwarder) peerContext(addr string) context.Context {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.alive[addr]
	if !ok {
		a.ctx, a.cancel = context.WithCancel(context.Background())
		f.alive[addr] = a
	}
	return a.ctx
}

// peerLost fails every request in flight to addr. The transport reports a
// loss only when nothing was heard from the peer for its silence limit,
// the replies of its Calls stream included (forwarder.heard), or when its
// heartbeat stream broke.
func (f *forwarder) peerLost(addr string) {
	f.mu.Lock()
	a, ok := f.alive[addr]
	delete(f.alive, addr)
	m := f.muxes[addr]
	delete(f.muxes, addr)
	f.mu.Unlock()
	if ok {
		a.cancel()
	}
	if m != nil {
		m.fail(errPeerLost)
	}
}

// keepaliveDialOption pings a peer while requests are forwarded to it and
// fails them if a ping goes unanswered: a peer cut off or frozen (docker
// pause) would otherwise hold them as long as TCP keeps the connection,
// since only a dead process resets its connections. Every 10 s is as often
// as gRPC lets a client ping.
func keepaliveDialOption() grpc.DialOption {
	return grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second})
}

// forwarderDialOptions are how a node dials the peers it forwards to:
// with the keepalive above, and redialing a lost peer within half a second
// as the Raft transport does, where gRPC's default backoff (up to 120 s)
// failed requests forwarded to a restarted peer long after it was back.
// A dial gives up after peerConnectTimeout.
func forwarderDialOptions(pt *peerTLS) []grpc.DialOption {
	return append(pt.grpcDialOptions(), keepaliveDialOption(), grpc.WithConnectParams(raftstore.PeerConnectParams(peerConnectTimeout)))
}

// raftDialOptions are how the Raft transport dials its peers: with the
// forwarder's keepalive, so that a connection to a peer cut off by a
// partition that drops packets is given up and dialled afresh (gRPC also
// sets TCP_USER_TIMEOUT to the keepalive's 2 s, so unacknowledged data
// drops it sooner), rather than kept until the kernel next resends, at
// intervals that double while nothing gets through. In one QA run a node
// healed after a 26 s partition heard from its leaders only 27 s later; a
// later run did not reproduce that.
func raftDialOptions(pt *peerTLS) []grpc.DialOption {
	return append(pt.grpcDialOptions(), keepaliveDialOption())
}

// peerConnectTimeout bounds a dial of a peer, TCP and TLS handshakes
// included, which between nodes take milliseconds. A request waits for
// the dial of the peer it is forwarded to: with gRPC's default of 20 s, a
// peer behind a partition that drops packets held each request 20 s
// before routing could answer 503 or try elsewhere.
const peerConnectTimeout = 2 * time.Second

// defaultServerKeepalive is how the node's gRPC server watches its
// clients: a connection it has heard nothing on (no frame at all: data,
// ping or ack) for Time is pinged, and closed if the ping is not answered
// within Timeout, which cancels every stream of that peer. The forwarder's
// keepalive (keepaliveDialOption) only lets the entry node give up on a
// silent leader; the leader's side of a forwarded request or WebSocket
// tunnel from a peer cut off or frozen lingered, the object's socket open,
// since a black-holed peer resets nothing: gRPC's default server pings
// after 2 hours, and TCP gives up only on data it sent that goes
// unacknowledged. Now a silent peer's streams end within Time+Timeout,
// 7 s: sooner than the entry node's own keepalive (10 s + 2 s), later than
// the Raft transport's 1.2 s silence timeout (a peer that stalls for a
// moment keeps its tunnels); Timeout is the client's 2 s. A busy
// connection, such as the Raft transport's with its 300 ms liveness pings,
// is never pinged; an idle one is pinged every 5 s, which gRPC clients
// answer without limit (only servers enforce a ping policy; the client
// only logs a GOAWAY too_many_pings). gRPC also sets TCP_USER_TIMEOUT to
// Timeout on each accepted connection (20 s by default), as the
// forwarder's keepalive does on its own.
func defaultServerKeepalive() keepalive.ServerParameters {
	return keepalive.ServerParameters{Time: 5 * time.Second, Timeout: 2 * time.Second}
}

// keepaliveServerOptions are the node's gRPC server's: it pings its
// clients as kp says, and lets them ping as often as the forwarder does
// (gRPC's default answers pings more often than every 5 minutes with
// GOAWAY). A connection that has not finished its TLS and HTTP/2
// handshakes after grpcHandshakeTimeout is closed: a peer's take
// milliseconds, and under gRPC's default of 120 s sixty idle connections,
// reopened every two minutes, held the listener's whole share of the
// open-file limit and kept a restarted peer out (found by QA).
func keepaliveServerOptions(kp keepalive.ServerParameters) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(kp),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second}),
		grpc.ConnectionTimeout(grpcHandshakeTimeout),
	}
}

// grpcHandshakeTimeout bounds a new gRPC connection's handshakes.
const grpcHandshakeTimeout = 5 * time.Second

func newForwarder(opts ...grpc.DialOption) *forwarder {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &forwarder{dialOpts: opts, conns: make(map[string]*grpc.ClientConn), alive: make(map[string]peerAlive),
		muxes: make(map[string]*callMux), noCalls: make(map[string]time.Time), opening: make(map[string]*muxOpening)}
}

func (f *forwarder) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[addr]; ok {
		return c, nil
	}
	if f.closed {
		return nil, errors.New("the forwarder is closed (the node is stopping)")
	}
	opts := append(slices.Clip(f.dialOpts), f.faults.DialOptions(f.local, raft.ServerAddress(addr))...)
	if f.dialer != nil {
		opts = append(opts, grpc.WithContextDialer(f.dialer))
	}
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	f.conns[addr] = c
	return c, nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for addr, c := range f.conns {
		c.Close()
		delete(f.conns, addr)
	}
	for addr, a := range f.alive {
		a.cancel()
		delete(f.alive, addr)
	}
	for addr, m := range f.muxes {
		m.close()
		delete(f.muxes, addr)
	}
}

// noCallsFor is how long a peer that does not serve Calls is sent Call
// instead before it is asked again (it may have been upgraded meanwhile).
const noCallsFor = time.Minute

// mux returns the Calls stream to p, opening one if it has none that works;
// it waits for the opening at most until ctx ends. errNoCalls means p does
// not serve Calls.
func (f *forwarder) mux(ctx context.Context, p peer) (*callMux, error) {
	f.mu.Lock()
	m := f.muxes[p.addr]
	until, old := f.noCalls[p.addr]
	o := f.opening[p.addr]
	switch {
	case m != nil && !m.failed():
		f.mu.Unlock()
		return m, nil
	case old && time.Now().Before(until):
		f.mu.Unlock()
		return nil, errNoCalls
	case f.closed:
		f.mu.Unlock()
		return nil, fmt.Errorf("forwarding to node %s stopped", p.id)
	case o == nil:
		o = &muxOpening{done: make(chan struct{})}
		f.opening[p.addr] = o
		go f.openMux(p, o)
	}
	f.mu.Unlock()
	select {
	case <-o.done:
		return o.m, o.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// openMux opens a Calls stream to p for o. Not under any caller's context:
// the stream serves every caller, and opening it waits while the
// connection to p is being made.
func (f *forwarder) openMux(p peer, o *muxOpening) {
	cc, err := f.conn(p.addr)
	if err == nil {
		var sent func(int)
		if f.metrics != nil {
			sent = func(n int) { f.metrics.callsPerSend.Observe(float64(n)) }
		}
		var heard func()
		if f.heard != nil {
			heard = func() { f.heard(p.addr) }
		}
		o.m, err = openCallMux(cc, p.id, sent, heard)
	}
	f.reachFailed(p, err)
	o.err = err
	f.mu.Lock()
	delete(f.opening, p.addr)
	closed := f.closed
	if o.m != nil && !closed {
		f.muxes[p.addr] = o.m
	}
	f.mu.Unlock()
	if o.m != nil && closed {
		o.m.close()
		o.m, o.err = nil, fmt.Errorf("forwarding to node %s stopped", p.id)
	}
	close(o.done)
}

// peerHasNoCalls notes that p answered Calls with Unimplemented.
func (f *forwarder) peerHasNoCalls(p peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noCalls[p.addr] = time.Now().Add(noCallsFor)
}

// client returns the Forward client of a peer.
func (f *forwarder) client(p peer) (proto.ForwardClient, error) {
	c, err := f.conn(p.addr)
	if err != nil {
		return nil, err
	}
	return proto.NewForwardClient(c), nil
}

// forward sends req to p. A *routingError means the object did not run.
// A request whose body is buffered and small goes as one Call; others
// stream their body over Fetch, as do all to a peer that has no Call (an
// older roost).
func (f *forwarder) forward(ctx context.Context, p peer, class string, id durable.ID, req *http.Request, body *bodyBuffer, hops int) (*http.Response, error) {
	if durable.IsWebSocketUpgrade(req) {
		f.count("tunnel")
		return f.forwardTunnel(ctx, p, forwardHead(class, id, req, hops))
	}
	small := body.rest == nil && len(body.buf) <= forwardChunk
	if small {
		resp, err := f.forwardMuxed(ctx, p, forwardHead(class, id, req, hops), body.buf)
		if !errors.Is(err, errNoCalls) {
			f.count("calls")
			return resp, err
		}
	}
	useCall := small
	resp, err := f.forwardOnce(ctx, p, class, id, req, body, hops, useCall)
	if useCall && errors.Is(err, errNoCall) {
		useCall = false
		resp, err = f.forwardOnce(ctx, p, class, id, req, body, hops, false)
	}
	if useCall {
		f.count("call")
	} else {
		f.count("fetch")
	}
	return resp, err
}

// count adds a forwarded request to the metrics.
func (f *forwarder) count(via string) {
	if f.metrics != nil {
		f.metrics.forwarded.WithLabelValues(via).Inc()
	}
}

func forwardHead(class string, id durable.ID, req *http.Request, hops int) *proto.ForwardHead {
	idb := id.Bytes()
	return &proto.ForwardHead{Class: class, ObjectId: idb[:], ObjectName: []byte(id.Name()), Method: []byte(req.Method), Url: []byte(req.URL.RequestURI()), Headers: toForwardHeaders(req.Header), Hops: uint32(hops)}
}

// forwardMuxed sends a small request over p's Calls stream. errNoCalls
// means p does not serve Calls and ran nothing.
func (f *forwarder) forwardMuxed(ctx context.Context, p peer, head *proto.ForwardHead, body []byte) (*http.Response, error) {
	m, err := f.mux(ctx, p)
	if errors.Is(err, errNoCalls) {
		return nil, err
	}
	if err != nil {
		return nil, &routingError{msg: fmt.Sprintf("forwarding to node %s (%s): %v", p.id, p.addr, err)}
	}
	reply, err := m.call(ctx, &proto.ForwardCall{Head: head, Body: body})
	var mf *muxFailure
	switch {
	case errors.As(err, &mf) && !mf.sent && errors.Is(err, errNoCalls):
		f.peerHasNoCalls(p)
		return nil, errNoCalls
	case errors.As(err, &mf) && !mf.sent:
		// Never seen by the peer (a caller that gave up meanwhile stops
		// at manager.Fetch's check of its context).
		return nil, &routingError{msg: fmt.Sprintf("forwarding to node %s: %v", p.id, err)}
	case err != nil:
		return nil, outcomeUnknown(p, err)
	}
	if reply.Collect == 0 {
		return forwardedResponse(p, reply.Result, nil, func() {})
	}
	ctx, stop, peerCtx := f.watchPeer(ctx, p)
	cl, err := f.client(p)
	var stream grpc.ServerStreamingClient[proto.ForwardFrame]
	if err == nil {
		stream, err = cl.Collect(ctx, &proto.ForwardCollect{Token: reply.Collect})
	}
	if err != nil {
		stop()
		return nil, outcomeUnknown(p, peerLostOr(peerCtx, err))
	}
	return forwardedResponse(p, reply.Result, stream.Recv, stop)
}

// streamStatus is err, a send error of a client-streaming gRPC stream,
// unless it is io.EOF: gRPC's sign that the server ended the stream before
// taking the message, whose reason RecvMsg returns. Without it a refused
// Fetch failed with a bare "EOF". (A stream that does not stream from the
// client, as Call and Collect, never returns io.EOF from a send: its
// failure shows in RecvMsg.)
func streamStatus(stream grpc.ClientStream, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	rerr := stream.RecvMsg(new(proto.ForwardFrame))
	switch {
	case rerr == nil:
		return errors.New("the peer answered a request it had not taken")
	case errors.Is(rerr, io.EOF):
		return errors.New("the peer ended the stream before taking the request")
	}
	return rerr
}

// errNoAnswer: the peer ended a forwarded request's stream with status OK
// before its first frame, which no roost does (it answers every request
// it takes with a result frame): gRPC reports it as a bare io.EOF, which
// said nothing to whoever read the request's error.
var errNoAnswer = errors.New("the peer ended the stream without an error, and without an answer")

// firstFrameErr is err, an error of the first receive of a forwarded
// request's stream, with io.EOF (status OK, no frame) said as errNoAnswer.
func firstFrameErr(err error) error {
	if errors.Is(err, io.EOF) {
		return errNoAnswer
	}
	return err
}

// watchPeer returns ctx, also ended when p is reported lost, the function
// that releases it, and the context of p's liveness it watches.
func (f *forwarder) watchPeer(ctx context.Context, p peer) (context.Context, context.CancelFunc, context.Context) {
	ctx, cancelCtx := context.WithCancel(ctx)
	peerCtx := f.peerContext(p.addr)
	stopWatching := context.AfterFunc(peerCtx, cancelCtx)
	return ctx, func() { stopWatching(); cancelCtx() }, peerCtx
}

// reachFailed tells f.unreachable that a stream to p could not be
// opened, if err says so: gRPC's Unavailable, which it gives when no
// connection to p can be made (a caller's own deadline or cancellation
// says nothing of p).
func (f *forwarder) reachFailed(p peer, err error) {
	if err != nil && f.unreachable != nil && status.Code(err) == codes.Unavailable {
		f.unreachable(p.addr)
	}
}

// peerLostOr is err, or errPeerLost if that is why it happened.
func peerLostOr(peerCtx context.Context, err error) error {
	if peerCtx.Err() != nil {
		return errPeerLost
	}
	return err
}

// outcomeUnknown is the error of a request p may or may not have run.
func outcomeUnknown(p peer, err error) error {
	return &durable.Error{Message: fmt.Sprintf("forwarding to node %s failed; the request may or may not have run: %v", p.id, err), Err: durable.ErrCommitIndeterminate}
}

// forwardedResponse turns a forwarded result into the caller's response.
// A result without its body inline takes the body from recv; done runs
// when the response no longer needs recv.
func forwardedResponse(p peer, res *proto.ForwardResult, recv func() (*proto.ForwardFrame, error), done func()) (*http.Response, error) {
	if res == nil || (!res.BodyComplete && res.Error == nil && recv == nil) {
		done()
		return nil, fmt.Errorf("forwarding to node %s: protocol error: the answer is not a result with a body", p.id)
	}
	if res.Error != nil {
		done()
		return nil, fromForwardError(res.Error)
	}
	if res.Status < 100 || res.Status > 999 {
		// No HTTP status: net/http's WriteHeader panics on it, which the
		// node logged as the worker's panic.
		done()
		return nil, fmt.Errorf("forwarding to node %s: protocol error: the answer has status %d", p.id, res.Status)
	}
	resp := &http.Response{
		Status: fmt.Sprintf("%d %s", res.Status, http.StatusText(int(res.Status))), StatusCode: int(res.Status),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: fromForwardHeaders(res.Headers), ContentLength: -1,
	}
	if res.BodyComplete {
		done()
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(res.Body)), int64(len(res.Body))
		return resp, nil
	}
	resp.Body = receiveBody(recv, done)
	return resp, nil
}

// errNoCall: the peer does not serve Call, so it did not run the request.
var errNoCall = errors.New("the peer does not serve Forward.Call")

func (f *forwarder) forwardOnce(ctx context.Context, p peer, class string, id durable.ID, req *http.Request, body *bodyBuffer, hops int, useCall bool) (*http.Response, error) {
	cc, err := f.conn(p.addr)
	if err != nil {
		return nil, &routingError{msg: fmt.Sprintf("node %s (%s): %v", p.id, p.addr, err)}
	}
	ctx, cancel, peerCtx := f.watchPeer(ctx, p)
	unknown := func(err error) error { return outcomeUnknown(p, peerLostOr(peerCtx, err)) }
	head := forwardHead(class, id, req, hops)

	// Only a stream that never opened is certainly unseen by the peer: from
	// the moment the head may have left, a failure leaves the outcome open,
	// because the peer may have run the request before it died.
	var recv func() (*proto.ForwardFrame, error)
	if useCall {
		// Not the generated client's Call: it opens the stream and sends
		// the message in one, and a failure of the one (the peer never saw
		// the request) must be told from a failure of the other.
		stream, err := cc.NewStream(ctx, &grpc.StreamDesc{StreamName: "Call", ServerStreams: true}, proto.Forward_Call_FullMethodName)
		if err != nil {
			cancel()
			f.reachFailed(p, err)
			return nil, &routingError{msg: fmt.Sprintf("forwarding to node %s: %v", p.id, err)}
		}
		if err := stream.SendMsg(&proto.ForwardCall{Head: head, Body: body.buf}); err != nil {
			cancel()
			return nil, unknown(err)
		}
		_ = stream.CloseSend() // an error here shows up in RecvMsg
		recv = func() (*proto.ForwardFrame, error) {
			fr := new(proto.ForwardFrame)
			return fr, stream.RecvMsg(fr)
		}
	} else {
		stream, err := proto.NewForwardClient(cc).Fetch(ctx)
		if err != nil {
			cancel()
			f.reachFailed(p, err)
			return nil, &routingError{msg: fmt.Sprintf("forwarding to node %s: %v", p.id, err)}
		}
		if err := stream.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Head{Head: head}}); err != nil {
			cancel()
			return nil, unknown(streamStatus(stream, err))
		}
		go func() { _ = sendBody(stream, body.reader()) }() // a failure shows up in Recv
		recv = stream.Recv
	}

	first, err := recv()
	if err != nil {
		cancel()
		if useCall && status.Code(err) == codes.Unimplemented {
			return nil, errNoCall
		}
		return nil, unknown(firstFrameErr(err))
	}
	return forwardedResponse(p, first.GetResult(), recv, cancel)
}

// forwardTunnel sends a WebSocket upgrade request to p over Fetch and, if
// the object accepts, keeps the stream as the socket's byte tunnel: the
// 101 response's Body reads what the object sends and writes what the
// client sends. The tunnel outlives the request that opened it; it ends
// when either side closes it or p is lost.
func (f *forwarder) forwardTunnel(ctx context.Context, p peer, head *proto.ForwardHead) (*http.Response, error) {
	cc, err := f.conn(p.addr)
	if err != nil {
		return nil, &routingError{msg: fmt.Sprintf("node %s (%s): %v", p.id, p.addr, err)}
	}
	tctx, cancel, peerCtx := f.watchPeer(context.WithoutCancel(ctx), p)
	stop := context.AfterFunc(ctx, cancel) // until the answer: the caller may give up
	stream, err := proto.NewForwardClient(cc).Fetch(tctx)
	if err != nil {
		stop()
		cancel()
		return nil, &routingError{msg: fmt.Sprintf("forwarding to node %s: %v", p.id, err)}
	}
	fail := func(err error) (*http.Response, error) {
		stop()
		cancel()
		return nil, outcomeUnknown(p, peerLostOr(peerCtx, err))
	}
	if err := stream.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Head{Head: head}}); err != nil {
		return fail(streamStatus(stream, err))
	}
	first, err := stream.Recv()
	if err != nil {
		return fail(firstFrameErr(err))
	}
	if !stop() {
		cancel()
		return nil, ctx.Err()
	}
	res := first.GetResult()
	if res == nil || res.Error != nil || res.Status != http.StatusSwitchingProtocols {
		_ = stream.CloseSend()
		return forwardedResponse(p, res, stream.Recv, cancel)
	}
	resp := &http.Response{
		Status: "101 Switching Protocols", StatusCode: http.StatusSwitchingProtocols,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: fromForwardHeaders(res.Headers), ContentLength: -1,
	}
	t := &tunnelBody{f: f, stream: stream, cancel: cancel, ended: make(chan struct{})}
	f.mu.Lock()
	if f.tunnels == nil {
		f.tunnels = make(map[*tunnelBody]struct{})
	}
	f.tunnels[t] = struct{}{}
	f.mu.Unlock()
	t.r = receiveBody(stream.Recv, t.received)
	resp.Body = t
	return resp, nil
}

// tunnelGoAwayWait bounds how long a stopping node waits for its tunnels'
// clients to be sent their close frames (goAwayTunnels).
const tunnelGoAwayWait = 2 * time.Second

// goAwayTunnels tells the object's node at the far end of every open
// WebSocket tunnel that this node is stopping: that node closes the socket
// with 1001 (going away) through the tunnel, so the client hears a close
// frame rather than a dropped connection, and ends the stream. It waits for
// the tunnels to end, until ctx ends or tunnelGoAwayWait has passed.
func (f *forwarder) goAwayTunnels(ctx context.Context) {
	f.mu.Lock()
	open := make([]*tunnelBody, 0, len(f.tunnels))
	for t := range f.tunnels {
		open = append(open, t)
	}
	f.mu.Unlock()
	for _, t := range open {
		t.goAway()
	}
	ctx, cancel := context.WithTimeout(ctx, tunnelGoAwayWait)
	defer cancel()
	for _, t := range open {
		select {
		case <-t.ended:
		case <-ctx.Done():
			return
		}
	}
}

// tunnelDrain bounds how long a closed tunnel waits for the peer to take
// what the client sent last and end the stream.
const tunnelDrain = 10 * time.Second

// tunnelBody is the client end of a forwarded WebSocket's byte tunnel.
type tunnelBody struct {
	f      *forwarder
	r      *io.PipeReader
	mu     sync.Mutex // one sender at a time: gRPC's rule for a stream
	stream proto.Forward_FetchClient
	cancel context.CancelFunc
	closed bool
	ending atomic.Bool   // Close ran: the reader is closed, the stream half-closed
	ended  chan struct{} // closed once the stream has ended
}

// received runs when the tunnel's reader ends. After Close, the stream is
// drained until the peer ends it (it does once it has taken everything
// the client sent), and only then cancelled: a cancel resets the stream,
// and what the client sent last, still queued here, never reached the
// object. Close bounds the wait (tunnelDrain).
func (t *tunnelBody) received() {
	if t.ending.Load() {
		for {
			if _, err := t.stream.Recv(); err != nil {
				break
			}
		}
	}
	t.cancel()
	t.f.mu.Lock()
	delete(t.f.tunnels, t)
	t.f.mu.Unlock()
	close(t.ended)
}

// goAway sends the going-away frame (goAwayTunnels) unless the tunnel is
// closed already.
func (t *tunnelBody) goAway() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		_ = t.stream.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_GoingAway{GoingAway: true}})
	}
}

func (t *tunnelBody) Read(p []byte) (int, error) { return t.r.Read(p) }

func (t *tunnelBody) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, io.ErrClosedPipe
	}
	// gRPC has encoded the frame when Send returns: p may be reused.
	if err := t.stream.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Body{Body: p}}); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (t *tunnelBody) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		_ = t.stream.CloseSend()
		t.ending.Store(true)
		t.r.Close()
		// Not cancelled yet: received does once the peer has ended the
		// stream, or this does if it takes too long.
		time.AfterFunc(tunnelDrain, t.cancel)
	}
	return nil
}

func sendBody(stream proto.Forward_FetchClient, r io.Reader) error {
	if r != nil {
		if err := sendChunks(stream.Send, r); err != nil {
			return err
		}
	}
	return stream.CloseSend()
}

// sendChunks sends r as body frames until it ends. Most bodies are small:
// it reads into a small buffer first and takes a forwardChunk one only for
// a body that fills it (a 64 KiB buffer per forwarded request was most of
// the garbage of a node under load). gRPC has encoded a frame when Send
// returns, so the buffer is reused for the next frame.
func sendChunks(send func(*proto.ForwardFrame) error, r io.Reader) error {
	if br, ok := r.(*bytes.Reader); ok && br.Len() <= forwardChunk {
		if br.Len() == 0 {
			return nil
		}
		b := make([]byte, br.Len())
		_, _ = br.Read(b)
		return send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Body{Body: b}})
	}
	buf := make([]byte, firstChunk)
	for {
		n, err := r.Read(buf) // not ReadFull: a streamed body goes on as it comes
		if n > 0 {
			if serr := send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Body{Body: buf[:n]}}); serr != nil {
				return serr
			}
		}
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		case n == len(buf) && len(buf) < forwardChunk:
			buf = make([]byte, forwardChunk)
		}
	}
}

// receiveBody returns a reader of the body frames recv delivers, until the
// stream ends; done runs when it has. A second head or result among them
// fails the body: the sender is broken, and the bytes either side of it
// are not one body. (A frame of a kind added later is skipped.)
func receiveBody(recv func() (*proto.ForwardFrame, error), done func()) *io.PipeReader {
	return receiveTunnel(recv, done, nil)
}

// receiveTunnel is receiveBody for a WebSocket's byte tunnel: a going-away
// frame among its body frames calls goingAway (if not nil) and carries no
// bytes.
func receiveTunnel(recv func() (*proto.ForwardFrame, error), done, goingAway func()) *io.PipeReader {
	pr, pw := io.Pipe()
	go func() {
		defer done()
		for {
			fr, err := recv()
			if err == io.EOF {
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			if fr.GetHead() != nil || fr.GetResult() != nil {
				pw.CloseWithError(errors.New("forwarding protocol error: a head or result frame amid the body"))
				return
			}
			if fr.GetGoingAway() {
				if goingAway != nil {
					goingAway()
				}
				continue
			}
			if _, err := pw.Write(fr.GetBody()); err != nil {
				return
			}
		}
	}()
	return pr
}

// memBody is a request body held whole in memory: reading it cannot stall,
// so an instance need not read it ahead of the turn (instance.fetch).
type memBody struct{ *bytes.Reader }

func (memBody) Close() error { return nil }

// newMemBody is the body of b: http.NoBody if it is empty.
func newMemBody(b []byte) io.ReadCloser {
	if len(b) == 0 {
		return http.NoBody
	}
	return memBody{bytes.NewReader(b)}
}

// bodyBuffer lets a request body be sent more than once if it is small.
type bodyBuffer struct {
	buf        []byte
	rest       io.Reader // the part beyond buf, streamed once; nil if buf is all
	sentStream bool
}

func newBodyBuffer(body io.Reader) (*bodyBuffer, error) {
	if body == nil || body == http.NoBody {
		return &bodyBuffer{}, nil
	}
	buf, err := io.ReadAll(io.LimitReader(body, replayableBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", durable.ErrBadRequestBody, err)
	}
	if len(buf) <= replayableBody {
		return &bodyBuffer{buf: buf}, nil
	}
	return &bodyBuffer{buf: buf, rest: body}, nil
}

// reader returns the body from the start, or nil if it cannot be replayed.
func (b *bodyBuffer) reader() io.Reader {
	if b.rest == nil {
		return bytes.NewReader(b.buf)
	}
	if b.sentStream {
		return nil
	}
	b.sentStream = true
	return io.MultiReader(bytes.NewReader(b.buf), b.rest)
}

// readCloser is reader as a request body: a memBody when buf is all of it.
func (b *bodyBuffer) readCloser() io.ReadCloser {
	if b.rest == nil {
		return newMemBody(b.buf)
	}
	return io.NopCloser(b.reader())
}

// replayable reports whether the body can be sent again.
func (b *bodyBuffer) replayable() bool { return b.rest == nil || !b.sentStream }

// toForwardHeaders and fromForwardHeaders carry headers as bytes: a value
// need not be UTF-8 (forward.proto).
func toForwardHeaders(h http.Header) []*proto.ForwardHeader {
	out := make([]*proto.ForwardHeader, 0, len(h))
	for k, vs := range h {
		values := make([][]byte, len(vs))
		for i, v := range vs {
			values[i] = []byte(v)
		}
		out = append(out, &proto.ForwardHeader{Name: []byte(k), Values: values})
	}
	return out
}

func fromForwardHeaders(hs []*proto.ForwardHeader) http.Header {
	h := make(http.Header, len(hs))
	for _, f := range hs {
		values := make([]string, len(f.Values))
		for i, v := range f.Values {
			values[i] = string(v)
		}
		h[http.CanonicalHeaderKey(string(f.Name))] = values
	}
	return h
}

// toForwardError encodes an error of the local path for the sender.
// errInvalidForward: a forwarded call that no node would send (a bad URL,
// too many hops); answered as INVALID, like a bad ID.
var errInvalidForward = errors.New("invalid forwarded call")

func toForwardError(err error) *proto.ForwardError {
	fe := forwardError(err)
	// An error may quote what a client sent (a name, a URL): proto3's
	// strings must be UTF-8, and one that is not would fail the whole
	// answer's encoding.
	fe.Message = strings.ToValidUTF8(fe.Message, "\uFFFD")
	return fe
}

func forwardError(err error) *proto.ForwardError {
	var re *routingError
	if errors.As(err, &re) {
		kind := proto.ForwardError_NOT_LEADER
		if re.notReady {
			kind = proto.ForwardError_NOT_READY
		}
		return &proto.ForwardError{Kind: kind, Message: re.msg, LeaderHint: re.hint, Retryable: true}
	}
	if errors.Is(err, durable.ErrInvalidID) || errors.Is(err, durable.ErrWrongNamespace) || errors.Is(err, errInvalidForward) {
		return &proto.ForwardError{Kind: proto.ForwardError_INVALID, Message: err.Error()}
	}
	fe := &proto.ForwardError{Kind: proto.ForwardError_EXCEPTION, Message: err.Error(),
		Indeterminate: errors.Is(err, durable.ErrCommitIndeterminate)}
	var de *durable.Error
	if errors.As(err, &de) {
		fe.Retryable, fe.Overloaded = de.Retryable, de.Overloaded
	}
	if errors.Is(err, durable.ErrOverloaded) {
		fe.Overloaded = true
	}
	return fe
}

// fromForwardError decodes a remote error into what the local caller sees.
func fromForwardError(fe *proto.ForwardError) error {
	switch fe.Kind {
	case proto.ForwardError_NOT_LEADER:
		return &routingError{hint: fe.LeaderHint, msg: fe.Message}
	case proto.ForwardError_NOT_READY:
		return &routingError{notReady: true, hint: fe.LeaderHint, msg: fe.Message}
	case proto.ForwardError_INVALID:
		return fmt.Errorf("%w: %s", durable.ErrInvalidID, fe.Message)
	}
	e := &durable.Error{Message: fe.Message, Retryable: fe.Retryable, Overloaded: fe.Overloaded}
	switch {
	case fe.Indeterminate:
		e.Err = durable.ErrCommitIndeterminate
	case fe.Overloaded:
		e.Err = durable.ErrOverloaded
	case fe.Retryable:
		// The only retryable exception that is neither overload nor of
		// unknown outcome is a commit that certainly failed (storageFailure).
		e.Err = durable.ErrCommitFailed
	}
	return e
}

// forwardServer answers other nodes' forwarded requests.
type forwardServer struct {
	proto.UnimplementedForwardServer
	m *manager
	// status reports a shard group's progress on this node (GroupStatus).
	status func(req *proto.ForwardGroupStatusRequest) (*proto.ForwardGroupStatusResponse, error)
	// member says what this node's map has of a node (Member).
	member func(req *proto.ForwardMemberRequest) (*proto.ForwardMemberResponse, error)
	// parked keeps the response bodies of Calls until they are collected.
	parked parkedBodies
	// owed counts the answers other nodes wait for: calls of Calls streams
	// from their start until their reply is sent (or dropped with a broken
	// stream), and Fetch, Call and Collect while they run. A node that
	// stops waits for them (waitAnswered), not for the peers' long-lived
	// streams (heartbeats, AppendEntries pipelines, Calls), which only the
	// peers end.
	owed atomic.Int64
}

// waitAnswered waits until no answer is owed, or for at most bound.
func (s *forwardServer) waitAnswered(bound time.Duration) {
	for deadline := time.Now().Add(bound); s.owed.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *forwardServer) Fetch(stream proto.Forward_FetchServer) error {
	s.owed.Add(1)
	defer s.owed.Add(-1)
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		// Not returned as it is: the sender would read "EOF" as Unknown.
		return status.Error(codes.InvalidArgument, "the forwarded request's stream ended before its head")
	}
	if err != nil {
		return err
	}
	head := first.GetHead()
	if head == nil {
		return status.Error(codes.InvalidArgument, "the first frame of a forwarded request must be its head")
	}
	if durable.IsWebSocketUpgrade(&http.Request{Header: fromForwardHeaders(head.Headers)}) {
		// If the object accepts (101), the stream stays open as the
		// socket's byte tunnel until either side closes.
		in := &tunnelIn{goingAway: make(chan struct{})}
		var once sync.Once
		in.r = receiveTunnel(stream.Recv, func() {}, func() { once.Do(func() { close(in.goingAway) }) })
		defer in.r.CloseWithError(io.ErrClosedPipe)
		return s.serve(stream.Context(), head, http.NoBody, stream.Send, false, in)
	}
	pr := receiveBody(stream.Recv, func() {})
	defer pr.CloseWithError(io.ErrClosedPipe)
	// A body that stalls fails as one on the app listener does (stallGuard,
	// http.go): the object may read it in its turn, which every other
	// request to it waits behind, and a peer that stops sending while its
	// connection stays alive would hold that turn forever.
	var body io.ReadCloser = pr
	if s.m != nil && s.m.cfg.BodyStallTimeout > 0 {
		body = &pipeStallGuard{PipeReader: pr, timeout: s.m.cfg.BodyStallTimeout}
	}
	return s.serve(stream.Context(), head, body, stream.Send, false, nil)
}

// pipeStallGuard fails a Read of a forwarded body that waits longer than
// timeout for the sending peer (Config.BodyStallTimeout).
type pipeStallGuard struct {
	*io.PipeReader
	timeout time.Duration
	stalled atomic.Bool
}

func (g *pipeStallGuard) Read(p []byte) (int, error) {
	timer := time.AfterFunc(g.timeout, func() {
		g.stalled.Store(true)
		g.PipeReader.Close()
	})
	n, err := g.PipeReader.Read(p)
	timer.Stop()
	if err != nil && g.stalled.Load() {
		err = fmt.Errorf("forwarded request body: no byte from the peer for %s: %w", g.timeout, os.ErrDeadlineExceeded)
	}
	return n, err
}

func (s *forwardServer) Call(call *proto.ForwardCall, stream proto.Forward_CallServer) error {
	s.owed.Add(1)
	defer s.owed.Add(-1)
	if call.Head == nil {
		return status.Error(codes.InvalidArgument, "a forwarded call needs a head")
	}
	return s.serve(stream.Context(), call.Head, newMemBody(call.Body), stream.Send, true, nil)
}

// tunnelIn is what the entry node sends up a WebSocket's byte tunnel: the
// client's bytes, and goingAway, closed when the entry node says it is
// stopping.
type tunnelIn struct {
	r         *io.PipeReader
	goingAway chan struct{}
}

// goingAwayer is the object's end of an accepted WebSocket (socketPeer):
// GoingAway closes the socket because the node holding the client's
// connection is stopping.
type goingAwayer interface{ GoingAway() }

// serve runs one forwarded request and sends its answer: a result frame,
// then body frames, or (inline, for Call) a result holding a small body.
// For a WebSocket the object accepted (101), the body is the socket's
// bytes, and what arrives from tunnel (the client's bytes) goes to the
// object's end until the client closes its side.
func (s *forwardServer) serve(ctx context.Context, head *proto.ForwardHead, body io.ReadCloser, send func(*proto.ForwardFrame) error, inline bool, tunnel *tunnelIn) error {
	result, rest, err := s.answer(ctx, head, body, inline)
	if err != nil {
		return err
	}
	if rest != nil {
		defer rest.Close()
	}
	if err := send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Result{Result: result}}); err != nil || rest == nil {
		return err
	}
	if to, ok := rest.(io.Writer); ok && tunnel != nil && result.Status == http.StatusSwitchingProtocols {
		go func() {
			_, _ = io.Copy(to, tunnel.r)
			rest.Close() // the object's end sees the socket end
		}()
		if g, ok := rest.(goingAwayer); ok {
			go func() {
				select {
				case <-tunnel.goingAway:
					g.GoingAway()
				case <-ctx.Done(): // the stream ended
				}
			}()
		}
	}
	return sendChunks(send, rest)
}

// answer runs one forwarded request. The result holds the response's
// status and headers, or the error; and, if inline and the body has a
// known length up to forwardChunk, the body too (body_complete). Otherwise
// rest is the body, for the caller to send and close. An error means the
// response body could not be read.
func (s *forwardServer) answer(ctx context.Context, head *proto.ForwardHead, body io.ReadCloser, inline bool) (result *proto.ForwardResult, rest io.ReadCloser, err error) {
	failed := func(err error) *proto.ForwardResult { return &proto.ForwardResult{Error: toForwardError(err)} }
	class, id, err := s.m.checkForwarded(head)
	if err != nil {
		return failed(err), nil, nil
	}
	uri := string(head.Url)
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return failed(fmt.Errorf("%w: URL %q: %v", errInvalidForward, uri, err)), nil, nil
	}
	req := (&http.Request{
		Method: string(head.Method), URL: u, RequestURI: uri, Header: fromForwardHeaders(head.Headers),
		Body: body, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: u.Host,
	}).WithContext(ctx)
	resp, err := s.m.fetchHere(ctx, class, id, req, int(head.Hops))
	if err != nil {
		return failed(err), nil, nil
	}
	if inline && resp.StatusCode == http.StatusSwitchingProtocols {
		// A socket needs the byte tunnel of Fetch; a peer sends upgrades there.
		resp.Body.Close()
		return failed(errors.New("a WebSocket upgrade must be forwarded over Fetch, not Call")), nil, nil
	}
	result = &proto.ForwardResult{Status: int32(resp.StatusCode), Headers: toForwardHeaders(resp.Header)}
	if !inline || resp.ContentLength < 0 || resp.ContentLength > forwardChunk {
		return result, resp.Body, nil
	}
	defer resp.Body.Close()
	if result.Body, err = io.ReadAll(resp.Body); err != nil {
		return nil, nil, err
	}
	result.BodyComplete = true
	return result, nil, nil
}

// Calls serves one peer's Calls stream: each call runs in a goroutine of
// its own, under a context that ends with the stream or when the caller
// cancels its tag; replies go out in batches from one writer.
func (s *forwardServer) Calls(stream proto.Forward_CallsServer) error {
	var sent func(int)
	if s.m != nil && s.m.metrics != nil {
		sent = func(n int) { s.m.metrics.repliesPerSend.Observe(float64(n)) }
	}
	w := newReplyWriter(stream, sent, func(n int) { s.owed.Add(-int64(n)) })
	defer w.stop()
	var mu sync.Mutex                              // guards running
	running := make(map[uint64]context.CancelFunc) // the calls in flight, by tag
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, cancel := range running {
			cancel()
		}
	}()
	for {
		batch, err := stream.Recv()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		mu.Lock()
		for _, tag := range batch.Cancelled {
			if cancel, ok := running[tag]; ok {
				cancel()
			}
		}
		for _, c := range batch.Calls {
			if _, dup := running[c.Tag]; dup || c.Call == nil || c.Call.Head == nil {
				mu.Unlock()
				return status.Errorf(codes.InvalidArgument, "call %d: a call needs a head and a tag not in flight", c.Tag)
			}
			// Not a child of the stream's context: a body kept for Collect
			// outlives the stream's handler. The calls still running when
			// it returns are cancelled by the deferred loop above.
			ctx, cancel := context.WithCancel(context.WithoutCancel(stream.Context()))
			running[c.Tag] = cancel
			s.owed.Add(1) // until the writer has sent or dropped the reply
			go func(c *proto.ForwardTaggedCall) {
				w.add(s.answerTagged(ctx, cancel, c))
				mu.Lock()
				delete(running, c.Tag)
				mu.Unlock()
			}(c)
		}
		mu.Unlock()
	}
}

// answerTagged runs one call of a Calls stream under ctx; a body that is
// not inline is kept for Collect. done ends ctx: when the answer is made,
// or, for a body kept, when the body is closed.
func (s *forwardServer) answerTagged(ctx context.Context, done context.CancelFunc, c *proto.ForwardTaggedCall) *proto.ForwardTaggedReply {
	result, rest, err := s.answer(ctx, c.Call.Head, newMemBody(c.Call.Body), true)
	if err != nil {
		result = &proto.ForwardResult{Error: &proto.ForwardError{Kind: proto.ForwardError_EXCEPTION, Message: fmt.Sprintf("reading the response body: %v", err)}}
	}
	reply := &proto.ForwardTaggedReply{Tag: c.Tag, Result: result}
	if rest == nil {
		done()
		return reply
	}
	reply.Collect = s.parked.park(closeAlso{rest, done})
	return reply
}

// closeAlso is a body whose Close also runs done.
type closeAlso struct {
	io.ReadCloser
	done func()
}

func (c closeAlso) Close() error {
	defer c.done()
	return c.ReadCloser.Close()
}

// Collect streams a body that Calls kept.
func (s *forwardServer) Collect(req *proto.ForwardCollect, stream proto.Forward_CollectServer) error {
	s.owed.Add(1)
	defer s.owed.Add(-1)
	body := s.parked.take(req.Token)
	if body == nil {
		return status.Errorf(codes.NotFound, "no response body is kept under token %d (collected already, or closed after %v)", req.Token, parkFor)
	}
	defer body.Close()
	return sendChunks(stream.Send, body)
}

func (s *forwardServer) Member(ctx context.Context, req *proto.ForwardMemberRequest) (*proto.ForwardMemberResponse, error) {
	if s.member == nil {
		return nil, status.Error(codes.Unimplemented, "this node keeps no cluster map")
	}
	return s.member(req)
}

func (s *forwardServer) GroupStatus(ctx context.Context, req *proto.ForwardGroupStatusRequest) (*proto.ForwardGroupStatusResponse, error) {
	if s.status == nil {
		return nil, status.Error(codes.Unimplemented, "this node runs no shard groups")
	}
	return s.status(req)
}

package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/proto"
)

// silentProxy relays TCP to target until freeze, after which it keeps the
// connections open and passes nothing on: a peer cut off or frozen.
type silentProxy struct {
	ln       net.Listener
	accepted atomic.Int32 // connections relayed
	mu       sync.Mutex
	frozen   bool
	closed   bool
	conns    []net.Conn // both ends of every relayed connection
}

func newSilentProxy(t *testing.T, target string) *silentProxy {
	p, err := listenSilentProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

// listenSilentProxy is newSilentProxy for a caller that closes it.
func listenSilentProxy(target string) (*silentProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &silentProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.accepted.Add(1)
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				c.Close()
				u.Close()
				return
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go p.relay(u, c)
			go p.relay(c, u)
		}
	}()
	return p, nil
}

// close closes the listener and every relayed connection.
func (p *silentProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *silentProxy) relay(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		frozen := p.frozen
		p.mu.Unlock()
		if frozen {
			continue // swallowed
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *silentProxy) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

// serveForward serves impl as the Forward service on a loopback port until
// the test ends and returns the address.
func serveForward(t *testing.T, impl proto.ForwardServer, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	proto.RegisterForwardServer(srv, impl)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// stuckForward answers no Fetch or Call: the object behind it runs forever.
type stuckForward struct {
	proto.UnimplementedForwardServer
}

// stuckCalls is stuckForward with a Calls stream that answers nothing.
type stuckCalls struct {
	stuckForward
}

func (stuckCalls) Calls(stream proto.Forward_CallsServer) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

func (stuckForward) Call(_ *proto.ForwardCall, stream proto.Forward_CallServer) error {
	<-stream.Context().Done()
	return stream.Context().Err()
}

func (stuckForward) Fetch(stream proto.Forward_FetchServer) error {
	<-stream.Context().Done()
	return stream.Context().Err()
}

// A request forwarded to a peer that stops answering fails once a
// keepalive ping goes unanswered (10 s + 2 s), rather than never.
func TestForwardToSilentPeerFails(t *testing.T) {
	t.Parallel()
	addr := serveForward(t, stuckForward{}, keepaliveServerOptions(defaultServerKeepalive())...)
	proxy := newSilentProxy(t, addr)

	f := newForwarder(append((*peerTLS)(nil).grpcDialOptions(), keepaliveDialOption())...)
	t.Cleanup(f.close)
	cl, err := f.client(peer{id: "n2", addr: proxy.ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := cl.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Head{Head: &proto.ForwardHead{Class: "Counter"}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a ping or two answered: the peer is alive, only slow
	proxy.freeze()
	frozen := time.Now()
	_, err = stream.Recv()
	took := time.Since(frozen)
	if err == io.EOF || status.Code(err) != codes.Unavailable {
		t.Fatalf("Recv from a silent peer: %v, want Unavailable", err)
	}
	if took > 15*time.Second {
		t.Fatalf("a silent peer was noticed after %v", took)
	}
	t.Logf("silent peer noticed after %v: %v", took.Round(100*time.Millisecond), err)
}

// The Raft transport's connection to a peer that goes silent (a partition
// that drops packets) is given up, with the streams on it, so that it is
// dialled afresh rather than kept until the kernel's next resend.
func TestRaftConnectionToASilentPeerIsGivenUp(t *testing.T) {
	t.Parallel()
	addr := serveForward(t, stuckForward{}, keepaliveServerOptions(defaultServerKeepalive())...)
	proxy := newSilentProxy(t, addr)
	cc, err := grpc.NewClient(proxy.ln.Addr().String(), raftDialOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := proto.NewForwardClient(cc).Fetch(ctx) // a long-lived stream, as a Raft pipeline's
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Head{Head: &proto.ForwardHead{Class: "Counter"}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	proxy.freeze()
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Recv on a connection to a silent peer: %v, want Unavailable (the connection given up) before the call's own deadline", err)
	}
}

// When the raft transport reports a peer lost, the requests in flight to
// it fail at once, as of unknown outcome, instead of waiting for gRPC's
// keepalive; requests forwarded afterwards open new streams as usual. So
// on the Calls stream, and on Call streams to a peer without it.
func TestForwardFailsWhenPeerIsLost(t *testing.T) {
	for name, impl := range map[string]proto.ForwardServer{"calls": stuckCalls{}, "call": stuckForward{}} {
		t.Run(name, func(t *testing.T) { testForwardFailsWhenPeerIsLost(t, impl) })
	}
}

func testForwardFailsWhenPeerIsLost(t *testing.T, impl proto.ForwardServer) {
	addr := serveForward(t, impl)
	f := newForwarder()
	t.Cleanup(f.close)
	p := peer{id: "n2", addr: addr}

	id := durable.IDFromName(durable.DeriveNamespaceKey("Counter", "test"), "A")
	forwardOne := func() chan error {
		done := make(chan error, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodGet, "http://x/increment?name=A", nil)
			body, _ := newBodyBuffer(nil)
			_, err := f.forward(context.Background(), p, "Counter", id, req, body, 0)
			done <- err
		}()
		return done
	}
	failsWhenItsPeerIsLost(t, f, p.addr, forwardOne(), 300*time.Millisecond)
	second := forwardOne() // a fresh request is not failed by the old loss
	select {
	case err := <-second:
		t.Fatalf("a request after the loss returned: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	f.peerLost(p.addr)
	if err := <-second; !errors.Is(err, durable.ErrCommitIndeterminate) {
		t.Fatalf("second request: %v", err)
	}
}

// Every reply batch of a peer's Calls stream tells the forwarder's heard
// hook, by which the Raft transport counts the peer alive: a peer that
// answers forwarded calls is not reported lost for a quiet heartbeat
// stream (raftstore's silenceWatch). Before, the forwarder kept its own
// record of the last reply and second-guessed the transport's losses.
// A loss the transport does report fails the requests in flight.
func TestCallsRepliesMarkThePeerHeard(t *testing.T) {
	srv := &echoCalls{cancelled: make(chan uint64, 10)}
	addr := serveForward(t, srv)
	f := newForwarder()
	t.Cleanup(f.close)
	heard := make(chan string, 16)
	f.heard = func(a string) { heard <- a }
	p := peer{id: "n2", addr: addr}
	id := durable.IDFromName(durable.DeriveNamespaceKey("Counter", "test"), "A")
	forward := func(path string) chan error {
		done := make(chan error, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodGet, "http://x"+path, nil)
			body, _ := newBodyBuffer(nil)
			resp, err := f.forward(context.Background(), p, "Counter", id, req, body, 0)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		return done
	}
	if err := <-forward("/answered"); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-heard:
		if a != addr {
			t.Fatalf("heard %q, want %q", a, addr)
		}
	default:
		t.Fatal("a reply did not mark its peer heard")
	}
	failsWhenItsPeerIsLost(t, f, addr, forward("/stuck"), 100*time.Millisecond)
}

// failsWhenItsPeerIsLost checks that the forwarded request done reports
// on is still in flight after settle, and that it fails as of unknown
// outcome, naming the loss, once f is told its peer at addr is lost.
func failsWhenItsPeerIsLost(t *testing.T, f *forwarder, addr string, done <-chan error, settle time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("a request to a stuck peer returned: %v", err)
	case <-time.After(settle):
	}
	f.peerLost(addr)
	select {
	case err := <-done:
		if !errors.Is(err, durable.ErrCommitIndeterminate) || !strings.Contains(err.Error(), errPeerLost.Error()) {
			t.Fatalf("in-flight request after its peer was lost: %v, want an unknown outcome naming the loss", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the in-flight request did not fail when its peer was lost")
	}
}

// Request and response bodies of every size cross a forward intact: empty,
// small (in one message of the Calls stream each way), at and just over
// the 64 KiB inline limit (a small request's larger response is collected
// apart), and over the 1 MiB replayable limit (streamed over Fetch).
func TestForwardedBodiesOfEverySize(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}})
	cases := []struct{ size, times int }{
		{0, 1}, {10, 1}, {forwardChunk, 1}, {forwardChunk, 2}, {10 << 10, 30},
		{forwardChunk + 1, 1}, {300 << 10, 1}, {replayableBody + 5000, 1},
	}
	for _, tc := range cases {
		body := make([]byte, tc.size)
		for i := range body {
			body[i] = byte(i*7 + tc.size)
		}
		want := bytes.Repeat(body, tc.times)
		for i := range c.nodes { // two of the three are forwarded
			u := fmt.Sprintf("http://%s/echo?ns=PINGPONG&name=echo&times=%d", c.cfgs[i].HTTPAddr, tc.times)
			resp, err := http.Post(u, "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("size %d x %d via node %d: %d %v", tc.size, tc.times, i+1, resp.StatusCode, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("size %d x %d via node %d: got %d bytes back, not the %d expected", tc.size, tc.times, i+1, len(got), len(want))
			}
		}
	}
}

// oldForward is a peer from before Call: Fetch only, answering "old".
type oldForward struct {
	proto.UnimplementedForwardServer
}

func (oldForward) Fetch(stream proto.Forward_FetchServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Result{Result: &proto.ForwardResult{Status: 200}}}); err != nil {
		return err
	}
	return stream.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Body{Body: []byte("old")}})
}

// A small request to a peer without Call goes over Fetch instead.
func TestForwardFallsBackToFetch(t *testing.T) {
	addr := serveForward(t, oldForward{})
	f := newForwarder()
	t.Cleanup(f.close)
	req, _ := http.NewRequest(http.MethodGet, "http://x/increment?name=A", nil)
	body, _ := newBodyBuffer(nil)
	id := durable.IDFromName(durable.DeriveNamespaceKey("Counter", "test"), "A")
	resp, err := f.forward(context.Background(), peer{id: "n2", addr: addr}, "Counter", id, req, body, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "old" {
		t.Fatalf("body %q, %v", b, err)
	}
}

// statusForward answers every Fetch with its status and a body.
type statusForward struct {
	proto.UnimplementedForwardServer
	status int32
}

func (s statusForward) Fetch(stream proto.Forward_FetchServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return stream.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Result{Result: &proto.ForwardResult{Status: s.status, Body: []byte("x"), BodyComplete: true}}})
}

// A peer's answer whose status is no HTTP status is a protocol error, not
// a response that panics net/http's WriteHeader when it is written.
func TestForwardedAnswerWithoutHTTPStatus(t *testing.T) {
	id := durable.IDFromName(durable.DeriveNamespaceKey("Counter", "test"), "A")
	for _, st := range []int32{0, 99, 1000, -200, 200} {
		f := newForwarder()
		req, _ := http.NewRequest(http.MethodGet, "http://x/increment?name=A", nil)
		body, _ := newBodyBuffer(nil)
		resp, err := f.forward(context.Background(), peer{id: "n2", addr: serveForward(t, statusForward{status: st})}, "Counter", id, req, body, 0)
		f.close()
		if st == 200 {
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("status 200: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("protocol error: the answer has status %d", st)) {
			t.Fatalf("status %d: %v, want a protocol error", st, err)
		}
	}
}

// echoCalls answers every call of its Calls streams with the call's URL,
// after a random delay, so replies come back out of order; a call to
// /big is answered with a body to Collect. It counts the streams opened
// and records the tags its callers cancelled.
type echoCalls struct {
	proto.UnimplementedForwardServer
	streams   atomic.Int32
	cancelled chan uint64
	server    forwardServer // its parked bodies and Collect
}

func (e *echoCalls) Calls(stream proto.Forward_CallsServer) error {
	e.streams.Add(1)
	w := newReplyWriter(stream, nil, nil)
	defer w.stop()
	for {
		b, err := stream.Recv()
		if err != nil {
			return err
		}
		for _, tag := range b.Cancelled {
			e.cancelled <- tag
		}
		for _, c := range b.Calls {
			go func() {
				url := string(c.Call.Head.Url)
				if url == "/stuck" {
					return
				}
				time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
				r := &proto.ForwardTaggedReply{Tag: c.Tag, Result: &proto.ForwardResult{Status: 200, Body: []byte(url), BodyComplete: true}}
				if url == "/big" {
					r.Result = &proto.ForwardResult{Status: 200}
					r.Collect = e.server.parked.park(io.NopCloser(strings.NewReader(strings.Repeat("big", 100000))))
				}
				w.add(r)
			}()
		}
	}
}

func (e *echoCalls) Collect(req *proto.ForwardCollect, stream proto.Forward_CollectServer) error {
	return e.server.Collect(req, stream)
}

// Concurrent requests share one Calls stream, each gets its own reply
// whatever order they come in, and a body kept apart is collected.
func TestForwardCallsShareOneStream(t *testing.T) {
	srv := &echoCalls{cancelled: make(chan uint64, 10)}
	addr := serveForward(t, srv)
	f := newForwarder()
	f.metrics = newMetrics(gauges{instances: zeroGauge, shardsLed: zeroGauge, shardReplicas: zeroGauge, storeBytes: zeroGauge})
	t.Cleanup(f.close)
	p := peer{id: "n2", addr: addr}
	id := durable.IDFromName(durable.DeriveNamespaceKey("Counter", "test"), "A")
	forwardGet := func(ctx context.Context, path string) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://x"+path, nil)
		body, _ := newBodyBuffer(nil)
		resp, err := f.forward(ctx, p, "Counter", id, req, body, 0)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			path := fmt.Sprintf("/call/%d", i)
			if got, err := forwardGet(context.Background(), path); err != nil || got != path {
				t.Errorf("%s answered %q, %v", path, got, err)
			}
		})
	}
	wg.Wait()
	if got, err := forwardGet(context.Background(), "/big"); err != nil || got != strings.Repeat("big", 100000) {
		t.Errorf("/big answered %d bytes, %v", len(got), err)
	}
	if n := srv.streams.Load(); n != 1 {
		t.Errorf("%d Calls streams opened, want 1", n)
	}
	var h, c dto.Metric
	if err := f.metrics.callsPerSend.Write(&h); err != nil {
		t.Fatal(err)
	}
	if err := f.metrics.forwarded.WithLabelValues("calls").Write(&c); err != nil {
		t.Fatal(err)
	}
	sends, calls := h.GetHistogram().GetSampleCount(), h.GetHistogram().GetSampleSum()
	if got := c.GetCounter().GetValue(); got != 201 || calls != 201 {
		t.Errorf("metrics: %v requests forwarded via calls, %v calls in the sends; want 201 each", got, calls)
	}
	t.Logf("201 calls went in %d messages", sends)

	// A caller that gives up cancels its call on the server.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := forwardGet(ctx, "/stuck"); !errors.Is(err, durable.ErrCommitIndeterminate) {
		t.Errorf("a call given up after it was sent: %v, want an unknown outcome", err)
	}
	select {
	case <-srv.cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the server was not told of the cancelled call")
	}
}

// A body kept for Collect is handed out once.
func TestParkedBodiesAreTakenOnce(t *testing.T) {
	var p parkedBodies
	closed := false
	token := p.park(closeAlso{io.NopCloser(strings.NewReader("x")), func() { closed = true }})
	if token == 0 {
		t.Fatal("token 0")
	}
	b := p.take(token)
	if b == nil || p.take(token) != nil || p.take(token+1) != nil {
		t.Fatal("a kept body was not taken exactly once")
	}
	b.Close()
	if !closed {
		t.Fatal("closing the body did not end its request")
	}
}

// A caller waits for a Calls stream being opened no longer than its own
// context allows, even while the connection to the peer hangs (the peer
// accepts TCP but never speaks HTTP/2, like a host behind a partition
// that drops packets after the handshake).
func TestForwardOpeningHonoursTheCallersContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	f := newForwarder()
	t.Cleanup(f.close)
	req, _ := http.NewRequest(http.MethodGet, "http://x/increment?name=A", nil)
	body, _ := newBodyBuffer(nil)
	id := durable.IDFromName(durable.DeriveNamespaceKey("Counter", "test"), "A")
	for range 2 { // the second caller finds the opening under way
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		_, err := f.forward(ctx, peer{id: "n2", addr: ln.Addr().String()}, "Counter", id, req, body, 0)
		cancel()
		var re *routingError
		if !errors.As(err, &re) {
			t.Fatalf("forward to a hanging peer: %v, want a routing error (nothing was sent)", err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("forward waited %v for a hanging peer with a 300 ms context", took)
		}
	}
}

// A read-only turn whose leadership check failed is withheld as a
// retryable ErrCommitFailed (503): locally, and after crossing a forward.
func TestUnconfirmedReadIsRetryable(t *testing.T) {
	cause := fmt.Errorf("%w: shard 2: leadership check: node is not the leader", errNotReady)
	local := unconfirmedRead(cause)
	forwarded := fromForwardError(toForwardError(local))
	for name, err := range map[string]error{"local": local, "forwarded": forwarded} {
		if !errors.Is(err, durable.ErrCommitFailed) || !durable.IsRetryable(err) || durable.HTTPStatus(err) != http.StatusServiceUnavailable {
			t.Errorf("%s: %v: ErrCommitFailed %v, retryable %v, status %d; want a retryable 503", name, err,
				errors.Is(err, durable.ErrCommitFailed), durable.IsRetryable(err), durable.HTTPStatus(err))
		}
		if !strings.Contains(err.Error(), "response withheld") || !strings.Contains(err.Error(), "node is not the leader") {
			t.Errorf("%s: message %q", name, err)
		}
	}
	if err := unconfirmedRead(context.Canceled); err != context.Canceled {
		t.Errorf("a caller that gave up: %v", err)
	}
}

// A stream the peer refuses before taking the request reports the peer's
// status, not the bare io.EOF gRPC's send returns.
func TestRefusedStreamReportsThePeersStatus(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		return status.Error(codes.Unavailable, "draining for a test")
	}))
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	f := newForwarder()
	defer f.close()
	p := peer{id: "n9", addr: lis.Addr().String()}
	cc, err := f.conn(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	// The send sees the refusal only once it has arrived: try a few
	// streams, waiting longer each time.
	var stream grpc.ClientStream
	var sendErr error
	for wait := 10 * time.Millisecond; wait < 2*time.Second && !errors.Is(sendErr, io.EOF); wait *= 2 {
		stream, err = cc.NewStream(context.Background(), &grpc.StreamDesc{StreamName: "Fetch", ClientStreams: true, ServerStreams: true}, proto.Forward_Fetch_FullMethodName)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = stream.Header()
		time.Sleep(wait)
		sendErr = stream.SendMsg(&proto.ForwardFrame{})
	}
	if !errors.Is(sendErr, io.EOF) {
		t.Fatalf("SendMsg on a refused stream = %v; the test expects gRPC's io.EOF", sendErr)
	}
	if err := streamStatus(stream, sendErr); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "draining for a test") {
		t.Fatalf("streamStatus = %v, want the peer's Unavailable status", err)
	}
	if err := streamStatus(stream, errors.New("other")); err.Error() != "other" {
		t.Fatalf("streamStatus changed a non-EOF error: %v", err)
	}
}

// TestMuxEndedByPeerSaysSo: a peer whose Calls handler returns without an
// error ends the stream with status OK, which gRPC reports to the reader
// as a bare io.EOF; the waiting call's error says what happened instead,
// as an outcome the caller cannot know.
func TestMuxEndedByPeerSaysSo(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		// Take the first batch, then end the stream with status OK.
		return stream.RecvMsg(new(proto.ForwardCallBatch))
	}))
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	f := newForwarder()
	defer f.close()
	cc, err := f.conn(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	m, err := openCallMux(cc, "n9", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = m.call(ctx, &proto.ForwardCall{Head: &proto.ForwardHead{Class: "Counter", Method: []byte("GET"), Url: []byte("/")}})
	var mf *muxFailure
	if !errors.As(err, &mf) || !errors.Is(err, errMuxEnded) || !mf.sent {
		t.Fatalf("call on a stream the peer ended = %v, want errMuxEnded with the outcome unknown", err)
	}
}

// TestForwarderRedialsARestartedPeer: a peer that was down for a while is
// reached within about a second of coming back. gRPC's default backoff
// would by then wait about 10 s between dials.
func TestForwarderRedialsARestartedPeer(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	f := newForwarder(forwarderDialOptions(nil)...)
	t.Cleanup(f.close)
	cl, err := f.client(peer{id: "n2", addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	ask := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := cl.GroupStatus(ctx, &proto.ForwardGroupStatusRequest{GroupId: 1})
		return err
	}
	for down := time.Now(); time.Since(down) < 12*time.Second; time.Sleep(200 * time.Millisecond) {
		if ask() == nil {
			t.Fatal("answered with no server listening")
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	proto.RegisterForwardServer(srv, &forwardServer{status: func(*proto.ForwardGroupStatusRequest) (*proto.ForwardGroupStatusResponse, error) {
		return &proto.ForwardGroupStatusResponse{Running: true}, nil
	}})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	back := time.Now()
	for {
		err := ask()
		if err == nil {
			break
		}
		if time.Since(back) > 1500*time.Millisecond {
			t.Fatalf("the peer is not reached %v after it came back: %v", time.Since(back).Round(time.Millisecond), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("reached %v after it came back", time.Since(back).Round(time.Millisecond))
}

// A peer cut off by a partition that drops packets never answers a dial:
// a request forwarded to it must fail soon, so that routing can try
// elsewhere or answer 503, not after gRPC's default 20 s connect timeout
// (QA: clients of a cut-off node waited 20 s for their 503).
func TestForwardToAnUndialablePeerFailsSoon(t *testing.T) {
	t.Parallel()
	f := newForwarder(forwarderDialOptions(nil)...)
	f.dialer = func(ctx context.Context, _ string) (net.Conn, error) {
		<-ctx.Done() // as a SYN that is dropped, resent, dropped
		return nil, ctx.Err()
	}
	t.Cleanup(f.close)
	cl, err := f.client(peer{id: "n2", addr: freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err = cl.GroupStatus(ctx, &proto.ForwardGroupStatusRequest{GroupId: 1})
	took := time.Since(start)
	if status.Code(err) != codes.Unavailable || took > 10*time.Second {
		t.Fatalf("a call to a peer whose dial hangs: %v after %v, want Unavailable within 10s", err, took.Round(time.Millisecond))
	}
}

// TestStalledForwardedBodyHoldsUpOnlyItsRequest is
// TestStalledBodyHoldsUpOnlyItsRequest for a body forwarded over Fetch by
// a peer that stops sending while its stream stays open: the stalled read
// fails after BodyStallTimeout, the request gets an answer, and the
// object's other requests go on.
func TestStalledForwardedBodyHoldsUpOnlyItsRequest(t *testing.T) {
	c := newTestCluster(t, 1, 1, &turnRegistry{active: map[string]string{}}, func(cfg *Config) {
		cfg.BootstrapExpect, cfg.Replicas, cfg.BodyStallTimeout = 1, 1, 300*time.Millisecond
	})
	cc, err := grpc.NewClient(c.cfgs[0].GRPCAddr, forwarderDialOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	id := durable.IDFromName(durable.DeriveNamespaceKey("PingPong", ""), "stalled").Bytes()
	const path = "/echo?ns=PINGPONG&name=stalled"
	for _, tc := range []struct {
		name    string
		sent    int
		wantErr bool // the stall fails the request before the object runs it
	}{
		{"small body, read before the turn", 3, true},
		{"large body, its rest read in the turn", replayableBody + 100, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := proto.NewForwardClient(cc).Fetch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			head := &proto.ForwardHead{Class: "PingPong", ObjectId: id[:], Method: []byte("POST"), Url: []byte(path), Hops: 1,
				Headers: []*proto.ForwardHeader{{Name: []byte("Content-Length"), Values: [][]byte{[]byte("5000000")}}}}
			if err := s.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Head{Head: head}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Body{Body: bytes.Repeat([]byte("a"), tc.sent)}}); err != nil {
				t.Fatal(err)
			}
			// Then nothing, the stream open: the stalled request is answered.
			fr, err := s.Recv()
			if err != nil {
				t.Fatalf("the stalled forwarded request: %v", err)
			}
			res := fr.GetResult()
			if res == nil || (res.Error != nil) != tc.wantErr || tc.wantErr && !strings.Contains(res.Error.Message, "no byte from the peer") {
				t.Fatalf("the stalled forwarded request got %+v", res)
			}
			if code, body := postBody(t, c.nodes[0], path, "next"); code != 200 || body != "next" {
				t.Fatalf("the request after the stalled one: %d %q", code, body)
			}
		})
	}
}

// TestGarbageOnTheGRPCPort sends a real node's gRPC port raw bytes and
// half-open connections, and each Forward method random message bytes
// over valid HTTP/2 gRPC. Each call ends with an error or a harmless
// answer, none of them by hanging; the node still serves, its objects
// as they were.
func TestGarbageOnTheGRPCPort(t *testing.T) {
	c := newTestCluster(t, 1, 1, &turnRegistry{active: map[string]string{}}, func(cfg *Config) {
		cfg.BootstrapExpect, cfg.Replicas = 1, 1
	})
	ctx := context.Background()
	if code, body, err := c.do(ctx, 0, "/increment", "garbage"); err != nil || code != 200 || body != "1" {
		t.Fatalf("increment: %d %q %v", code, body, err)
	}
	addr := c.cfgs[0].GRPCAddr
	rng := rand.New(rand.NewPCG(3, 4))
	junk := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	for i, first := range [][]byte{nil, preface[:10], preface, append(append([]byte(nil), preface...), junk(4096)...), junk(64 << 10)} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(first)
		if i%2 == 0 {
			_ = conn.(*net.TCPConn).CloseWrite() // half-open: reads still possible
		}
		_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = io.Copy(io.Discard, conn)
		_ = conn.Close()
	}

	// A connection that never finishes its handshake is closed after
	// grpcHandshakeTimeout, not gRPC's 120 s: held open, such connections
	// filled the listener's share of the open-file limit (found by QA).
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	_ = idle.SetReadDeadline(opened.Add(grpcHandshakeTimeout + 10*time.Second))
	_, _ = io.Copy(io.Discard, idle) // gRPC's server writes its settings first
	if waited := time.Since(opened); waited > grpcHandshakeTimeout+5*time.Second {
		t.Fatalf("a connection that sent nothing stayed open %v", waited.Round(time.Second))
	}
	_ = idle.Close()

	cc, err := grpc.NewClient(addr, forwarderDialOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// Each method gets messages of its own type with random contents
	// (class, ID, URL, tags, tokens, group and node IDs), whole, cut
	// short, or as random bytes.
	str := func() string { return strings.ToValidUTF8(string(junk(rng.IntN(20))), "/") }
	head := func() *proto.ForwardHead {
		id := durable.IDFromName(durable.DeriveNamespaceKey("Counter", ""), "garbage").Bytes()
		h := &proto.ForwardHead{Class: []string{"Counter", str()}[rng.IntN(2)], ObjectId: junk(32), Method: junk(rng.IntN(8)), Url: junk(rng.IntN(20)), Hops: rng.Uint32N(6),
			Headers: []*proto.ForwardHeader{{Name: junk(rng.IntN(8)), Values: [][]byte{junk(rng.IntN(20))}}}}
		if rng.IntN(3) == 0 {
			h.ObjectId = id[:] // a real object, its request made up
		}
		return h
	}
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	for _, m := range []struct {
		method string
		msg    func() gproto.Message
	}{
		{proto.Forward_Fetch_FullMethodName, func() gproto.Message {
			return &proto.ForwardFrame{Frame: &proto.ForwardFrame_Head{Head: head()}}
		}},
		{proto.Forward_Call_FullMethodName, func() gproto.Message { return &proto.ForwardCall{Head: head(), Body: junk(rng.IntN(100))} }},
		{proto.Forward_Calls_FullMethodName, func() gproto.Message {
			tag := rng.Uint64N(3)
			return &proto.ForwardCallBatch{Calls: []*proto.ForwardTaggedCall{{Tag: tag, Call: &proto.ForwardCall{Head: head()}}, {Tag: tag}}, Cancelled: []uint64{tag, rng.Uint64()}}
		}},
		{proto.Forward_Collect_FullMethodName, func() gproto.Message { return &proto.ForwardCollect{Token: rng.Uint64N(4)} }},
		{proto.Forward_GroupStatus_FullMethodName, func() gproto.Message {
			return &proto.ForwardGroupStatusRequest{GroupId: []uint64{0, 1, 2, 1 << 63, ^uint64(0)}[rng.IntN(5)], ConfirmConfig: rng.IntN(2) == 0}
		}},
		{proto.Forward_Member_FullMethodName, func() gproto.Message { return &proto.ForwardMemberRequest{NodeId: str()} }},
	} {
		for i := range 24 {
			b, err := gproto.Marshal(m.msg())
			if err != nil {
				t.Fatal(err)
			}
			switch i % 3 {
			case 1:
				b = b[:rng.IntN(len(b)+1)]
			case 2:
				b = junk(rng.IntN(300))
			}
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			s, err := cc.NewStream(ctx, desc, m.method, grpc.ForceCodec(rawCodec{}))
			if err == nil {
				if err = s.SendMsg(rawBytes(b)); err == nil {
					_ = s.CloseSend()
					var out rawBytes
					for err == nil {
						err = s.RecvMsg(&out)
					}
				}
			}
			cancel()
			if code := status.Code(err); err != io.EOF && (code == codes.Unavailable || code == codes.DeadlineExceeded || code == codes.Unknown) {
				t.Fatalf("%s with message %x: %v", m.method, b, err)
			}
		}
	}
	if code, body, err := c.do(ctx, 0, "/increment", "garbage"); err != nil || code != 200 || body != "2" {
		t.Fatalf("increment after the garbage: %d %q %v, want 2", code, body, err)
	}
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

// midBodyForward answers a Fetch with a result, then body frames with
// another result among them.
type midBodyForward struct {
	proto.UnimplementedForwardServer
}

func (midBodyForward) Fetch(stream proto.Forward_FetchServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	for _, fr := range []*proto.ForwardFrame{
		{Frame: &proto.ForwardFrame_Result{Result: &proto.ForwardResult{Status: 200}}},
		{Frame: &proto.ForwardFrame_Body{Body: []byte("ab")}},
		{Frame: &proto.ForwardFrame_Result{Result: &proto.ForwardResult{Status: 500}}},
		{Frame: &proto.ForwardFrame_Body{Body: []byte("cd")}},
	} {
		if err := stream.Send(fr); err != nil {
			return err
		}
	}
	return nil
}

// A head or result frame amid a forwarded body, either way, fails the
// body with a protocol error: the bytes around it are not one body.
func TestForwardFrameAmidTheBody(t *testing.T) {
	t.Run("request", func(t *testing.T) {
		c := newTestCluster(t, 1, 1, &turnRegistry{active: map[string]string{}}, func(cfg *Config) {
			cfg.BootstrapExpect, cfg.Replicas = 1, 1
		})
		cc, err := grpc.NewClient(c.cfgs[0].GRPCAddr, forwarderDialOptions(nil)...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		id := durable.IDFromName(durable.DeriveNamespaceKey("PingPong", ""), "frames").Bytes()
		head := &proto.ForwardHead{Class: "PingPong", ObjectId: id[:], Method: []byte("POST"), Url: []byte("/echo?ns=PINGPONG&name=frames"), Hops: 1}
		for _, mid := range []*proto.ForwardFrame{
			{Frame: &proto.ForwardFrame_Head{Head: head}},
			{Frame: &proto.ForwardFrame_Result{Result: &proto.ForwardResult{Status: 200}}},
		} {
			// The peer answers as soon as the frame amid the body arrives,
			// and ends the stream, whether or not the rest of the body has
			// been sent: answerFirst waits for that before sending it, as
			// a sender descheduled for a few milliseconds does.
			for _, answerFirst := range []bool{false, true} {
				s, err := proto.NewForwardClient(cc).Fetch(ctx)
				if err != nil {
					t.Fatal(err)
				}
				// A send returns io.EOF once the peer has ended the stream:
				// its answer, or its status, is for Recv to tell (as
				// sendBody and streamStatus take it). The test once failed
				// on that io.EOF, as if no answer had come.
				send := func(frames ...*proto.ForwardFrame) {
					for _, fr := range frames {
						if err := s.Send(fr); errors.Is(err, io.EOF) {
							return
						} else if err != nil {
							t.Fatal(err)
						}
					}
				}
				send(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Head{Head: head}}, &proto.ForwardFrame{Frame: &proto.ForwardFrame_Body{Body: []byte("ab")}}, mid)
				rest := &proto.ForwardFrame{Frame: &proto.ForwardFrame_Body{Body: []byte("cd")}}
				if !answerFirst {
					send(rest)
					_ = s.CloseSend()
				}
				fr, err := s.Recv()
				if err != nil {
					t.Fatalf("%T amid the body, answer first %v: %v", mid.Frame, answerFirst, err)
				}
				if res := fr.GetResult(); res == nil || res.Error == nil || !strings.Contains(res.Error.Message, "protocol error") {
					t.Fatalf("a body with %T amid it: %+v, want a protocol error", mid.Frame, res)
				}
				if fr, err := s.Recv(); err != io.EOF {
					t.Fatalf("after the answer: %v, %v; want the stream's end", fr, err)
				}
				if answerFirst {
					send(rest)
					_ = s.CloseSend()
				}
			}
		}
	})
	t.Run("response", func(t *testing.T) {
		f := newForwarder()
		defer f.close()
		req, _ := http.NewRequest(http.MethodGet, "http://x/increment?name=A", nil)
		body, _ := newBodyBuffer(nil)
		id := durable.IDFromName(durable.DeriveNamespaceKey("Counter", "test"), "A")
		resp, err := f.forward(context.Background(), peer{id: "n2", addr: serveForward(t, midBodyForward{})}, "Counter", id, req, body, 0)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil || !strings.Contains(err.Error(), "protocol error") {
			t.Fatalf("a response body with a result amid it: %q, %v, want a protocol error", b, err)
		}
	})
}

// silentEndForward takes a request and ends its stream with status OK
// without answering it, as no roost does.
type silentEndForward struct {
	proto.UnimplementedForwardServer
}

func (silentEndForward) Fetch(stream proto.Forward_FetchServer) error {
	_, err := stream.Recv()
	return err
}

func (silentEndForward) Call(*proto.ForwardCall, proto.Forward_CallServer) error { return nil }

// A peer that ends a forwarded request's stream without an answer fails
// it with an error that says so, of unknown outcome, not a bare "EOF";
// and a Fetch stream that ends before its head is refused with a status
// that says so, not "EOF" as Unknown.
func TestForwardStreamEndedWithoutAnswer(t *testing.T) {
	f := newForwarder()
	defer f.close()
	p := peer{id: "n9", addr: serveForward(t, silentEndForward{})}
	req, _ := http.NewRequest(http.MethodGet, "http://x/increment?name=A", nil)
	body, _ := newBodyBuffer(nil)
	id := durable.IDFromName(durable.DeriveNamespaceKey("Counter", "test"), "A")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, useCall := range []bool{false, true} {
		_, err := f.forwardOnce(ctx, p, "Counter", id, req, body, 0, useCall)
		if err == nil || !errors.Is(err, durable.ErrCommitIndeterminate) || !strings.Contains(err.Error(), "without an answer") {
			t.Errorf("call %v: a stream ended with no answer: %v", useCall, err)
		}
	}
	cc, err := f.conn(serveForward(t, &forwardServer{}))
	if err != nil {
		t.Fatal(err)
	}
	s, err := proto.NewForwardClient(cc).Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.CloseSend()
	if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "head") {
		t.Errorf("a Fetch stream ended before its head: %v, want InvalidArgument", err)
	}
}

// sendOnlyCalls is a Calls stream whose Send fails with err (nil: succeeds)
// and counts the replies it took.
type sendOnlyCalls struct {
	proto.Forward_CallsServer
	err  error
	sent atomic.Int64
}

func (s *sendOnlyCalls) Send(b *proto.ForwardReplyBatch) error {
	if s.err != nil {
		return s.err
	}
	s.sent.Add(int64(len(b.Replies)))
	return nil
}

// Every reply given to a replyWriter is settled exactly once — sent, failed
// to send, left queued at stop, or added after it: a node's Close waits
// until every answer it owes is settled (forwardServer.owed), and one
// never settled would hold every Close up for its whole bound.
func TestReplyWriterSettlesEveryReply(t *testing.T) {
	settle := func(n *atomic.Int64) func(int) { return func(k int) { n.Add(int64(k)) } }
	reply := func(tag uint64) *proto.ForwardTaggedReply { return &proto.ForwardTaggedReply{Tag: tag} }
	waitFor := func(what string, n *atomic.Int64, want int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); n.Load() != want; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d settled, want %d", what, n.Load(), want)
			}
		}
	}

	var settled atomic.Int64
	ok := &sendOnlyCalls{}
	w := newReplyWriter(ok, nil, settle(&settled))
	for tag := range uint64(50) {
		w.add(reply(tag))
	}
	waitFor("sent", &settled, 50)
	w.stop()
	if settled.Load() != 50 || ok.sent.Load() != 50 {
		t.Fatalf("%d settled, %d sent; want 50 each", settled.Load(), ok.sent.Load())
	}

	settled.Store(0)
	broken := &sendOnlyCalls{err: io.ErrClosedPipe}
	w = newReplyWriter(broken, nil, settle(&settled))
	w.add(reply(1)) // its send fails, which ends the writer
	waitFor("failed to send", &settled, 1)
	w.add(reply(2)) // queued behind a writer that has ended
	w.stop()
	waitFor("dropped at stop", &settled, 2)
	w.add(reply(3)) // after stop
	if settled.Load() != 3 {
		t.Fatalf("%d settled, want 3", settled.Load())
	}
}

// A forwarded name is taken only if it makes the forwarded ID: a peer
// cannot give an object another name than its own.
func TestForwardedNameMustMakeTheID(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	b := namespaceOf(t, n, "COUNTER").IDFromName("front-door").Bytes()
	for _, tc := range []struct {
		name, wantName string
		wantErr        error
	}{
		{"front-door", "front-door", nil},
		{"", "", nil},
		{"back-door", "", durable.ErrInvalidID},
	} {
		_, id, err := n.manager.checkForwarded(&proto.ForwardHead{Class: "Counter", ObjectId: b[:], ObjectName: []byte(tc.name)})
		if !errors.Is(err, tc.wantErr) || err == nil && (id.Name() != tc.wantName || id.Bytes() != b) {
			t.Errorf("forwarded with name %q: ID %s named %q, err %v; want name %q, err %v", tc.name, id, id.Name(), err, tc.wantName, tc.wantErr)
		}
	}
}

// A request whose header, URL or object name is not UTF-8 is answered
// through a node that forwards it as through the object's leader, and so
// is an answer (a header, an error) that is not UTF-8. Before, such a
// request failed the encoding of the forwarded call (proto3 strings must
// be UTF-8) and, on the shared Calls stream, every other call on it.
func TestForwardedRequestMayCarryAnyBytes(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}})
	c.waitConverged(0, 30*time.Second)
	const name, raw = "caf\xe9", "\xff\xfe ok"
	ns := namespaceOf(t, c.nodes[0], "PINGPONG")
	li := c.waitLeaderOf(t, groupOf(shardOf(ns.IDFromName(name).Bytes(), 4)))
	get := func(node int, query string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+c.cfgs[node].HTTPAddr+"/raw?ns=PINGPONG&name="+url.QueryEscape(name)+query, nil)
		req.Header.Set("X-Raw", raw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for i := range c.nodes {
		via := "through its leader"
		if i != li {
			via = "forwarded"
		}
		resp, body := get(i, "")
		if resp.StatusCode != http.StatusOK || body != name+"|"+raw || resp.Header.Get("X-Raw") != raw {
			t.Errorf("%s (node %d): %d %q, X-Raw %q; want 200 %q, X-Raw %q", via, i+1, resp.StatusCode, body, resp.Header.Get("X-Raw"), name+"|"+raw, raw)
		}
		if resp, body := get(i, "&fail=1"); resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, "refused") {
			t.Errorf("%s (node %d), the object failing: %d %q; want 500 with its message", via, i+1, resp.StatusCode, body)
		}
	}
}

func zeroGauge() float64 { return 0 }

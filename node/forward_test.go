package node

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/proto"
)

// silentProxy relays TCP to target until freeze, after which it keeps the
// connections open and passes nothing on: a peer cut off or frozen.
type silentProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	frozen bool
}

func newSilentProxy(t *testing.T, target string) *silentProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
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
			t.Cleanup(func() { c.Close(); u.Close() })
			go p.relay(u, c)
			go p.relay(c, u)
		}
	}()
	return p
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
	addr := serveForward(t, stuckForward{}, keepaliveServerOption())
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

// When the raft transport reports a peer lost, the requests in flight to
// it fail at once, as of unknown outcome, instead of waiting for gRPC's
// keepalive; requests forwarded afterwards open new streams as usual.
func TestForwardFailsWhenPeerIsLost(t *testing.T) {
	addr := serveForward(t, stuckForward{})
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
	first := forwardOne()
	select {
	case err := <-first:
		t.Fatalf("a request to a stuck peer returned: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	f.peerLost(p.addr)
	select {
	case err := <-first:
		if !errors.Is(err, durable.ErrCommitIndeterminate) || !strings.Contains(err.Error(), errPeerLost.Error()) {
			t.Fatalf("in-flight request after the peer was lost: %v, want an unknown outcome naming the loss", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the in-flight request did not fail when its peer was lost")
	}
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

// Request and response bodies of every size cross a forward intact: empty,
// small (one Call each way), at and just over the 64 KiB inline limit, and
// over the 1 MiB replayable limit (streamed over Fetch).
func TestForwardedBodiesOfEverySize(t *testing.T) {
	c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}})
	sizes := []int{0, 10, forwardChunk, forwardChunk + 1, 300 << 10, replayableBody + 5000}
	for _, size := range sizes {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i*7 + size)
		}
		for i := range c.nodes { // two of the three are forwarded
			u := "http://" + c.cfgs[i].HTTPAddr + "/echo?ns=PINGPONG&name=echo"
			resp, err := http.Post(u, "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("size %d via node %d: %d %v", size, i+1, resp.StatusCode, err)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("size %d via node %d: got %d bytes back, not the %d sent", size, i+1, len(got), len(body))
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

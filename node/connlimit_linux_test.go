package node

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestGRPCListener: the gRPC listener's connections keep the TCP user
// timeout gRPC would set on a bare TCP connection (the limit's wrapper
// hides it from gRPC), and one over the limit is closed without an HTTP/1
// answer, which a peer speaking HTTP/2 could not read.
func TestGRPCListener(t *testing.T) {
	n := &Node{serverKeepalive: defaultServerKeepalive(), metrics: newMetrics(gauges{}), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := n.limitGRPCConns(inner, fdBudget{grpc: 1}, true)
	defer ln.Close()
	first, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc, ok := c.(interface{ NetConn() net.Conn }).NetConn().(*net.TCPConn)
	if !ok {
		t.Fatalf("accepted %T, want a TCP connection underneath", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := raw.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if want := int(defaultServerKeepalive().Timeout / time.Millisecond); got != want {
		t.Fatalf("TCP_USER_TIMEOUT of an accepted gRPC connection = %d ms, want %d", got, want)
	}

	second, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	go func() { _, _ = ln.Accept() }()
	_ = second.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(second); err != nil || len(b) != 0 {
		t.Fatalf("a connection over the gRPC listener's limit read %q, %v; want it closed with nothing", b, err)
	}
}

package node

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestBudgetFor(t *testing.T) {
	for _, c := range []struct {
		limit                         uint64
		pebble, app, admin, grpc, sum int
	}{
		// Under ulimit -n 512 a quarter goes to Pebble, 256 are kept back.
		{512, 128, 48, 16, 64, 512},
		{1024, 256, 416, 32, 64, 1024},
		// This machine's default: Pebble's own 1,000, an eighth kept back.
		{20000, 1000, 13414, 1024, 2062, 20000},
		// Tiny limits still serve a few connections on each listener.
		{64, 64, 16, 16, 64, 0},
	} {
		b := budgetFor(c.limit)
		if b.pebbleFiles != c.pebble || b.app != c.app || b.admin != c.admin || b.grpc != c.grpc {
			t.Errorf("budgetFor(%d) = pebble %d, app %d, admin %d, grpc %d; want %d, %d, %d, %d", c.limit, b.pebbleFiles, b.app, b.admin, b.grpc, c.pebble, c.app, c.admin, c.grpc)
		}
		if c.sum != 0 && b.pebbleFiles+b.app+b.admin+b.grpc+max(fdReserve, int(c.limit)/8) != c.sum {
			t.Errorf("budgetFor(%d) does not add up to the limit: %+v", c.limit, b)
		}
	}
}

// TestConnLimitListener: connections over the limit read a 503 and are
// closed, counted; one closed (twice) frees exactly one place.
func TestConnLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "refused"})
	ln := newConnLimitListener(inner, "app", true, 2, refused, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	a1, a2 := <-accepted, <-accepted
	third := dial()
	resp, err := http.ReadResponse(bufio.NewReader(third), nil)
	if err != nil {
		t.Fatalf("a third connection over a limit of 2: %v, want a 503", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "holds 2 connections") {
		t.Fatalf("third connection read %s %q", resp.Status, body)
	}
	var m dto.Metric
	if err := refused.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		got := m.GetCounter().GetValue()
		t.Fatalf("refused counter %v, want 1", got)
	}
	if _, ok := a1.(interface{ CloseWrite() error }); !ok {
		t.Fatal("an accepted connection hides its TCP connection's CloseWrite from net/http")
	}
	a1.Close()
	a1.Close() // the HTTP server and a WebSocket may both close it
	dial()
	<-accepted
	dial()
	resp, err = http.ReadResponse(bufio.NewReader(dial()), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("after one close and two dials, a third: %v %v, want a 503 (one place freed, not two)", resp, err)
	}
	a2.Close()
}

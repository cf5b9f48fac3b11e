package node

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/roostdb/roost/durable"
)

// appHandler runs the Worker for every request to the app listener.
func (n *Node) appHandler() http.Handler {
	env := n.manager.env
	worker := n.app.Worker
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.RequestURI == "*" {
			// Not a request for the app: HTTP/2's connection preface
			// (PRI * HTTP/2.0), which Go's server hands on as a request
			// when h2c is off, or another method with "*" (Go's server
			// answers OPTIONS * itself).
			n.metrics.requests.WithLabelValues(statusClass(asteriskRequest(w, r))).Inc()
			return
		}
		gw, finish := guardRequest(w, r, n.cfg.BodyStallTimeout)
		sw := &statusWriter{ResponseWriter: gw}
		defer func() {
			if p := recover(); p != nil {
				n.log.Error("worker panicked", "panic", p, "stack", string(debug.Stack()))
				if sw.status == 0 {
					durable.WriteError(sw, fmt.Errorf("worker threw an exception: %v", p))
				}
			}
			n.metrics.requests.WithLabelValues(statusClass(sw.status)).Inc()
		}()
		// For every request, Upgrade headers or not: a WebSocket handshake
		// has no body, and a connection taken over for a WebSocket drops
		// the deadlines the guards may have left (durable.WriteResponse).
		worker(sw, r, env)
		finish()
	})
}

// asteriskRequest answers a request whose target is "*" rather than a
// path: no Worker can route it. It returns the status it answered.
func asteriskRequest(w http.ResponseWriter, r *http.Request) int {
	w.Header().Set("Connection", "close")
	if r.Method == "PRI" {
		http.Error(w, "roost serves HTTP/1.1 on this port: HTTP/2 without TLS (h2c) is not served", http.StatusHTTPVersionNotSupported)
		return http.StatusHTTPVersionNotSupported
	}
	http.Error(w, fmt.Sprintf("a request for %s * names no path; the app serves paths", r.Method), http.StatusBadRequest)
	return http.StatusBadRequest
}

// guardRequest bounds, by timeout, how long the request's body may keep
// the server waiting for the client (a stallGuard on r.Body) and how long
// one write of the response may wait for the client to take it (the
// writer it returns): without the second, a client that never read its
// answer held the connection, and the handler's goroutine, for ever. The
// function it returns, called once the handler is done, bounds the
// server's last writes of the answer and its read of what is left of a
// body the handler did not finish (up to 256 KiB, which the server reads
// before it sends the answer, so that the connection can be kept).
func guardRequest(w http.ResponseWriter, r *http.Request, timeout time.Duration) (http.ResponseWriter, func()) {
	rc := http.NewResponseController(w)
	// A deadline a keep-alive connection's last request left would fail
	// this one's first write (a 100 Continue, say) if it has passed.
	_ = rc.SetWriteDeadline(time.Time{})
	gw := &stallWriter{ResponseWriter: w, rc: rc, timeout: timeout}
	body := r.Body
	var guard *stallGuard
	if body != nil && body != http.NoBody {
		guard = &stallGuard{ReadCloser: body, rc: rc, timeout: timeout}
		r.Body = guard
	}
	return gw, func() {
		now := time.Now()
		if guard == nil {
			_ = rc.SetWriteDeadline(now.Add(timeout))
			return
		}
		if !guard.ended {
			// The server reads what is left before it writes the answer:
			// the writes' bound starts once the read's has passed.
			_ = rc.SetReadDeadline(now.Add(timeout))
			now = now.Add(timeout)
		}
		_ = rc.SetWriteDeadline(now.Add(timeout))
		// The server looks at the request's body to decide what to do with
		// what is left of it: its own body type tells it the length, and
		// over 256 KiB it closes the connection rather than read on. Behind
		// the guard it would read, waiting for bytes a client that was
		// refused at its Content-Length never sends.
		r.Body = body
	}
}

// stallWriter fails a response write that waits longer than timeout for
// the client to take it: each write gets a deadline on the connection.
type stallWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (s *stallWriter) Write(p []byte) (int, error) {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	return s.ResponseWriter.Write(p)
}

// FlushError is the flush of http.ResponseController, bounded as a write
// is: what it sends may have been buffered long before (a stream that
// writes, then waits, then flushes).
func (s *stallWriter) FlushError() error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	return s.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (s *stallWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// stallGuard fails a request body read that waits longer than timeout
// for the client (Config.BodyStallTimeout): each read gets a deadline on
// the connection, cleared once the body has ended.
type stallGuard struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	ended   bool
}

func (g *stallGuard) Read(p []byte) (int, error) {
	if g.ended {
		return g.ReadCloser.Read(p)
	}
	// No deadline where the server cannot set one: the read is as before.
	deadlineSet := g.rc.SetReadDeadline(time.Now().Add(g.timeout)) == nil
	n, err := g.ReadCloser.Read(p)
	if err != nil {
		g.ended = true
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The deadline stays, passed: the server's own read of the
			// rest of the body, before it answers, fails at once too. Not
			// err itself: it names the connection's addresses, which the
			// answer would show the client.
			return n, fmt.Errorf("request body: no byte from the client for %s: %w", g.timeout, os.ErrDeadlineExceeded)
		}
		if deadlineSet {
			g.rc.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}

func statusClass(code int) string {
	switch {
	case code == 0, code < 300:
		return "2xx"
	case code < 400:
		return "3xx"
	case code < 500:
		return "4xx"
	default:
		return "5xx"
	}
}

// statusWriter remembers the status the Worker wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader notes code once net/http took it: it panics on a code it
// cannot send (the Worker's exception: the status must stay unset for the
// 500), and sends an informational 1xx at once, before the final status.
func (s *statusWriter) WriteHeader(code int) {
	s.ResponseWriter.WriteHeader(code)
	if s.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		s.status = code
	}
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// adminHandler serves health, readiness, metrics, pprof, the dashboard and
// the admin API.
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if n.cluster != nil {
			if ok, why := n.cluster.ready(); !ok {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %s\n", why)
				return
			}
			fmt.Fprintln(w, "ready")
			return
		}
		var notReady []string
		for _, sh := range n.shards {
			if !sh.isReady() {
				notReady = append(notReady, sh.id.String())
			}
		}
		if len(notReady) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: shards without a leader here: %s\n", strings.Join(notReady, ","))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("GET /ui/", uiHandler())
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	// The JSON admin API (docs/admin-api.md), behind the admin token.
	mux.Handle("/v1/", n.adminAPI())
	// A body or an answer that stalls fails as one on the app listener does.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gw, finish := guardRequest(w, r, n.cfg.BodyStallTimeout)
		mux.ServeHTTP(gw, r)
		finish()
	})
}

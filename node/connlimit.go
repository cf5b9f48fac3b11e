package node

import (
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roostdb/roost/connlimit"
	"github.com/roostdb/roost/loglimit"
)

// fdBudget divides the process's open-file limit between the node's parts,
// so that clients holding connections open (idle keep-alives, WebSockets,
// half-sent requests) cannot take the descriptors its storage needs: with
// none left, Pebble could not open a table or a new WAL, failed writes,
// logged an error for every try and could panic (found by QA: 1,100 idle
// connections under `ulimit -n 1024`).
type fdBudget struct {
	limit uint64 // RLIMIT_NOFILE's soft limit (Go raises it to the hard one)
	// pebbleFiles is Pebble's MaxOpenFiles: its table cache and the rest.
	pebbleFiles int
	// app, admin and grpc are how many connections each listener keeps
	// open at once. The admin listener has a share of its own so that an
	// operator still reaches /metrics and the admin API while the app port
	// is full; the gRPC listener (peers, a few connections each) so that
	// garbage held open on it cannot starve storage either, and a full app
	// port does not keep the nodes from reaching each other.
	app, admin, grpc int
}

// Bounds of the budget's parts.
const (
	maxPebbleFiles = 1000 // Pebble's own default
	minPebbleFiles = 64
	// fdReserve is kept for everything else: the WAL, manifests and
	// snapshots, gRPC and gossip connections to peers, forwarded calls'
	// dials, log files. It is at least this, and an eighth of the limit.
	fdReserve      = 256
	minClientConns = 16
	maxAdminConns  = 1024
	minGRPCConns   = 64
	maxGRPCConns   = 4096
)

// budgetFor divides an open-file limit (see fdBudget).
func budgetFor(limit uint64) fdBudget {
	l := int(min(limit, 1<<30))
	b := fdBudget{limit: limit, pebbleFiles: min(max(l/4, minPebbleFiles), maxPebbleFiles)}
	clients := max(l-b.pebbleFiles-max(fdReserve, l/8), 2*minClientConns+minGRPCConns)
	b.admin = min(max(clients/16, minClientConns), maxAdminConns)
	b.grpc = min(max(clients/8, minGRPCConns), maxGRPCConns)
	b.app = max(clients-b.admin-b.grpc, minClientConns)
	return b
}

// openFileLimit is the process's open-file limit; ok is false if it cannot
// be read or is unlimited, and then the node sets no budget.
func openFileLimit() (limit uint64, ok bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == ^uint64(0) {
		return 0, false
	}
	return rl.Cur, true
}

// connLimitListener accepts at most its limit's connections open at once.
// One over it is closed at once, answered 503 first on an HTTP/1 listener,
// rather than left in the kernel's queue, where its client would wait with
// no word; the accept loop goes on, so connections are taken again as soon
// as others close.
type connLimitListener struct {
	net.Listener
	name    string // "app", "admin" or "grpc", for the log and the metric
	http1   bool   // answer a refused connection 503 before closing it
	conns   *connlimit.Limit
	refused prometheus.Counter
	log     *slog.Logger
	limit   *loglimit.Limiter // one line per refusalLogInterval
}

func newConnLimitListener(ln net.Listener, name string, http1 bool, maxOpen int, refused prometheus.Counter, log *slog.Logger) *connLimitListener {
	return &connLimitListener{Listener: ln, name: name, http1: http1, conns: connlimit.New(maxOpen), refused: refused, log: log,
		limit: loglimit.New(refusalLogInterval, 1, time.Now)}
}

// refusedAnswer is what a connection over the limit reads before it is
// closed: a whole HTTP response, which every HTTP client can report.
const refusedAnswer = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s"

// refusedWriteTimeout bounds the write of refusedAnswer: it fits in a new
// socket's send buffer, so it only waits on a broken connection, and the
// accept loop must not.
const refusedWriteTimeout = 100 * time.Millisecond

func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if taken, ok := l.conns.Take(c); ok {
			return taken, nil
		}
		l.refuse(c)
	}
}

func (l *connLimitListener) refuse(c net.Conn) {
	l.refused.Inc()
	if l.http1 {
		msg := fmt.Sprintf("roost: this node's %s listener holds %d connections, its most (set by the open-file limit); retry later\n", l.name, l.conns.Max())
		_ = c.SetWriteDeadline(time.Now().Add(refusedWriteTimeout))
		_, _ = fmt.Fprintf(c, refusedAnswer, len(msg), msg)
	}
	_ = c.Close()
	if ok, held, _ := l.limit.Allow(l.name); ok {
		l.log.Warn("refused a connection: the listener holds its most connections; raise the open-file limit (ulimit -n) to allow more",
			"listener", l.name, "max_connections", l.conns.Max(), "not_logged", held, "log_interval", refusalLogInterval)
	}
}

// userTimeoutListener sets TCP_USER_TIMEOUT on every connection it accepts,
// as gRPC's server does with its keepalive timeout so that a write to a
// peer that went silent fails within it instead of after the kernel's
// retransmissions (about 15 minutes). gRPC only sets it on a *net.TCPConn,
// and connLimitListener wraps each connection, so the gRPC listener sets
// it here, underneath the limit.
type userTimeoutListener struct {
	net.Listener
	timeout time.Duration
}

func (l userTimeoutListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			if err := setTCPUserTimeout(tc, l.timeout); err != nil {
				// This connection only: gRPC's Serve ends for good on an
				// Accept error it does not take as temporary.
				_ = c.Close()
				continue
			}
		}
		return c, nil
	}
}

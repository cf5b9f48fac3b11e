package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// HTTPClient is the HTTP/1.1 client of both load generators, `roost bench`
// and the etcd load of `make bench-compare`, so both sides of a comparison
// are driven alike. It is fasthttp's HostClient: a request runs on its
// caller's goroutine (net/http's client hands each one to a reader and a
// writer goroutine per connection) and reuses its buffers, which halves the
// CPU a request costs the load generator (42 → 22 µs here, measured with
// `time` around `roost bench`). On a small machine the load generator
// shares the cores with the server it measures, so that CPU is the
// server's.
//
// Connections are kept alive, at most one per worker (MaxConns), and never
// compressed (no Accept-Encoding is sent); redirects are not followed.
// When the context given to NewHTTPClient ends, every connection is closed,
// so the requests in flight fail at once instead of running to their
// deadline.
type HTTPClient struct {
	hc     *fasthttp.HostClient
	dialer *net.Dialer

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool // set when the context ended: dial no more

	stop context.CancelFunc
	done chan struct{}
}

// ErrClientClosed is returned for requests made after the client's context
// ended (or Close).
var ErrClientClosed = errors.New("load generator client closed")

// NewHTTPClient returns a client of the server serving serverURL (http://
// or https://; its path is not used), with at most maxConns connections.
// Close it when done.
func NewHTTPClient(ctx context.Context, serverURL string, maxConns int) (*HTTPClient, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %w", serverURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http://host[:port] or https://host[:port]", serverURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	ctx, stop := context.WithCancel(ctx)
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	c := &HTTPClient{
		dialer: dialer,
		conns:  make(map[net.Conn]struct{}),
		stop:   stop,
		done:   make(chan struct{}),
	}
	c.hc = &fasthttp.HostClient{
		Addr:  addr,
		IsTLS: u.Scheme == "https",
		Dial: func(addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return c.track(conn)
		},
		MaxConns: maxConns,
		// A worker's connection is back in the pool before its next
		// request, so waiting is rare; without a wait the client fails a
		// request at once when all connections are busy.
		MaxConnWaitTimeout:  5 * time.Second,
		MaxIdleConnDuration: 90 * time.Second,
		// Send what the caller wrote, nothing more: no User-Agent, header
		// names and paths as given.
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
	}
	go func() {
		defer close(c.done)
		<-ctx.Done()
		c.mu.Lock()
		c.closed = true
		for conn := range c.conns {
			conn.Close()
		}
		c.mu.Unlock()
	}()
	return c, nil
}

// track registers conn so that the end of the context closes it.
func (c *HTTPClient) track(conn net.Conn) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		conn.Close()
		return nil, ErrClientClosed
	}
	c.conns[conn] = struct{}{}
	return &trackedConn{Conn: conn, c: c}, nil
}

type trackedConn struct {
	net.Conn
	c    *HTTPClient
	once sync.Once
}

func (t *trackedConn) Close() error {
	t.once.Do(func() {
		t.c.mu.Lock()
		delete(t.c.conns, t.Conn)
		t.c.mu.Unlock()
	})
	return t.Conn.Close()
}

// Reachable reports whether the server accepts a TCP connection (within the
// dial timeout, 5 s), without sending it a request: a load run checks it
// first so that a wrong address fails once, clearly, instead of as every
// request of the run.
func (c *HTTPClient) Reachable(ctx context.Context) error {
	conn, err := c.dialer.DialContext(ctx, "tcp", c.hc.Addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// Close closes every connection and waits for that to be done.
func (c *HTTPClient) Close() {
	c.stop()
	<-c.done
	c.hc.CloseIdleConnections()
}

// Request is one request: Method (GET if empty) of URL, an absolute URL
// on the client's server, with Body and ContentType if Body is not nil.
type Request struct {
	Method      string
	URL         string
	ContentType string
	Body        []byte
}

// Do sends r and waits for the answer until deadline. It returns the
// status and the body appended to dst[:0] (pass the previous call's body
// to reuse its buffer). A transport failure or the deadline is an error; a
// status of any kind is not.
func (c *HTTPClient) Do(r Request, deadline time.Time, dst []byte) (status int, body []byte, err error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(r.URL)
	if r.Method != "" {
		req.Header.SetMethod(r.Method)
	}
	if r.Body != nil {
		req.Header.SetContentType(r.ContentType)
		req.SetBodyRaw(r.Body)
	}
	if err := c.hc.DoDeadline(req, resp, deadline); err != nil {
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			err = fmt.Errorf("%w: %w", ErrClientClosed, err)
		}
		return 0, dst[:0], fmt.Errorf("%s %s: %w", req.Header.Method(), r.URL, err)
	}
	return resp.StatusCode(), append(dst[:0], resp.Body()...), nil
}

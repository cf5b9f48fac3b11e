package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/roostdb/roost/loadgen"
)

// loadConfig is one `roost bench` run.
type loadConfig struct {
	URL         string        // base URL of the app, e.g. http://127.0.0.1:8787
	Path        string        // path requested under URL
	Concurrency int           // workers, each with one request in flight
	Names       int           // distinct object names, used round-robin
	NamePrefix  string        // names are NamePrefix + 0 … NamePrefix + Names-1
	Duration    time.Duration // measured part of the run
	Warmup      time.Duration // run before measuring, not counted
	Timeout     time.Duration // per request
}

// errInvalidLoad is wrapped by loadConfig.validate's errors.
var errInvalidLoad = errors.New("invalid bench settings")

func (c loadConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errInvalidLoad, fmt.Sprintf(format, args...))
	}
	// The scheme is checked first: url.Parse reads "127.0.0.1:8787" as a
	// path and says something about colons instead.
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return bad("--url %q must start with http:// or https://", c.URL)
	}
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		return bad("--url %q: %v", c.URL, err)
	case u.Host == "":
		return bad("--url %q has no host", c.URL)
	case u.RawQuery != "":
		return bad("--url %q: put the path and query in --path", c.URL)
	}
	if !strings.HasPrefix(c.Path, "/") {
		return bad("--path %q must start with /", c.Path)
	}
	if c.Concurrency < 1 {
		return bad("--concurrency must be at least 1, got %d", c.Concurrency)
	}
	if c.Names < 1 {
		return bad("--names must be at least 1, got %d", c.Names)
	}
	if c.Duration <= 0 {
		return bad("--duration must be positive, got %s", c.Duration)
	}
	if c.Warmup < 0 {
		return bad("--warmup must not be negative, got %s", c.Warmup)
	}
	if c.Timeout <= 0 {
		return bad("--timeout must be positive, got %s", c.Timeout)
	}
	return nil
}

// target is the URL of the i-th name, without per-request allocation of
// anything but the final string.
func (c loadConfig) target() func(i int) string {
	base := strings.TrimSuffix(c.URL, "/") + c.Path
	sep := "?"
	if strings.Contains(c.Path, "?") {
		sep = "&"
	}
	prefix := base + sep + "name=" + url.QueryEscape(c.NamePrefix)
	return func(i int) string { return prefix + strconv.Itoa(i) }
}

// loadResult and loadProgress are the load generator's, shared with the
// etcd load of `make bench-compare` so both are measured the same way.
type (
	loadResult   = loadgen.Result
	loadProgress = loadgen.Progress
)

// runLoad sends GET requests from cfg.Concurrency workers until the warmup
// and the duration have passed, then waits for the requests in flight (each
// bounded by cfg.Timeout), so every request sent is counted exactly once.
// Cancelling ctx ends the run early; requests it cuts short are not counted.
// It returns an error only for invalid settings: failed requests are results.
// onProgress, if not nil, is called about once a second from another goroutine.
func runLoad(ctx context.Context, cfg loadConfig, onProgress func(loadProgress)) (loadResult, error) {
	if err := cfg.validate(); err != nil {
		return loadResult{}, err
	}
	transport := &http.Transport{
		// A benchmark measures the server, not a proxy the environment names.
		Proxy:       nil,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		// One connection per worker, kept alive: dialing per request would
		// measure the TCP handshake. The cap matters too: a worker's next
		// request can start before its connection is back in the idle
		// pool, and without MaxConnsPerHost the transport dials another.
		MaxIdleConns:        cfg.Concurrency,
		MaxIdleConnsPerHost: cfg.Concurrency,
		MaxConnsPerHost:     cfg.Concurrency,
		IdleConnTimeout:     90 * time.Second,
		// Compression would measure gzip on both sides.
		DisableCompression: true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{
		Transport: transport,
		Timeout:   cfg.Timeout,
		// A redirect is an answer other than 200, not something to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	target := cfg.target()
	names := int64(cfg.Names)
	op := func(ctx context.Context, _ int, seq int64) (int64, error) {
		return 0, get(ctx, client, target(int(seq%names))) // round-robin over the names
	}
	return loadgen.Run(ctx, loadgen.Config{Concurrency: cfg.Concurrency, Duration: cfg.Duration, Warmup: cfg.Warmup}, op, onProgress), nil
}

// get fetches u and reads the whole body, which lets the connection be
// reused. Any status but 200 is an error carrying the start of the body.
func get(ctx context.Context, client *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		_, err := io.Copy(io.Discard, resp.Body)
		return err
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	io.Copy(io.Discard, resp.Body)
	msg := fmt.Sprintf("GET %s: %s", u, resp.Status)
	if b := strings.TrimSpace(string(head)); b != "" {
		msg += ": " + strings.Join(strings.Fields(b), " ")
	}
	return errors.New(msg)
}

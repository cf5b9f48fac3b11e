package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/roostdb/roost/loadgen"
)

// loadConfig is one `roost bench` run.
// maxConcurrency bounds --concurrency: each worker holds a connection and
// a buffer, and more than this many would measure the load generator.
const maxConcurrency = 10000

type loadConfig struct {
	URL         string        // base URL of the app, e.g. http://127.0.0.1:8787
	Path        string        // path requested under URL
	Concurrency int           // workers, each with one request in flight; at most maxConcurrency
	Names       int           // distinct object names, used round-robin
	NamePrefix  string        // names are NamePrefix + 0 … NamePrefix + Names-1
	Duration    time.Duration // measured part of the run
	Warmup      time.Duration // run before measuring, not counted
	Timeout     time.Duration // per request
}

var (
	// errInvalidLoad is wrapped by loadConfig.validate's errors.
	errInvalidLoad = errors.New("invalid bench settings")
	// errUnreachable is runLoad's error when nothing answers at --url.
	errUnreachable = errors.New("bench: cannot reach the app")
)

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
	case strings.Contains(c.URL, "#"):
		// What follows a # is never sent: every request would go to the
		// URL before it, without the name bench adds.
		return bad("--url %q has a #fragment, which is never sent to the server", c.URL)
	}
	if !strings.HasPrefix(c.Path, "/") {
		return bad("--path %q must start with /", c.Path)
	}
	if strings.Contains(c.Path, "#") {
		return bad("--path %q has a #fragment, which is never sent to the server (write %%23 for a # in the path)", c.Path)
	}
	// bench appends name=<prefix><i>; a name of its own in --path comes
	// first in the query, and the worker reads the first, so every
	// request would reach that one object.
	if _, query, ok := strings.Cut(c.Path, "?"); ok {
		if q, err := url.ParseQuery(query); err != nil {
			return bad("--path %q: %v", c.Path, err)
		} else if q.Has("name") {
			return bad("--path %q has a name parameter; bench adds name=<--name-prefix><i> itself (--names 1 benchmarks one object, <--name-prefix>0)", c.Path)
		}
	}
	if c.Concurrency < 1 || c.Concurrency > maxConcurrency {
		return bad("--concurrency must be from 1 to %d, got %d", maxConcurrency, c.Concurrency)
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
// It returns an error for invalid settings and when nothing accepts a
// connection at cfg.URL before the load starts; failed requests are results,
// and a worker whose request failed in transport pauses (loadgen.Backoff)
// before its next.
// onProgress, if not nil, is called about once a second from another goroutine.
func runLoad(ctx context.Context, cfg loadConfig, onProgress func(loadProgress)) (loadResult, error) {
	if err := cfg.validate(); err != nil {
		return loadResult{}, err
	}
	client, err := loadgen.NewHTTPClient(ctx, cfg.URL, cfg.Concurrency)
	if err != nil {
		return loadResult{}, fmt.Errorf("%w: %w", errInvalidLoad, err)
	}
	defer client.Close()
	if err := client.Reachable(ctx); err != nil {
		return loadResult{}, fmt.Errorf("%w: %w (is the app running? `roost dev` serves http://127.0.0.1:8787)", errUnreachable, err)
	}

	target := cfg.target()
	names := int64(cfg.Names)
	bodies := make([][]byte, cfg.Concurrency) // each worker's answer buffer
	backoffs := make([]loadgen.Backoff, cfg.Concurrency)
	op := func(ctx context.Context, w int, seq int64) (int64, error) {
		u := target(int(seq % names)) // round-robin over the names
		status, body, err := client.Do(loadgen.Request{URL: u}, time.Now().Add(cfg.Timeout), bodies[w])
		bodies[w] = body
		if err != nil {
			// A server that went away mid-run refuses at once; without a
			// pause every worker would spin on it at full speed.
			backoffs[w].Wait(ctx)
			return 0, err
		}
		backoffs[w].Reset()
		if status == http.StatusOK {
			return 0, nil
		}
		msg := fmt.Sprintf("GET %s: %d %s", u, status, http.StatusText(status))
		if b := strings.TrimSpace(string(body[:min(len(body), 200)])); b != "" {
			msg += ": " + strings.Join(strings.Fields(b), " ")
		}
		return 0, errors.New(msg)
	}
	return loadgen.Run(ctx, loadgen.Config{Concurrency: cfg.Concurrency, Duration: cfg.Duration, Warmup: cfg.Warmup}, op, onProgress), nil
}

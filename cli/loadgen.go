package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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

// loadResult is what a run measured. Only requests sent after the warmup
// are in it; WarmupRequests says how many came before.
type loadResult struct {
	Requests       int64         // measured requests that got an answer or failed
	Errors         int64         // of those, non-200 answers and transport errors
	FirstError     string        // the first error seen, "" if none
	WarmupRequests int64         // requests sent during the warmup
	Elapsed        time.Duration // from the end of the warmup until the last answer was in
	OpsPerSec      float64       // successful requests per second of Elapsed
	// Latency percentiles of the successful requests (nearest rank).
	P50, P90, P99, Max time.Duration
}

// loadProgress is reported about once a second while a run goes on.
type loadProgress struct {
	Elapsed  time.Duration // since the start, warmup included
	Warmup   bool          // still warming up
	Requests int64         // measured requests so far (warmup ones while Warmup)
	Errors   int64
}

// worker is one worker's measurements, merged at the end so that the hot
// path shares nothing but two progress counters.
type worker struct {
	latencies []time.Duration
	requests  int64
	errors    int64
	warmup    int64
}

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

	var (
		target           = cfg.target()
		seq              atomic.Int64 // round-robin over the names
		liveReq, liveErr atomic.Int64 // for progress only
		liveWarm         atomic.Int64
		firstErr         atomic.Pointer[string]
		start            = time.Now()
		measureFrom      = start.Add(cfg.Warmup)
		end              = measureFrom.Add(cfg.Duration)
		workers          = make([]worker, cfg.Concurrency)
		wg               sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			me := &workers[w]
			for ctx.Err() == nil {
				sent := time.Now()
				if !sent.Before(end) {
					return
				}
				i := int((seq.Add(1) - 1) % int64(cfg.Names))
				err := get(ctx, client, target(i))
				done := time.Now()
				if err != nil && ctx.Err() != nil {
					return // cut short by the caller: neither a result nor an error
				}
				if sent.Before(measureFrom) {
					me.warmup++
					liveWarm.Add(1)
					continue
				}
				me.requests++
				liveReq.Add(1)
				if err != nil {
					me.errors++
					liveErr.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
					continue
				}
				me.latencies = append(me.latencies, done.Sub(sent))
			}
		})
	}

	finished := make(chan struct{})
	progressDone := make(chan struct{})
	if onProgress != nil {
		go func() {
			defer close(progressDone)
			// Once a second during the warmup, then once a second from the
			// start of the measured phase, so no report straddles the two.
			next := start.Add(time.Second)
			for {
				if next.Before(measureFrom.Add(time.Second)) && !next.Before(measureFrom) {
					next = measureFrom.Add(time.Second)
				}
				timer := time.NewTimer(time.Until(next))
				select {
				case <-finished:
					timer.Stop()
					return
				case now := <-timer.C:
					p := loadProgress{Elapsed: now.Sub(start), Requests: liveReq.Load(), Errors: liveErr.Load()}
					if now.Before(measureFrom) {
						p.Warmup, p.Requests = true, liveWarm.Load()
					}
					onProgress(p)
				}
				next = next.Add(time.Second)
			}
		}()
	}
	wg.Wait()
	// The measured phase is wall time from the end of the warmup until the
	// last answer is in: at least the duration, unless ctx ended the run.
	stopped := time.Now()
	close(finished)
	if onProgress != nil {
		<-progressDone // no report may come after the result
	}

	var (
		res loadResult
		all []time.Duration
	)
	for _, w := range workers {
		res.Requests += w.requests
		res.Errors += w.errors
		res.WarmupRequests += w.warmup
		all = append(all, w.latencies...)
	}
	if p := firstErr.Load(); p != nil {
		res.FirstError = *p
	}
	res.Elapsed = max(stopped.Sub(measureFrom), 0)
	if res.Elapsed > 0 {
		res.OpsPerSec = float64(res.Requests-res.Errors) / res.Elapsed.Seconds()
	}
	slices.Sort(all)
	res.P50, res.P90, res.P99 = percentile(all, 50), percentile(all, 90), percentile(all, 99)
	if len(all) > 0 {
		res.Max = all[len(all)-1]
	}
	return res, nil
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

// percentile is the nearest-rank p-th percentile of sorted; 0 if empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

package cli

import (
	"github.com/roostdb/roost/loadgen"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer answers 200 to everything except the names in fail, and
// records how many requests and new connections it saw, and which names.
type countingServer struct {
	*httptest.Server
	requests atomic.Int64
	conns    atomic.Int64
	mu       sync.Mutex
	names    map[string]int
	paths    map[string]bool
}

func newCountingServer(t *testing.T, fail map[string]bool) *countingServer {
	s := &countingServer{names: make(map[string]int), paths: make(map[string]bool)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		name := r.URL.Query().Get("name")
		s.mu.Lock()
		s.names[name]++
		s.paths[r.URL.Path] = true
		s.mu.Unlock()
		if r.Header.Get("Accept-Encoding") != "" {
			http.Error(w, "bench asked for compression", http.StatusBadRequest)
			return
		}
		if fail[name] {
			http.Error(w, "object "+name+" is broken", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "1")
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func testLoad(url string) loadConfig {
	return loadConfig{
		URL: url, Path: "/increment", Concurrency: 8, Names: 5, NamePrefix: "bench-",
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Timeout: 5 * time.Second,
	}
}

func TestRunLoadCountsWhatTheServerSaw(t *testing.T) {
	srv := newCountingServer(t, nil)
	cfg := testLoad(srv.URL)
	var progress atomic.Int64
	cfg.Duration = 1200 * time.Millisecond // long enough for one progress report
	res, err := runLoad(context.Background(), cfg, func(loadProgress) { progress.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := srv.requests.Load(), res.Requests+res.WarmupRequests; got != want {
		t.Errorf("server saw %d requests, bench reports %d measured + %d warmup = %d", got, res.Requests, res.WarmupRequests, want)
	}
	if res.Requests == 0 || res.WarmupRequests == 0 {
		t.Errorf("requests %d, warmup %d; want both > 0", res.Requests, res.WarmupRequests)
	}
	if res.Errors != 0 || res.FirstError != "" {
		t.Errorf("errors %d (%s), want none", res.Errors, res.FirstError)
	}
	srv.mu.Lock()
	for i := range cfg.Names {
		if srv.names[fmt.Sprintf("bench-%d", i)] == 0 {
			t.Errorf("name bench-%d never requested (saw %v)", i, srv.names)
		}
	}
	if len(srv.names) != cfg.Names || !srv.paths["/increment"] || len(srv.paths) != 1 {
		t.Errorf("names %v paths %v; want exactly bench-0…bench-4 on /increment", srv.names, srv.paths)
	}
	srv.mu.Unlock()
	// One connection a worker, and the one that checked the server answers.
	if c := srv.conns.Load(); c > int64(cfg.Concurrency)+1 {
		t.Errorf("%d connections for %d workers and a check: connections are not reused", c, cfg.Concurrency)
	}
	if !(res.P50 > 0 && res.P50 <= res.P90 && res.P90 <= res.P99 && res.P99 <= res.Max) {
		t.Errorf("latencies p50 %s p90 %s p99 %s max %s are not ordered and positive", res.P50, res.P90, res.P99, res.Max)
	}
	if res.Elapsed < cfg.Duration || res.OpsPerSec <= 0 {
		t.Errorf("elapsed %s (want ≥ %s), ops/s %f", res.Elapsed, cfg.Duration, res.OpsPerSec)
	}
	if want := float64(res.Requests) / res.Elapsed.Seconds(); res.OpsPerSec != want {
		t.Errorf("ops/s %f, want requests/elapsed = %f", res.OpsPerSec, want)
	}
	if progress.Load() == 0 {
		t.Error("no progress reported in a run over one second")
	}
}

func TestRunLoadErrors(t *testing.T) {
	srv := newCountingServer(t, map[string]bool{"bench-1": true})
	cfg := testLoad(srv.URL)
	cfg.Warmup = 0
	res, err := runLoad(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.requests.Load(); got != res.Requests {
		t.Errorf("server saw %d requests, bench reports %d", got, res.Requests)
	}
	srv.mu.Lock()
	failed := int64(srv.names["bench-1"])
	srv.mu.Unlock()
	if res.Errors != failed || failed == 0 {
		t.Errorf("errors %d, server failed %d", res.Errors, failed)
	}
	for _, want := range []string{"name=bench-1", "500 Internal Server Error", "object bench-1 is broken"} {
		if !strings.Contains(res.FirstError, want) {
			t.Errorf("first error %q lacks %q", res.FirstError, want)
		}
	}
	if want := float64(res.Requests-res.Errors) / res.Elapsed.Seconds(); res.OpsPerSec != want {
		t.Errorf("ops/s %f counts failures; want %f", res.OpsPerSec, want)
	}
}

func TestRunLoadRefusesAnAddressWhereNothingListens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := testLoad("http://" + addr)
	cfg.Warmup, cfg.Duration = 0, time.Hour
	start := time.Now()
	_, err = runLoad(context.Background(), cfg, nil)
	if !errors.Is(err, errUnreachable) || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v; want errUnreachable naming %s and the refusal", err, addr)
	}
	if d := time.Since(start); d > time.Minute {
		t.Errorf("runLoad took %s to give up on a dead address", d)
	}
}

// A server that goes away during the run makes every request fail at once;
// the workers pause between such failures instead of spinning on them.
func TestRunLoadPausesWhileTheServerIsGone(t *testing.T) {
	srv := newCountingServer(t, nil)
	cfg := testLoad(srv.URL)
	cfg.Concurrency, cfg.Warmup, cfg.Duration = 8, 0, time.Second
	go func() {
		time.Sleep(100 * time.Millisecond)
		srv.Close()
	}()
	res, err := runLoad(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Requests == res.Errors {
		t.Fatalf("requests %d, errors %d: want some to succeed and then fail", res.Requests, res.Errors)
	}
	// With pauses of 10 ms doubling up to 250 ms, a worker fails at most
	// about a dozen times in the 0.9 s the server is gone; spinning, each
	// fails thousands of times.
	if limit := int64(cfg.Concurrency * 30); res.Errors > limit {
		t.Errorf("%d failed requests from %d workers in %s: the workers spin on a dead server", res.Errors, cfg.Concurrency, cfg.Duration)
	}
}

func TestRunLoadCancel(t *testing.T) {
	srv := newCountingServer(t, nil)
	cfg := testLoad(srv.URL)
	cfg.Warmup, cfg.Duration = 0, time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := runLoad(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("run took %s after cancel", time.Since(start))
	}
	if res.Requests == 0 || res.Errors != 0 {
		t.Errorf("requests %d errors %d (%s); want some, and cancelled ones not counted as errors", res.Requests, res.Errors, res.FirstError)
	}
}

func TestLoadConfigValidate(t *testing.T) {
	good := testLoad("http://127.0.0.1:8787")
	tests := []struct {
		name   string
		change func(*loadConfig)
		want   string
	}{
		{"good", func(*loadConfig) {}, ""},
		{"no scheme", func(c *loadConfig) { c.URL = "127.0.0.1:8787" }, "must start with http://"},
		{"no host", func(c *loadConfig) { c.URL = "http://" }, "has no host"},
		{"query in url", func(c *loadConfig) { c.URL = "http://h/?a=1" }, "put the path and query in --path"},
		{"relative path", func(c *loadConfig) { c.Path = "increment" }, "--path \"increment\" must start with /"},
		// A fragment is never sent: no request would name an object.
		{"fragment in the URL", func(c *loadConfig) { c.URL = "http://127.0.0.1:8787#x" }, "has a #fragment"},
		{"fragment in the path", func(c *loadConfig) { c.Path = "/increment#x" }, "has a #fragment"},
		{"name in path", func(c *loadConfig) { c.Path = "/increment?name=foo" }, "--path \"/increment?name=foo\" has a name parameter"},
		{"name later in path", func(c *loadConfig) { c.Path = "/increment?x=1&name=" }, "has a name parameter"},
		{"other query in path", func(c *loadConfig) { c.Path = "/increment?x=1" }, ""},
		{"bad query in path", func(c *loadConfig) { c.Path = "/increment?x=%zz" }, "invalid URL escape"},
		{"zero concurrency", func(c *loadConfig) { c.Concurrency = 0 }, "--concurrency must be from 1 to 10000, got 0"},
		{"huge concurrency", func(c *loadConfig) { c.Concurrency = 100_000_000 }, "--concurrency must be from 1 to 10000, got 100000000"},
		{"zero names", func(c *loadConfig) { c.Names = 0 }, "--names must be at least 1"},
		{"zero duration", func(c *loadConfig) { c.Duration = 0 }, "--duration must be positive"},
		{"negative warmup", func(c *loadConfig) { c.Warmup = -time.Second }, "--warmup must not be negative"},
		{"zero timeout", func(c *loadConfig) { c.Timeout = 0 }, "--timeout must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.change(&c)
			err := c.validate()
			if tt.want == "" {
				if err != nil {
					t.Errorf("validate: %v", err)
				}
				return
			}
			if !errors.Is(err, errInvalidLoad) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate = %v; want errInvalidLoad containing %q", err, tt.want)
			}
		})
	}
}

func TestTarget(t *testing.T) {
	tests := []struct {
		url, path, prefix string
		want              string
	}{
		{"http://h:1", "/increment", "bench-", "http://h:1/increment?name=bench-7"},
		{"http://h:1/", "/increment", "bench-", "http://h:1/increment?name=bench-7"},
		{"http://h:1", "/x?y=1", "a b&", "http://h:1/x?y=1&name=a+b%267"},
	}
	for _, tt := range tests {
		got := loadConfig{URL: tt.url, Path: tt.path, NamePrefix: tt.prefix}.target()(7)
		if got != tt.want {
			t.Errorf("target(%q, %q, %q) = %q, want %q", tt.url, tt.path, tt.prefix, got, tt.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = ms(i + 1)
	}
	tests := []struct {
		sorted []time.Duration
		p      int
		want   time.Duration
	}{
		{nil, 50, 0},
		{[]time.Duration{ms(5)}, 50, ms(5)},
		{[]time.Duration{ms(5)}, 99, ms(5)},
		{[]time.Duration{ms(1), ms(2)}, 50, ms(1)},
		{[]time.Duration{ms(1), ms(2)}, 90, ms(2)},
		{hundred, 50, ms(50)},
		{hundred, 90, ms(90)},
		{hundred, 99, ms(99)},
		{hundred, 100, ms(100)},
	}
	for _, tt := range tests {
		if got := loadgen.Percentile(tt.sorted, tt.p); got != tt.want {
			t.Errorf("Percentile(%d values, %d) = %s, want %s", len(tt.sorted), tt.p, got, tt.want)
		}
	}
}

// TestBenchCommand runs `roost bench` end to end, with the single-dash
// spellings, and checks its report against the server's own count.
func TestBenchCommand(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		srv := newCountingServer(t, nil)
		code, stdout, stderr := runCLI(t, nil, "bench", "-url", srv.URL, "-names", "3", "-c", "4", "-d", "300ms", "--warmup", "100ms", "-o", "json")
		if code != exitOK {
			t.Fatalf("exit %d; stderr %s", code, stderr)
		}
		var got benchJSON
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, stdout)
		}
		if seen := srv.requests.Load(); got.Requests+got.WarmupRequests != seen || got.Requests == 0 {
			t.Errorf("bench reports %d + %d warmup, server saw %d", got.Requests, got.WarmupRequests, seen)
		}
		if got.URL != srv.URL || got.Concurrency != 4 || got.Names != 3 || got.Errors != 0 || got.OpsPerSec <= 0 || got.LatencyMs.P99 <= 0 {
			t.Errorf("report %+v", got)
		}
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if len(srv.names) != 3 {
			t.Errorf("-names 3 reached names %v", srv.names)
		}
	})
	t.Run("text", func(t *testing.T) {
		srv := newCountingServer(t, nil)
		code, stdout, stderr := runCLI(t, nil, "bench", "-url="+srv.URL, "-path", "/other", "-name-prefix", "x-", "-c", "2", "-d", "200ms", "-warmup", "0s")
		if code != exitOK {
			t.Fatalf("exit %d; stderr %s", code, stderr)
		}
		want := fmt.Sprintf("requests     %d\n", srv.requests.Load())
		for _, w := range []string{want, "errors       0\n", "ops/s", "p50", "p90", "p99", "max", srv.URL + "/other?name=x-0"} {
			if !strings.Contains(stdout, w) {
				t.Errorf("output lacks %q:\n%s", w, stdout)
			}
		}
	})
	t.Run("errors exit 1", func(t *testing.T) {
		srv := newCountingServer(t, map[string]bool{"bench-0": true})
		code, stdout, stderr := runCLI(t, nil, "bench", "--url", srv.URL, "-c", "2", "-d", "100ms", "--warmup", "0s")
		if code != exitFailure {
			t.Errorf("exit %d, want %d", code, exitFailure)
		}
		if !strings.Contains(stdout, "errors       ") || !strings.Contains(lastLine(stderr), "requests failed; first: GET") {
			t.Errorf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
		}
	})
}

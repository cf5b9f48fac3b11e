// Command etcdload puts a counter-increment load on an etcd cluster, the
// etcd side of `make bench-compare` (scripts/bench-compare.sh), measured the
// way `roost bench` measures roost.
//
// One operation is one increment of a counter key: read the key (a
// linearizable range), then compare-and-swap it in a transaction (compare
// mod_revision == the revision read, then put value+1). When the comparison
// fails because another client got there first, the worker reads the key
// again and retries; the increment counts once, when its transaction
// succeeds, and its latency runs from the first read to that success. The
// failed comparisons are reported as retries, not as errors.
//
// It talks to etcd's v3 JSON gRPC gateway over plain HTTP (POST /v3/kv/range
// and /v3/kv/txn with base64 keys and values), so it needs no etcd client
// library: only the Go standard library.
//
// -c workers each keep one increment in flight over kept-alive connections;
// worker i uses endpoint i mod len(-endpoints), so the load is spread over
// the members. Keys are -key-prefix followed by 0 … -keys-1, used round-robin
// across all workers, like the names of `roost bench`. The run lasts -warmup
// (not counted) and then -d; increments still in flight when it ends are
// waited for and counted. An increment is an error if any of its requests
// gets a status other than 200 or fails in transport, or if it has not
// succeeded within -timeout. ops/s is successful increments per second;
// latencies are exact nearest-rank percentiles over every successful
// increment. With -o json the result is one JSON document on stdout in the
// shape of `roost bench -o json` (endpoints and keys for url and names, plus
// retries). Progress goes to stderr once a second. The exit status is 1 if
// any measured increment failed or none was measured, 2 for bad flags.
//
// Usage:
//
//	go run ./internal/cmd/etcdload -endpoints http://127.0.0.1:2379,http://127.0.0.1:22379 -c 64 -keys 1000 -d 10s -o json
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/roostdb/roost/loadgen"
)

// config is one run.
type config struct {
	Endpoints   []string      // base URLs of the members' client listeners
	Concurrency int           // workers, each with one increment in flight
	Keys        int           // distinct counter keys, used round-robin
	KeyPrefix   string        // keys are KeyPrefix + 0 … KeyPrefix + Keys-1
	Duration    time.Duration // measured part of the run
	Warmup      time.Duration // run before measuring, not counted
	Timeout     time.Duration // per increment, retries included
}

func (c config) validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("-endpoints is empty")
	}
	for _, e := range c.Endpoints {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			return fmt.Errorf("endpoint %q must start with http:// or https://", e)
		}
	}
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("-c must be at least 1, got %d", c.Concurrency)
	case c.Keys < 1:
		return fmt.Errorf("-keys must be at least 1, got %d", c.Keys)
	case c.Duration <= 0:
		return fmt.Errorf("-d must be positive, got %s", c.Duration)
	case c.Warmup < 0:
		return fmt.Errorf("-warmup must not be negative, got %s", c.Warmup)
	case c.Timeout <= 0:
		return fmt.Errorf("-timeout must be positive, got %s", c.Timeout)
	}
	return nil
}

// result and progress are the shared load generator's, so etcd is
// measured exactly as `roost bench` measures roost.
type (
	result   = loadgen.Result
	progress = loadgen.Progress
)

// client sends the gateway's requests, one HTTP client per member.
type client struct {
	hcs map[string]*loadgen.HTTPClient // by endpoint
}

// int64s is an int64 that the gateway may encode as a JSON string (as it
// does, protobuf's JSON mapping of int64) or as a number.
type int64s int64

func (v *int64s) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*v = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	*v = int64s(n)
	return err
}

// post sends body as JSON to endpoint+path and decodes a 200 answer into out.
func (c *client) post(ctx context.Context, endpoint, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Minute)
	}
	status, answer, err := c.hcs[endpoint].Do(loadgen.Request{
		Method: http.MethodPost, URL: endpoint + path, ContentType: "application/json", Body: b,
	}, deadline, nil)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
		return err
	}
	if status != http.StatusOK {
		msg := fmt.Sprintf("POST %s%s: %d %s", endpoint, path, status, http.StatusText(status))
		if s := strings.TrimSpace(string(answer[:min(len(answer), 200)])); s != "" {
			msg += ": " + strings.Join(strings.Fields(s), " ")
		}
		return errors.New(msg)
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("POST %s%s: decoding the answer: %w", endpoint, path, err)
	}
	return nil
}

// read returns the counter at key (0 if the key does not exist) and its
// mod_revision (0 if it does not exist, which is what a comparison of a
// missing key's mod_revision sees).
func (c *client) read(ctx context.Context, endpoint, key string) (count, modRev int64, err error) {
	var resp struct {
		Kvs []struct {
			ModRevision int64s `json:"mod_revision"`
			Value       string `json:"value"`
		} `json:"kvs"`
	}
	if err := c.post(ctx, endpoint, "/v3/kv/range", map[string]string{"key": key}, &resp); err != nil {
		return 0, 0, err
	}
	if len(resp.Kvs) == 0 {
		return 0, 0, nil
	}
	kv := resp.Kvs[0]
	raw, err := base64.StdEncoding.DecodeString(kv.Value)
	if err != nil {
		return 0, 0, fmt.Errorf("value of %q: %w", key, err)
	}
	if len(raw) > 0 {
		if count, err = strconv.ParseInt(string(raw), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("value of %q is not a counter: %w", key, err)
		}
	}
	return count, int64(kv.ModRevision), nil
}

// swap puts count at key if its mod_revision is still modRev and reports
// whether it did.
func (c *client) swap(ctx context.Context, endpoint, key string, modRev, count int64) (bool, error) {
	value := base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(count, 10)))
	txn := map[string]any{
		"compare": []map[string]string{{
			"key": key, "target": "MOD", "result": "EQUAL",
			"mod_revision": strconv.FormatInt(modRev, 10),
		}},
		"success": []map[string]any{{
			"request_put": map[string]string{"key": key, "value": value},
		}},
	}
	var resp struct {
		Succeeded bool `json:"succeeded"` // omitted, so false, when the comparison failed
	}
	if err := c.post(ctx, endpoint, "/v3/kv/txn", txn, &resp); err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// increment adds one to the counter at key (base64-encoded), re-reading and
// retrying while another client's write gets in between. It returns how
// many comparisons failed on the way.
func (c *client) increment(ctx context.Context, endpoint, key string) (retries int64, err error) {
	for {
		count, modRev, err := c.read(ctx, endpoint, key)
		if err != nil {
			return retries, err
		}
		ok, err := c.swap(ctx, endpoint, key, modRev, count+1)
		if err != nil {
			return retries, err
		}
		if ok {
			return retries, nil
		}
		retries++
	}
}

// run puts the load on the cluster until the warmup and the duration have
// passed, then waits for the increments in flight. Cancelling ctx ends the
// run early; increments it cuts short are not counted.
func run(ctx context.Context, cfg config, onProgress func(progress)) (result, error) {
	keys := make([]string, cfg.Keys)
	for i := range keys {
		keys[i] = base64.StdEncoding.EncodeToString([]byte(cfg.KeyPrefix + strconv.Itoa(i)))
	}
	endpoints := make([]string, len(cfg.Endpoints))
	c := &client{hcs: make(map[string]*loadgen.HTTPClient)}
	for i, e := range cfg.Endpoints {
		endpoints[i] = strings.TrimSuffix(e, "/")
		// Workers use the members round-robin: a member gets this many.
		workers := (cfg.Concurrency + len(cfg.Endpoints) - 1) / len(cfg.Endpoints)
		hc, err := loadgen.NewHTTPClient(ctx, endpoints[i], workers)
		if err != nil {
			return result{}, err
		}
		defer hc.Close()
		c.hcs[endpoints[i]] = hc
	}
	op := func(ctx context.Context, w int, seq int64) (int64, error) {
		endpoint := endpoints[w%len(endpoints)]
		opCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		retries, err := c.increment(opCtx, endpoint, keys[seq%int64(len(keys))])
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("increment of %s not done within %s (%d retries): %w", endpoint, cfg.Timeout, retries, err)
		}
		return retries, err
	}
	return loadgen.Run(ctx, loadgen.Config{Concurrency: cfg.Concurrency, Duration: cfg.Duration, Warmup: cfg.Warmup}, op, onProgress), nil
}

// resultJSON is the -o json document, shaped like `roost bench -o json`.
type resultJSON struct {
	Endpoints      []string `json:"endpoints"`
	Concurrency    int      `json:"concurrency"`
	Keys           int      `json:"keys"`
	DurationSec    float64  `json:"duration_seconds"`
	WarmupRequests int64    `json:"warmup_requests"`
	Requests       int64    `json:"requests"`
	Errors         int64    `json:"errors"`
	FirstError     string   `json:"first_error,omitempty"`
	Retries        int64    `json:"retries"`
	OpsPerSec      float64  `json:"ops_per_sec"`
	LatencyMs      struct {
		P50 float64 `json:"p50"`
		P90 float64 `json:"p90"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"latency_ms"`
}

func writeJSON(w io.Writer, cfg config, r result) error {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	out := resultJSON{
		Endpoints: cfg.Endpoints, Concurrency: cfg.Concurrency, Keys: cfg.Keys,
		DurationSec: r.Elapsed.Seconds(), WarmupRequests: r.WarmupRequests,
		Requests: r.Requests, Errors: r.Errors, FirstError: r.FirstError,
		Retries: r.Retries, OpsPerSec: r.OpsPerSec,
	}
	out.LatencyMs.P50, out.LatencyMs.P90, out.LatencyMs.P99, out.LatencyMs.Max = ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func writeText(w io.Writer, cfg config, r result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "endpoints\t%s\n", strings.Join(cfg.Endpoints, ","))
	fmt.Fprintf(tw, "keys\t%d (%s0 …)\n", cfg.Keys, cfg.KeyPrefix)
	fmt.Fprintf(tw, "concurrency\t%d\n", cfg.Concurrency)
	fmt.Fprintf(tw, "measured\t%s (after %d warmup increments)\n", r.Elapsed.Round(time.Millisecond), r.WarmupRequests)
	fmt.Fprintf(tw, "increments\t%d (%d compare-and-swap retries)\n", r.Requests, r.Retries)
	if r.Errors > 0 {
		fmt.Fprintf(tw, "errors\t%d (first: %s)\n", r.Errors, r.FirstError)
	} else {
		fmt.Fprintf(tw, "errors\t0\n")
	}
	fmt.Fprintf(tw, "ops/s\t%.1f\n", r.OpsPerSec)
	fmt.Fprintf(tw, "latency\tp50 %s  p90 %s  p99 %s  max %s\n", r.P50, r.P90, r.P99, r.Max)
	tw.Flush()
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("etcdload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg       config
		endpoints string
		output    string
	)
	fs.StringVar(&endpoints, "endpoints", "http://127.0.0.1:2379", "comma-separated base URLs of the etcd members' client listeners")
	fs.IntVar(&cfg.Concurrency, "c", 64, "workers, each with one increment in flight")
	fs.IntVar(&cfg.Keys, "keys", 1, "distinct counter keys to spread increments over")
	fs.StringVar(&cfg.KeyPrefix, "key-prefix", "bench-", "keys are this prefix followed by 0, 1, …")
	fs.DurationVar(&cfg.Duration, "d", 10*time.Second, "how long to measure")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "how long to send load before measuring (not counted)")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "per increment, retries included")
	fs.StringVar(&output, "o", "text", `result format: "text" or "json"`)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	for e := range strings.SplitSeq(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			cfg.Endpoints = append(cfg.Endpoints, strings.TrimSuffix(e, "/"))
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "etcdload: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if output != "text" && output != "json" {
		fmt.Fprintf(stderr, "etcdload: -o must be \"text\" or \"json\", got %q\n", output)
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "etcdload: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var prev int64
	res, err := run(ctx, cfg, func(p progress) {
		if p.Warmup {
			fmt.Fprintf(stderr, "%4.0fs  warming up: %d increments\n", p.Elapsed.Seconds(), p.Requests)
			return
		}
		fmt.Fprintf(stderr, "%4.0fs  %d increments (%d in the last second)  %d errors\n", p.Elapsed.Seconds(), p.Requests, p.Requests-prev, p.Errors)
		prev = p.Requests
	})
	if err != nil {
		fmt.Fprintf(stderr, "etcdload: %v\n", err)
		return 2
	}
	if output == "json" {
		if err := writeJSON(stdout, cfg, res); err != nil {
			fmt.Fprintf(stderr, "etcdload: %v\n", err)
			return 1
		}
	} else {
		writeText(stdout, cfg, res)
	}
	switch {
	case res.Errors > 0:
		fmt.Fprintf(stderr, "etcdload: %d of %d increments failed; first: %s\n", res.Errors, res.Requests, res.FirstError)
		return 1
	case res.Requests == 0:
		fmt.Fprintf(stderr, "etcdload: no increment was measured\n")
		return 1
	}
	return 0
}

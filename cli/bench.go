package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newBenchCommand(stdout, stderr io.Writer) *cobra.Command {
	cfg := loadConfig{}
	var output string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Put HTTP load on a running app and report throughput and latency",
		Long: `Send GET <url><path>?name=<name-prefix><i> from --concurrency workers, each
with one request in flight over a kept-alive connection, for --warmup and then
--duration, and report what the measured part saw.

Names are used round-robin across all workers, so --names 1 (the default) puts
every request on one object and measures a single object's throughput, and a
large --names spreads the load over many objects and shards.

bench first checks that something accepts connections at --url and stops with
an error if nothing does. A request counts as an error if it gets any status
but 200 (redirects are not followed) or fails in transport; after a transport
failure its worker pauses (10 ms, doubling up to 250 ms while they go on) so
that a server gone mid-run is not flooded. Requests still in flight when the
duration ends are waited for and counted, so the total matches what the server
received (warmup requests are reported separately). An interrupt (Ctrl-C) ends
the run at once: the figures cover the time until then, the requests it cut
short are reported apart (the server may have run them), and the exit status
is 1. ops/s is successful requests per second; latencies are those of the
successful requests: exact nearest-rank percentiles over every sample, not a
histogram.

A progress line goes to stderr every second. The exit status is 1 if any
measured request failed or the run was interrupted. Go-style single-dash long
flags (-url, -names, ...) are accepted too.`,
		Example: `  # one hot object, 64 connections, 10 seconds (start 'roost dev' first)
  roost bench

  # spread over 1000 objects, machine-readable result
  roost bench --names 1000 -c 128 -d 30s -o json

  # another host and path
  roost bench -url http://10.0.0.5:8787 -path /increment -names 10`,
		Annotations: map[string]string{singleDashAnnotation: "true"},
		Args:        noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return &usageError{cmd: cmd, err: fmt.Errorf(`--output must be "text" or "json", got %q`, output)}
			}
			if err := cfg.validate(); err != nil {
				return &usageError{cmd: cmd, err: err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()

			var prev int64 // requests at the last report, for a per-second rate
			res, err := runLoad(ctx, cfg, func(p loadProgress) {
				if p.Warmup {
					fmt.Fprintf(stderr, "%4.0fs  warming up: %d requests\n", p.Elapsed.Seconds(), p.Requests)
					return
				}
				fmt.Fprintf(stderr, "%4.0fs  %d requests (%d in the last second)  %d errors\n", p.Elapsed.Seconds(), p.Requests, p.Requests-prev, p.Errors)
				prev = p.Requests
			})
			if err != nil {
				return err
			}
			if output == "json" {
				if err := writeBenchJSON(stdout, cfg, res); err != nil {
					return err
				}
			} else {
				writeBenchText(stdout, cfg, res)
			}
			switch {
			case res.Interrupted && res.Elapsed == 0:
				return fmt.Errorf("bench: interrupted during the warmup, before anything was measured; %d requests cut short are in no count", res.CutShort)
			case res.Interrupted:
				return fmt.Errorf("bench: interrupted after %s of the measured phase; %d requests cut short are in no count", res.Elapsed.Round(time.Millisecond), res.CutShort)
			case res.Errors > 0:
				return fmt.Errorf("bench: %d of %d requests failed; first: %s", res.Errors, res.Requests, res.FirstError)
			case res.Requests == 0:
				return fmt.Errorf("bench: no request was measured")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.URL, "url", "http://127.0.0.1:8787", "base URL of the app")
	f.StringVar(&cfg.Path, "path", "/increment", "path to request (a query is allowed; name= is added)")
	decimalIntVarP(f, &cfg.Concurrency, "concurrency", "c", 64, "workers, each with one request in flight (1 to 10000)")
	decimalIntVar(f, &cfg.Names, "names", 1, "distinct object names to spread requests over")
	f.StringVar(&cfg.NamePrefix, "name-prefix", "bench-", "object names are this prefix followed by 0, 1, …")
	f.DurationVarP(&cfg.Duration, "duration", "d", 10*time.Second, "how long to measure")
	f.DurationVar(&cfg.Warmup, "warmup", time.Second, "how long to send load before measuring (not counted)")
	f.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "per-request timeout")
	f.StringVarP(&output, "output", "o", "text", `result format: "text" or "json"`)
	return cmd
}

func writeBenchText(w io.Writer, cfg loadConfig, r loadResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	names := fmt.Sprintf("%s0", cfg.NamePrefix)
	if cfg.Names > 1 {
		names = fmt.Sprintf("%s0 … %s%d", cfg.NamePrefix, cfg.NamePrefix, cfg.Names-1)
	}
	fmt.Fprintf(tw, "target\t%s\n", cfg.target()(0))
	fmt.Fprintf(tw, "names\t%s\n", names)
	fmt.Fprintf(tw, "concurrency\t%d\n", cfg.Concurrency)
	fmt.Fprintf(tw, "measured\t%s (after %d warmup requests)\n", r.Elapsed.Round(time.Millisecond), r.WarmupRequests)
	fmt.Fprintf(tw, "requests\t%d\n", r.Requests)
	if r.Errors > 0 {
		fmt.Fprintf(tw, "errors\t%d (first: %s)\n", r.Errors, r.FirstError)
	} else {
		fmt.Fprintf(tw, "errors\t0\n")
	}
	fmt.Fprintf(tw, "ops/s\t%.1f\n", r.OpsPerSec)
	fmt.Fprintf(tw, "latency\tp50 %s  p90 %s  p99 %s  max %s\n", roundLatency(r.P50), roundLatency(r.P90), roundLatency(r.P99), roundLatency(r.Max))
	if r.Interrupted {
		fmt.Fprintf(tw, "interrupted\t%d requests in flight cut short, in no count above (the server may have run them)\n", r.CutShort)
	}
	tw.Flush()
}

// roundLatency keeps three significant figures or so: nanoseconds are noise.
func roundLatency(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// benchJSON is the -o json document; field names are part of the CLI's
// interface, for scripts that collect results.
type benchJSON struct {
	URL            string  `json:"url"`
	Path           string  `json:"path"`
	Concurrency    int     `json:"concurrency"`
	Names          int     `json:"names"`
	DurationSec    float64 `json:"duration_seconds"`
	WarmupRequests int64   `json:"warmup_requests"`
	Requests       int64   `json:"requests"`
	Errors         int64   `json:"errors"`
	FirstError     string  `json:"first_error,omitempty"`
	OpsPerSec      float64 `json:"ops_per_sec"`
	// Interrupted runs only: the requests in flight when the run was
	// stopped, whose outcome is unknown.
	Interrupted bool  `json:"interrupted,omitempty"`
	CutShort    int64 `json:"cut_short,omitempty"`
	LatencyMs   struct {
		P50 float64 `json:"p50"`
		P90 float64 `json:"p90"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"latency_ms"`
}

func writeBenchJSON(w io.Writer, cfg loadConfig, r loadResult) error {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	out := benchJSON{
		URL: cfg.URL, Path: cfg.Path, Concurrency: cfg.Concurrency, Names: cfg.Names,
		DurationSec: r.Elapsed.Seconds(), WarmupRequests: r.WarmupRequests,
		Requests: r.Requests, Errors: r.Errors, FirstError: r.FirstError, OpsPerSec: r.OpsPerSec,
		Interrupted: r.Interrupted, CutShort: r.CutShort,
	}
	out.LatencyMs.P50, out.LatencyMs.P90, out.LatencyMs.P99, out.LatencyMs.Max = ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

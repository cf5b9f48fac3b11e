package loadgen

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunCountsEveryOperationOnce(t *testing.T) {
	var calls, fails atomic.Int64
	seen := make([]atomic.Bool, 1<<20)
	op := func(ctx context.Context, w int, seq int64) (int64, error) {
		calls.Add(1)
		if seen[seq].Swap(true) {
			t.Errorf("sequence number %d handed out twice", seq)
		}
		time.Sleep(time.Millisecond)
		if seq%10 == 0 {
			fails.Add(1)
			return 2, errors.New("every tenth fails")
		}
		return 0, nil
	}
	res := Run(context.Background(), Config{Concurrency: 4, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond}, op, nil)
	if got := res.Requests + res.WarmupRequests; got != calls.Load() {
		t.Fatalf("counted %d measured + %d warmup operations, but op ran %d times", res.Requests, res.WarmupRequests, calls.Load())
	}
	if res.Errors == 0 || res.Errors > fails.Load() || res.FirstError != "every tenth fails" {
		t.Fatalf("errors %d (of %d failures), first %q", res.Errors, fails.Load(), res.FirstError)
	}
	if res.Retries != 2*res.Errors {
		t.Fatalf("retries %d, want 2 per failed measured operation (%d)", res.Retries, res.Errors)
	}
	if res.P50 < time.Millisecond || res.P50 > res.P99 || res.P99 > res.Max {
		t.Fatalf("percentiles out of order: p50 %s p99 %s max %s", res.P50, res.P99, res.Max)
	}
}

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		out := make([]time.Duration, len(n))
		for i, v := range n {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	for _, tc := range []struct {
		sorted []time.Duration
		p      int
		want   time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
	} {
		if got := Percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("Percentile(%v, %d) = %s, want %s", tc.sorted, tc.p, got, tc.want)
		}
	}
}

// Progress reports time from the start of their own phase, as they count
// requests: the first measured report is about 1 s, whatever the warmup.
// Before, it was the time since the warmup began (4 s after a 3 s
// warmup), while the requests counted only from its end.
func TestProgressCountsTimeFromItsPhase(t *testing.T) {
	var reports []Progress
	op := func(ctx context.Context, w int, seq int64) (int64, error) {
		time.Sleep(time.Millisecond)
		return 0, nil
	}
	Run(context.Background(), Config{Concurrency: 2, Duration: 2500 * time.Millisecond, Warmup: 1500 * time.Millisecond}, op, func(p Progress) { reports = append(reports, p) })
	var warm, measured []Progress
	for _, p := range reports {
		if p.Warmup {
			warm = append(warm, p)
		} else {
			measured = append(measured, p)
		}
	}
	if len(warm) != 1 || len(measured) < 2 {
		t.Fatalf("reports %+v: want one in the warmup and two or more after it", reports)
	}
	for i, p := range measured {
		// A report comes when its timer fires, never before, and late by
		// the scheduler's delay; counted from the warmup's start, it
		// would be 1.5 s later.
		if want := time.Duration(i+1) * time.Second; p.Elapsed < want || p.Elapsed >= want+time.Second {
			t.Errorf("measured report %d at %s, want %s from the end of the warmup", i+1, p.Elapsed, want)
		}
	}
}

// TestInterruptedRunCountsWhatItCut: cancelling the run ends it at once;
// the operations then in flight are counted apart, in no other count, so
// that every operation started is still accounted for (an interrupted
// `roost bench` showed a total the server had exceeded by -c).
func TestInterruptedRunCountsWhatItCut(t *testing.T) {
	const workers = 8
	ctx, cancel := context.WithCancel(context.Background())
	var started atomic.Int64
	op := func(ctx context.Context, w int, seq int64) (int64, error) {
		if started.Add(1) > 100 {
			<-ctx.Done() // in flight when the run is cut
			return 0, ctx.Err()
		}
		return 0, nil
	}
	go func() {
		for started.Load() < 100+workers {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	res := Run(ctx, Config{Concurrency: workers, Duration: time.Minute}, op, nil)
	if !res.Interrupted || res.CutShort != workers || res.Requests != 100 || res.Errors != 0 {
		t.Fatalf("interrupted run: %+v; want Interrupted, %d cut short, 100 requests, no errors", res, workers)
	}
	if res.Requests+res.CutShort != started.Load() {
		t.Fatalf("%d started, %d counted and %d cut short", started.Load(), res.Requests, res.CutShort)
	}
	if done := Run(context.Background(), Config{Concurrency: 1, Duration: 10 * time.Millisecond}, func(context.Context, int, int64) (int64, error) { return 0, nil }, nil); done.Interrupted || done.CutShort != 0 {
		t.Fatalf("a run that ran its course: %+v", done)
	}
}

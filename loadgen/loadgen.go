// Package loadgen drives closed-loop load — a fixed number of workers, each
// with one operation in flight — through a warmup and a measured phase, and
// summarises what it measured with exact percentiles. `roost bench` and the
// etcd load of `make bench-compare` both use it, so the two are measured
// the same way.
package loadgen

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config shapes a run.
type Config struct {
	Concurrency int           // workers, each with one operation in flight
	Duration    time.Duration // measured part of the run
	Warmup      time.Duration // run before measuring, not counted
}

// Op performs operation number seq (0, 1, 2, … across all workers) for
// worker w. retries counts attempts it repeated inside (0 if none); a
// non-nil err makes the operation a failure.
type Op func(ctx context.Context, w int, seq int64) (retries int64, err error)

// Result is what a run measured. Only operations started after the warmup
// are in it; WarmupRequests says how many came before.
type Result struct {
	Requests       int64  // measured operations that succeeded or failed
	Errors         int64  // of those, the failed ones
	FirstError     string // the first error seen, "" if none
	Retries        int64  // retries reported by measured operations
	WarmupRequests int64  // operations started during the warmup
	// Interrupted: ctx ended the run before its warmup and duration had
	// passed. CutShort counts the operations in flight then, whose
	// outcome is unknown (the server may have carried them out); they are
	// in no other count.
	Interrupted bool
	CutShort    int64
	Elapsed     time.Duration // from the end of the warmup until the last answer was in
	OpsPerSec   float64       // successful operations per second of Elapsed
	// Latency percentiles of the successful operations (nearest rank).
	P50, P90, P99, Max time.Duration
}

// Progress is reported about once a second while a run goes on.
type Progress struct {
	Elapsed  time.Duration // since the start of its phase: the warmup, or the measured phase
	Warmup   bool          // still warming up
	Requests int64         // measured operations so far (warmup ones while Warmup)
	Errors   int64
}

// worker is one worker's measurements, merged at the end so that the hot
// path shares nothing but the progress counters.
type worker struct {
	latencies []time.Duration
	requests  int64
	errors    int64
	retries   int64
	warmup    int64
	cut       int64
}

// Run starts operations from cfg.Concurrency workers until the warmup and
// the duration have passed, then waits for those in flight, so every
// operation started is counted exactly once. Cancelling ctx ends the run
// early; operations it cuts short are counted apart (Result.CutShort). onProgress, if not nil,
// is called about once a second from another goroutine, never after Run
// returns.
func Run(ctx context.Context, cfg Config, op Op, onProgress func(Progress)) Result {
	var (
		seq              atomic.Int64
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
				retries, err := op(ctx, w, seq.Add(1)-1)
				done := time.Now()
				if err != nil && ctx.Err() != nil {
					me.cut++ // cut short by the caller: neither a result nor an error
					return
				}
				if sent.Before(measureFrom) {
					me.warmup++
					liveWarm.Add(1)
					continue
				}
				me.requests++
				me.retries += retries
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
					// Requests count from the start of the phase, and so
					// does the time they are reported with.
					p := Progress{Elapsed: now.Sub(measureFrom), Requests: liveReq.Load(), Errors: liveErr.Load()}
					if now.Before(measureFrom) {
						p.Warmup, p.Elapsed, p.Requests = true, now.Sub(start), liveWarm.Load()
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
		res Result
		all []time.Duration
	)
	for _, w := range workers {
		res.Requests += w.requests
		res.Errors += w.errors
		res.Retries += w.retries
		res.WarmupRequests += w.warmup
		res.CutShort += w.cut
		all = append(all, w.latencies...)
	}
	if p := firstErr.Load(); p != nil {
		res.FirstError = *p
	}
	res.Interrupted = ctx.Err() != nil && stopped.Before(end)
	res.Elapsed = max(stopped.Sub(measureFrom), 0)
	if res.Elapsed > 0 {
		res.OpsPerSec = float64(res.Requests-res.Errors) / res.Elapsed.Seconds()
	}
	slices.Sort(all)
	res.P50, res.P90, res.P99 = Percentile(all, 50), Percentile(all, 90), Percentile(all, 99)
	if len(all) > 0 {
		res.Max = all[len(all)-1]
	}
	return res
}

// Percentile is the nearest-rank p-th percentile of sorted; 0 if empty.
func Percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

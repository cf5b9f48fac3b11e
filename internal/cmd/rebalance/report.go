package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/roostdb/roost/internal/adminapi"
	"github.com/roostdb/roost/internal/localcluster"
	"github.com/roostdb/roost/loadgen"
)

// bucket is the width of the finer view of the timeline: how many stretches
// of 100 ms had no successful write at all.
const bucket = 100 * time.Millisecond

type report struct {
	Binary           string            `json:"binary"`
	CPUs             int               `json:"cpus"`
	LoadavgStart     string            `json:"loadavg_start"`
	LoadavgEnd       string            `json:"loadavg_end"`
	Objects          int               `json:"objects"`
	Concurrency      int               `json:"concurrency"`
	MaxConcurrent    int               `json:"max_concurrent"`
	Shards           int               `json:"shards"`
	TargetMs         float64           `json:"target_ms"`
	FillSeconds      float64           `json:"fill_seconds"`
	FillUnfilled     int               `json:"fill_unfilled"`
	Started          string            `json:"rebalance_started"` // wall clock, to find in the node logs
	RebalanceSeconds float64           `json:"rebalance_seconds"`
	Operation        operation         `json:"operation"`
	Restarts         []string          `json:"restarts,omitempty"` // why roost rebalance was started again
	RebalanceError   string            `json:"rebalance_error,omitempty"`
	Members          []adminapi.Member `json:"members_after"`
	Phases           []phaseStats      `json:"phases"`
	// Successful writes per second of the load, second 0 starting with the
	// rebalance (negative seconds before it).
	FirstSecond int   `json:"first_second"`
	OKPerSecond []int `json:"ok_per_second"`
	// From the rebalance's start to the end of the load: the 100 ms buckets
	// without a successful write anywhere, the longest run of them, and
	// the shards whose writes waited longer than the target (shardWaits).
	EmptyBuckets     int          `json:"empty_100ms_buckets"`
	LongestEmptyRun  int          `json:"longest_empty_100ms_run"`
	ShardsOverTarget []shardWait  `json:"shards_over_target"`
	ShardWaits       []shardWait  `json:"shard_waits"` // every shard's longest, in shard order
	TargetMet        bool         `json:"target_met"`
	Verification     verification `json:"verification"`
}

// phaseStats sums up the writes that started in one phase of the load.
type phaseStats struct {
	Name      string         `json:"name"`
	Seconds   float64        `json:"seconds"`
	OK        int            `json:"ok"`
	Failed    int            `json:"failed"`
	OpsPerSec float64        `json:"ok_per_second"`
	P50Ms     float64        `json:"p50_ms"`
	P99Ms     float64        `json:"p99_ms"`
	MaxMs     float64        `json:"max_ms"`
	Failures  map[string]int `json:"failures,omitempty"` // by kind
	// The longest time without a successful write anywhere, and the
	// longest a write to one shard waited for a success there (shardWaits).
	LongestGapMs float64   `json:"longest_gap_ms"`
	ShardWait    shardWait `json:"longest_shard_wait"`
}

// shardWait is the longest time a write to one shard waited for a
// successful write there.
type shardWait struct {
	Shard  int     `json:"shard"`
	WaitMs float64 `json:"wait_ms"`
	From   float64 `json:"from_s"` // seconds since the rebalance started
	Wall   string  `json:"from_wall"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// analyse fills in everything the attempts tell. Times are since the
// counters' epoch; the move ran from moveStart to moveEnd and the load
// ended at loadEnd.
func (r *report) analyse(c *counters, attempts []attempt, moveStart, moveEnd, loadEnd time.Duration) {
	shardOf := make([]int, *objects)
	for i := range shardOf {
		shardOf[i] = localcluster.CounterShard(objName(i), *shards)
	}
	slices.SortFunc(attempts, func(a, b attempt) int { return cmp.Compare(a.end, b.end) })
	loadStart := loadEnd
	for _, a := range attempts {
		loadStart = min(loadStart, a.start)
	}
	// The first second of load opens connections: not steady yet.
	steady := min(loadStart+time.Second, moveStart)
	waitAt := func(at, g time.Duration, shard int) shardWait {
		return shardWait{Shard: shard, WaitMs: ms(g), From: (at - moveStart).Seconds(), Wall: c.at(at).Format("15:04:05.000")}
	}
	r.Phases = []phaseStats{
		r.phase("before", attempts, shardOf, steady, moveStart, loadEnd, waitAt),
		r.phase("during", attempts, shardOf, moveStart, moveEnd, loadEnd, waitAt),
		r.phase("after", attempts, shardOf, moveEnd, loadEnd, loadEnd, waitAt),
	}

	// Whole seconds only: the load's first, partial one would look like a dip.
	r.FirstSecond = -int((moveStart - loadStart) / time.Second)
	r.OKPerSecond = make([]int, int((loadEnd-moveStart)/time.Second)-r.FirstSecond+1)
	nb := int((loadEnd-moveStart)/bucket) + 1
	okBuckets := make([]int, nb)
	for _, a := range attempts {
		if !a.ok() {
			continue
		}
		s := int(math.Floor((a.end - moveStart).Seconds())) - r.FirstSecond
		if s >= 0 && s < len(r.OKPerSecond) {
			r.OKPerSecond[s]++
		}
		if a.end >= moveStart {
			okBuckets[(a.end-moveStart)/bucket]++
		}
	}
	run := 0
	for _, n := range okBuckets[:nb-1] { // the last bucket is cut short by the end of the load
		if n == 0 {
			r.EmptyBuckets++
			run++
			r.LongestEmptyRun = max(r.LongestEmptyRun, run)
		} else {
			run = 0
		}
	}

	r.ShardWaits = shardWaits(attempts, shardOf, moveStart, loadEnd, loadEnd, waitAt)
	for _, g := range r.ShardWaits {
		if g.WaitMs > r.TargetMs {
			r.ShardsOverTarget = append(r.ShardsOverTarget, g)
		}
	}
	sort.Slice(r.ShardsOverTarget, func(i, j int) bool { return r.ShardsOverTarget[i].From < r.ShardsOverTarget[j].From })
	r.TargetMet = len(r.ShardsOverTarget) == 0 && r.RebalanceError == ""
}

// waitFunc describes a wait of length g that began at (since the epoch).
type waitFunc func(at, g time.Duration, shard int) shardWait

// phase sums up the attempts that started in [from, to).
func (r *report) phase(name string, attempts []attempt, shardOf []int, from, to, loadEnd time.Duration, waitAt waitFunc) phaseStats {
	p := phaseStats{Name: name, Seconds: (to - from).Seconds(), Failures: map[string]int{}}
	var lat []time.Duration
	var okEnds []time.Duration
	for _, a := range attempts {
		if a.start < from || a.start >= to {
			continue
		}
		if !a.ok() {
			p.Failed++
			p.Failures[failureKind(a.failure)]++
			continue
		}
		p.OK++
		lat = append(lat, a.end-a.start)
		okEnds = append(okEnds, a.end)
	}
	if p.Seconds > 0 {
		p.OpsPerSec = float64(p.OK) / p.Seconds
	}
	slices.Sort(lat)
	p.P50Ms, p.P99Ms = ms(loadgen.Percentile(lat, 50)), ms(loadgen.Percentile(lat, 99))
	if len(lat) > 0 {
		p.MaxMs = ms(lat[len(lat)-1])
	}
	p.LongestGapMs = ms(longestGap(okEnds, from, to))
	for _, sg := range shardWaits(attempts, shardOf, from, to, loadEnd, waitAt) {
		if sg.WaitMs > p.ShardWait.WaitMs {
			p.ShardWait = sg
		}
	}
	return p
}

// shardWaits returns, per shard, the longest time a write to it waited
// for a successful write on it: for every attempt that started in
// [from, to), the time from its start until the first successful write on
// its shard ended at or after that start (the attempt itself, if it
// succeeded; the end of the load if none did). So a wait counts only while
// somebody was writing to the shard: with -c workers over thousands of
// objects, a shard may see no write for a while without anything wrong.
func shardWaits(attempts []attempt, shardOf []int, from, to, loadEnd time.Duration, waitAt waitFunc) []shardWait {
	okEnds := make([][]time.Duration, *shards)
	for _, a := range attempts { // sorted by end
		if a.ok() {
			s := shardOf[a.obj]
			okEnds[s] = append(okEnds[s], a.end)
		}
	}
	waits := make([]shardWait, *shards)
	longest := make([]time.Duration, *shards)
	for s := range waits {
		waits[s] = waitAt(from, 0, s)
	}
	for _, a := range attempts {
		if a.start < from || a.start >= to {
			continue
		}
		s := shardOf[a.obj]
		end := loadEnd
		if i, _ := slices.BinarySearch(okEnds[s], a.start); i < len(okEnds[s]) {
			end = okEnds[s][i]
		}
		if w := end - a.start; w > longest[s] {
			longest[s] = w
			waits[s] = waitAt(a.start, w, s)
		}
	}
	return waits
}

// longestGap returns the longest stretch of [from, to] between the sorted
// times ends (or an end and a bound).
func longestGap(ends []time.Duration, from, to time.Duration) time.Duration {
	var gap time.Duration
	prev := from
	for _, e := range append(ends, to) {
		gap = max(gap, e-prev)
		prev = max(prev, e)
	}
	return gap
}

var digits = regexp.MustCompile(`[0-9]+`)

// failureKind blanks the numbers of a failure so that alike ones (other
// object names, ports, nodes) count together.
func failureKind(f string) string {
	k := digits.ReplaceAllString(f, "N")
	if len(k) > 160 {
		k = k[:160] + "…"
	}
	return k
}

func (r *report) print(w io.Writer) {
	op := r.Operation
	fmt.Fprintf(w, "rebalance onto n4 (started %s): %s in %.1fs, %d of %d moves done", r.Started, op.State, r.RebalanceSeconds, op.Done, op.Total)
	if len(r.Restarts) > 0 {
		fmt.Fprintf(w, " by the last of %d operations", len(r.Restarts)+1)
	}
	if r.RebalanceError != "" {
		fmt.Fprintf(w, "; FAILED: %s", r.RebalanceError)
	}
	fmt.Fprintln(w)
	for _, why := range r.Restarts {
		fmt.Fprintf(w, "  started again after: %s\n", why)
	}
	var held []string
	for _, m := range r.Members {
		held = append(held, fmt.Sprintf("%s %d replicas/%d leaders", m.ID, m.Replicas, m.Leaders))
	}
	fmt.Fprintf(w, "  members after: %s\n", strings.Join(held, ", "))
	fmt.Fprintf(w, "  %-7s %6s %8s %7s %8s %8s %9s %12s  %s\n", "phase", "secs", "ok", "failed", "ok/s", "p50 ms", "p99 ms", "gap ms", "longest wait on one shard")
	for _, p := range r.Phases {
		fmt.Fprintf(w, "  %-7s %6.1f %8d %7d %8.0f %8.1f %9.1f %12.0f  %.0f ms (shard %d from %+.1fs)\n",
			p.Name, p.Seconds, p.OK, p.Failed, p.OpsPerSec, p.P50Ms, p.P99Ms, p.LongestGapMs, p.ShardWait.WaitMs, p.ShardWait.Shard, p.ShardWait.From)
	}
	for _, p := range r.Phases {
		for _, k := range sortedKinds(p.Failures) {
			fmt.Fprintf(w, "    %s: %5d × %s\n", p.Name, p.Failures[k], k)
		}
	}
	fmt.Fprintf(w, "  successful writes per second (second 0 began with the rebalance, which took %.1fs):\n", r.RebalanceSeconds)
	for i := 0; i < len(r.OKPerSecond); i += 15 {
		row := r.OKPerSecond[i:min(i+15, len(r.OKPerSecond))]
		fmt.Fprintf(w, "   %+4ds:", r.FirstSecond+i)
		for _, n := range row {
			fmt.Fprintf(w, " %5d", n)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  from the rebalance's start to the end of the load: %d 100 ms buckets without a successful write (longest run %d)\n", r.EmptyBuckets, r.LongestEmptyRun)
	fmt.Fprintf(w, "  shards whose writes waited more than %.0f ms for a successful write: %d", r.TargetMs, len(r.ShardsOverTarget))
	for _, g := range r.ShardsOverTarget {
		fmt.Fprintf(w, "\n    shard %2d: %6.0f ms from %+.1fs (%s)", g.Shard, g.WaitMs, g.From, g.Wall)
	}
	fmt.Fprintln(w)
	if *verbose {
		waits := slices.Clone(r.ShardWaits)
		sort.Slice(waits, func(i, j int) bool { return waits[i].WaitMs > waits[j].WaitMs })
		var desc []string
		for _, g := range waits {
			desc = append(desc, fmt.Sprintf("%d:%.0f@%+.1fs", g.Shard, g.WaitMs, g.From))
		}
		fmt.Fprintf(w, "  every shard's longest wait, shard:ms@start: %s\n", strings.Join(desc, " "))
	}
	verdict := "met"
	if !r.TargetMet {
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "  target (no shard's writes without a success for over %.0f ms, rebalance done): %s\n", r.TargetMs, verdict)
	v := r.Verification
	fmt.Fprintf(w, "verification: %d objects, %d increments acknowledged, %d with unknown outcome, %d counted: %d violations\n",
		v.Objects, v.Acked, v.Unknown, v.Counted, v.Violations)
	for _, e := range v.Examples {
		fmt.Fprintf(w, "  %s\n", e)
	}
	fmt.Fprintf(w, "fill: %.1fs; load average at the end: %s\n", r.FillSeconds, r.LoadavgEnd)
}

func sortedKinds(m map[string]int) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	return keys
}

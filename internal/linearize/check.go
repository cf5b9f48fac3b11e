package linearize

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Result is the outcome of Check.
type Result struct {
	// Ok is true when every key's history was shown linearizable. It is
	// false if any key is not linearizable or if the check ran out of time
	// before deciding every key (see CheckTimedOut).
	Ok bool
	// Keys is the number of keys checked.
	Keys int
	// Ops is the number of operations given to the checker: every
	// increment not marked Failed, and every read that returned a value.
	Ops int
	// Unknown is the number of increments whose outcome is unknown
	// (including calls that never recorded an outcome); they are among Ops.
	Unknown int
	// Failed is the number of calls marked Failed, left out of the history.
	Failed int
	// UnknownReads is the number of reads without a result, left out of
	// the history since a read changes nothing.
	UnknownReads int
	// BadKey is the first (in sorted order) key whose history is not
	// linearizable, or "" if none is.
	BadKey string
	// BadKeys lists every key whose history is not linearizable, sorted.
	BadKeys []string
	// Visualization is the path of porcupine's HTML visualization of
	// BadKey's history, written to a temporary file; "" if the history is
	// linearizable or the file could not be written. The caller may delete
	// it.
	Visualization string
	// CheckTimedOut is true when the timeout expired before some key's
	// history was decided; those keys are listed in TimedOutKeys.
	CheckTimedOut bool
	TimedOutKeys  []string
	// Elapsed is how long the check took.
	Elapsed time.Duration
}

// String summarises the result in one line, for test logs.
func (r Result) String() string {
	var b strings.Builder
	if r.Ok {
		b.WriteString("linearizable")
	} else {
		b.WriteString("NOT linearizable")
	}
	fmt.Fprintf(&b, ": %d keys, %d ops (%d unknown-outcome increments), %d failed calls dropped, %d unknown reads dropped, checked in %v",
		r.Keys, r.Ops, r.Unknown, r.Failed, r.UnknownReads, r.Elapsed.Round(time.Millisecond))
	if len(r.BadKeys) > 0 {
		fmt.Fprintf(&b, "; bad keys %q", r.BadKeys)
	}
	if r.Visualization != "" {
		fmt.Fprintf(&b, "; visualization of %q at %s", r.BadKey, r.Visualization)
	}
	if r.CheckTimedOut {
		fmt.Fprintf(&b, "; check timed out on %d keys", len(r.TimedOutKeys))
	}
	return b.String()
}

// input is the model input of one operation. unknownSeq is, for an
// increment whose outcome is unknown, its index among its key's unknown
// increments in call order; -1 otherwise.
type input struct {
	kind       Kind
	unknownSeq int
}

// output is the model output: the count a call returned, if known.
type output struct {
	known bool
	value int
}

// state is the per-key model state. count is the counter's value as last
// observed; seen is how many of the key's unknown-outcome increments have
// been linearized, and spare how many of those have not yet been used to
// explain an observed value: each may still take effect at any later point.
type state struct {
	count int
	seen  int
	spare int
}

// counterModel is a per-key counter. See the package documentation for how
// unknown-outcome increments are treated.
var counterModel = porcupine.Model{
	Init: func() interface{} { return state{} },
	Step: func(st, in, out interface{}) (bool, interface{}) {
		s, i, o := st.(state), in.(input), out.(output)
		switch {
		case i.kind == Increment && !o.known:
			// Interchangeable, so only linearize them in call order.
			if i.unknownSeq != s.seen {
				return false, s
			}
			s.seen++
			s.spare++
			return true, s
		case i.kind == Increment:
			// Some spare increments may have taken effect first.
			used := o.value - (s.count + 1)
			if !o.known || used < 0 || used > s.spare {
				return false, s
			}
			s.spare -= used
			s.count = o.value
			return true, s
		case i.kind == Read:
			used := o.value - s.count
			if !o.known || used < 0 || used > s.spare {
				return false, s
			}
			s.spare -= used
			s.count = o.value
			return true, s
		}
		return false, s
	},
	DescribeOperation: func(in, out interface{}) string {
		i, o := in.(input), out.(output)
		if !o.known {
			return fmt.Sprintf("%v -> ? (unknown #%d)", i.kind, i.unknownSeq)
		}
		return fmt.Sprintf("%v -> %d", i.kind, o.value)
	},
	DescribeState: func(st interface{}) string {
		s := st.(state)
		if s.spare == 0 {
			return fmt.Sprintf("%d", s.count)
		}
		return fmt.Sprintf("%d (+ up to %d unknown)", s.count, s.spare)
	},
}

// keyHistory is one key's history as porcupine operations.
type keyHistory struct {
	key string
	ops []porcupine.Operation
}

// histories turns the recorder's snapshot into per-key porcupine histories,
// sorted by key, and fills in the counting fields of res.
func histories(r *Recorder, res *Result) []keyHistory {
	byKey := r.snapshot()
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]keyHistory, 0, len(keys))
	for _, k := range keys {
		recs := byKey[k]
		sort.Slice(recs, func(a, b int) bool {
			if recs[a].start != recs[b].start {
				return recs[a].start < recs[b].start
			}
			return recs[a].seq < recs[b].seq
		})
		h := keyHistory{key: k}
		unknownSeq := 0
		for _, rc := range recs {
			in := input{kind: rc.kind, unknownSeq: -1}
			var o output
			ret := rc.end
			meta := fmt.Sprintf("client %d, %v", rc.client, rc.outcome)
			switch {
			case rc.outcome == failed:
				res.Failed++
				continue
			case rc.outcome == okay:
				o = output{known: true, value: rc.value}
			case rc.kind == Read: // unknown or pending read
				res.UnknownReads++
				continue
			default: // unknown or pending increment
				// Linearized at its call; see "unknown outcomes"
				// in the package documentation.
				in.unknownSeq = unknownSeq
				unknownSeq++
				ret = rc.start
				res.Unknown++
			}
			h.ops = append(h.ops, porcupine.Operation{
				ClientId: rc.client,
				Input:    in,
				Call:     rc.start,
				Output:   o,
				Return:   ret,
				Metadata: meta,
			})
		}
		res.Ops += len(h.ops)
		out = append(out, h)
	}
	res.Keys = len(out)
	return out
}

// Check checks, key by key, that the recorded history is linearizable
// with respect to a counter. timeout bounds the whole check (0: no bound);
// keys not decided in time are reported in TimedOutKeys and make Ok false.
// If a key is not linearizable, BadKey's history is checked once more,
// verbosely (with the same timeout, so a failing Check can take up to about
// twice timeout), and porcupine's visualization of it is written to a
// temporary HTML file named in Result.Visualization.
//
// Check may be called while calls are still in flight; calls without an
// outcome are treated as Unknown.
func Check(r *Recorder, timeout time.Duration) Result {
	began := time.Now()
	var res Result
	hs := histories(r, &res)

	var deadline time.Time
	if timeout > 0 {
		deadline = began.Add(timeout)
	}
	verdicts := make([]porcupine.CheckResult, len(hs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(len(hs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var left time.Duration // 0: unbounded
				if timeout > 0 {
					left = time.Until(deadline)
					if left <= 0 {
						verdicts[i] = porcupine.Unknown
						continue
					}
				}
				verdicts[i] = porcupine.CheckOperationsTimeout(counterModel, hs[i].ops, left)
			}
		}()
	}
	for i := range hs {
		next <- i
	}
	close(next)
	wg.Wait()

	for i, v := range verdicts {
		switch v {
		case porcupine.Illegal:
			res.BadKeys = append(res.BadKeys, hs[i].key)
		case porcupine.Unknown:
			res.TimedOutKeys = append(res.TimedOutKeys, hs[i].key)
		}
	}
	res.CheckTimedOut = len(res.TimedOutKeys) > 0
	res.Ok = len(res.BadKeys) == 0 && !res.CheckTimedOut
	if len(res.BadKeys) > 0 {
		res.BadKey = res.BadKeys[0]
		for _, h := range hs {
			if h.key == res.BadKey {
				res.Visualization = visualize(h, timeout)
				break
			}
		}
	}
	res.Elapsed = time.Since(began)
	return res
}

// visualize re-checks h verbosely and writes porcupine's visualization to a
// temporary file, returning its path, or "" if that fails.
func visualize(h keyHistory, timeout time.Duration) string {
	_, info := porcupine.CheckOperationsVerbose(counterModel, h.ops, timeout)
	f, err := os.CreateTemp("", "roost-linearize-*.html")
	if err != nil {
		return ""
	}
	path := f.Name()
	err = porcupine.Visualize(counterModel, info, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return ""
	}
	return path
}

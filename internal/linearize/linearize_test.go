package linearize

import (
	"fmt"
	"math"
	"math/rand"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// add records a finished call with explicit timestamps, for hand-made
// histories.
func (r *Recorder) add(client int, key string, kind Kind, start, end int64, o outcome, value int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, &Call{
		r: r, client: client, key: key, op: Op{Kind: kind}, seq: len(r.calls),
		start: start, end: end, outcome: o, value: value,
	})
}

func mustPass(t *testing.T, r *Recorder) Result {
	t.Helper()
	res := Check(r, time.Minute)
	if !res.Ok {
		t.Fatalf("want linearizable, got %v", res)
	}
	return res
}

func mustFail(t *testing.T, r *Recorder, badKey string) Result {
	t.Helper()
	res := Check(r, time.Minute)
	if res.Visualization != "" {
		t.Cleanup(func() { os.Remove(res.Visualization) })
	}
	if res.Ok || res.CheckTimedOut {
		t.Fatalf("want not linearizable, got %v", res)
	}
	if res.BadKey != badKey {
		t.Fatalf("BadKey = %q, want %q (%v)", res.BadKey, badKey, res)
	}
	return res
}

func TestEmpty(t *testing.T) {
	res := mustPass(t, NewRecorder())
	if res.Keys != 0 || res.Ops != 0 {
		t.Fatalf("empty recorder: %v", res)
	}
	var zero Recorder
	c := zero.Begin(0, "a", Op{Kind: Increment})
	c.Ok(1)
	mustPass(t, &zero)
}

func TestConcurrentIncrementsAndReads(t *testing.T) {
	r := NewRecorder()
	// Three overlapping increments may take effect in any order; a read
	// overlapping them may see any intermediate value.
	r.add(0, "a", Increment, 0, 100, okay, 2)
	r.add(1, "a", Increment, 10, 90, okay, 3)
	r.add(2, "a", Increment, 20, 50, okay, 1)
	r.add(3, "a", Read, 30, 40, okay, 1)
	r.add(3, "a", Read, 110, 120, okay, 3)
	r.add(0, "a", Increment, 130, 140, okay, 4)
	// Another key, independent.
	r.add(1, "b", Read, 0, 10, okay, 0)
	r.add(2, "b", Increment, 5, 15, okay, 1)
	r.add(1, "b", Read, 11, 20, okay, 1)
	res := mustPass(t, r)
	if res.Keys != 2 || res.Ops != 9 {
		t.Fatalf("counts: %v", res)
	}
}

func TestStaleReadFails(t *testing.T) {
	r := NewRecorder()
	r.add(0, "ok", Increment, 0, 10, okay, 1)
	r.add(0, "ok", Read, 20, 30, okay, 1)

	r.add(0, "stale", Increment, 0, 10, okay, 1)
	r.add(1, "stale", Increment, 20, 30, okay, 2)
	r.add(2, "stale", Read, 40, 50, okay, 1) // the increment to 2 completed before
	res := mustFail(t, r, "stale")
	if !slices.Equal(res.BadKeys, []string{"stale"}) {
		t.Fatalf("BadKeys = %q", res.BadKeys)
	}
	if res.Visualization == "" {
		t.Fatalf("no visualization written: %v", res)
	}
	b, err := os.ReadFile(res.Visualization)
	if err != nil || !strings.Contains(string(b), "<html") {
		t.Fatalf("visualization %s: err %v, %d bytes", res.Visualization, err, len(b))
	}
	t.Log(res)
}

func TestDuplicateIncrementFails(t *testing.T) {
	r := NewRecorder()
	r.add(0, "a", Increment, 0, 10, okay, 1)
	r.add(1, "a", Increment, 5, 15, okay, 1) // concurrent, but both saw 0
	mustFail(t, r, "a")
}

func TestReadOfUnwrittenValueFails(t *testing.T) {
	r := NewRecorder()
	r.add(0, "a", Read, 0, 10, okay, 1)
	r.add(1, "a", Increment, 20, 30, okay, 1)
	mustFail(t, r, "a")
}

func TestUnknownIncrement(t *testing.T) {
	for _, tc := range []struct {
		name string
		read int
		pass bool
	}{
		{"read sees it", 1, true},
		{"read does not see it", 0, true},
		{"read sees too much", 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRecorder()
			r.add(0, "a", Increment, 0, 10, unknown, 0)
			r.add(1, "a", Read, 20, 30, okay, tc.read)
			if tc.pass {
				res := mustPass(t, r)
				if res.Unknown != 1 {
					t.Fatalf("Unknown = %d, want 1", res.Unknown)
				}
			} else {
				mustFail(t, r, "a")
			}
		})
	}
}

func TestUnknownIncrementCannotTakeEffectBeforeItsCall(t *testing.T) {
	r := NewRecorder()
	r.add(0, "a", Read, 0, 10, okay, 1)
	r.add(1, "a", Increment, 20, 30, unknown, 0)
	mustFail(t, r, "a")
}

func TestUnknownIncrementsInterleaved(t *testing.T) {
	r := NewRecorder()
	r.add(0, "a", Increment, 0, 10, unknown, 0) // took effect
	r.add(1, "a", Increment, 20, 30, okay, 2)
	r.add(2, "a", Increment, 25, 35, unknown, 0) // did not (yet)
	r.add(3, "a", Increment, 26, 36, unknown, 0) // took effect
	r.add(1, "a", Read, 40, 50, okay, 3)
	r.add(1, "a", Increment, 60, 70, okay, 4)
	mustPass(t, r)

	// The same, but the final read claims more than every increment.
	r.add(0, "a", Read, 80, 90, okay, 6)
	mustFail(t, r, "a")
}

func TestFailedCallsAreDropped(t *testing.T) {
	r := NewRecorder()
	r.add(0, "a", Increment, 0, 10, failed, 0)
	r.add(1, "a", Read, 20, 30, unknown, 0)
	r.add(1, "a", Read, 40, 50, okay, 0)
	res := mustPass(t, r)
	if res.Ops != 1 || res.Failed != 1 || res.UnknownReads != 1 {
		t.Fatalf("counts: %v", res)
	}
	// A "failed" increment that evidently took effect is a violation.
	r.add(1, "a", Read, 60, 70, okay, 1)
	mustFail(t, r, "a")
}

func TestPendingCallIsUnknown(t *testing.T) {
	r := NewRecorder()
	c := r.Begin(0, "a", Op{Kind: Increment})
	r.Begin(1, "a", Op{Kind: Read}) // never finishes: dropped
	r.Begin(1, "a", Op{Kind: Read}).Ok(1)
	res := mustPass(t, r)
	if res.Unknown != 1 || res.UnknownReads != 1 {
		t.Fatalf("counts: %v", res)
	}
	c.Ok(1)
	c.Unknown() // ignored: the first outcome stands
	res = mustPass(t, r)
	if res.Unknown != 0 {
		t.Fatalf("counts after Ok: %v", res)
	}
}

func TestLostWrites(t *testing.T) {
	r := NewRecorder()
	r.add(0, "lost", Increment, 0, 10, okay, 1)
	r.add(0, "lost", Increment, 20, 30, okay, 2)

	r.add(0, "phantom", Increment, 0, 10, okay, 1)
	r.add(0, "phantom", Increment, 20, 30, failed, 0)

	r.add(0, "fine", Increment, 0, 10, okay, 1)
	r.add(0, "fine", Increment, 20, 30, unknown, 0)
	r.add(0, "fine2", Increment, 0, 10, unknown, 0)

	final := map[string]int{
		"lost":    1, // an acknowledged 2 is gone
		"phantom": 2, // only one increment could have taken effect
		"fine":    2, // the unknown one took effect
		"fine2":   0, // it did not
		"never":   1, // no increment was ever sent
	}
	got := LostWrites(r, final)
	want := []string{"lost", "never", "phantom"}
	if !slices.Equal(got, want) {
		t.Fatalf("LostWrites = %q, want %q", got, want)
	}
	for _, l := range Losses(r, final) {
		t.Log(l)
	}
	final["lost"], final["phantom"], final["never"] = 2, 1, 0
	if got := LostWrites(r, final); got != nil {
		t.Fatalf("LostWrites = %q, want none", got)
	}
}

// fakeCounters is an in-memory, correct set of counters whose clients see
// the same kinds of outcomes the fault tests do.
type fakeCounters struct {
	mu sync.Mutex
	m  map[string]int
}

func (f *fakeCounters) do(rng *rand.Rand, c *Call, key string, kind Kind) {
	switch p := rng.Intn(100); {
	case p < 5: // rejected before the object ran
		c.Failed()
		return
	case p < 10: // ran, but the response was lost
		f.apply(key, kind)
		c.Unknown()
		return
	case p < 15: // timed out before it ran; it never will
		c.Unknown()
		return
	}
	v := f.apply(key, kind)
	if rng.Intn(4) == 0 {
		time.Sleep(time.Duration(rng.Intn(50)) * time.Microsecond)
	}
	c.Ok(v)
}

func (f *fakeCounters) apply(key string, kind Kind) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if kind == Increment {
		f.m[key]++
	}
	return f.m[key]
}

func TestConcurrentClients(t *testing.T) {
	r := NewRecorder()
	f := &fakeCounters{m: map[string]int{}}
	keys := []string{"A", "B", "C"}
	var wg sync.WaitGroup
	for client := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(client)))
			for range 300 {
				key := keys[rng.Intn(len(keys))]
				kind := Increment
				if rng.Intn(3) == 0 {
					kind = Read
				}
				f.do(rng, r.Begin(client, key, Op{Kind: kind}), key, kind)
			}
		}()
	}
	wg.Wait()
	res := mustPass(t, r)
	t.Log(res)
	if got := LostWrites(r, f.m); got != nil {
		t.Fatalf("LostWrites = %q", got)
	}
	if !slices.Equal(r.Keys(), keys) || r.Len() != 8*300 {
		t.Fatalf("Keys = %q, Len = %d", r.Keys(), r.Len())
	}
}

// synth adds to r a linearizable history of n operations on key: the i-th
// operation takes effect at time 10i and its interval extends up to 60
// either side, so about a dozen operations overlap at any time. About 2% of
// increments have an unknown outcome (half of them took effect).
func synth(r *Recorder, rng *rand.Rand, key string, n int) {
	count := 0
	for i := range n {
		at := int64(10 * (i + 1))
		start, end := at-rng.Int63n(60), at+rng.Int63n(60)
		client := i % 12
		if rng.Intn(10) < 3 {
			r.add(client, key, Read, start, end, okay, count)
			continue
		}
		switch p := rng.Intn(100); {
		case p < 1:
			count++
			r.add(client, key, Increment, start, end, unknown, 0)
		case p < 2:
			r.add(client, key, Increment, start, end, unknown, 0)
		case p < 3:
			r.add(client, key, Increment, start, end, failed, 0)
		default:
			count++
			r.add(client, key, Increment, start, end, okay, count)
		}
	}
}

func TestLargeHistory(t *testing.T) {
	r := NewRecorder()
	rng := rand.New(rand.NewSource(1))
	for k := range 10 {
		synth(r, rng, fmt.Sprintf("key-%d", k), 2000)
	}
	res := mustPass(t, r)
	t.Logf("10 keys x 2000 ops: %v", res)

	// Break one key: an increment late in its history repeats the value of
	// the one before it.
	var last, prev *Call
	for _, c := range r.calls {
		if c.key == "key-7" && c.op.Kind == Increment && c.outcome == okay {
			prev, last = last, c
		}
	}
	last.value = prev.value
	res = mustFail(t, r, "key-7")
	t.Logf("with a duplicated increment: %v", res)
}

func TestTimeout(t *testing.T) {
	r := NewRecorder()
	synth(r, rand.New(rand.NewSource(2)), "a", 2000)
	res := Check(r, time.Nanosecond)
	if res.Ok || !res.CheckTimedOut || !slices.Equal(res.TimedOutKeys, []string{"a"}) {
		t.Fatalf("want timed out: %v", res)
	}
}

// naiveModel is the textbook counter model: an increment with unknown
// outcome accepts any output and is given a return time after everything
// else. counterModel must agree with it.
var naiveModel = porcupine.Model{
	Init: func() interface{} { return 0 },
	Step: func(st, in, out interface{}) (bool, interface{}) {
		s, i, o := st.(int), in.(input), out.(output)
		if i.kind == Read {
			return o.known && o.value == s, s
		}
		return !o.known || o.value == s+1, s + 1
	},
}

// TestModelMatchesNaive checks on many small random histories, legal or
// not, that counterModel (unknown increments pinned to their call, in call
// order, applied lazily) gives the same verdict as naiveModel.
func TestModelMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	verdicts := map[bool]int{}
	for iter := range 20000 {
		r := NewRecorder()
		for range 2 + rng.Intn(9) {
			start := rng.Int63n(40)
			end := start + rng.Int63n(25)
			kind := Increment
			if rng.Intn(3) == 0 {
				kind = Read
			}
			o := okay
			if rng.Intn(2) == 0 {
				o = unknown
			}
			r.add(rng.Intn(4), "k", kind, start, end, o, rng.Intn(6))
		}
		var res Result
		h := histories(r, &res)[0]
		naive := slices.Clone(h.ops)
		for j := range naive {
			if naive[j].Input.(input).unknownSeq >= 0 {
				naive[j].Return = math.MaxInt64
			}
		}
		want := porcupine.CheckOperations(naiveModel, naive)
		got := porcupine.CheckOperations(counterModel, h.ops)
		if got != want {
			t.Fatalf("history %d: counterModel says %v, naiveModel %v; ops %+v", iter, got, want, h.ops)
		}
		verdicts[got]++
	}
	t.Logf("verdicts: %d linearizable, %d not", verdicts[true], verdicts[false])
	if verdicts[true] < 1000 || verdicts[false] < 1000 {
		t.Fatalf("random histories too one-sided: %v", verdicts)
	}
}

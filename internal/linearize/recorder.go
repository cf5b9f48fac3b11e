package linearize

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Kind is the kind of an operation on a counter.
type Kind int

const (
	// Increment is GET /increment?name=N; its result is the new count.
	Increment Kind = iota + 1
	// Read is GET /?name=N; its result is the current count.
	Read
)

func (k Kind) String() string {
	switch k {
	case Increment:
		return "inc"
	case Read:
		return "read"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Op is an operation a client issues against one counter.
type Op struct {
	Kind Kind
}

// outcome is what became of a call.
type outcome int

const (
	pending outcome = iota // no outcome recorded yet: treated as unknown
	okay
	failed
	unknown
)

func (o outcome) String() string {
	switch o {
	case pending:
		return "pending"
	case okay:
		return "ok"
	case failed:
		return "failed"
	case unknown:
		return "unknown"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Recorder is a concurrency-safe history of calls. The zero value is ready
// to use; NewRecorder is equivalent.
type Recorder struct {
	mu    sync.Mutex
	base  time.Time // set at first use; only monotonic differences are used
	calls []*Call
}

// NewRecorder returns an empty recorder whose clock starts now.
func NewRecorder() *Recorder {
	return &Recorder{base: time.Now()}
}

// now returns nanoseconds on the monotonic clock since r.base. r.mu is held.
func (r *Recorder) now() int64 {
	if r.base.IsZero() {
		r.base = time.Now()
	}
	return int64(time.Since(r.base))
}

// Begin records that client is about to issue op against the counter key
// and returns the call, on which exactly one of Ok, Failed or Unknown should
// be called once the outcome is known. Call Begin before sending the
// request. It panics on an invalid op kind.
func (r *Recorder) Begin(client int, key string, op Op) *Call {
	if op.Kind != Increment && op.Kind != Read {
		panic(fmt.Sprintf("linearize: Begin with invalid op kind %v", op.Kind))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &Call{r: r, client: client, key: key, op: op, seq: len(r.calls), start: r.now()}
	r.calls = append(r.calls, c)
	return c
}

// Keys returns the keys of all recorded calls, sorted.
func (r *Recorder) Keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var keys []string
	for _, c := range r.calls {
		if !seen[c.key] {
			seen[c.key] = true
			keys = append(keys, c.key)
		}
	}
	sort.Strings(keys)
	return keys
}

// Len returns the number of recorded calls.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// Call is one operation in a Recorder's history. Its fields are guarded by
// the recorder's mutex.
type Call struct {
	r      *Recorder
	client int
	key    string
	op     Op
	seq    int // order of Begin, to break ties between equal timestamps

	start, end int64
	outcome    outcome
	value      int
}

// finish records the outcome unless one was already recorded.
func (c *Call) finish(o outcome, value int) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if c.outcome != pending {
		return
	}
	c.end = c.r.now()
	c.outcome = o
	c.value = value
}

// Ok records that the call completed and returned value (for an Increment,
// the count after incrementing; for a Read, the current count). Call it
// after the response has been received.
func (c *Call) Ok(value int) { c.finish(okay, value) }

// Failed records that the call definitely did not take effect (for example
// a routing error, or a 503 returned before the object ran). Failed calls
// are left out of the checked history, so marking a call Failed that did in
// fact run makes the check fail.
func (c *Call) Failed() { c.finish(failed, 0) }

// Unknown records that the call's outcome is unknown: a timeout, a reset
// connection, a 500 "commit outcome unknown". The operation may have taken
// effect at any time after Begin, or never.
func (c *Call) Unknown() { c.finish(unknown, 0) }

// record is a snapshot of a Call.
type record struct {
	client     int
	key        string
	kind       Kind
	seq        int
	start, end int64
	outcome    outcome
	value      int
}

// snapshot copies the history, grouped by key.
func (r *Recorder) snapshot() map[string][]record {
	r.mu.Lock()
	defer r.mu.Unlock()
	byKey := map[string][]record{}
	for _, c := range r.calls {
		byKey[c.key] = append(byKey[c.key], record{
			client: c.client, key: c.key, kind: c.op.Kind, seq: c.seq,
			start: c.start, end: c.end, outcome: c.outcome, value: c.value,
		})
	}
	return byKey
}

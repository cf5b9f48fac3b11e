package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roostdb/roost/internal/localcluster"
	"github.com/roostdb/roost/loadgen"
)

func objName(i int) string { return "rb-" + strconv.Itoa(i) }

// attempt is one increment as its worker saw it, times since the epoch of
// the counters.
type attempt struct {
	obj        int32
	start, end time.Duration
	failure    string // "" for a 200; else the status and body, or the transport error
}

func (a attempt) ok() bool { return a.failure == "" }

// counters increments objects and counts, per object, the increments that
// were acknowledged and those whose outcome is unknown.
type counters struct {
	epoch   time.Time
	http    *http.Client
	acked   []atomic.Int32
	unknown []atomic.Int32
}

func newCounters(n int) *counters {
	return &counters{
		epoch: time.Now(),
		http: &http.Client{
			Timeout:   15 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute},
		},
		acked:   make([]atomic.Int32, n),
		unknown: make([]atomic.Int32, n),
	}
}

func (c *counters) since() time.Duration { return time.Since(c.epoch) }

func (c *counters) at(d time.Duration) time.Time { return c.epoch.Add(d) }

// increment sends one increment of object obj through the node serving
// the app on addr. Any answer but a 200 leaves the outcome unknown: the
// increment may have been committed before the error.
func (c *counters) increment(addr string, obj int) attempt {
	a := attempt{obj: int32(obj), start: c.since()}
	resp, err := c.http.Get("http://" + addr + "/increment?name=" + objName(obj))
	if err != nil {
		a.failure = "no answer: " + err.Error()
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			a.failure = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
	}
	a.end = c.since()
	if a.ok() {
		c.acked[obj].Add(1)
	} else {
		c.unknown[obj].Add(1)
	}
	return a
}

// fill gives every object one acknowledged increment (retrying a few
// times those whose outcome was unknown), with -c workers spread over
// nodes. It returns how many objects it could not fill.
func (c *counters) fill(ctx context.Context, nodes []*localcluster.Node) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var unfilled atomic.Int64
	loadgen.Run(ctx, loadgen.Config{Concurrency: *concurrency, Duration: time.Hour}, func(_ context.Context, w int, seq int64) (int64, error) {
		if seq >= int64(len(c.acked)) {
			cancel()
			return 0, nil
		}
		addr := nodes[w%len(nodes)].HTTP
		for try := range 5 {
			if c.increment(addr, int(seq)).ok() {
				return int64(try), nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		unfilled.Add(1)
		return 4, errors.New("not filled")
	}, nil)
	return int(unfilled.Load())
}

// load is the closed-loop load of the measurement: worker w increments the
// objects in turn through node w mod len(nodes), and records every attempt.
type load struct {
	stop     context.CancelFunc
	done     chan struct{}
	attempts [][]attempt // per worker
}

func (c *counters) startLoad(nodes []*localcluster.Node) *load {
	ctx, stop := context.WithCancel(context.Background())
	l := &load{stop: stop, done: make(chan struct{}), attempts: make([][]attempt, *concurrency)}
	go func() {
		defer close(l.done)
		// The load runs until stopped. The operation ignores the context
		// loadgen passes on: stopping lets the increments in flight finish
		// instead of cutting them off into unknown outcomes.
		loadgen.Run(ctx, loadgen.Config{Concurrency: *concurrency, Duration: 24 * time.Hour}, func(_ context.Context, w int, seq int64) (int64, error) {
			a := c.increment(nodes[w%len(nodes)].HTTP, int(seq%int64(len(c.acked))))
			l.attempts[w] = append(l.attempts[w], a)
			if !a.ok() {
				return 0, errors.New(a.failure)
			}
			return 0, nil
		}, nil)
	}()
	return l
}

// finish stops the load, waits for the increments in flight and returns
// every attempt.
func (l *load) finish() []attempt {
	l.stop()
	<-l.done
	var all []attempt
	for _, as := range l.attempts {
		all = append(all, as...)
	}
	return all
}

// verification is what reading every object back showed.
type verification struct {
	Objects    int      `json:"objects"`
	Acked      int64    `json:"acknowledged"`
	Unknown    int64    `json:"unknown_outcomes"`
	Counted    int64    `json:"counted"`
	Violations int      `json:"violations"`
	Examples   []string `json:"examples,omitempty"`
}

// verify reads every object's count (through the nodes in turn) and checks
// acked ≤ count ≤ acked + unknown for each.
func (c *counters) verify(ctx context.Context, nodes []*localcluster.Node) (verification, error) {
	v := verification{Objects: len(c.acked)}
	var (
		mu       sync.Mutex
		firstErr error
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	for w := range *concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(c.acked) || ctx.Err() != nil {
					return
				}
				n, err := c.read(ctx, nodes[w%len(nodes)].HTTP, i)
				acked, unknown := int64(c.acked[i].Load()), int64(c.unknown[i].Load())
				mu.Lock()
				switch {
				case err != nil:
					if firstErr == nil {
						firstErr = err
					}
				case n < acked || n > acked+unknown:
					v.Violations++
					if len(v.Examples) < 10 {
						v.Examples = append(v.Examples, fmt.Sprintf("%s: count %d, acknowledged %d, unknown %d", objName(i), n, acked, unknown))
					}
				}
				v.Acked += acked
				v.Unknown += unknown
				v.Counted += n
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return v, firstErr
}

// read returns object i's count, retrying for a while: the cluster may
// still be settling after the move.
func (c *counters) read(ctx context.Context, addr string, i int) (int64, error) {
	var last error
	for range 20 {
		resp, err := c.http.Get("http://" + addr + "/?name=" + objName(i))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := strings.TrimSpace(string(b))
			// "Durable Object 'rb-7' count: 12"
			_, count, found := strings.Cut(body, "' count: ")
			if resp.StatusCode == http.StatusOK && found {
				return strconv.ParseInt(count, 10, 64)
			}
			err = fmt.Errorf("reading %s: %d %s", objName(i), resp.StatusCode, body)
		}
		last = err
		if !localcluster.Sleep(ctx, 250*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	return 0, last
}

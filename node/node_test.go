package node

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/durable"
)

// testCounter is the seed's Counter: read, change, write back, answer.
// /peek answers without writing: a read-only turn.
func testCounter(state *durable.State, env *durable.Env) durable.Object {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _, err := durable.GetJSON[int](state.Storage, "value")
		if err != nil {
			durable.WriteError(w, err)
			return
		}
		switch r.URL.Path {
		case "/increment":
			v++
		case "/decrement":
			v--
		case "/":
		case "/peek":
			fmt.Fprint(w, v)
			return
		default:
			http.Error(w, "Not found", http.StatusNotFound)
			return
		}
		if err := durable.PutJSON(state.Storage, "value", v); err != nil {
			durable.WriteError(w, err)
			return
		}
		fmt.Fprint(w, v)
	})
}

// testPingPong calls another object's /pong, which calls back the first
// object's /leaf: re-entrancy through the input gate.
func testPingPong(state *durable.State, env *durable.Env) durable.Object {
	ns, err := env.Namespace("PINGPONG")
	if err != nil {
		panic(err)
	}
	call := func(r *http.Request, id durable.ID, path string) (string, error) {
		req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://do"+path, nil)
		resp, err := ns.Get(id).Fetch(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ping": // called on A: ask B, which calls A back
			body, err := call(r, ns.IDFromName("B"), "/pong?from="+state.ID.String())
			if err != nil {
				durable.WriteError(w, err)
				return
			}
			fmt.Fprint(w, "ping>"+body)
		case "/pong": // called on B
			from, err := ns.IDFromString(r.URL.Query().Get("from"))
			if err != nil {
				durable.WriteError(w, err)
				return
			}
			body, err := call(r, from, "/leaf")
			if err != nil {
				durable.WriteError(w, err)
				return
			}
			fmt.Fprint(w, "pong>"+body)
		case "/leaf":
			fmt.Fprint(w, "leaf")
		case "/txn": // a transaction writing ?k; with ?sleep=D it awaits B's /sleep inside it
			err := state.Storage.Transaction(func(tx durable.Txn) error {
				if err := durable.PutJSON(tx, r.URL.Query().Get("k"), "before"); err != nil {
					return err
				}
				if d := r.URL.Query().Get("sleep"); d != "" {
					if _, err := call(r, ns.IDFromName("B"), "/sleep?d="+d); err != nil {
						return err
					}
				}
				return durable.PutJSON(tx, r.URL.Query().Get("k"), "after")
			})
			if err != nil {
				durable.WriteError(w, err)
				return
			}
			fmt.Fprint(w, "committed")
		case "/echo": // the request body back (?times=N: N times), for forwarding tests
			b, _ := io.ReadAll(r.Body)
			times, err := strconv.Atoi(r.URL.Query().Get("times"))
			if err != nil {
				times = 1
			}
			for range times {
				w.Write(b)
			}
		case "/rmw": // read-modify-write of "n" with ?d= between (no await); ?peek=1 reads only
			n, _, _ := durable.GetJSON[int](state.Storage, "n")
			if r.URL.Query().Get("peek") == "" {
				d, _ := time.ParseDuration(r.URL.Query().Get("d"))
				time.Sleep(d)
				n++
				durable.PutJSON(state.Storage, "n", n)
			}
			fmt.Fprint(w, n)
		case "/fanout": // awaits four other objects' /sleep at once, from four goroutines
			var wg sync.WaitGroup
			for i, d := range []string{"60ms", "15ms", "40ms", "5ms"} {
				wg.Go(func() { call(r, ns.IDFromName(fmt.Sprint("fan", i)), "/sleep?d="+d) })
			}
			wg.Wait()
			fmt.Fprint(w, "fanned")
		case "/stagger": // one goroutine awaits a slow fetch; another, later, a quick one, then adds 1 to "n"
			var wg sync.WaitGroup
			wg.Go(func() { call(r, ns.IDFromName("slow"), "/sleep?d=400ms") })
			wg.Go(func() {
				time.Sleep(150 * time.Millisecond)
				call(r, ns.IDFromName("quick"), "/sleep?d=1ms")
				n, _, _ := durable.GetJSON[int](state.Storage, "n")
				durable.PutJSON(state.Storage, "n", n+1)
			})
			wg.Wait()
			fmt.Fprint(w, "staggered")
		case "/txnrmw": // adds 1 to "n" in a transaction that awaits a 400 ms fetch between its read and its write
			err := state.Storage.Transaction(func(tx durable.Txn) error {
				n, _, err := durable.GetJSON[int](tx, "n")
				if err != nil {
					return err
				}
				if _, err := call(r, ns.IDFromName("B"), "/sleep?d=400ms"); err != nil {
					return err
				}
				return durable.PutJSON(tx, "n", n+1)
			})
			if err != nil {
				durable.WriteError(w, err)
				return
			}
			fmt.Fprint(w, "committed")
		case "/abandon": // returns while a fetch it started is still in flight
			go call(r, ns.IDFromName("B"), "/sleep?d=100ms")
			time.Sleep(10 * time.Millisecond)
			fmt.Fprint(w, "abandoned")
		case "/late": // after the turn, a WaitUntil fetch with the turn's own context
			ctx := r.Context()
			state.WaitUntil(func(context.Context) {
				time.Sleep(100 * time.Millisecond)
				call(r.WithContext(ctx), ns.IDFromName("B"), "/leaf")
			})
			fmt.Fprint(w, "later")
		case "/mutate": // changes its request, reads its body, tells what it got
			b, _ := io.ReadAll(r.Body)
			r.Header.Set("X-Set-By-Object", "yes")
			uri := r.RequestURI
			r.URL.Path = "/rewritten"
			fmt.Fprintf(w, "%s body=%q", uri, b)
		case "/raw": // its name and X-Raw back, X-Raw as a response header too; ?fail=1: in a panic's message
			if r.URL.Query().Get("fail") != "" {
				panic("refused " + r.Header.Get("X-Raw"))
			}
			w.Header().Set("X-Raw", r.Header.Get("X-Raw"))
			fmt.Fprintf(w, "%s|%s", state.ID.Name(), r.Header.Get("X-Raw"))
		case "/panic":
			panic("boom")
		case "/codes": // writes the statuses of ?codes= (comma-separated) in turn, then a body
			for _, c := range strings.Split(r.URL.Query().Get("codes"), ",") {
				code, _ := strconv.Atoi(c)
				w.WriteHeader(code)
			}
			fmt.Fprint(w, "object's body")
		case "/sleep": // answers after ?d= (a duration)
			d, _ := time.ParseDuration(r.URL.Query().Get("d"))
			time.Sleep(d)
			fmt.Fprint(w, "slept")
		}
	})
}

// testWorker routes /<binding>/<path>?name=N or ?id=HEX to an object.
func testWorker(w http.ResponseWriter, r *http.Request, env *durable.Env) {
	q := r.URL.Query()
	if c := q.Get("worker_code"); c != "" { // the Worker writes this status itself
		code, _ := strconv.Atoi(c)
		w.WriteHeader(code)
		fmt.Fprint(w, "worker's body")
		return
	}
	ns, err := env.Namespace(q.Get("ns"))
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	var id durable.ID
	if s := q.Get("id"); s != "" {
		if id, err = ns.IDFromString(s); err != nil {
			durable.WriteError(w, err)
			return
		}
	} else {
		id = ns.IDFromName(q.Get("name"))
	}
	resp, err := ns.Get(id).Fetch(r)
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	durable.WriteResponse(w, resp)
}

func testApp() *durable.App {
	return &durable.App{
		Name:    "test",
		Worker:  testWorker,
		Classes: map[string]durable.Class{"Counter": testCounter, "PingPong": testPingPong, "Room": testRoom},
		Bindings: []durable.Binding{
			{Name: "COUNTER", ClassName: "Counter"}, {Name: "PINGPONG", ClassName: "PingPong"}, {Name: "ROOM", ClassName: "Room"},
		},
	}
}

// startNode starts a node on loopback ports with its data in dir.
func startNode(t testing.TB, dir string, tweak func(*Config, *Node)) *Node {
	t.Helper()
	n, err := tryStartNode(t, dir, tweak)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tryStartNode is startNode returning Start's error (the node is not
// started then).
func tryStartNode(t testing.TB, dir string, tweak func(*Config, *Node)) (*Node, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.Shards = 4
	cfg.Logger = quietLogger
	n, err := New(cfg, testApp())
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(&n.cfg, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return n, n.Start(ctx)
}

func closeNode(t testing.TB, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// get sends a request through the node's Worker (the real app listener).
func get(t *testing.T, n *Node, path string, params url.Values) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr().String() + path + "?" + params.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// quietLogger drops the node's logs: tests report through t.
var quietLogger = slog.New(slog.DiscardHandler)

func counterParams(name string) url.Values { return url.Values{"ns": {"COUNTER"}, "name": {name}} }

func TestInputGateSerializesIncrements(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	const clients = 64
	results := make([]int, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body := get(t, n, "/increment", counterParams("A"))
			if code != 200 {
				t.Errorf("status %d: %s", code, body)
				return
			}
			results[i], _ = strconv.Atoi(body)
		}()
	}
	wg.Wait()
	slices.Sort(results)
	for i, v := range results {
		if v != i+1 {
			t.Fatalf("increments returned %v; want each of 1..%d exactly once", results, clients)
		}
	}
}

func TestCountSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, nil)
	for i := 1; i <= 5; i++ {
		if _, body := get(t, n, "/increment", counterParams("R")); body != strconv.Itoa(i) {
			t.Fatalf("increment %d answered %q", i, body)
		}
	}
	closeNode(t, n)
	n = startNode(t, dir, nil)
	defer closeNode(t, n)
	if _, body := get(t, n, "/", counterParams("R")); body != "5" {
		t.Fatalf("after restart the count is %q, want 5", body)
	}
}

func TestShardCountIsFixed(t *testing.T) {
	dir := t.TempDir()
	closeNode(t, startNode(t, dir, nil))
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.HTTPAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Shards = 8
	n, err := New(cfg, testApp())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); !errors.Is(err, ErrDataDirMismatch) {
		t.Fatalf("Start with another shard count: %v, want ErrDataDirMismatch", err)
	}
}

func TestReentrantStubCallsDoNotDeadlock(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	done := make(chan string, 1)
	go func() {
		_, body := get(t, n, "/ping", url.Values{"ns": {"PINGPONG"}, "name": {"A"}})
		done <- body
	}()
	select {
	case body := <-done:
		if body != "ping>pong>leaf" {
			t.Fatalf("A→B→A answered %q", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A→B→A deadlocked")
	}
}

// rmwCount runs k read-modify-writes of A's "n" (each sleeping between
// its read and its write, awaiting nothing), started 2 ms apart while
// meanwhile runs, and returns the count they left: k unless two turns ran
// side by side.
func rmwCount(t *testing.T, n *Node, k int, meanwhile func()) int {
	t.Helper()
	pp := url.Values{"ns": {"PINGPONG"}, "name": {"A"}}
	var wg sync.WaitGroup
	wg.Go(meanwhile)
	for range k {
		wg.Go(func() {
			q := url.Values{"ns": {"PINGPONG"}, "name": {"A"}, "d": {"3ms"}}
			if code, body := get(t, n, "/rmw", q); code != 200 {
				t.Errorf("rmw: %d %q", code, body)
			}
		})
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	pp.Set("peek", "1")
	_, body := get(t, n, "/rmw", pp)
	got, _ := strconv.Atoi(body)
	return got
}

// A turn that awaits several objects at once, from several goroutines,
// has its gate open while they run and shut again before any of them
// returns to its code: no other turn runs beside it. Before, each fetch
// opened and shut the gate by itself, so a fan-out let several turns in
// at once, and read-modify-writes lost updates.
func TestFanOutKeepsTheInputGate(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	const k = 60
	got := rmwCount(t, n, k, func() {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 4 {
					if code, body := get(t, n, "/fanout", url.Values{"ns": {"PINGPONG"}, "name": {"A"}}); code != 200 {
						t.Errorf("fanout: %d %q", code, body)
					}
				}
			})
		}
		wg.Wait()
	})
	if got != k {
		t.Fatalf("%d read-modify-writes beside fan-outs left n = %d: turns ran side by side", k, got)
	}
}

// A fetch made with a turn's context after the turn ended (from WaitUntil)
// opens no gate: the gate is another turn's by then. Before, it let a
// second turn in beside the one holding the gate, for good.
func TestFetchWithAnEndedTurnsContext(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	if code, body := get(t, n, "/late", url.Values{"ns": {"PINGPONG"}, "name": {"A"}}); code != 200 {
		t.Fatalf("late: %d %q", code, body)
	}
	const k = 60
	if got := rmwCount(t, n, k, func() {}); got != k {
		t.Fatalf("%d read-modify-writes after a late fetch left n = %d: turns ran side by side", k, got)
	}
}

// A turn whose gate is open for its fetches (a fan-out) treats another
// turn's transaction, which came in meanwhile and awaits a fetch of its
// own, as that turn's: a fetch it starts then still waits for the others
// before it returns. Before, the transaction (object-wide) made the fetch
// skip the gate's bookkeeping and return at once, and the code after it
// ran inside the transaction: one of two increments was lost (QA).
func TestFanOutBesideAnotherTurnsTransaction(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	pp := url.Values{"ns": {"PINGPONG"}, "name": {"A"}}
	done := make(chan string, 1)
	go func() {
		_, body := get(t, n, "/stagger", pp)
		done <- body
	}()
	time.Sleep(50 * time.Millisecond) // the slow fetch is in flight: the gate is open
	if code, body := get(t, n, "/txnrmw", pp); code != 200 {
		t.Fatalf("txnrmw: %d %q", code, body)
	}
	if body := <-done; body != "staggered" {
		t.Fatalf("stagger: %q", body)
	}
	q := url.Values{"ns": {"PINGPONG"}, "name": {"A"}, "peek": {"1"}}
	if _, body := get(t, n, "/rmw", q); body != "2" {
		t.Fatalf("two increments, one in a transaction beside a fan-out, left n = %s", body)
	}
}

// A turn that returns while a fetch it made is in flight (the gate open
// for it) takes the gate back before it ends, and the fetch, answered
// after, leaves the gate alone.
func TestTurnEndsWhileItsFetchIsInFlight(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	const k = 60
	got := rmwCount(t, n, k, func() {
		for range 3 {
			if code, body := get(t, n, "/abandon", url.Values{"ns": {"PINGPONG"}, "name": {"A"}}); code != 200 {
				t.Errorf("abandon: %d %q", code, body)
			}
		}
	})
	if got != k {
		t.Fatalf("%d read-modify-writes beside turns that left fetches in flight left n = %d", k, got)
	}
}

// A transaction that awaits another object keeps its object's gate shut:
// a second request's transaction waits for it rather than failing as if
// it nested, and never runs between the first one's reads and writes.
func TestTransactionHoldsTheGateAcrossAnAwait(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	type answer struct {
		code int
		body string
	}
	first := make(chan answer, 1)
	start := time.Now()
	go func() {
		code, body := get(t, n, "/txn", url.Values{"ns": {"PINGPONG"}, "name": {"A"}, "k": {"a"}, "sleep": {"700ms"}})
		first <- answer{code, body}
	}()
	time.Sleep(200 * time.Millisecond) // the first transaction is awaiting B
	code, body := get(t, n, "/txn", url.Values{"ns": {"PINGPONG"}, "name": {"A"}, "k": {"b"}})
	secondAfter := time.Since(start)
	a := <-first
	if a.code != 200 || code != 200 {
		t.Fatalf("first transaction %d %q, second %d %q; want both committed", a.code, a.body, code, body)
	}
	// The first transaction held the gate until B's 700 ms sleep ended.
	if secondAfter < 700*time.Millisecond {
		t.Fatalf("the second transaction was answered %s after the first began, inside the first one's await", secondAfter)
	}
}

// An object gets its own copy of the request, as a server's handler does:
// a body even when the caller gave none, a RequestURI, and headers and a
// URL whose changes the caller does not see — so one request fetched to
// several objects at once is safe. Before, a local object got the
// caller's request itself: a nil body (io.ReadAll panicked), changes
// visible to the caller, and concurrent map writes (a crash) in a fan-out.
func TestObjectsGetTheirOwnRequest(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	pp, _ := n.Env().Namespace("PINGPONG")
	req, _ := http.NewRequest("GET", "http://do/mutate?q=1", nil)
	req.Header.Set("X-From-Caller", "1")
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			resp, err := pp.Get(pp.IDFromName(fmt.Sprint("m", i))).Fetch(req)
			if err != nil {
				t.Errorf("fetch %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(b) != `/mutate?q=1 body=""` {
				t.Errorf("fetch %d: %d %q", i, resp.StatusCode, b)
			}
		})
	}
	wg.Wait()
	if req.URL.Path != "/mutate" || req.Header.Get("X-Set-By-Object") != "" || len(req.Header) != 1 || req.Body != nil {
		t.Fatalf("the objects changed the caller's request: path %q, header %v, body %v", req.URL.Path, req.Header, req.Body)
	}
}

func TestBadInput(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	pp, _ := n.Env().Namespace("PINGPONG")
	foreign := pp.IDFromName("A").String()
	for _, tc := range []struct {
		name   string
		params url.Values
		code   int
	}{
		{"malformed id", url.Values{"ns": {"COUNTER"}, "id": {"xyz"}}, 400},
		{"non-hex id", url.Values{"ns": {"COUNTER"}, "id": {string(make([]byte, 64))}}, 400},
		{"id of another namespace", url.Values{"ns": {"COUNTER"}, "id": {foreign}}, 400},
		{"unknown binding", url.Values{"ns": {"NOPE"}, "name": {"A"}}, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, n, "/increment", tc.params)
			if code != tc.code {
				t.Fatalf("status %d (%s), want %d", code, body, tc.code)
			}
		})
	}
	if got := n.manager.count(); got != 0 {
		t.Fatalf("bad requests activated %d instances", got)
	}
}

func TestExceptionReachesCallerAndResetsObject(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	code, body := get(t, n, "/panic", url.Values{"ns": {"PINGPONG"}, "name": {"P"}})
	if code != 500 || body != "Durable Object PingPong threw an exception: boom\n" {
		t.Fatalf("panic gave %d %q", code, body)
	}
	if _, body := get(t, n, "/leaf", url.Values{"ns": {"PINGPONG"}, "name": {"P"}}); body != "leaf" {
		t.Fatalf("after the exception the object answered %q", body)
	}
}

func TestIdleEviction(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config, _ *Node) { c.IdleTimeout = 200 * time.Millisecond })
	defer closeNode(t, n)
	for i := range 50 {
		get(t, n, "/increment", counterParams(fmt.Sprint("e", i)))
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.manager.count() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d instances still in memory", n.manager.count())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, body := get(t, n, "/increment", counterParams("e7")); body != "2" {
		t.Fatalf("after eviction the count went to %q, want 2", body)
	}
}

// failingApplier fails the proposals chosen by fail, after a delay that
// lets later turns pile up behind them, without ever applying them.
type failingApplier struct {
	applier
	fail func() bool
}

type failedFuture struct {
	raft.IndexFuture
	err   error
	delay time.Duration
}

func (f failedFuture) Error() error  { time.Sleep(f.delay); return f.err }
func (f failedFuture) Response() any { return nil }
func (f failedFuture) Index() uint64 { return 0 }
func (a failingApplier) Apply(cmd []byte, timeout time.Duration) raft.ApplyFuture {
	if a.fail() {
		return failedFuture{err: raft.ErrEnqueueTimeout, delay: 30 * time.Millisecond}
	}
	return a.applier.Apply(cmd, timeout)
}

// slowCommitApplier holds back the outcome of the proposals chosen by
// slow, and counts leadership checks.
type slowCommitApplier struct {
	applier
	slow     func() bool
	verifies *atomic.Int32
}

type slowFuture struct {
	raft.ApplyFuture
	delay time.Duration
}

func (f slowFuture) Error() error { time.Sleep(f.delay); return f.ApplyFuture.Error() }

func (a slowCommitApplier) Apply(cmd []byte, timeout time.Duration) raft.ApplyFuture {
	f := a.applier.Apply(cmd, timeout)
	if a.slow() {
		return slowFuture{ApplyFuture: f, delay: 400 * time.Millisecond}
	}
	return f
}

func (a slowCommitApplier) VerifyLeader() raft.Future {
	a.verifies.Add(1)
	return a.applier.VerifyLeader()
}

// A read-only turn that runs while an earlier turn's commit is in flight
// checks leadership itself: that commit's acknowledgement may date from
// before the read arrived, so it does not vouch for the read.
func TestReadBehindAnEarlierCommitConfirmsLeadership(t *testing.T) {
	var armed atomic.Bool
	var verifies atomic.Int32
	n := startNode(t, t.TempDir(), func(_ *Config, n *Node) {
		n.applyWrap = func(a applier) applier {
			return slowCommitApplier{applier: a, verifies: &verifies, slow: func() bool { return armed.CompareAndSwap(true, false) }}
		}
	})
	defer closeNode(t, n)
	get(t, n, "/increment", counterParams("R"))
	armed.Store(true)
	incremented := make(chan string, 1)
	go func() {
		_, body := get(t, n, "/increment", counterParams("R"))
		incremented <- body
	}()
	// Wait for the increment's turn to end, its commit held back.
	deadline := time.Now().Add(10 * time.Second)
	for armed.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the increment was never proposed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := verifies.Load()
	code, body := get(t, n, "/peek", counterParams("R"))
	if code != 200 || body != "2" {
		t.Fatalf("read = %d %q, want 200 \"2\"", code, body)
	}
	if got := <-incremented; got != "2" {
		t.Fatalf("increment = %q, want 2", got)
	}
	if verifies.Load() == before {
		t.Fatal("the read was answered on the strength of an earlier turn's commit, with no leadership check of its own")
	}
}

func TestOutputGateHidesFailedCommits(t *testing.T) {
	var armed atomic.Bool
	n := startNode(t, t.TempDir(), func(_ *Config, n *Node) {
		n.applyWrap = func(a applier) applier {
			return failingApplier{applier: a, fail: func() bool { return armed.CompareAndSwap(true, false) }}
		}
	})
	defer closeNode(t, n)
	for i := 1; i <= 5; i++ {
		get(t, n, "/increment", counterParams("G"))
	}
	for round := range 5 {
		before, _ := strconv.Atoi(func() string { _, b := get(t, n, "/", counterParams("G")); return b }())
		armed.Store(true)
		const clients = 32
		var (
			mu       sync.Mutex
			seen     []int
			failures int
			wg       sync.WaitGroup
		)
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, body := get(t, n, "/increment", counterParams("G"))
				mu.Lock()
				defer mu.Unlock()
				if code != 200 {
					failures++
					return
				}
				v, err := strconv.Atoi(body)
				if err != nil {
					t.Errorf("body %q", body)
				}
				seen = append(seen, v)
			}()
		}
		wg.Wait()
		if failures == 0 {
			t.Fatalf("round %d: the injected commit failure failed no response", round)
		}
		_, body := get(t, n, "/", counterParams("G"))
		after, _ := strconv.Atoi(body)
		// Every value a client saw must be committed, and each exactly once:
		// the successes are before+1 .. after.
		slices.Sort(seen)
		if after != before+len(seen) {
			t.Fatalf("round %d: count went %d→%d but %d increments succeeded (%v)", round, before, after, len(seen), seen)
		}
		for i, v := range seen {
			if v != before+1+i {
				t.Fatalf("round %d: clients saw %v after %d: a value that was never committed leaked", round, seen, before)
			}
		}
	}
}

// TestStalledBodyHoldsUpOnlyItsRequest: a client that stalls half-way
// through its request body holds up no other request to the object for
// long. A small body is read before the object's turn, so the stall holds
// up its own request only; the rest of a body past its first MiB is read
// during the turn, which then ends once the body has gone BodyStallTimeout
// without a byte. Upgrade headers change nothing (any Upgrade header
// turned the guard off): a WebSocket handshake has no body, and a
// connection taken over for a WebSocket drops its deadlines.
func TestStalledBodyHoldsUpOnlyItsRequest(t *testing.T) {
	for _, tc := range []struct {
		name            string
		announced, sent int
		head            string
	}{
		{"small body, read before the turn", 100, 3, ""},
		{"large body, its rest read in the turn", 2 << 20, 3 << 19, ""},
		{"large body with an Upgrade header", 2 << 20, 3 << 19, "Upgrade: junk\r\n"},
		{"large body with WebSocket upgrade headers", 2 << 20, 3 << 19, "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t, t.TempDir(), func(cfg *Config, _ *Node) { cfg.BodyStallTimeout = time.Second })
			defer closeNode(t, n)
			const path = "/echo?ns=PINGPONG&name=stalled"
			if code, body := postBody(t, n, path, "warm"); code != 200 || body != "warm" {
				t.Fatalf("echo: %d %q", code, body)
			}
			conn, err := net.Dial("tcp", n.HTTPAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: roost\r\n%sContent-Length: %d\r\n\r\n", path, tc.head, tc.announced)
			if _, err := conn.Write(bytes.Repeat([]byte("a"), tc.sent)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // its request reaches the object
			done := make(chan string, 1)
			go func() {
				code, body := postBody(t, n, path, "next")
				done <- fmt.Sprintf("%d %s", code, body)
			}()
			select {
			case got := <-done:
				if got != "200 next" {
					t.Fatalf("the request after the stalled one: %s", got)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a client stalled in its body blocks the object's other requests")
			}
		})
	}
}

// A request whose body breaks off or is malformed is the client's fault:
// 400, and the object never runs it.
func TestBrokenRequestBodyIs400(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	for _, tc := range []struct{ name, head, body string }{
		{"a malformed chunk", "Transfer-Encoding: chunked", "zz\r\nabc\r\n0\r\n\r\n"},
		{"a chunk cut short", "Transfer-Encoding: chunked", "10\r\nabc\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", n.HTTPAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /echo?ns=PINGPONG&name=broken HTTP/1.1\r\nHost: roost\r\n%s\r\n\r\n%s", tc.head, tc.body)
			if strings.HasPrefix(tc.body, "10") {
				_ = conn.(*net.TCPConn).CloseWrite() // the rest never comes
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "request body") {
				t.Fatalf("%d %q, want 400 naming the request body", resp.StatusCode, b)
			}
		})
	}
}

// postBody sends POST path with body through the node's app listener.
func postBody(t *testing.T, n *Node, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+n.HTTPAddr().String()+path, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStubRefusesAnotherNamespacesID: a stub of one namespace given an ID
// another namespace made is refused before any object runs; before, the
// stub's class ran on the other object's storage whenever the object's
// shard was led by the calling node.
func TestStubRefusesAnotherNamespacesID(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	counters, err := n.manager.env.Namespace("COUNTER")
	if err != nil {
		t.Fatal(err)
	}
	pings, err := n.manager.env.Namespace("PINGPONG")
	if err != nil {
		t.Fatal(err)
	}
	foreign := counters.IDFromName("zz")
	req := httptest.NewRequest("GET", "http://do/echo", nil)
	resp, err := pings.Get(foreign).Fetch(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("PINGPONG's stub ran a COUNTER ID: %d", resp.StatusCode)
	}
	if !errors.Is(err, durable.ErrWrongNamespace) {
		t.Fatalf("PINGPONG's stub with a COUNTER ID: %v, want ErrWrongNamespace", err)
	}
	n.manager.mu.Lock()
	_, running := n.manager.instances[foreign.Bytes()]
	n.manager.mu.Unlock()
	if running {
		t.Fatal("an instance of the foreign ID was activated")
	}
	// The ID's own namespace still reaches its object.
	resp, err = counters.Get(foreign).Fetch(httptest.NewRequest("GET", "http://do/increment", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("COUNTER's own stub: %d", resp.StatusCode)
	}
}

// raft's lines reach the node's log at their own level, and the warnings a
// follower catching up causes at info.
func TestRaftLogLevels(t *testing.T) {
	for _, tc := range []struct {
		line, want string
	}{
		{"[WARN]  raftstore.raft: heartbeat timeout reached: last-leader-addr=a", "level=WARN msg=\"raftstore.raft: heartbeat timeout reached"},
		{"[ERROR] raftstore.raft: failed to appendEntries to: peer=x", "level=ERROR msg=\"raftstore.raft: failed to appendEntries"},
		{"[WARN]  raftstore.raft: failed to get previous log: group=0 previous-index=7", "level=INFO msg=\"raftstore.raft: failed to get previous log"},
		{"[WARN]  raftstore.raft: appendEntries rejected, sending older logs: next=1", "level=INFO msg=\"raftstore.raft: appendEntries rejected"},
		{`[ERROR] raftstore.raft: failed to get log: group=2 index=1 error="log not found"`, "level=INFO msg=\"raftstore.raft: failed to get log"},
		{`[ERROR] raftstore.raft: failed to get log: group=2 index=1 error="pebble: closed"`, "level=ERROR msg=\"raftstore.raft: failed to get log"},
		{"[INFO]  raftstore: opened", "level=INFO msg=\"raftstore: opened\""},
		{"[ERROR] raftstore.raft: failed to appendEntries to: group=9 error=\"rpc error: code = NotFound desc = raftstore: group 9 is not running on a:1\"", "level=INFO"},
		{"[ERROR] raftstore.raft: failed to heartbeat to: group=14 error=\"transport shutdown\"", "level=INFO"},
		{"no level at all", "level=WARN msg=\"no level at all\""},
	} {
		var b strings.Builder
		w := slogWriter{slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		w.Write([]byte(tc.line + "\n"))
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%q logged as %q, want %q", tc.line, b.String(), tc.want)
		}
	}
	// As hclog writes them.
	var b strings.Builder
	l := hclogTo(slog.New(slog.NewTextHandler(&b, nil)), hclog.Info).Named("raft")
	l.Warn("failed to get previous log", "previous-index", 7)
	l.Error("failed to appendEntries to", "peer", "x")
	for _, want := range []string{`level=INFO msg="raftstore.raft: failed to get previous log: previous-index=7"`, `level=ERROR msg="raftstore.raft: failed to appendEntries to: peer=x"`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("hclog's lines logged as %q, want %q", b.String(), want)
		}
	}
}

// With an id key, IDs are the node's alone: one made with the public
// derivation (the class name and no key), which anyone can compute, is
// refused as of another namespace, while the node's own work. The key is
// fixed with the data: the data dir refuses to start without it, or with
// another, and with it the objects are where they were.
func TestIDKey(t *testing.T) {
	dir := t.TempDir()
	const key = "a-long-secret-of-this-test"
	withKey := func(k string) func(*Config, *Node) { return func(c *Config, _ *Node) { c.IDKey = k } }
	n := startNode(t, dir, withKey(key))
	forged := durable.NewUniqueID(durable.DeriveNamespaceKey("Counter", ""))
	if code, body := get(t, n, "/increment", url.Values{"ns": {"COUNTER"}, "id": {forged.String()}}); code != 400 {
		t.Fatalf("an ID made without the key: %d %q, want 400", code, body)
	}
	counter, _ := n.Env().Namespace("COUNTER")
	own := counter.NewUniqueID().String()
	for _, q := range []url.Values{counterParams("K"), {"ns": {"COUNTER"}, "id": {own}}} {
		if code, body := get(t, n, "/increment", q); code != 200 || body != "1" {
			t.Fatalf("increment %v: %d %q", q, code, body)
		}
	}
	closeNode(t, n)
	for _, other := range []string{"", "another-long-secret-key"} {
		_, err := tryStartNode(t, dir, withKey(other))
		if !errors.Is(err, ErrIDKeyMismatch) || !strings.Contains(err.Error(), "another id key") || strings.Contains(err.Error(), key) {
			t.Fatalf("start with id key %q: %v, want ErrDataDirMismatch naming fingerprints, not the key", other, err)
		}
	}
	n = startNode(t, dir, withKey(key))
	defer closeNode(t, n)
	for _, q := range []url.Values{counterParams("K"), {"ns": {"COUNTER"}, "id": {own}}} {
		if code, body := get(t, n, "/increment", q); code != 200 || body != "2" {
			t.Fatalf("increment %v after the restart: %d %q, want 2", q, code, body)
		}
	}
}

// A data dir made without an id key (as every one was before there was
// one) refuses a key: its objects were placed by the public derivation.
func TestIDKeyRefusedOnDataMadeWithoutOne(t *testing.T) {
	dir := t.TempDir()
	closeNode(t, startNode(t, dir, nil))
	_, err := tryStartNode(t, dir, func(c *Config, _ *Node) { c.IDKey = "a-long-secret-of-this-test" })
	if !errors.Is(err, ErrIDKeyMismatch) || !strings.Contains(err.Error(), "no key") {
		t.Fatalf("a key on data made without one: %v, want ErrDataDirMismatch saying it had no key", err)
	}
}

// A client that stalls in its request body gets an answer itself, within
// about BodyStallTimeout: whether the Worker read the body (and failed on
// the stall) or answered without reading it, the server reads what is left
// of the body before it answers, and that read is bounded too. Before, the
// answer waited for a byte that never came, for as long as the client
// kept the connection.
func TestStalledClientGetsAnAnswer(t *testing.T) {
	n := startNode(t, t.TempDir(), func(cfg *Config, _ *Node) { cfg.BodyStallTimeout = 300 * time.Millisecond })
	defer closeNode(t, n)
	for _, tc := range []struct {
		name, method, path string
		listener           net.Addr
	}{
		{"the Worker reads the body", "POST", "/echo?ns=PINGPONG&name=stalled", n.HTTPAddr()},
		{"the Worker answers without reading it", "POST", "/echo?ns=NOPE", n.HTTPAddr()},
		{"the admin API reads the body", "PUT", "/v1/kv/KV/values/stalled", n.AdminAddr()},
		{"the admin listener answers without reading it", "POST", "/v1/nope", n.AdminAddr()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", tc.listener.String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: roost\r\nContent-Length: 1000\r\n\r\n{", tc.method, tc.path)
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer to a client stalled in its body: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 400 {
				t.Fatalf("a stalled body answered %d", resp.StatusCode)
			}
			if strings.Contains(string(body), "read tcp") {
				t.Fatalf("the answer to a stalled body names the connection's addresses: %q", body)
			}
		})
	}
}

// A client that asks for a large answer and never reads it has its
// connection dropped once one write has waited BodyStallTimeout for it.
// Before, the write waited for ever, holding the connection and the
// request's goroutine: reading later, the client got the whole answer.
func TestClientThatNeverReadsIsDropped(t *testing.T) {
	n := startNode(t, t.TempDir(), func(cfg *Config, _ *Node) { cfg.BodyStallTimeout = 300 * time.Millisecond })
	defer closeNode(t, n)
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", n.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const chunk, times = 64 << 10, 400 // a 25 MiB answer: more than the sockets' buffers hold
	fmt.Fprintf(conn, "POST /echo?ns=PINGPONG&name=hoard&times=%d HTTP/1.1\r\nHost: roost\r\nContent-Length: %d\r\n\r\n", times, chunk)
	if _, err := conn.Write(make([]byte, chunk)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // not reading: the node's writes stall
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.Copy(io.Discard, conn)
	if want := int64(chunk * times); got >= want {
		t.Fatalf("read %d bytes (%v) after a 3 s stall: the whole answer of %d bytes waited for the client", got, err, want)
	}
	t.Logf("the connection ended after %d bytes (%v)", got, err)
}

// The bound on an answer's writes is per write: a streamed answer that
// pauses longer than it between its writes, or between a write and its
// flush, is not cut off.
func TestStreamedAnswerMayPauseLongerThanTheWriteBound(t *testing.T) {
	const bound = 200 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gw, finish := guardRequest(w, r, bound)
		defer finish()
		rc := http.NewResponseController(gw)
		for _, part := range []string{"a", "b", "c"} {
			fmt.Fprint(gw, part)
			time.Sleep(2 * bound) // buffered, not sent yet
			if err := rc.Flush(); err != nil {
				t.Errorf("flushing %q after a pause: %v", part, err)
				return
			}
			time.Sleep(2 * bound)
		}
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "abc" {
		t.Fatalf("streamed answer: %q, %v; want \"abc\"", b, err)
	}
}

// TestAsteriskRequestsNeverReachTheWorker: HTTP/2's connection preface and
// GET * name no path; the app listener answers them itself instead of
// handing the Worker a request for "*" (the counter's Worker answered the
// preface 200 with its page; OPTIONS * Go's server answers itself).
func TestAsteriskRequestsNeverReachTheWorker(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	for _, tc := range []struct {
		request string
		code    int
		says    string
	}{
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", http.StatusHTTPVersionNotSupported, "h2c"},
		{"GET * HTTP/1.1\r\nHost: roost\r\n\r\n", http.StatusBadRequest, "GET * names no path"},
	} {
		conn, err := net.Dial("tcp", n.HTTPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(conn, tc.request)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%q: %v", tc.request, err)
		}
		b, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.says) {
			t.Errorf("%q answered %s %q; want %d saying %q", tc.request, resp.Status, b, tc.code, tc.says)
		}
	}
}

// TestStatusCodesAsNetHTTPTakesThem: an object or Worker that writes a
// status net/http cannot send threw an exception, answered 500 (it was an
// empty 200: the status was noted before net/http refused it), and an
// informational 1xx written first is not the final status (an object's
// 103 then 201 answered 200).
func TestStatusCodesAsNetHTTPTakesThem(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	for _, tc := range []struct {
		query string
		code  int
		body  string
	}{
		{"ns=PINGPONG&name=codes&codes=1000", 500, "invalid WriteHeader code 1000"},
		{"ns=PINGPONG&name=codes&codes=99", 500, "invalid WriteHeader code 99"},
		{"ns=PINGPONG&name=codes&codes=103,201", 201, "object's body"},
		{"ns=PINGPONG&name=codes&codes=201,404", 201, "object's body"},
		{"worker_code=1000", 500, "invalid WriteHeader code 1000"},
	} {
		resp, err := http.Get("http://" + n.HTTPAddr().String() + "/codes?" + tc.query)
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.code || !strings.Contains(string(b), tc.body) {
			t.Errorf("%s: %d %q %v; want %d with %q", tc.query, resp.StatusCode, b, err, tc.code, tc.body)
		}
	}
}

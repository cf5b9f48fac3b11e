package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
)

// zombieObject blocks a request turn on /block until release closes, and
// counts its Alarm deliveries, whose handler fails (so the delivery writes
// nothing: it is retried later).
type zombieObject struct {
	blocked, release chan struct{}
	alarms           *atomic.Int32
}

func (o *zombieObject) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/block" {
		close(o.blocked)
		<-o.release
	}
}

func (o *zombieObject) Alarm(context.Context, durable.AlarmInfo) error {
	o.alarms.Add(1)
	return errors.New("not now")
}

// liveInstance returns the object's instance in the manager's map if it is
// not retired.
func liveInstance(m *manager, key [32]byte) *instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	if in := m.instances[key]; in != nil && !in.retired.Load() {
		return in
	}
	return nil
}

// An alarm delivery waiting at the gate of an instance that is retired
// because this node lost the shard's leadership must not activate a fresh
// instance on this node and run the handler there: another node may lead
// the shard (and run the object) by now, and the fresh instance, not
// retired by anything, outlives the loss with the state it read.
func TestAlarmRetryAfterLeadershipLossActivatesNothing(t *testing.T) {
	blocked, release := make(chan struct{}), make(chan struct{})
	var alarms atomic.Int32
	n, ns := startWithClass(t, "ZOMBIE", "Zombie", func(*durable.State, *durable.Env) durable.Object {
		return &zombieObject{blocked: blocked, release: release, alarms: &alarms}
	})
	id := ns.IDFromName("z")
	key := id.Bytes()
	sh := n.shards[shardOf(key, len(n.shards))]
	defer func() {
		sh.setLeading(true) // as a new term's win would, for Close's drain
		closeNode(t, n)
	}()

	got := make(chan int, 1)
	go func() {
		code, _ := get(t, n, "/block", url.Values{"ns": {"ZOMBIE"}, "name": {"z"}})
		got <- code
	}()
	<-blocked
	delivered := make(chan error, 1)
	go func() {
		delivered <- n.manager.deliverAlarm(context.Background(), sh, "Zombie", id, time.Now().UnixMilli(),
			durable.AlarmInfo{ScheduledTime: time.Now()}, true, false)
	}()
	// The delivery holds a reference and waits at the gate.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		n.manager.mu.Lock()
		refs := n.manager.instances[key].refs
		n.manager.mu.Unlock()
		if refs == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the alarm delivery did not reach the instance")
		}
	}

	// Leadership lost, as watchLeadership handles it.
	sh.setLeading(false)
	n.manager.dropShard(sh)
	close(release)
	<-got

	select {
	case err := <-delivered:
		t.Logf("delivery: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the alarm delivery did not end")
	}
	if c := alarms.Load(); c != 0 {
		t.Errorf("the alarm handler ran %d times after this node lost the shard's leadership", c)
	}
	if in := liveInstance(n.manager, key); in != nil {
		t.Errorf("a live instance of the object is in memory on a node that does not serve its shard (refs %d)", in.refs)
	}
}

// patientObject's request handler (/wait) and alarm handler wait for their
// context to end and report its cause; /arm sets the alarm for ?at= (Unix
// milliseconds).
type patientObject struct {
	state  *durable.State
	causes chan error
}

func (o *patientObject) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/arm" {
		at, _ := strconv.ParseInt(r.URL.Query().Get("at"), 10, 64)
		if err := o.state.Storage.SetAlarm(time.UnixMilli(at)); err != nil {
			durable.WriteError(w, err)
		}
		return
	}
	<-r.Context().Done()
	o.causes <- context.Cause(r.Context())
}

func (o *patientObject) Alarm(ctx context.Context, _ durable.AlarmInfo) error {
	<-ctx.Done()
	o.causes <- context.Cause(ctx)
	return ctx.Err()
}

// A handler still running when this node loses its object's shard must be
// told: the new leader may run the object (a request, the same alarm)
// already, and what the old handler does outside storage would happen
// twice, at once. Its context ends, with the loss as the cause.
func TestLeadershipLossCancelsRunningHandlers(t *testing.T) {
	causes := make(chan error, 2)
	n, ns := startWithClass(t, "PATIENT", "Patient", func(st *durable.State, _ *durable.Env) durable.Object {
		return &patientObject{state: st, causes: causes}
	})
	// Two objects of one shard: one runs a request, the other its alarm.
	var ids []durable.ID
	var sh *shard
	for i := 0; len(ids) < 2; i++ {
		id := ns.IDFromName(fmt.Sprint("p", i))
		s := n.shards[shardOf(id.Bytes(), len(n.shards))]
		if sh == nil || s == sh {
			sh = s
			ids = append(ids, id)
		}
	}
	defer func() {
		sh.setLeading(true)
		closeNode(t, n)
	}()

	at := time.Now().Add(time.Hour).UnixMilli()
	if code, body := get(t, n, "/arm", url.Values{"ns": {"PATIENT"}, "id": {ids[1].String()}, "at": {fmt.Sprint(at)}}); code != http.StatusOK {
		t.Fatalf("setting the alarm: %d %s", code, body)
	}
	answered := make(chan int, 1)
	go func() {
		code, _ := get(t, n, "/wait", url.Values{"ns": {"PATIENT"}, "id": {ids[0].String()}})
		answered <- code
	}()
	delivered := make(chan error, 1)
	go func() {
		delivered <- n.manager.deliverAlarm(context.Background(), sh, "Patient", ids[1], at,
			durable.AlarmInfo{ScheduledTime: time.UnixMilli(at)}, true, false)
	}()
	// Both handlers are running once both instances hold their gate.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		held := 0
		for _, id := range ids {
			if in := liveInstance(n.manager, id.Bytes()); in != nil && len(in.gate) == 1 {
				held++
			}
		}
		if held == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request and the alarm did not both start")
		}
	}

	sh.setLeading(false)
	n.manager.dropShard(sh)
	for range 2 {
		select {
		case cause := <-causes:
			if !errors.Is(cause, errInstanceReset) || !strings.Contains(cause.Error(), "lost leadership of shard") {
				t.Errorf("a handler's context ended with %v, want the reset and its reason", cause)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a handler still runs 10 s after its node lost the shard: its context did not end")
		}
	}
	if code := <-answered; code == http.StatusOK {
		t.Errorf("the request answered %d after its node lost the shard while it ran", code)
	}
	if err := <-delivered; err == nil {
		t.Error("the alarm delivery succeeded after its node lost the shard while it ran")
	}
}

// A handler that outlives Close's context is cancelled, and Close says
// that the grace period ended first, not each waiting step's bare "context
// deadline exceeded" (QA: roost dev exited so on SIGTERM during a long
// alarm handler that stopped at once when cancelled).
func TestCloseSaysItsGracePeriodEnded(t *testing.T) {
	causes := make(chan error, 1)
	n, ns := startWithClass(t, "PATIENT", "Patient", func(st *durable.State, _ *durable.Env) durable.Object {
		return &patientObject{state: st, causes: causes}
	})
	id := ns.IDFromName("p")
	sh := n.shards[shardOf(id.Bytes(), len(n.shards))]
	at := time.Now().Add(time.Hour).UnixMilli()
	if code, body := get(t, n, "/arm", url.Values{"ns": {"PATIENT"}, "name": {"p"}, "at": {fmt.Sprint(at)}}); code != http.StatusOK {
		t.Fatalf("setting the alarm: %d %s", code, body)
	}
	go func() {
		_ = n.manager.deliverAlarm(context.Background(), sh, "Patient", id, at, durable.AlarmInfo{ScheduledTime: time.UnixMilli(at)}, true, false)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if in := liveInstance(n.manager, id.Bytes()); in != nil && len(in.gate) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the alarm handler did not start")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := n.Close(ctx)
	if !errors.Is(err, ErrCloseDeadline) || errors.Is(err, ErrCloseIncomplete) || strings.Contains(err.Error(), "context deadline exceeded") {
		t.Fatalf("Close: %v, want ErrCloseDeadline alone", err)
	}
	select {
	case <-causes:
	default:
		t.Fatal("Close returned with the alarm handler still running")
	}
}

// A request that saw the shard ready (waitShard) and reaches acquire only
// after the leadership loss's dropShard must not activate an instance:
// dropShard has already run, so nothing would retire it, and after this
// node wins the shard again it would serve what it read in the old term.
func TestAcquireRefusesAShardThisNodeNoLongerServes(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	ns, _ := n.Env().Namespace("COUNTER")
	id := ns.IDFromName("a")
	key := id.Bytes()
	sh := n.shards[shardOf(key, len(n.shards))]
	defer func() {
		sh.setLeading(true)
		closeNode(t, n)
	}()
	if err := n.manager.waitShard(context.Background(), sh); err != nil {
		t.Fatal(err)
	}
	// The loss lands here, between the request's readiness check and acquire.
	sh.setLeading(false)
	n.manager.dropShard(sh)

	in, err := n.manager.acquire(context.Background(), key, id, "Counter", n.manager.classes["Counter"], sh)
	if err == nil {
		n.manager.release(in)
		t.Fatal("acquire activated an instance on a shard this node no longer serves")
	}
	var re *routingError
	if !errors.As(err, &re) {
		t.Fatalf("acquire: %v, want a routing error (nothing ran)", err)
	}
}

// runCounter counts the turns that ran its /block path, each of which waits
// for release the first time.
type runCounter struct {
	blocked, release chan struct{}
	runs             *atomic.Int32
}

func (o *runCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if o.runs.Add(1) == 1 {
		close(o.blocked)
		<-o.release
	}
}

// A request whose turn ran must not be run again because its instance was
// retired while it ran (here by the liveness fence, which is lifted soon
// after, as when a partition heals): the manager retries errInstanceReset
// as "the turn had not run", so the request ran twice; in a cluster the
// retry is a routing error, and the sender runs it again at the new leader.
func TestTurnResetWhileRunningIsNotRunAgain(t *testing.T) {
	blocked, release := make(chan struct{}), make(chan struct{})
	var runs atomic.Int32
	n, ns := startWithClass(t, "RUNS", "Runs", func(*durable.State, *durable.Env) durable.Object {
		return &runCounter{blocked: blocked, release: release, runs: &runs}
	})
	defer closeNode(t, n)
	sh := n.shards[shardOf(ns.IDFromName("r").Bytes(), len(n.shards))]

	type result struct {
		code int
		body string
	}
	got := make(chan result, 1)
	go func() {
		code, body := get(t, n, "/block", url.Values{"ns": {"RUNS"}, "name": {"r"}})
		got <- result{code, body}
	}()
	<-blocked
	// The fence, as checkFence applies it, while the turn runs.
	if sh.setFenced(true) {
		n.manager.dropShard(sh)
	}
	close(release)
	time.Sleep(50 * time.Millisecond)
	sh.setFenced(false) // the quorum is back
	r := <-got
	t.Logf("response: %d %s", r.code, r.body)
	if c := runs.Load(); c != 1 {
		t.Fatalf("the request's turn ran %d times", c)
	}
}

// echoObject answers /echo with the request's body; its /block turn waits
// for release and then panics, which resets the instance.
type echoObject struct{ blocked, release chan struct{} }

func (o *echoObject) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/block":
		close(o.blocked)
		<-o.release
		panic("reset")
	case "/echo":
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}
}

// A request queued at the gate of an instance that is reset before its
// turn runs is retried on a fresh instance (errInstanceReset): the retry
// must carry the request's body, which the first attempt already read.
func TestRequestRetriedAfterResetKeepsItsBody(t *testing.T) {
	blocked, release := make(chan struct{}), make(chan struct{})
	n, ns := startWithClass(t, "ECHO", "Echo", func(*durable.State, *durable.Env) durable.Object {
		return &echoObject{blocked: blocked, release: release}
	})
	defer closeNode(t, n)
	key := ns.IDFromName("e").Bytes()
	q := url.Values{"ns": {"ECHO"}, "name": {"e"}}

	go func() {
		if resp, err := http.Get("http://" + n.HTTPAddr().String() + "/block?" + q.Encode()); err == nil {
			resp.Body.Close()
		}
	}()
	<-blocked
	echoed := make(chan string, 1)
	go func() {
		_, body := postBody(t, n, "/echo?"+q.Encode(), "hello")
		echoed <- body
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		n.manager.mu.Lock()
		waiting := n.manager.instances[key].waiting.Load()
		n.manager.mu.Unlock()
		if waiting == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the /echo request did not reach the gate")
		}
	}
	close(release) // the /block turn panics: the instance is reset
	if body := <-echoed; body != "hello" {
		t.Fatalf("the retried request's body: %q, want %q", body, "hello")
	}
}

// fetchingAlarm's Alarm handler fetches another object and returns the
// fetch's error, as handlers commonly do. A request sets its alarm for at.
type fetchingAlarm struct {
	st     *durable.State
	env    *durable.Env
	target string
	at     time.Time
}

func (o *fetchingAlarm) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if err := o.st.Storage.SetAlarm(o.at); err != nil {
		durable.WriteError(w, err)
	}
}

func (o *fetchingAlarm) Alarm(ctx context.Context, _ durable.AlarmInfo) error {
	ns, err := o.env.Namespace("COUNTER")
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://do/increment", nil)
	resp, err := ns.Get(ns.IDFromName(o.target)).Fetch(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// An alarm whose handler ran and failed because a fetch it made found no
// node to serve the other object is a failed delivery (counted towards the
// alarm's retries), not one refused before it ran: the scheduler takes a
// routing error for the latter and retries it without counting, forever.
func TestAlarmHandlersRoutingFailureIsNoRoutingError(t *testing.T) {
	target := "" // chosen below, before the object is made
	at := time.UnixMilli(time.Now().Add(time.Hour).UnixMilli())
	n, ns := startWithClass(t, "FETCHING", "Fetching", func(st *durable.State, env *durable.Env) durable.Object {
		return &fetchingAlarm{st: st, env: env, target: target, at: at}
	})
	defer closeNode(t, n)
	id := ns.IDFromName("f")
	own := shardOf(id.Bytes(), len(n.shards))
	counters, _ := n.Env().Namespace("COUNTER")
	for i := 0; target == ""; i++ {
		if name := fmt.Sprint("c", i); shardOf(counters.IDFromName(name).Bytes(), len(n.shards)) != own {
			target = name
		}
	}
	// The alarm delivered is set: a delivery of one that is not runs nothing.
	if code, body := get(t, n, "/", url.Values{"ns": {"FETCHING"}, "name": {"f"}}); code != 200 {
		t.Fatalf("setting the alarm: %d %s", code, body)
	}
	other := n.shards[shardOf(counters.IDFromName(target).Bytes(), len(n.shards))]
	other.handingOff.Store(true) // its leadership is moving: requests to it are re-routed
	defer other.resume()

	err := n.manager.deliverAlarm(context.Background(), n.shards[own], "Fetching", id, at.UnixMilli(),
		durable.AlarmInfo{ScheduledTime: at}, true, false)
	if err == nil {
		t.Fatal("the handler's fetch succeeded")
	}
	if errors.Is(err, errAlarmNotSet) {
		t.Fatalf("the handler did not run: %v", err)
	}
	if errors.As(err, new(*routingError)) {
		t.Fatalf("a delivery whose handler ran failed as a routing error: %v", err)
	}
}

// startWithClass starts a dev node (alarms polled often) with the test app
// and one more class, ctor, bound as binding; it returns the node and the
// binding's namespace.
func startWithClass(t *testing.T, binding, class string, ctor durable.Class) (*Node, *durable.Namespace) {
	t.Helper()
	app := testApp()
	app.Classes[class] = ctor
	app.Bindings = append(app.Bindings, durable.Binding{Name: binding, ClassName: class})
	n := startAlarmNodeWith(t, t.TempDir(), app, nil)
	ns, err := n.Env().Namespace(binding)
	if err != nil {
		t.Fatal(err)
	}
	return n, ns
}

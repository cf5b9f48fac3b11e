package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/raftstore"
)

// alarmObject records deliveries in storage. /set?ms=N&fail=K&rearm=R sets
// an alarm N ms ahead whose first K deliveries fail and which re-arms itself
// R times; /state answers "fired=F retries=MAXRETRY alarm=BOOL".
type alarmObject struct{ st *durable.State }

func newAlarmObject(state *durable.State, _ *durable.Env) durable.Object {
	return &alarmObject{st: state}
}

func (o *alarmObject) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := o.st.Storage
	q := r.URL.Query()
	switch r.URL.Path {
	case "/set":
		ms, _ := strconv.Atoi(q.Get("ms"))
		fail, _ := strconv.Atoi(q.Get("fail"))
		rearm, _ := strconv.Atoi(q.Get("rearm"))
		durable.PutJSON(s, "fail", fail)
		durable.PutJSON(s, "rearm", rearm)
		durable.PutJSON(s, "same", q.Get("same") != "")
		if err := s.SetAlarm(time.Now().Add(time.Duration(ms) * time.Millisecond)); err != nil {
			durable.WriteError(w, err)
			return
		}
		fmt.Fprint(w, "set")
	case "/delete":
		if err := s.DeleteAlarm(); err != nil {
			durable.WriteError(w, err)
			return
		}
		fmt.Fprint(w, "deleted")
	case "/state":
		fired, _, _ := durable.GetJSON[int](s, "fired")
		retries, _, _ := durable.GetJSON[int](s, "retries")
		_, set, _ := s.GetAlarm()
		fmt.Fprintf(w, "fired=%d retries=%d alarm=%v", fired, retries, set)
	case "/seen":
		during, _, _ := durable.GetJSON[bool](s, "seenDuring")
		afterSet, _, _ := durable.GetJSON[bool](s, "seenAfterSet")
		fmt.Fprintf(w, "during=%v afterSet=%v", during, afterSet)
	}
}

func (o *alarmObject) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	s := o.st.Storage
	_, during, _ := s.GetAlarm() // the alarm being delivered is not set any more
	durable.PutJSON(s, "seenDuring", during)
	if fail, _, _ := durable.GetJSON[int](s, "fail"); fail > 0 {
		durable.PutJSON(s, "fail", fail-1)
		return errors.New("injected alarm failure")
	}
	fired, _, _ := durable.GetJSON[int](s, "fired")
	durable.PutJSON(s, "fired", fired+1)
	durable.PutJSON(s, "retries", info.RetryCount)
	if rearm, _, _ := durable.GetJSON[int](s, "rearm"); rearm > 0 {
		durable.PutJSON(s, "rearm", rearm-1)
		at := time.Now().Add(50 * time.Millisecond)
		if same, _, _ := durable.GetJSON[bool](s, "same"); same {
			// Re-armed for the time just delivered: as a handler that
			// sets it for time.Now() within the same millisecond.
			at = info.ScheduledTime
		}
		if err := s.SetAlarm(at); err != nil {
			return err
		}
		_, afterSet, _ := s.GetAlarm()
		durable.PutJSON(s, "seenAfterSet", afterSet)
	}
	return nil
}

func alarmApp() *durable.App {
	app := testApp()
	app.Classes["Alarmed"] = newAlarmObject
	app.Bindings = append(app.Bindings, durable.Binding{Name: "ALARM", ClassName: "Alarmed"})
	return app
}

func startAlarmNode(t *testing.T, dir string) *Node {
	t.Helper()
	return startAlarmNodeWith(t, dir, alarmApp(), nil)
}

// startAlarmNodeWith starts a node whose alarm schedulers never wake up on
// their own (maxSleep is an hour): every alarm its tests see delivered was
// found through a wake-up or the time of a known alarm or retry.
func startAlarmNodeWith(t *testing.T, dir string, app *durable.App, tweak func(*Node)) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir, cfg.HTTPAddr, cfg.AdminAddr, cfg.Shards = dir, "127.0.0.1:0", "127.0.0.1:0", 4
	cfg.Logger = quietLogger
	n, err := New(cfg, app)
	if err != nil {
		t.Fatal(err)
	}
	n.alarms.backoff = 20 * time.Millisecond
	n.alarms.maxSleep = time.Hour
	if tweak != nil {
		tweak(n)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitState(t *testing.T, n *Node, name, want string) {
	t.Helper()
	params := url.Values{"ns": {"ALARM"}, "name": {name}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, n, "/state", params)
		if body == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("object %s: state %q, want %q", name, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAlarms(t *testing.T) {
	n := startAlarmNode(t, t.TempDir())
	defer closeNode(t, n)
	for _, tc := range []struct {
		name, set, want string
	}{
		{"fires once and is deleted", "ms=100", "fired=1 retries=0 alarm=false"},
		{"retries failures with backoff", "ms=0&fail=2", "fired=1 retries=2 alarm=false"},
		{"handler may set the next alarm", "ms=0&rearm=2", "fired=3 retries=0 alarm=false"},
		{"handler may set it again for the time it fired for", "ms=0&rearm=2&same=1", "fired=3 retries=0 alarm=false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.set)
			q.Set("ns", "ALARM")
			q.Set("name", tc.name)
			if _, body := get(t, n, "/set", q); body != "set" {
				t.Fatalf("set: %q", body)
			}
			waitState(t, n, tc.name, tc.want)
		})
	}
	// As Cloudflare's getAlarm: while an alarm's handler runs the alarm is
	// no longer set, unless the handler sets it again (for any time, the
	// one being delivered included).
	for _, tc := range []struct{ name, want string }{
		{"fires once and is deleted", "during=false afterSet=false"},
		{"handler may set the next alarm", "during=false afterSet=true"},
		{"handler may set it again for the time it fired for", "during=false afterSet=true"},
	} {
		if _, body := get(t, n, "/seen", url.Values{"ns": {"ALARM"}, "name": {tc.name}}); body != tc.want {
			t.Errorf("%s: GetAlarm in the handler: %s, want %s", tc.name, body, tc.want)
		}
	}
}

func TestAlarmSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	n := startAlarmNode(t, dir)
	get(t, n, "/set", url.Values{"ns": {"ALARM"}, "name": {"R"}, "ms": {"700"}})
	closeNode(t, n)
	n = startAlarmNode(t, dir)
	defer closeNode(t, n)
	waitState(t, n, "R", "fired=1 retries=0 alarm=false")
}

// heldReads holds a due read that found obj until the test lets it go:
// the object's alarm changes between the scheduler's read and its delivery.
type heldReads struct {
	mu      sync.Mutex
	obj     [32]byte
	found   chan struct{} // closed when a due read found obj
	proceed chan struct{} // closed by the test
	once    sync.Once
}

func (h *heldReads) wrap(r alarmReader) alarmReader { return heldReader{r, h} }

type heldReader struct {
	alarmReader
	h *heldReads
}

func (r heldReader) DueAlarms(g raftstore.GroupID, notAfter int64, limit int) ([]raftstore.DueAlarm, error) {
	due, err := r.alarmReader.DueAlarms(g, notAfter, limit)
	r.h.mu.Lock()
	obj := r.h.obj
	r.h.mu.Unlock()
	for _, d := range due {
		if d.Object == obj {
			r.h.once.Do(func() { close(r.h.found) })
			<-r.h.proceed
		}
	}
	return due, err
}

// An alarm deleted, or moved later, after the scheduler read it as due but
// before its delivery began is not delivered: the delivery checks, in its
// turn, that the alarm is still set for the time it was read for.
func TestAlarmChangedAfterItsReadIsNotDelivered(t *testing.T) {
	for _, tc := range []struct{ name, change, want string }{
		{"deleted", "/delete", "fired=0 retries=0 alarm=false"},
		{"moved later", "/set", "fired=0 retries=0 alarm=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &heldReads{found: make(chan struct{}), proceed: make(chan struct{})}
			n := startAlarmNodeWith(t, t.TempDir(), alarmApp(), func(n *Node) { n.alarms.wrapReader = h.wrap })
			defer closeNode(t, n)
			ns, err := n.Env().Namespace("ALARM")
			if err != nil {
				t.Fatal(err)
			}
			name := "changed-" + tc.name
			h.mu.Lock()
			h.obj = ns.IDFromName(name).Bytes()
			h.mu.Unlock()
			if _, body := get(t, n, "/set", url.Values{"ns": {"ALARM"}, "name": {name}, "ms": {"50"}}); body != "set" {
				t.Fatalf("set: %q", body)
			}
			select {
			case <-h.found:
			case <-time.After(10 * time.Second):
				close(h.proceed)
				t.Fatal("the scheduler never read the alarm as due")
			}
			// The change commits before the held read returns.
			change := url.Values{"ns": {"ALARM"}, "name": {name}, "ms": {"3600000"}}
			code, body := get(t, n, tc.change, change)
			close(h.proceed)
			if code != 200 {
				t.Fatalf("%s: %d %s", tc.change, code, body)
			}
			time.Sleep(300 * time.Millisecond)
			waitState(t, n, name, tc.want)
		})
	}
}

// scanCounter counts the alarm reads of each shard's scheduler, once each
// read has returned.
type scanCounter struct {
	mu    sync.Mutex
	scans map[raftstore.GroupID]int
}

func (c *scanCounter) wrap(r alarmReader) alarmReader { return countingReader{r, c} }

func (c *scanCounter) add(g raftstore.GroupID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.scans == nil {
		c.scans = make(map[raftstore.GroupID]int)
	}
	c.scans[g]++
}

// total returns the reads so far and how many shards read at least min times.
func (c *scanCounter) total(min int) (reads, shards int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.scans {
		reads += n
		if n >= min {
			shards++
		}
	}
	return reads, shards
}

type countingReader struct {
	alarmReader
	c *scanCounter
}

func (r countingReader) DueAlarms(g raftstore.GroupID, notAfter int64, limit int) ([]raftstore.DueAlarm, error) {
	defer r.c.add(g)
	return r.alarmReader.DueAlarms(g, notAfter, limit)
}

func (r countingReader) NextAlarm(g raftstore.GroupID, after int64) (int64, bool, error) {
	defer r.c.add(g)
	return r.alarmReader.NextAlarm(g, after)
}

// waitFirstScans waits until every shard's scheduler has finished its first
// look at the shard (a due read and a next read).
func waitFirstScans(t *testing.T, n *Node, c *scanCounter) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, shards := c.total(2); shards == n.cfg.Shards {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the alarm schedulers never looked at their shards")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAlarmSchedulerSleepsWhileNoAlarmIsSet(t *testing.T) {
	var c scanCounter
	n := startAlarmNodeWith(t, t.TempDir(), alarmApp(), func(n *Node) { n.alarms.wrapReader = c.wrap })
	defer closeNode(t, n)
	waitFirstScans(t, n, &c)
	// Writes that set no alarm commit on every shard without waking a scheduler.
	for i := range 16 {
		if code, body := get(t, n, "/increment", counterParams(fmt.Sprint("idle-", i))); code != 200 {
			t.Fatalf("increment: %d %s", code, body)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	// A scheduler looks once when its shard becomes ready, and once more if
	// it started after that; polling every 250 ms would have read at least
	// 6 times per shard by now, and more the longer the test ran.
	if reads, _ := c.total(0); reads > 2*2*n.cfg.Shards {
		t.Fatalf("%d alarm reads on %d idle shards, want at most %d", reads, n.cfg.Shards, 2*2*n.cfg.Shards)
	}
}

func TestAlarmSetOnSleepingShardFires(t *testing.T) {
	var c scanCounter
	n := startAlarmNodeWith(t, t.TempDir(), alarmApp(), func(n *Node) { n.alarms.wrapReader = c.wrap })
	defer closeNode(t, n)
	waitFirstScans(t, n, &c)
	// Every scheduler now sleeps for an hour: only the commit of the alarm
	// can wake its shard's scheduler in time.
	start := time.Now()
	get(t, n, "/set", url.Values{"ns": {"ALARM"}, "name": {"W"}, "ms": {"100"}})
	waitState(t, n, "W", "fired=1 retries=0 alarm=false")
	t.Logf("alarm set for +100 ms fired and was seen after %v", time.Since(start))
}

// flakyAlarm sets an alarm for now on any request; its first fail
// deliveries fail, and every delivery is recorded with its time.
type flakyAlarm struct {
	state  *durable.State
	fail   int
	panics bool // a failing delivery panics instead of returning an error
	// rearm: a failing delivery sets the alarm again for the time it was
	// delivered for before it returns its error.
	rearm bool
	rec   *deliveries
}

type deliveries struct {
	mu    sync.Mutex
	times []time.Time
	info  []durable.AlarmInfo
	done  chan struct{} // closed at the first successful delivery
}

// ServeHTTP arms the alarm; /alarm answers whether one is set.
func (o *flakyAlarm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/alarm" {
		_, ok, err := o.state.Storage.GetAlarm()
		if err != nil {
			durable.WriteError(w, err)
		}
		fmt.Fprint(w, ok)
		return
	}
	if err := o.state.Storage.SetAlarm(time.Now()); err != nil {
		durable.WriteError(w, err)
	}
}

func (o *flakyAlarm) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	o.rec.mu.Lock()
	o.rec.times = append(o.rec.times, time.Now())
	o.rec.info = append(o.rec.info, info)
	failing := len(o.rec.times) <= o.fail
	if !failing {
		close(o.rec.done)
	}
	o.rec.mu.Unlock()
	switch {
	case failing && o.rearm:
		if err := o.state.Storage.SetAlarm(info.ScheduledTime); err != nil {
			return err
		}
		if o.panics {
			panic("injected alarm panic after setting it again")
		}
		return errors.New("injected alarm failure after setting it again")
	case failing && o.panics:
		panic("injected alarm panic")
	case failing:
		return errors.New("injected alarm failure")
	}
	return nil
}

func TestAlarmRetriesBackOff(t *testing.T) {
	const fail = 3
	const backoff = 100 * time.Millisecond
	rec := &deliveries{done: make(chan struct{})}
	app := alarmApp()
	app.Classes["Flaky"] = func(state *durable.State, _ *durable.Env) durable.Object {
		return &flakyAlarm{state: state, fail: fail, rec: rec}
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "FLAKY", ClassName: "Flaky"})
	n := startAlarmNodeWith(t, t.TempDir(), app, func(n *Node) { n.alarms.backoff = backoff })
	defer closeNode(t, n)
	if code, body := get(t, n, "/arm", url.Values{"ns": {"FLAKY"}, "name": {"F"}}); code != 200 {
		t.Fatalf("arm: %d %s", code, body)
	}
	select {
	case <-rec.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the alarm never succeeded")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.times) != fail+1 {
		t.Fatalf("%d deliveries, want %d", len(rec.times), fail+1)
	}
	for i := 1; i < len(rec.times); i++ {
		// A retry comes no sooner than its backoff after the failure,
		// however slow the machine: wake-ups must not bring it forward.
		if gap, min := rec.times[i].Sub(rec.times[i-1]), backoff<<(i-1); gap < min {
			t.Errorf("retry %d came %v after delivery %d, want at least %v", i, gap, i-1, min)
		}
		if info := rec.info[i]; info.RetryCount != i || !info.IsRetry {
			t.Errorf("delivery %d: %+v, want retry %d", i, info, i)
		}
	}
}

// A failing alarm's retry count and wait belong to the term of
// leadership they were recorded in: once the shard's leadership has been
// lost here (a failover, or a move and back), the alarm is delivered at
// once with its count started again, as on any new leader. Before, a node
// that led the shard again waited out its old backoff and counted on.
func TestAlarmRetryOfAnEarlierTermIsForgotten(t *testing.T) {
	const backoff = time.Hour // a retry of this term would never come in the test
	rec := &deliveries{done: make(chan struct{})}
	app := alarmApp()
	app.Classes["Flaky"] = func(state *durable.State, _ *durable.Env) durable.Object {
		return &flakyAlarm{state: state, fail: 100, rec: rec}
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "FLAKY", ClassName: "Flaky"})
	n := startAlarmNodeWith(t, t.TempDir(), app, func(n *Node) { n.alarms.backoff = backoff })
	defer closeNode(t, n)
	params := url.Values{"ns": {"FLAKY"}, "name": {"F"}}
	if code, body := get(t, n, "/arm", params); code != 200 {
		t.Fatalf("arm: %d %s", code, body)
	}
	delivered := func(count int) []durable.AlarmInfo {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			rec.mu.Lock()
			info := slices.Clone(rec.info)
			rec.mu.Unlock()
			if len(info) >= count {
				return info
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d deliveries after 10 s, want %d", len(info), count)
			}
		}
	}
	delivered(1) // failed: its retry waits an hour
	ns, err := n.Env().Namespace("FLAKY")
	if err != nil {
		t.Fatal(err)
	}
	sh := n.shards[shardOf(ns.IDFromName("F").Bytes(), len(n.shards))]
	sh.losses.Add(1) // what a lost leadership does (followLeadership)
	sh.wakeAlarms()
	if info := delivered(2)[1]; info.RetryCount != 0 || info.IsRetry {
		t.Fatalf("the delivery after a new term: %+v, want the count started again", info)
	}
}

func TestAlarmOfUnknownClassIsLeftAlone(t *testing.T) {
	dir := t.TempDir()
	// An alarm that stays due: its deliveries fail, and retries wait long.
	n := startAlarmNodeWith(t, dir, alarmApp(), func(n *Node) { n.alarms.backoff = time.Hour })
	get(t, n, "/set", url.Values{"ns": {"ALARM"}, "name": {"U"}, "ms": {"0"}, "fail": {"100"}})
	closeNode(t, n)

	// The app no longer has the alarm's class: nothing can deliver or delete
	// it, and the scheduler must not spin on it.
	var c scanCounter
	n = startAlarmNodeWith(t, dir, testApp(), func(n *Node) { n.alarms.wrapReader = c.wrap })
	defer closeNode(t, n)
	waitFirstScans(t, n, &c)
	time.Sleep(time.Second)
	if reads, _ := c.total(0); reads > 2*2*n.cfg.Shards {
		t.Fatalf("%d alarm reads on %d shards with one undeliverable alarm, want at most %d", reads, n.cfg.Shards, 2*2*n.cfg.Shards)
	}
}

// TestAlarmGivesUpAfterItsLastRetry: an alarm that always fails is
// delivered once and retried alarmMaxRetries times, as Workers does (up to
// 6 retries), and then deleted, whether its handler returns an error or
// panics.
func TestAlarmGivesUpAfterItsLastRetry(t *testing.T) {
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panics=%v", panics), func(t *testing.T) {
			rec := &deliveries{done: make(chan struct{})}
			app := alarmApp()
			app.Classes["Flaky"] = func(state *durable.State, _ *durable.Env) durable.Object {
				return &flakyAlarm{state: state, fail: 1000, panics: panics, rec: rec}
			}
			app.Bindings = append(app.Bindings, durable.Binding{Name: "FLAKY", ClassName: "Flaky"})
			n := startAlarmNodeWith(t, t.TempDir(), app, func(n *Node) { n.alarms.backoff = 5 * time.Millisecond })
			defer closeNode(t, n)
			params := url.Values{"ns": {"FLAKY"}, "name": {"F"}}
			if code, body := get(t, n, "/arm", params); code != 200 {
				t.Fatalf("arm: %d %s", code, body)
			}
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if _, body := get(t, n, "/alarm", params); body == "false" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the failing alarm is still set after 20 s")
				}
			}
			time.Sleep(5 * time.Millisecond << (alarmMaxRetries + 1)) // longer than any backoff: no delivery after the deletion
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.info) != 1+alarmMaxRetries {
				t.Fatalf("%d deliveries, want 1 + %d retries", len(rec.info), alarmMaxRetries)
			}
			for i, info := range rec.info {
				if info.RetryCount != i {
					t.Errorf("delivery %d: %+v", i, info)
				}
			}
		})
	}
}

// TestAlarmSetAgainByAFailingHandlerIsNew: a handler that sets its alarm
// again, for the very millisecond it was delivered for, and then fails has
// set a new alarm, as docs/writing-objects.md says: each delivery is a
// first try (RetryCount 0), at its time rather than after a backoff, and
// none is dropped, past alarmMaxRetries too. Before, the same millisecond
// made it the old alarm's retry: counts 0 to 6, backing off, then a
// "dropped" warning for an alarm that was still set.
func TestAlarmSetAgainByAFailingHandlerIsNew(t *testing.T) {
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panics=%v", panics), func(t *testing.T) { testAlarmSetAgainByAFailingHandler(t, panics) })
	}
}

// testAlarmSetAgainByAFailingHandler: a panic commits the turn's writes
// too, the alarm set again among them (it was taken for a retry after a
// panic, and the alarm deleted after the last).
func testAlarmSetAgainByAFailingHandler(t *testing.T, panics bool) {
	const fails = alarmMaxRetries + 2
	rec := &deliveries{done: make(chan struct{})}
	app := alarmApp()
	app.Classes["Flaky"] = func(state *durable.State, _ *durable.Env) durable.Object {
		return &flakyAlarm{state: state, fail: fails, rearm: true, panics: panics, rec: rec}
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "FLAKY", ClassName: "Flaky"})
	n := startAlarmNodeWith(t, t.TempDir(), app, func(n *Node) { n.alarms.backoff = time.Minute })
	defer closeNode(t, n)
	params := url.Values{"ns": {"FLAKY"}, "name": {"F"}}
	if code, body := get(t, n, "/arm", params); code != 200 {
		t.Fatalf("arm: %d %s", code, body)
	}
	select {
	case <-rec.done:
	case <-time.After(20 * time.Second):
		rec.mu.Lock()
		defer rec.mu.Unlock()
		t.Fatalf("no successful delivery in 20 s (a retry waits out a minute's backoff); deliveries: %+v", rec.info)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.info) != fails+1 {
		t.Fatalf("%d deliveries, want %d failing and one more", len(rec.info), fails)
	}
	for i, info := range rec.info {
		if info.RetryCount != 0 || info.IsRetry || !info.ScheduledTime.Equal(rec.info[0].ScheduledTime) {
			t.Errorf("delivery %d: %+v, want a first try for the time first set", i, info)
		}
	}
}

// TestAlarmNotStarvedByUndeliverableAlarms: a shard holding more due
// alarms of objects of no registered class than the scheduler reads at a
// time (alarmBatch) still delivers the alarms of the objects it can.
func TestAlarmNotStarvedByUndeliverableAlarms(t *testing.T) {
	n := startAlarmNode(t, t.TempDir())
	defer closeNode(t, n)
	ns, err := n.Env().Namespace("ALARM")
	if err != nil {
		t.Fatal(err)
	}
	name := "S"
	target := shardOf(ns.IDFromName(name).Bytes(), len(n.shards))
	past := time.Now().Add(-time.Hour)
	for i, seeded := 0, 0; seeded < alarmBatch+1; i++ {
		obj := sha256.Sum256([]byte(fmt.Sprintf("unknown class %d", i)))
		if shardOf(obj, len(n.shards)) != target {
			continue
		}
		seedStorage(t, n, obj, []storageOp{opSetAlarm(past.Add(time.Duration(seeded) * time.Millisecond))})
		seeded++
	}
	if _, body := get(t, n, "/set", url.Values{"ns": {"ALARM"}, "name": {name}, "ms": {"0"}}); body != "set" {
		t.Fatalf("set: %q", body)
	}
	waitState(t, n, name, "fired=1 retries=0 alarm=false")
}

// stuckAlarmObject's alarm handler ignores its context and returns only
// when release is closed.
type stuckAlarmObject struct {
	st      *durable.State
	started chan<- struct{}
	release <-chan struct{}
}

func (o *stuckAlarmObject) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := o.st.Storage.SetAlarm(time.Now()); err != nil {
		durable.WriteError(w, err)
		return
	}
	fmt.Fprint(w, "set")
}

func (o *stuckAlarmObject) Alarm(context.Context, durable.AlarmInfo) error {
	o.started <- struct{}{}
	<-o.release
	return nil
}

// TestCloseGivesUpOnAHandlerIgnoringItsContext: Close returns, with
// ErrCloseIncomplete, once its context and the straggler grace have
// passed, though an alarm handler never returns; the store closes when
// the handler does.
func TestCloseGivesUpOnAHandlerIgnoringItsContext(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	app := testApp()
	app.Classes["Stuck"] = func(state *durable.State, _ *durable.Env) durable.Object {
		return &stuckAlarmObject{st: state, started: started, release: release}
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "STUCK", ClassName: "Stuck"})
	n := startAlarmNodeWith(t, t.TempDir(), app, func(n *Node) { n.stragglerGrace = 100 * time.Millisecond })
	if code, body := get(t, n, "/set", url.Values{"ns": {"STUCK"}, "name": {"a"}}); code != 200 {
		t.Fatalf("set: %d %s", code, body)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the alarm handler did not start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- n.Close(ctx) }()
	select {
	case err := <-closed:
		if !errors.Is(err, ErrCloseIncomplete) {
			t.Fatalf("Close: %v, want ErrCloseIncomplete", err)
		}
	case <-time.After(20 * time.Second):
		close(release)
		t.Fatal("Close still waiting for the stuck alarm handler")
	}
	close(release)
}

// noAlarms is a reader of shards without alarms: the node's own schedulers
// stay idle while a test drives one of its own.
type noAlarms struct{}

func (noAlarms) DueAlarms(raftstore.GroupID, int64, int) ([]raftstore.DueAlarm, error) {
	return nil, nil
}

func (noAlarms) DueAlarmsAfter(raftstore.GroupID, raftstore.DueAlarm, int64, int) ([]raftstore.DueAlarm, error) {
	return nil, nil
}

func (noAlarms) NextAlarm(raftstore.GroupID, int64) (int64, bool, error) { return 0, false, nil }

// A failed alarm's retry is forgotten once the object deletes the alarm:
// the scheduler would otherwise keep an entry for every alarm that failed
// and was then deleted, for as long as the node serves the shard.
func TestAlarmRetryOfADeletedAlarmIsForgotten(t *testing.T) {
	n := startAlarmNodeWith(t, t.TempDir(), alarmApp(), func(n *Node) {
		n.alarms.wrapReader = func(alarmReader) alarmReader { return noAlarms{} }
	})
	defer closeNode(t, n)
	ns, err := n.Env().Namespace("ALARM")
	if err != nil {
		t.Fatal(err)
	}
	const name = "forgotten"
	sh := n.shards[shardOf(ns.IDFromName(name).Bytes(), len(n.shards))]
	a := newAlarmScheduler(n.manager, sh, n.store, alarmSettings{backoff: time.Hour, maxSleep: time.Hour})
	poll := func() {
		var fires sync.WaitGroup
		a.poll(context.Background(), time.Now(), &fires)
		fires.Wait()
	}
	retries := func() int {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.retries)
	}
	params := url.Values{"ns": {"ALARM"}, "name": {name}}
	if _, body := get(t, n, "/set", url.Values{"ns": {"ALARM"}, "name": {name}, "ms": {"0"}, "fail": {"100"}}); body != "set" {
		t.Fatalf("set: %q", body)
	}
	time.Sleep(5 * time.Millisecond) // due
	poll()
	if r := retries(); r != 1 {
		t.Fatalf("after a failed delivery: %d retries kept, want 1", r)
	}
	if code, body := get(t, n, "/delete", params); body != "deleted" {
		t.Fatalf("delete: %d %s", code, body)
	}
	poll()
	if r := retries(); r != 0 {
		t.Fatalf("after the alarm was deleted: %d retries kept, want 0", r)
	}
}

// noAlarmObject's class has no Alarm method; each request tries to set an
// alarm and answers "refused=BOOL set=BOOL".
type noAlarmObject struct{ st *durable.State }

func (o *noAlarmObject) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	err := o.st.Storage.SetAlarm(time.Now().Add(time.Second))
	_, set, _ := o.st.Storage.GetAlarm()
	fmt.Fprintf(w, "refused=%v set=%v", errors.Is(err, durable.ErrNoAlarmHandler), set)
}

// SetAlarm by an object with no Alarm method fails (as Workers' setAlarm
// throws) instead of setting an alarm that would be dropped undelivered.
func TestSetAlarmWithoutAHandlerIsRefused(t *testing.T) {
	n, _ := startWithClass(t, "NOALARM", "NoAlarm", func(st *durable.State, _ *durable.Env) durable.Object { return &noAlarmObject{st: st} })
	defer closeNode(t, n)
	for i := 0; i < 2; i++ { // the first request activates the object, the second finds it
		code, body := get(t, n, "/", url.Values{"ns": {"NOALARM"}, "name": {"a"}})
		if code != http.StatusOK || body != "refused=true set=false" {
			t.Fatalf("request %d: %d %q, want the alarm refused and none set", i+1, code, body)
		}
	}
}

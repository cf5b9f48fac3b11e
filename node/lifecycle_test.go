package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
)

// holdingAlarm's Alarm handler writes "a", says so (started), waits for
// release, then writes "b": one turn, whose writes are one batch.
type holdingAlarm struct {
	st      *durable.State
	started chan struct{}
	release chan struct{}
	once    *sync.Once
	fired   *atomic.Bool // deliveries after the first do nothing
}

func (o *holdingAlarm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := o.st.Storage
	switch r.URL.Path {
	case "/set":
		if err := s.SetAlarm(time.Now()); err != nil {
			durable.WriteError(w, err)
			return
		}
		fmt.Fprint(w, "set")
	case "/ab":
		_, a, _ := s.Get("a")
		_, b, _ := s.Get("b")
		fmt.Fprintf(w, "a=%v b=%v", a, b)
	}
}

func (o *holdingAlarm) Alarm(ctx context.Context, _ durable.AlarmInfo) error {
	if o.fired.Swap(true) {
		return nil
	}
	if err := o.st.Storage.Put("a", []byte("1")); err != nil {
		return err
	}
	o.once.Do(func() { close(o.started) })
	<-o.release
	return o.st.Storage.Put("b", []byte("1"))
}

// A node stopping while a turn runs (here an alarm's; a WebSocket event's
// or, in a cluster, a forwarded request's would do as well) must not
// commit that turn's writes made so far as a batch of their own: the
// drain's flush at shutdown waits for the turn, as WaitUntil's does.
func TestCloseDoesNotSplitARunningTurn(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	once, fired := new(sync.Once), new(atomic.Bool)
	app := testApp()
	app.Classes["Hold"] = func(st *durable.State, _ *durable.Env) durable.Object {
		return &holdingAlarm{st: st, started: started, release: release, once: once, fired: fired}
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "HOLD", ClassName: "Hold"})
	dir := t.TempDir()
	n := startAlarmNodeWith(t, dir, app, nil)
	q := url.Values{"ns": {"HOLD"}, "name": {"h"}}
	if code, body := get(t, n, "/set", q); code != http.StatusOK {
		t.Fatalf("/set: %d %s", code, body)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the alarm did not fire")
	}
	ns, _ := n.Env().Namespace("HOLD")
	key := ns.IDFromName("h").Bytes()
	g := groupOf(shardOf(key, len(n.shards)))
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- n.Close(ctx)
	}()
	// Give the drain time to flush what the running turn wrote so far.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if v, err := n.store.ObjectVersion(g, key); err == nil && v > 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if err := <-closed; err != nil {
		t.Logf("Close: %v", err)
	}

	n = startAlarmNodeWith(t, dir, app, nil)
	defer closeNode(t, n)
	v, err := n.store.ObjectVersion(g, key)
	_, body := get(t, n, "/ab", q)
	if body != "a=true b=true" && body != "a=false b=false" {
		t.Fatalf("after a stop during the alarm's turn: %s (version %d, %v): half of one turn's writes committed", body, v, err)
	}
	if body == "a=true b=true" && v != 2 {
		t.Fatalf("the alarm's turn committed as %d batches, want 1", v-1)
	}
}

// heldRoom is a WebSocket object whose "hold" message closes its own
// socket, then awaits a slow Stub.Fetch (the gate opens meanwhile) and,
// once that returns, waits for release: a turn that runs on after its
// socket is gone.
type heldRoom struct {
	st  *durable.State
	env *durable.Env
	h   *heldHooks
}

type heldHooks struct {
	constructed atomic.Int32
	awaiting    chan struct{}
	fetchErr    chan error
	release     chan struct{}
}

func (o *heldRoom) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/ws":
		if _, err := o.st.AcceptWebSocket(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	default:
		fmt.Fprint(w, "poked")
	}
}

func (o *heldRoom) WebSocketMessage(ctx context.Context, ws *durable.WebSocket, msg durable.WebSocketMessage) error {
	if string(msg.Data) != "hold" {
		return nil
	}
	if err := ws.Close(1000, "bye"); err != nil {
		return err
	}
	close(o.h.awaiting)
	ns, err := o.env.Namespace("PINGPONG")
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://do/sleep?d=3s", nil)
	resp, err := ns.Get(ns.IDFromName("held-sleeper")).Fetch(req)
	if err == nil {
		resp.Body.Close()
	}
	o.h.fetchErr <- err
	<-o.h.release
	return nil
}

// An instance is not evicted while a WebSocket event's turn runs, even
// once that socket is gone: eviction would cancel the turn's context and
// let the next request construct a second live instance of the object
// while the first one's turn still runs.
func TestNoEvictionDuringASocketEvent(t *testing.T) {
	h := &heldHooks{awaiting: make(chan struct{}), fetchErr: make(chan error, 1), release: make(chan struct{})}
	app := testApp()
	app.Classes["Held"] = func(st *durable.State, env *durable.Env) durable.Object {
		h.constructed.Add(1)
		return &heldRoom{st: st, env: env, h: h}
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "HELD", ClassName: "Held"})
	cfg := DefaultConfig()
	cfg.DataDir, cfg.HTTPAddr, cfg.AdminAddr, cfg.Shards = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", 4
	cfg.Logger = quietLogger
	cfg.IdleTimeout = time.Hour // evictions below are the test's own
	n, err := New(cfg, app)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			close(h.release)
		}
		closeNode(t, n)
	}()
	q := url.Values{"ns": {"HELD"}, "name": {"e"}}
	c := dialRoomWith(t, n.HTTPAddr().String(), q)
	sendText(t, c, "hold")
	<-h.awaiting
	closedBy := make(chan int, 1)
	go func() {
		code, _ := readClose(t, c)
		closedBy <- int(code)
	}()
	// Any turn's end releases the object's close of the socket.
	if code, body := get(t, n, "/poke", q); code != http.StatusOK {
		t.Fatalf("/poke: %d %s", code, body)
	}
	if code := <-closedBy; code != 1000 {
		t.Fatalf("the socket closed with %d, want 1000", code)
	}
	ns, _ := n.Env().Namespace("HELD")
	key := ns.IDFromName("e").Bytes()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n.manager.mu.Lock()
		in := n.manager.instances[key]
		n.manager.mu.Unlock()
		if in != nil && in.openSockets() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the closed socket stays on its instance")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// The hold turn still awaits its fetch.
	evicted := n.manager.evictIdle(time.Now().Add(2 * time.Hour))
	if code, body := get(t, n, "/poke", q); code != http.StatusOK {
		t.Fatalf("/poke: %d %s", code, body)
	}
	constructed := h.constructed.Load()
	ferr := <-h.fetchErr
	close(h.release)
	released = true
	if evicted != 0 || constructed != 1 || ferr != nil {
		t.Fatalf("while a socket event's turn ran: %d instances evicted, the object constructed %d times, the turn's fetch answered %v; want 0, 1, nil", evicted, constructed, ferr)
	}
}

// blocker's constructor runs a BlockConcurrencyWhile that fails for the
// names in failCtor, once; /fail writes "before", runs one that fails,
// writes "after" and answers; /keys answers "<constructions> <keys>".
type blocker struct {
	st    *durable.State
	built int
}

func (o *blocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := o.st.Storage
	switch r.URL.Path {
	case "/fail":
		_ = s.Put("before", []byte("1"))
		err := o.st.BlockConcurrencyWhile(func() error { return errors.New("the block failed") })
		_ = s.Put("after", []byte("1"))
		fmt.Fprintf(w, "went on after: %v", err)
	case "/keys":
		kv, err := s.List(durable.ListOptions{})
		if err != nil {
			durable.WriteError(w, err)
			return
		}
		keys := make([]string, 0, len(kv))
		for _, e := range kv {
			keys = append(keys, e.Key)
		}
		fmt.Fprint(w, o.built, " ", strings.Join(keys, ","))
	}
}

// A BlockConcurrencyWhile whose fn fails ends its turn as a panic would:
// the caller gets the failure as the object's exception (500), the turn's
// writes commit, and the object is reset. Before, it was reset at once:
// the writes were dropped, and the caller was told the turn's commit was
// of unknown outcome. A constructor's failed block fails the request
// that constructed it, and the next request constructs the object anew.
func TestFailedBlockConcurrencyWhileEndsTheTurnAsAnException(t *testing.T) {
	app := testApp()
	var mu sync.Mutex
	built := map[string]int{}
	app.Classes["Blocker"] = func(st *durable.State, _ *durable.Env) durable.Object {
		mu.Lock()
		built[st.ID.String()]++
		b := built[st.ID.String()]
		mu.Unlock()
		if st.ID.Name() == "ctor" && b == 1 {
			_ = st.BlockConcurrencyWhile(func() error { return errors.New("loading failed") })
		}
		return &blocker{st: st, built: b}
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "BLOCKER", ClassName: "Blocker"})
	n := startAlarmNodeWith(t, t.TempDir(), app, nil)
	defer closeNode(t, n)

	q := url.Values{"ns": {"BLOCKER"}, "name": {"handler"}}
	code, body := get(t, n, "/fail", q)
	if code != http.StatusInternalServerError || !strings.Contains(body, "the block failed") || strings.Contains(body, "may have committed") {
		t.Fatalf("/fail: %d %q; want 500 with the block's error as the object's exception", code, body)
	}
	if code, body := get(t, n, "/keys", q); code != http.StatusOK || body != "2 after,before" {
		t.Fatalf("/keys after the failed block: %d %q; want \"2 after,before\" (a new instance, the turn's writes kept)", code, body)
	}

	q = url.Values{"ns": {"BLOCKER"}, "name": {"ctor"}}
	code, body = get(t, n, "/keys", q)
	if code != http.StatusInternalServerError || !strings.Contains(body, "loading failed") {
		t.Fatalf("first request to an object whose constructor's block fails: %d %q; want 500 with its error", code, body)
	}
	if code, body := get(t, n, "/keys", q); code != http.StatusOK || body != "2 " {
		t.Fatalf("the next request: %d %q; want \"2 \" (constructed anew)", code, body)
	}
}

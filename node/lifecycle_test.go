package node

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
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

package node

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
)

// splitObject runs WaitUntil work that ends while another turn is half
// way through its writes: /bg starts the work, /split writes "a", lets the
// work end, then writes "b".
type splitObject struct {
	st      *durable.State
	release chan struct{}
}

func (o *splitObject) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := o.st.Storage
	switch r.URL.Path {
	case "/bg":
		o.st.WaitUntil(func(context.Context) { <-o.release })
		fmt.Fprint(w, "started")
	case "/split":
		if err := s.Put("a", []byte("1")); err != nil {
			durable.WriteError(w, err)
			return
		}
		close(o.release)
		time.Sleep(100 * time.Millisecond) // the work ends meanwhile
		if err := s.Put("b", []byte("1")); err != nil {
			durable.WriteError(w, err)
			return
		}
		fmt.Fprint(w, "written")
	}
}

// The writes a turn makes without an await are one batch, committed
// together or not at all (a crash between two batches would keep the one),
// even when WaitUntil work of the object ends while the turn runs: the
// work's closing flush must not commit the turn's writes made so far.
func TestWaitUntilDoesNotSplitATurn(t *testing.T) {
	app := testApp()
	app.Classes["Split"] = func(st *durable.State, _ *durable.Env) durable.Object {
		return &splitObject{st: st, release: make(chan struct{})}
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "SPLIT", ClassName: "Split"})
	n := startAlarmNodeWith(t, t.TempDir(), app, nil)
	defer closeNode(t, n)
	q := url.Values{"ns": {"SPLIT"}, "name": {"s"}}
	if code, body := get(t, n, "/bg", q); code != http.StatusOK {
		t.Fatalf("/bg: %d %s", code, body)
	}
	if code, body := get(t, n, "/split", q); code != http.StatusOK || body != "written" {
		t.Fatalf("/split: %d %s", code, body)
	}
	ns, err := n.Env().Namespace("SPLIT")
	if err != nil {
		t.Fatal(err)
	}
	key := ns.IDFromName("s").Bytes()
	v, err := n.store.ObjectVersion(groupOf(shardOf(key, len(n.shards))), key)
	if err != nil || v != 1 {
		t.Fatalf("the object's version after one turn's writes: %d (%v), want 1: one batch", v, err)
	}
}

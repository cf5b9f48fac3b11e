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

// splitObject runs WaitUntil work that acts while another turn is half way
// through its writes: /bg?sync=1 starts the work, which waits to be
// released, then calls Storage.Sync if sync is set, and ends; /split
// writes "a", releases the work, waits, then writes "b".
type splitObject struct {
	st      *durable.State
	release chan struct{}
	done    chan struct{}
}

func (o *splitObject) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := o.st.Storage
	switch r.URL.Path {
	case "/bg":
		sync := r.URL.Query().Get("sync") != ""
		o.st.WaitUntil(func(ctx context.Context) {
			defer close(o.done)
			<-o.release
			if sync {
				_ = s.Sync(ctx)
			}
		})
		fmt.Fprint(w, "started")
	case "/split":
		if err := s.Put("a", []byte("1")); err != nil {
			durable.WriteError(w, err)
			return
		}
		close(o.release)
		time.Sleep(100 * time.Millisecond) // the work acts meanwhile
		if err := s.Put("b", []byte("1")); err != nil {
			durable.WriteError(w, err)
			return
		}
		fmt.Fprint(w, "written")
	}
}

// The writes a turn makes without an await are one batch, committed
// together or not at all (a crash between two batches would keep the one),
// even when WaitUntil work of the object acts while the turn runs: neither
// the work's closing flush nor its Storage.Sync may commit the turn's
// writes made so far as a batch of their own.
func TestWaitUntilDoesNotSplitATurn(t *testing.T) {
	app := testApp()
	objs := make(chan *splitObject, 2)
	app.Classes["Split"] = func(st *durable.State, _ *durable.Env) durable.Object {
		o := &splitObject{st: st, release: make(chan struct{}), done: make(chan struct{})}
		objs <- o
		return o
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "SPLIT", ClassName: "Split"})
	n := startAlarmNodeWith(t, t.TempDir(), app, nil)
	defer closeNode(t, n)
	ns, err := n.Env().Namespace("SPLIT")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		sync bool
	}{
		{"the work ends", false},
		{"the work calls Sync", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{"ns": {"SPLIT"}, "name": {tc.name}}
			bg := url.Values{"ns": {"SPLIT"}, "name": {tc.name}}
			if tc.sync {
				bg.Set("sync", "1")
			}
			if code, body := get(t, n, "/bg", bg); code != http.StatusOK {
				t.Fatalf("/bg: %d %s", code, body)
			}
			obj := <-objs
			if code, body := get(t, n, "/split", q); code != http.StatusOK || body != "written" {
				t.Fatalf("/split: %d %s", code, body)
			}
			<-obj.done
			key := ns.IDFromName(tc.name).Bytes()
			v, err := n.store.ObjectVersion(groupOf(shardOf(key, len(n.shards))), key)
			if err != nil || v != 1 {
				t.Fatalf("the object's version after one turn's writes: %d (%v), want 1: one batch", v, err)
			}
		})
	}
}

// panicker's /bg starts WaitUntil work that writes "bg" and then panics;
// /get answers "<constructions> <bg>".
type panicker struct {
	st    *durable.State
	built int
	done  chan struct{}
}

func (o *panicker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/bg":
		o.st.WaitUntil(func(ctx context.Context) {
			defer close(o.done)
			if err := o.st.Storage.Put("bg", []byte("written")); err != nil {
				panic(err)
			}
			panic("background work failed")
		})
		fmt.Fprint(w, "started")
	case "/get":
		v, _, err := o.st.Storage.Get("bg")
		if err != nil {
			durable.WriteError(w, err)
			return
		}
		fmt.Fprintf(w, "%d %s", o.built, v)
	}
}

// A panic in WaitUntil work resets the object, as one in a handler does
// (its memory may be half-updated), and what the work wrote before it
// still commits. Before, the panic was logged and the object ran on.
func TestWaitUntilPanicResetsTheObject(t *testing.T) {
	app := testApp()
	built := 0
	objs := make(chan *panicker, 2)
	app.Classes["Panicker"] = func(st *durable.State, _ *durable.Env) durable.Object {
		built++ // constructors run under the gate, one at a time
		o := &panicker{st: st, built: built, done: make(chan struct{})}
		objs <- o
		return o
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "PANICKER", ClassName: "Panicker"})
	n := startAlarmNodeWith(t, t.TempDir(), app, nil)
	defer closeNode(t, n)
	q := url.Values{"ns": {"PANICKER"}, "name": {"p"}}
	if code, body := get(t, n, "/bg", q); code != http.StatusOK {
		t.Fatalf("/bg: %d %s", code, body)
	}
	<-(<-objs).done
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, n, "/get", q)
		if code == http.StatusOK && body == "2 written" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/get after the background panic: %d %q; want \"2 written\" (a new instance, the write kept)", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

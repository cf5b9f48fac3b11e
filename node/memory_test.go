package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
)

// The instance map is remade at its size once eviction has left it under
// a quarter of its peak: a Go map keeps the memory of its largest size,
// 8 MB with none left after 100,000 objects had been served.
func TestEvictionShrinksTheInstanceMap(t *testing.T) {
	for _, tc := range []struct {
		name         string
		peak, left   int
		wantRemade   bool
		wantPeakNext int
	}{
		{"a small map is kept", compactInstancesAbove - 1, 0, false, compactInstancesAbove - 1},
		{"a quarter of the peak is kept", 8000, 2000, false, 8000},
		{"under a quarter is remade", 8000, 1999, true, 1999},
		{"an empty map is remade", 8000, 0, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &manager{instances: make(map[[32]byte]*instance)}
			for i := range tc.peak {
				m.instances[[32]byte{byte(i), byte(i >> 8), byte(i >> 16)}] = &instance{}
			}
			m.instancesPeak = tc.peak
			for key := range m.instances {
				if len(m.instances) == tc.left {
					break
				}
				delete(m.instances, key)
			}
			before := reflect.ValueOf(m.instances).UnsafePointer()
			kept := make(map[[32]byte]*instance, len(m.instances))
			for key, in := range m.instances {
				kept[key] = in
			}
			m.compactInstances()
			if remade := reflect.ValueOf(m.instances).UnsafePointer() != before; remade != tc.wantRemade {
				t.Fatalf("remade %v, want %v", remade, tc.wantRemade)
			}
			if m.instancesPeak != tc.wantPeakNext {
				t.Fatalf("peak %d after compaction, want %d", m.instancesPeak, tc.wantPeakNext)
			}
			if !reflect.DeepEqual(m.instances, kept) {
				t.Fatalf("the map holds %d instances after compaction, want the %d it held", len(m.instances), len(kept))
			}
		})
	}
}

// lingerer's WaitUntil work runs until its context ends.
type lingerer struct {
	st    *durable.State
	ended chan error
}

func (o *lingerer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	o.st.WaitUntil(func(ctx context.Context) {
		<-ctx.Done()
		o.ended <- context.Cause(ctx)
	})
	fmt.Fprint(w, "lingering")
}

// An instance's context ends with its node, though it is not a child of
// the node's context (a context's map of its children never shrinks):
// work that waits for it is told to stop when Close's deadline passes,
// and Close reports the work as cancelled and ended, not as still running.
func TestInstanceContextsEndWithTheNode(t *testing.T) {
	app := testApp()
	ended := make(chan error, 1)
	app.Classes["Linger"] = func(st *durable.State, _ *durable.Env) durable.Object {
		return &lingerer{st: st, ended: ended}
	}
	app.Bindings = append(app.Bindings, durable.Binding{Name: "LINGER", ClassName: "Linger"})
	n := startAlarmNodeWith(t, t.TempDir(), app, func(n *Node) { n.stragglerGrace = 2 * time.Second })
	if code, body := get(t, n, "/", url.Values{"ns": {"LINGER"}, "name": {"a"}}); code != http.StatusOK || body != "lingering" {
		t.Fatalf("%d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := n.Close(ctx)
	if !errors.Is(err, ErrCloseDeadline) || errors.Is(err, ErrCloseIncomplete) {
		t.Fatalf("Close: %v; want %v alone: the work ended when its context did", err, ErrCloseDeadline)
	}
	select {
	case cause := <-ended:
		if !errors.Is(cause, context.Canceled) {
			t.Fatalf("the work's context ended with %v", cause)
		}
	default:
		t.Fatal("the work's context did not end with the node")
	}
}

// A sweep hands memory back to the OS after evicting many instances, or
// once the node has gone idle after smaller sweeps; never while instances
// are left and the sweeps are small, nor twice for the same evictions.
func TestReleaseMemory(t *testing.T) {
	for _, tc := range []struct {
		name                        string
		evicted, evictedSince, left int
		want                        bool
	}{
		{"a large sweep", releaseAfterEviction, releaseAfterEviction, 5000, true},
		{"a small sweep, instances left", 10, 900, 3, false},
		{"the last instances evicted", 10, 900, 0, true},
		{"idle after earlier small sweeps", 0, 40, 0, true},
		{"idle, nothing evicted since the last release", 0, 0, 0, false},
		{"a busy node's small sweep", 100, 100, 20000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := releaseMemory(tc.evicted, tc.evictedSince, tc.left); got != tc.want {
				t.Fatalf("releaseMemory(%d, %d, %d) = %v, want %v", tc.evicted, tc.evictedSince, tc.left, got, tc.want)
			}
		})
	}
}

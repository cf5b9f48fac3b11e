package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const selectMsg = "Select a Durable Object to contact by using the `name` URL query string parameter. e.g. ?name=A"

func TestSeedCounterExactResponses(t *testing.T) {
	p := startDev(t, t.TempDir())
	for _, step := range []struct {
		path string
		code int
		body string
	}{
		{"/increment?name=A", 200, "Durable Object 'A' count: 1"},
		{"/increment?name=A", 200, "Durable Object 'A' count: 2"},
		{"/?name=A", 200, "Durable Object 'A' count: 2"},
		{"/decrement?name=A", 200, "Durable Object 'A' count: 1"},
		{"/decrement?name=B", 200, "Durable Object 'B' count: -1"},
		{"/", 200, selectMsg},
		{"/increment", 200, selectMsg},
		{"/increment?name=", 200, selectMsg},
		{"/nope?name=A", 200, "Durable Object 'A' count: Not found"},
		{"/increment" + nameQuery("Zürich 東京 🐦"), 200, "Durable Object 'Zürich 東京 🐦' count: 1"},
		{"/?name=A", 200, "Durable Object 'A' count: 1"},
	} {
		code, body := p.mustGet(step.path)
		if code != step.code || body != step.body {
			t.Fatalf("GET %s = %d %q, want %d %q", step.path, code, body, step.code, step.body)
		}
	}
}

// load increments names from several clients until stop, recording for
// each name the highest count a client was told (acknowledged) and how many
// increments were sent at all.
type load struct {
	mu    sync.Mutex
	acked map[string]int
	sent  map[string]int
}

func runLoad(p *process, names []string, clients int, stop <-chan struct{}) *load {
	l := &load{acked: map[string]int{}, sent: map[string]int{}}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := names[(c+i)%len(names)]
				l.mu.Lock()
				l.sent[name]++
				l.mu.Unlock()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				code, body, err := p.get(ctx, "/increment"+nameQuery(name))
				cancel()
				if err != nil || code != 200 {
					time.Sleep(10 * time.Millisecond) // the node is gone: keep trying until stopped
					continue
				}
				n, err := strconv.Atoi(strings.TrimPrefix(body, fmt.Sprintf("Durable Object '%s' count: ", name)))
				if err != nil {
					continue
				}
				l.mu.Lock()
				l.acked[name] = max(l.acked[name], n)
				l.mu.Unlock()
			}
		}()
	}
	go func() { <-stop; wg.Wait() }()
	return l
}

func checkAfterRestart(t *testing.T, p *process, l *load, names []string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, name := range names {
		_, body := p.mustGet("/" + nameQuery(name))
		got, err := strconv.Atoi(strings.TrimPrefix(body, fmt.Sprintf("Durable Object '%s' count: ", name)))
		if err != nil {
			t.Fatalf("%s: %q", name, body)
		}
		if got < l.acked[name] {
			t.Errorf("%s: count %d after restart, but %d was acknowledged: an acknowledged write was lost", name, got, l.acked[name])
		}
		if got > l.sent[name] {
			t.Errorf("%s: count %d after restart, but only %d increments were sent", name, got, l.sent[name])
		}
		// and the count continues from there
		_, body = p.mustGet("/increment" + nameQuery(name))
		if want := fmt.Sprintf("Durable Object '%s' count: %d", name, got+1); body != want {
			t.Errorf("after restart: %q, want %q", body, want)
		}
	}
}

func TestCountContinuesAfterRestart(t *testing.T) {
	names := []string{"alpha", "beta", "gamma", "δέλτα", "A"}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			p := startDev(t, dir)
			stop := make(chan struct{})
			l := runLoad(p, names, 16, stop)
			time.Sleep(1500 * time.Millisecond) // under load when the signal lands
			err := p.stop(sig)
			close(stop)
			if sig == syscall.SIGTERM && err != nil {
				t.Fatalf("roost dev exited with %v after SIGTERM; want a clean exit", err)
			}
			l.mu.Lock()
			total := 0
			for _, n := range l.acked {
				total += n
			}
			l.mu.Unlock()
			if total == 0 {
				t.Fatal("the load saw no acknowledged increment before the signal")
			}
			p = startDev(t, dir)
			checkAfterRestart(t, p, l, names)
		})
	}
}

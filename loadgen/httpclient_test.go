package loadgen

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHTTPClientSendsWhatItIsGiven(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.Header.Get("Accept-Encoding") != "":
			http.Error(w, "asked for compression", http.StatusBadRequest)
		case r.URL.Path == "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		default:
			w.Header().Set("X-Echo", r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Content-Type"))
			w.Write(body)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	c, err := NewHTTPClient(context.Background(), srv.URL+"/ignored/path", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)

	status, body, err := c.Do(Request{Method: http.MethodPost, URL: srv.URL + "/kv?x=1", ContentType: "application/json", Body: []byte(`{"a":1}`)}, deadline, nil)
	if err != nil || status != http.StatusOK || string(body) != `{"a":1}` {
		t.Fatalf("POST: status %d body %q err %v; want 200 and the body echoed", status, body, err)
	}
	status, body, err = c.Do(Request{URL: srv.URL + "/moved"}, deadline, body)
	if err != nil || status != http.StatusFound {
		t.Fatalf("GET /moved: status %d err %v; want the 302 itself, not followed", status, err)
	}

	// Eight sequential and then concurrent requests use at most two
	// connections (the cap), kept alive.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			var buf []byte
			for range 20 {
				status, b, err := c.Do(Request{URL: srv.URL + "/x"}, deadline, buf)
				buf = b
				if err != nil || status != http.StatusOK {
					t.Errorf("GET /x: status %d err %v", status, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := conns.Load(); n < 1 || n > 2 {
		t.Errorf("%d connections for 42 requests with a cap of 2", n)
	}
}

func TestHTTPClientContextEndFailsRequestsInFlight(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	ctx, cancel := context.WithCancel(context.Background())
	c, err := NewHTTPClient(ctx, srv.URL, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Do(Request{URL: srv.URL + "/hang"}, time.Now().Add(time.Minute), nil)
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond) // let it be sent
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClientClosed) {
			t.Errorf("request in flight when the context ended: %v; want ErrClientClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request in flight still waiting 10 s after the context ended")
	}
	if _, _, err := c.Do(Request{URL: srv.URL + "/after"}, time.Now().Add(time.Second), nil); err == nil {
		t.Error("a request after the context ended succeeded")
	}
}

func TestNewHTTPClientRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"127.0.0.1:8787", "ftp://host", "http://", "http://[::1"} {
		if c, err := NewHTTPClient(context.Background(), u, 1); err == nil {
			c.Close()
			t.Errorf("NewHTTPClient(%q) accepted it", u)
		} else if !strings.Contains(err.Error(), "server URL") {
			t.Errorf("NewHTTPClient(%q): %v; want it to name the server URL", u, err)
		}
	}
}

package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			io.WriteString(w, "ready\n")
		case "/redirect":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready: waiting for the cluster to form\n")
		}
	}))
	defer srv.Close()

	for _, tc := range []struct {
		args    []string
		code    int
		inOut   string
		inError string
	}{
		{[]string{srv.URL + "/readyz"}, 0, "200 OK ready", ""},
		{[]string{srv.URL + "/notready"}, 1, "", "503 Service Unavailable not ready: waiting for the cluster to form"},
		{[]string{srv.URL + "/redirect"}, 1, "", "302 Found"},
		{[]string{"http://127.0.0.1:1/readyz"}, 1, "", "healthcheck: "},
		{[]string{"a", "b"}, 2, "", "usage: healthcheck [URL]"},
		{[]string{"--help"}, 0, "usage: healthcheck [URL]", ""},
	} {
		var stdout, stderr strings.Builder
		code := run(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.inOut) || !strings.Contains(stderr.String(), tc.inError) {
			t.Errorf("run(%q) = %d, stdout %q, stderr %q; want %d, stdout with %q, stderr with %q",
				tc.args, code, stdout.String(), stderr.String(), tc.code, tc.inOut, tc.inError)
		}
	}
}

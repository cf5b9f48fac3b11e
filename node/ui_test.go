package node

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The dashboard's files are served with their types and a CSP, the admin
// listener's root leads to it, and every admin call its script makes
// exists (in dev mode the cluster calls answer 409, not 404).
func TestDashboard(t *testing.T) {
	nd := startNode(t, t.TempDir(), func(c *Config, _ *Node) { c.AdminToken = testAdminToken })
	defer closeNode(t, nd)
	addr := nd.AdminAddr().String()
	get := func(path string) (*http.Response, string) {
		t.Helper()
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	for _, tc := range []struct{ path, typ, has string }{
		{"/ui/", "text/html", `<script src="app.js"`},
		{"/ui/app.js", "javascript", "/v1/status"},
		{"/ui/style.css", "text/css", "table"},
	} {
		resp, body := get(tc.path)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), tc.typ) || !strings.Contains(body, tc.has) {
			t.Fatalf("GET %s: %d %q, body has %q: %v", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.has, strings.Contains(body, tc.has))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Fatalf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
	if resp, _ := get("/ui/nope.js"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /ui/nope.js: %d, want 404", resp.StatusCode)
	}
	if resp, _ := get("/"); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /: %d to %q, want a redirect to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}

	_, script := get("/ui/app.js")
	calls := regexp.MustCompile(`"(/v1/[a-z/]+)"`).FindAllStringSubmatch(script, -1)
	var paths []string
	for _, c := range calls {
		paths = append(paths, c[1])
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	if want := []string{"/v1/members", "/v1/shards", "/v1/status"}; !slices.Equal(paths, want) {
		t.Fatalf("the script calls %v; this test checks %v", paths, want)
	}
	for _, p := range paths {
		var e apiErrorJSON
		if code := adminDo(t, addr, testAdminToken, "GET", p, nil, &e); code != 200 && code != http.StatusConflict {
			t.Fatalf("GET %s: %d %s", p, code, e.Error)
		}
	}
}

// The dashboard's script, run under Node.js (when the machine has it)
// against a fake admin API that answers with the real handlers' types,
// shows the cluster, the running operation, the nodes and the shards, and
// asks for the token until it is given one that works.
func TestDashboardRenders(t *testing.T) {
	nodeJS, err := exec.LookPath("node")
	if err != nil {
		t.Skip("skipped: no Node.js (node) on PATH to run the dashboard's script")
	}
	const token = "dash-token"
	eta := 34
	answers := map[string]any{
		"/v1/status": statusJSON{NodeID: "n1", ClusterID: "c0ffee", Mode: "cluster", Ready: true, MetaLeader: "n2", MapVersion: 14, Nodes: 2, Shards: 2, Replicas: 2, UnderReplicated: 1,
			Operation: &opJSON{ID: "drain-1", Kind: "drain", Node: "n2", State: "running", Total: 51, Done: 5, ETASeconds: &eta,
				Waiting: []opWaitJSON{{Shard: 7, Seconds: 42, Reason: "it has no leader"}, {Shard: 2, Seconds: 3, Reason: "x"}}}},
		"/v1/members": map[string]any{"members": []Member{
			{ID: "n1", State: "active", Alive: true, GRPC: "g1", HTTP: "h1", Admin: "a1", Gossip: "s1", Replicas: 2, Leaders: 1, Meta: "voter"},
			{ID: "n2", State: "draining", Alive: false, GRPC: "g2", HTTP: "h2", Admin: "a2", Gossip: "s2", Replicas: 1, Leaders: 0, Meta: "nonvoter"},
		}},
		"/v1/shards": map[string]any{"shards": []shardView{
			{ID: 0, Replicas: []string{"n1", "n2"}, Leader: "n1", Voters: []string{"n1", "n2"}, AppliedIndex: 42, ReplicaLag: map[string]int64{"n1": 0, "n2": 3}},
			{ID: 1, Replicas: []string{"n1", "n2"}, Voters: []string{"n1"}, Nonvoters: []string{"n2"}, AppliedIndex: 7, ReplicaLag: map[string]int64{"n1": 0, "n2": -1}},
		}},
	}
	shown := renderDashboard(t, nodeJS, token, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			writeAPIError(w, errorf(http.StatusUnauthorized, "wrong admin token"))
			return
		}
		writeJSON(w, http.StatusOK, answers[r.URL.Path])
	})
	for _, want := range []struct{ key, state, has string }{
		{"first login", "shown", ""}, // no token yet: the API answered 401
		{"first status", "", ""},
		{"token login", "hidden", ""},
		{"token error", "hidden", ""},
		{"token status", "shown", "answering node | n1 | mode | cluster | ready | yes | cluster | c0ffee | meta leader | n2 | map version | 14 | nodes | 2 | shards | 2 | replicas per shard | 2 (1 of the shards have fewer)"},
		{"token operation", "shown", ""},
		{"token operation-title", "shown", "Operation drain-1: drain of n2 (running)"},
		{"token operation-text", "shown", "5 of 51 moves, about 34 s left; waiting 42 s on shard 7: it has no leader"},
		{"token members", "shown", "n1 | active | yes | 2 | 1 | voter | h1 | a1 | g1 | s1 | n2 | draining | no | 1 | 0 | nonvoter | h2 | a2 | g2 | s2"},
		{"token shards-summary", "shown", "2 shards, 1 without a leader, 1 with a replica not answering"},
		{"token shards", "shown", "0 | n1 | n1, n2 | n1, n2 | — | 42 | 3 entries | 1 | none | n1, n2 | n1 | n2 | 7 | no answer from n2"},
	} {
		checkShown(t, shown, want.key, want.state, want.has)
	}

	// An API that fails before its first answer: the error shows, though
	// the dashboard never did (it was inside the dashboard's section).
	shown = renderDashboard(t, nodeJS, "", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, errorf(http.StatusServiceUnavailable, "the cluster has not formed yet"))
	})
	checkShown(t, shown, "first error", "shown", "Could not refresh: the cluster has not formed yet")

	// A token no browser can send in a header: the page says so, where it
	// did nothing (fetch threw, and the login form stayed as it was).
	shown = renderDashboard(t, nodeJS, "tökén", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, errorf(http.StatusUnauthorized, "wrong admin token"))
	})
	checkShown(t, shown, "token login", "shown", "")
	checkShown(t, shown, "token login-error", "shown", "An admin token is printable ASCII")
}

// renderDashboard runs the dashboard's script under Node.js against api,
// serving the /v1/ calls, submitting token after the first refresh if it
// is not "", and returns what it showed: "stage id" → "shown|hidden<TAB>text".
func renderDashboard(t *testing.T, nodeJS, token string, api http.HandlerFunc) map[string]string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /ui/", uiHandler())
	mux.HandleFunc("GET /v1/", api)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer // warnings of older Node.js versions go there
	args := []string{"testdata/render_dashboard.mjs", srv.URL, "ui"}
	if token != "" {
		args = append(args, token)
	}
	cmd := exec.CommandContext(ctx, nodeJS, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("running the dashboard's script: %v\n%s%s", err, out, stderr.Bytes())
	}
	shown := map[string]string{"output": string(out)}
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		f := strings.SplitN(line, "\t", 4)
		if len(f) != 4 {
			t.Fatalf("unexpected output line %q in:\n%s", line, out)
		}
		shown[f[0]+" "+f[1]] = f[2] + "\t" + f[3]
	}
	return shown
}

// checkShown checks that renderDashboard's key is in state ("" for
// either) with a text containing has.
func checkShown(t *testing.T, shown map[string]string, key, state, has string) {
	t.Helper()
	got, ok := shown[key]
	if !ok {
		t.Fatalf("the output has no %q:\n%s", key, shown["output"])
	}
	st, text, _ := strings.Cut(got, "\t")
	if state != "" && st != state || !strings.Contains(text, has) {
		t.Errorf("%s: %s %q; want %s, containing %q", key, st, text, state, has)
	}
}

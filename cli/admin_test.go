package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with the output the tests get")

// Answers as docs/admin-api.md describes them.
const (
	statusJSON = `{"node_id":"n1","cluster_id":"c-7f3a","mode":"cluster","ready":true,"reason":"",
		"meta_leader":"n2","map_version":42,"nodes":4,"unreachable":["n3","n4"],"shards":8,"replicas":3,"under_replicated":2,
		"operation":{"id":"op-3","kind":"rebalance","state":"running","total":12,"done":5,
			"started":"2026-03-01T10:00:00.123456789Z","eta_seconds":70,"error":""}}`
	devStatusJSON = `{"node_id":"dev","cluster_id":"","mode":"dev","ready":false,"reason":"opening shards",
		"meta_leader":"","map_version":0,"nodes":1,"shards":64,"replicas":1,"operation":null}`
	// Deliberately not sorted: the table sorts.
	membersJSON = `{"members":[
		{"id":"n2","state":"active","alive":true,"reachable":true,"grpc":"10.0.0.2:8790","http":"10.0.0.2:8787","admin":"10.0.0.2:8789","gossip":"10.0.0.2:7946","replicas":6,"leaders":3,"meta":"voter"},
		{"id":"n1","state":"active","alive":true,"reachable":true,"grpc":"10.0.0.1:8790","http":"10.0.0.1:8787","admin":"10.0.0.1:8789","gossip":"10.0.0.1:7946","replicas":6,"leaders":2,"meta":"voter"},
		{"id":"n4","state":"draining","alive":false,"reachable":false,"grpc":"10.0.0.4:8790","http":"10.0.0.4:8787","admin":"10.0.0.4:8789","gossip":"10.0.0.4:7946","replicas":1,"leaders":0,"meta":"nonvoter"},
		{"id":"n3","state":"active","alive":true,"grpc":"10.0.0.3:8790","http":"10.0.0.3:8787","admin":"10.0.0.3:8789","gossip":"10.0.0.3:7946","replicas":5,"leaders":3,"meta":"voter"}]}`
	shardsJSON = `{"shards":[
		{"id":10,"version":40,"replicas":["n1","n2","n3"],"leader":"n3","voters":["n1","n2","n3"],"nonvoters":[],"applied_index":912,"replica_lag":{"n1":0,"n2":3,"n3":0}},
		{"id":2,"version":42,"replicas":["n2","n3","n4"],"leader":"n2","voters":["n1","n2","n3"],"nonvoters":["n4"],"applied_index":88,"replica_lag":{"n1":0,"n3":1,"n4":1200}},
		{"id":0,"version":7,"replicas":["n1","n2","n3"],"leader":"n1","voters":["n1","n2","n3"],"nonvoters":[],"applied_index":1024,"replica_lag":{"n1":0,"n2":0,"n3":0}},
		{"id":1,"version":9,"replicas":["n1","n2","n3"],"leader":"","voters":["n1","n2","n3"],"nonvoters":[],"applied_index":0,"replica_lag":{}}]}`
	planJSON = `{"moves":[
		{"shard":5,"add":"n4","remove":"n1"},
		{"shard":1,"add":"n4","remove":"n2"},
		{"shard":5,"add":"n3","remove":"n2"}]}`
)

// fakeAdmin is an admin API that answers from routes, keyed "METHOD /path",
// and records the requests it got.
type fakeAdmin struct {
	*httptest.Server
	mu       sync.Mutex
	requests []fakeRequest
}

type fakeRequest struct {
	method, path, auth, body string
}

// canned answers status with body.
func canned(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func newFakeAdmin(t *testing.T, routes map[string]http.HandlerFunc) *fakeAdmin {
	f := &fakeAdmin{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b)) // for the route to read again
		f.mu.Lock()
		f.requests = append(f.requests, fakeRequest{r.Method, r.URL.Path, r.Header.Get("Authorization"), string(b)})
		f.mu.Unlock()
		h, ok := routes[r.Method+" "+r.URL.Path]
		if !ok {
			canned(http.StatusBadRequest, `{"error":"no route `+r.Method+" "+r.URL.Path+`"}`)(w, r)
			return
		}
		h(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAdmin) got() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.requests...)
}

// addr is the server's host:port, as --addr takes it.
func (f *fakeAdmin) addr() string { return strings.TrimPrefix(f.URL, "http://") }

// runAdmin runs the command line with ROOST_ADDR and ROOST_ADMIN_TOKEN set
// as env says (unset otherwise, whatever the environment of the test).
func runAdmin(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	for _, k := range []string{envAdminAddr, envAdminToken} {
		t.Setenv(k, env[k]) // empty counts as unset
	}
	return runCLI(t, nil, args...)
}

// fastPolls makes --wait poll every millisecond for the test.
func fastPolls(t *testing.T) {
	t.Helper()
	interval, retry, restart := adminPollInterval, adminRetryFor, operationRestartDelay
	adminPollInterval, adminRetryFor, operationRestartDelay = time.Millisecond, 5*time.Second, time.Millisecond
	t.Cleanup(func() { adminPollInterval, adminRetryFor, operationRestartDelay = interval, retry, restart })
}

// checkGolden compares got with testdata/admin/name, or rewrites the file
// with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "admin", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cli/ -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (rerun with -update if the change is intended)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestAdminGolden(t *testing.T) {
	routes := map[string]http.HandlerFunc{
		"GET /v1/members": canned(200, membersJSON),
		"GET /v1/shards":  canned(200, shardsJSON),
		"POST /v1/rebalance": func(w http.ResponseWriter, r *http.Request) {
			var body struct {
				DryRun bool `json:"dry_run"`
			}
			if json.NewDecoder(r.Body).Decode(&body) != nil || !body.DryRun {
				canned(400, `{"error":"test server: only dry runs"}`)(w, r)
				return
			}
			canned(200, planJSON)(w, r)
		},
	}
	devRoutes := map[string]http.HandlerFunc{
		"GET /v1/status":     canned(200, devStatusJSON),
		"POST /v1/rebalance": canned(200, `{"moves":[]}`),
	}
	tests := []struct {
		golden string
		dev    bool
		args   []string
	}{
		{"status.table.golden", false, []string{"status"}},
		{"status.json.golden", false, []string{"status", "-o", "json"}},
		{"status-dev.table.golden", true, []string{"status"}},
		{"members.table.golden", false, []string{"members"}},
		{"members.json.golden", false, []string{"members", "-o", "json"}},
		{"shards-list.table.golden", false, []string{"shards", "list"}},
		{"shards-list.json.golden", false, []string{"shards", "list", "--output=json"}},
		{"rebalance-dry-run.table.golden", false, []string{"rebalance", "--dry-run"}},
		{"rebalance-dry-run.json.golden", false, []string{"rebalance", "--dry-run", "-o", "json"}},
		{"rebalance-dry-run-empty.table.golden", true, []string{"rebalance", "--dry-run"}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			r := map[string]http.HandlerFunc{"GET /v1/status": canned(200, statusJSON)}
			for k, v := range routes {
				r[k] = v
			}
			if tt.dev {
				r = devRoutes
			}
			srv := newFakeAdmin(t, r)
			code, stdout, stderr := runAdmin(t, nil, append(tt.args, "--addr", srv.addr())...)
			if code != exitOK || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			checkGolden(t, tt.golden, stdout)
		})
	}
}

// A key (or metadata) with control characters is listed quoted, so it
// cannot add a row, move a column or reach the terminal as an escape
// sequence; plain keys are listed as they are.
func TestKVListQuotesUnprintableKeys(t *testing.T) {
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{
		// The metadata holds U+009B itself (a JSON string may), the name
		// JSON escapes.
		"GET /v1/kv/B/keys": canned(200, `{"keys":[{"name":"plain key"},{"name":"\u001b[2Jred\tx\nfake-row","metadata":{"m":"`+"\u009b"+`31m"}}],"list_complete":true}`),
	})
	code, stdout, stderr := runAdmin(t, nil, "kv", "list", "--binding", "B", "--addr", srv.addr())
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.ContainsAny(stdout, "\x1b\t\u009b") || strings.Count(stdout, "\n") != 3 {
		t.Fatalf("kv list printed control characters or extra rows:\n%q", stdout)
	}
	for _, want := range []string{"plain key", `"\x1b[2Jred\tx\nfake-row"`, `"{\"m\":\"\u009b31m\"}"`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("kv list output lacks %s:\n%s", want, stdout)
		}
	}
}

// The cursor of an incomplete page is printed quoted: one of a listing
// without a prefix ends in ".", which read as a full stop (found by QA).
func TestKVListPrintsTheCursorQuoted(t *testing.T) {
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{
		"GET /v1/kv/B/keys": canned(200, `{"keys":[{"name":"a"}],"list_complete":false,"cursor":"YQ."}`),
	})
	code, stdout, stderr := runAdmin(t, nil, "kv", "list", "--binding", "B", "--limit", "1", "--addr", srv.addr())
	if code != exitOK || !strings.Contains(stdout, "more keys: --cursor 'YQ.'\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want the cursor quoted", code, stdout, stderr)
	}
}

func TestRebalanceDryRunRequest(t *testing.T) {
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{"POST /v1/rebalance": canned(200, planJSON)})
	if code, _, stderr := runAdmin(t, nil, "rebalance", "--dry-run", "--max-concurrent", "2", "--addr", srv.URL); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := srv.got()
	if len(got) != 1 || got[0].method != "POST" || got[0].path != "/v1/rebalance" || got[0].body != `{"dry_run":true,"max_concurrent":2}` {
		t.Errorf("requests = %+v", got)
	}
}

func TestAdminToken(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantAuth string
	}{
		{"none", nil, nil, ""},
		{"flag", nil, []string{"--token", "s3cret"}, "Bearer s3cret"},
		{"variable", map[string]string{envAdminToken: "from-env"}, nil, "Bearer from-env"},
		{"flag wins over variable", map[string]string{envAdminToken: "from-env"}, []string{"--token", "from-flag"}, "Bearer from-flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeAdmin(t, map[string]http.HandlerFunc{"GET /v1/status": canned(200, statusJSON)})
			code, _, stderr := runAdmin(t, tt.env, append([]string{"status", "--addr", srv.addr()}, tt.args...)...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := srv.got(); len(got) != 1 || got[0].auth != tt.wantAuth {
				t.Errorf("requests = %+v, want Authorization %q", got, tt.wantAuth)
			}
		})
	}
}

func TestAdminAddr(t *testing.T) {
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{"GET /v1/status": canned(200, statusJSON)})
	other := newFakeAdmin(t, map[string]http.HandlerFunc{"GET /v1/status": canned(200, statusJSON)})
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want *fakeAdmin
	}{
		{"flag host:port", nil, []string{"--addr", srv.addr()}, srv},
		{"flag URL", nil, []string{"--addr", srv.URL + "/"}, srv},
		{"variable", map[string]string{envAdminAddr: srv.URL}, nil, srv},
		{"flag wins over variable", map[string]string{envAdminAddr: other.addr()}, []string{"--addr", srv.addr()}, srv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(tt.want.got())
			code, _, stderr := runAdmin(t, tt.env, append([]string{"status"}, tt.args...)...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if len(tt.want.got()) != before+1 {
				t.Errorf("the request did not go to %s", tt.want.URL)
			}
		})
	}
}

func TestAdminBaseURL(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "127.0.0.1:8789", want: "http://127.0.0.1:8789"},
		{in: "http://127.0.0.1:8789", want: "http://127.0.0.1:8789"},
		{in: "http://127.0.0.1:8789/", want: "http://127.0.0.1:8789"},
		{in: "https://roost.example.com", want: "https://roost.example.com"},
		{in: "https://roost.example.com/admin/", want: "https://roost.example.com/admin"},
		{in: "10.0.0.5", want: "http://10.0.0.5:8789"},
		{in: "[fd00::1]:9000", want: "http://[fd00::1]:9000"},
		{in: "fd00::1", want: "http://[fd00::1]:8789"},
		{in: " node-3:8789 ", want: "http://node-3:8789"},
		{in: "127.0.0.1:", want: "http://127.0.0.1:8789"}, // not port 80
		{in: "[::1]:", want: "http://[::1]:8789"},
		{in: ":", err: "no host"},
		{in: "", err: "empty address"},
		{in: "ftp://x", err: `scheme "ftp"`},
		{in: "http://", err: "no host"},
		{in: "http://h:99999", err: "port"},
		{in: "http://h:1/?x=1", err: "without user, query or fragment"},
	}
	for _, tt := range tests {
		got, err := adminBaseURL(tt.in)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("adminBaseURL(%q) = %q, %v; want error with %q", tt.in, got, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("adminBaseURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestAdminErrors(t *testing.T) {
	tests := []struct {
		name   string
		route  string
		answer http.HandlerFunc
		env    map[string]string
		args   []string
		want   string // all of stderr
	}{
		{
			name: "401 without a token", route: "GET /v1/status",
			answer: canned(401, `{"error":"missing admin token"}`),
			args:   []string{"status"},
			want:   "roost: missing admin token (the cluster has an admin token: set ROOST_ADMIN_TOKEN or pass --token)\n",
		},
		{
			name: "401 with a token", route: "GET /v1/members",
			answer: canned(401, `{"error":"wrong admin token"}`),
			env:    map[string]string{envAdminToken: "old"},
			args:   []string{"members"},
			want:   "roost: wrong admin token (the token from ROOST_ADMIN_TOKEN was refused: check --token or ROOST_ADMIN_TOKEN)\n",
		},
		{
			name: "401 with --token empty", route: "GET /v1/members",
			answer: canned(401, `{"error":"missing admin token"}`),
			args:   []string{"members", "--token", ""},
			want:   "roost: missing admin token (the cluster has an admin token and --token is empty: pass the token)\n",
		},
		{
			name: "409 refusal", route: "POST /v1/shards/7/move",
			answer: canned(409, `{"error":"shard 7 would lose its quorum: n2 is not alive"}`),
			args:   []string{"shards", "move", "7", "--to", "n4", "--from", "n1"},
			want:   "roost: shard 7 would lose its quorum: n2 is not alive\n",
		},
		{
			name: "409 second operation", route: "POST /v1/rebalance",
			answer: canned(409, `{"error":"drain op-2 of n3 is running; one operation runs at a time"}`),
			args:   []string{"rebalance", "--wait"},
			want:   "roost: drain op-2 of n3 is running; one operation runs at a time\n",
		},
		{
			name: "409 remove on roost dev: no advice to drain", route: "POST /v1/nodes/n3/remove",
			answer: canned(409, `{"error":"roost dev runs no cluster"}`),
			args:   []string{"remove", "n3"},
			want:   "roost: roost dev runs no cluster\n",
		},
		{
			name: "409 remove, server says what to do", route: "POST /v1/nodes/n3/remove",
			answer: canned(409, `{"error":"n3 still holds replicas; drain it first"}`),
			args:   []string{"remove", "n3"},
			want:   "roost: n3 still holds replicas; drain it first\n",
		},
		{
			name: "409 dev", route: "GET /v1/shards",
			answer: canned(409, `{"error":"roost dev runs no cluster"}`),
			args:   []string{"shards", "list"},
			want:   "roost: roost dev runs no cluster\n",
		},
		{
			name: "400 unknown node", route: "POST /v1/nodes/n9/drain",
			answer: canned(400, `{"error":"unknown node n9"}`),
			args:   []string{"drain", "n9"},
			want:   "roost: unknown node n9\n",
		},
		{
			name: "503", route: "GET /v1/members",
			answer: canned(503, `{"error":"no meta leader: cluster not formed (2 of 3 nodes have met)"}`),
			args:   []string{"members", "-o", "json"},
			want:   "roost: no meta leader: cluster not formed (2 of 3 nodes have met)\n",
		},
		{
			name: "404 from the API itself", route: "GET /v1/kv/B/values/nope",
			answer: canned(404, `{"error":"KV B has no key \"nope\""}`),
			args:   []string{"kv", "get", "nope", "--binding", "B"},
			want:   "roost: KV B has no key \"nope\"\n",
		},
		{
			name: "not the admin API", // answer nil: a server that knows no /v1/
			args: []string{"status"},
			want: "roost: GET {URL}/v1/status answered 404 Not Found: 404 page not found (is {URL} a node's admin listener, of a roost with the admin API? point --addr or ROOST_ADDR at one)\n",
		},
		{
			name: "not JSON", route: "GET /v1/status",
			answer: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from the app\n") },
			args:   []string{"status"},
			want:   "roost: GET {URL}/v1/status answered 200 OK with something other than JSON: hello from the app (is {URL} a roost node's admin listener?)\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *httptest.Server
			if tt.answer == nil {
				srv = httptest.NewServer(http.NotFoundHandler())
				t.Cleanup(srv.Close)
			} else {
				srv = newFakeAdmin(t, map[string]http.HandlerFunc{tt.route: tt.answer}).Server
			}
			code, stdout, stderr := runAdmin(t, tt.env, append(tt.args, "--addr", srv.URL)...)
			if code != exitFailure {
				t.Errorf("exit %d, want %d", code, exitFailure)
			}
			if want := strings.ReplaceAll(tt.want, "{URL}", srv.URL); stderr != want {
				t.Errorf("stderr\n%q\nwant\n%q", stderr, want)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

// roost kv copy into a binding the node does not have fails before it
// reads anything, even with nothing to copy (it reported "copied 0 keys").
func TestKVCopyToAnUnknownBinding(t *testing.T) {
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{
		"GET /v1/kv/OLD/keys":  canned(200, `{"keys":[],"list_complete":true}`),
		"GET /v1/kv/NOPE/keys": canned(404, `{"error":"unknown binding: no KV namespace is bound to \"NOPE\" (bound: [OLD])"}`),
	})
	code, stdout, stderr := runAdmin(t, nil, "kv", "copy", "--binding", "OLD", "--to", "NOPE", "--addr", srv.addr())
	if want := "roost: --to NOPE: unknown binding: no KV namespace is bound to \"NOPE\" (bound: [OLD]) (0 keys copied before it)\n"; code != exitFailure || stderr != want || stdout != "" {
		t.Errorf("exit %d, stdout %q, stderr\n%q\nwant exit %d and\n%q", code, stdout, stderr, exitFailure, want)
	}
	for _, r := range srv.got() {
		if strings.Contains(r.path, "/OLD/") {
			t.Errorf("read the source before checking the target: %s %s", r.method, r.path)
		}
	}
}

// A key that passed roost kv copy's check (more than a minute left) but
// whose put the node refuses as expiring within a minute — its clock a
// little ahead, or the get of the value took a while — is left out and
// counted, as the help says, not the end of the copy.
func TestKVCopyLeavesOutAKeyThatExpiresDuringTheCopy(t *testing.T) {
	now := time.Now().Unix()
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{
		"GET /v1/kv/NEW/keys":         canned(200, `{"keys":[],"list_complete":true}`),
		"GET /v1/kv/OLD/keys":         canned(200, fmt.Sprintf(`{"keys":[{"name":"soon","expiration":%d},{"name":"later","expiration":%d}],"list_complete":true}`, now+61, now+3600)),
		"GET /v1/kv/OLD/values/soon":  canned(200, `{"key":"soon","value":"aGk="}`),
		"GET /v1/kv/OLD/values/later": canned(200, `{"key":"later","value":"aGk="}`),
		"PUT /v1/kv/NEW/values/soon":  canned(400, `{"error":"kv NEW (namespace new): put: invalid option: expiration is less than 1m0s in the future"}`),
		"PUT /v1/kv/NEW/values/later": canned(200, `{"key":"later"}`),
	})
	code, stdout, stderr := runAdmin(t, nil, "kv", "copy", "--binding", "OLD", "--to", "NEW", "--addr", srv.addr())
	if want := "copied 1 keys from OLD to NEW (left out: 1 expiring within a minute, 0 deleted meanwhile)\n"; code != 0 || stdout != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit 0 and %q", code, stdout, stderr, want)
	}
}

// rawListener listens on loopback until the test ends and answers each
// connection's first read with reply, then closes it; it returns its
// address.
func rawListener(t *testing.T, reply []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Read(make([]byte, 4096))
			conn.Write(reply)
			conn.Close()
		}
	}()
	return ln.Addr().String()
}

// Pointed at a port that does not speak HTTP (a node's gossip port closes
// the connection, its gRPC port answers with HTTP/2 frames), the CLI says
// to point --addr at the admin listener.
func TestAdminAtANonHTTPPort(t *testing.T) {
	for _, tt := range []struct {
		name  string
		reply []byte
	}{
		{"closes the connection", nil},
		{"answers binary frames", []byte("\x00\x00\x0c\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00\x40\x00\n")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := rawListener(t, tt.reply)
			code, _, stderr := runAdmin(t, nil, "members", "--addr", addr)
			if code != exitFailure || !strings.Contains(stderr, "a node's admin listener? the gRPC and gossip ports do not speak HTTP") {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
		})
	}
}

// A connection closed without an answer to a call that changes something
// says its outcome is unknown, not only that the port may be wrong (a node
// stopped mid-call).
func TestAdminWriteCutOffSaysOutcomeUnknown(t *testing.T) {
	addr := rawListener(t, nil)
	code, _, stderr := runAdmin(t, nil, "kv", "put", "k", "v", "--binding", "B", "--addr", addr)
	if code != exitFailure || !strings.Contains(stderr, "the connection closed without an answer") || !strings.Contains(stderr, "may or may not have taken effect") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runAdmin(t, nil, "kv", "get", "k", "--binding", "B", "--addr", addr)
	if code != exitFailure || strings.Contains(stderr, "may or may not") {
		t.Fatalf("a read: exit %d, stderr %q", code, stderr)
	}
}

func TestAdminConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, _, stderr := runAdmin(t, map[string]string{envAdminAddr: addr}, "members")
	if code != exitFailure {
		t.Errorf("exit %d, want %d", code, exitFailure)
	}
	if !strings.HasPrefix(stderr, "roost: cannot reach the admin API at http://"+addr+": ") ||
		!strings.Contains(stderr, "connection refused") || !strings.Contains(stderr, "--addr or ROOST_ADDR") ||
		strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr = %q; want one line with the address, the cause and a hint at --addr", stderr)
	}
}

func TestAdminTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{"GET /v1/status": func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}})
	defer close(release)
	code, _, stderr := runAdmin(t, nil, "status", "--addr", srv.addr(), "--timeout", "50ms")
	if code != exitFailure || !strings.Contains(stderr, "no answer within 50ms (raise --timeout") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// "." and ".." are valid node IDs (and may name an operation or a
// binding): the CLI escapes them, so that the server's path cleaning does
// not read them as the path itself or its parent. `roost remove ..` was
// "no admin call POST /v1/remove".
func TestAdminDotIDsReachTheirCall(t *testing.T) {
	var got []string
	mux := http.NewServeMux() // cleans paths as a node's does
	for _, pattern := range []string{"POST /v1/nodes/{id}/remove", "POST /v1/nodes/{id}/drain", "GET /v1/operations/{id}", "GET /v1/kv/{binding}/values/{key...}"} {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			got = append(got, pattern+" "+r.PathValue("id")+r.PathValue("binding"))
			switch {
			case strings.HasSuffix(pattern, "remove"):
				canned(200, `{"id":"..","state":"removed"}`)(w, r)
			case strings.HasSuffix(pattern, "drain"), strings.Contains(pattern, "operations"):
				canned(200, `{"operation":{"id":"x","kind":"drain","state":"done","total":0,"done":0,"waiting":[]}}`)(w, r)
			default:
				canned(200, `{"key":"k","value":"aGk="}`)(w, r)
			}
		})
	}
	mux.HandleFunc("/", canned(404, `{"error":"no admin call"}`))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for _, args := range [][]string{{"remove", ".."}, {"drain", "."}, {"operation", ".."}, {"kv", "get", "k", "--binding", ".."}} {
		if code, _, stderr := runAdmin(t, nil, append(args, "--addr", srv.URL)...); code != exitOK {
			t.Errorf("%v: exit %d, %s", args, code, stderr)
		}
	}
	want := []string{"POST /v1/nodes/{id}/remove ..", "POST /v1/nodes/{id}/drain .", "GET /v1/operations/{id} ..", "GET /v1/kv/{binding}/values/{key...} .."}
	if !slices.Equal(got, want) {
		t.Errorf("calls answered:\n%q\nwant\n%q", got, want)
	}
}

func TestAdminUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"shard not a number", nil, []string{"shards", "move", "seven", "--to", "n4"}, `SHARD must be a shard number such as 7 (see 'roost shards list'), got "seven"`},
		{"negative shard", nil, []string{"shards", "transfer-leader", "-1", "--to", "n2"}, "-1 is not a number this command takes"},
		{"shard not a number, transfer", nil, []string{"shards", "transfer-leader", "3x", "--to", "n2"}, `got "3x"`},
		{"missing shard", nil, []string{"shards", "move", "--to", "n4"}, "missing SHARD"},
		{"two shards", nil, []string{"shards", "move", "1", "2", "--to", "n4"}, "one SHARD expected, got 2 arguments: 1 2"},
		{"move without --to", nil, []string{"shards", "move", "7"}, "--to is required"},
		{"transfer without --to", nil, []string{"shards", "transfer-leader", "7"}, "--to is required"},
		{"bad --to", nil, []string{"shards", "move", "7", "--to", "N4"}, `--to must be a node id`},
		{"bad --from", nil, []string{"shards", "move", "7", "--to", "n4", "--from", "n1/x"}, `--from must be a node id`},
		{"drain without a node", nil, []string{"drain"}, "missing NODE"},
		{"bad node", nil, []string{"remove", "../v1/rebalance"}, "NODE must be a node id"},
		{"bad output", nil, []string{"status", "-o", "yaml"}, `--output must be "table" or "json", got "yaml"`},
		{"bad timeout", nil, []string{"members", "--timeout", "0s"}, "--timeout must be positive"},
		{"blank ROOST_ADMIN_TOKEN", map[string]string{envAdminToken: "  "}, []string{"status"}, "ROOST_ADMIN_TOKEN has blanks around it (or is blank)"},
		{"--token with a blank around it", nil, []string{"status", "--token", "secret "}, "--token has blanks around it"},
		{"--token with a DEL", nil, []string{"status", "--token", "sec\x7fret"}, `--token holds '\x7f' at byte 3: a control character`},
		{"ROOST_ADMIN_TOKEN with a line break", map[string]string{envAdminToken: "a\nb"}, []string{"status"}, `ROOST_ADMIN_TOKEN holds '\n' at byte 1: a control character`},
		{"--token beyond ASCII", nil, []string{"status", "--token", "tökén"}, "--token holds 'ö' at byte 1: a character beyond ASCII"},
		{"bad max-concurrent", nil, []string{"rebalance", "--max-concurrent", "0"}, "--max-concurrent must be at least 1, got 0"},
		{"drain max-concurrent", nil, []string{"drain", "n3", "--max-concurrent", "-2"}, "--max-concurrent must be at least 1, got -2"},
		{"max-concurrent over the API's bound", nil, []string{"rebalance", "--max-concurrent", "65"}, "--max-concurrent must be from 1 to 64, got 65"},
		{"drain max-concurrent over the bound", nil, []string{"drain", "n3", "--max-concurrent", "100", "--wait"}, "--max-concurrent must be from 1 to 64, got 100"},
		{"dry run and wait", nil, []string{"rebalance", "--dry-run", "--wait"}, "--dry-run starts nothing to --wait for"},
		{"bad --addr", nil, []string{"status", "--addr", "ftp://x"}, `--addr "ftp://x": scheme "ftp"`},
		{"bad ROOST_ADDR", map[string]string{envAdminAddr: "http://"}, []string{"status"}, `ROOST_ADDR "http://": no host`},
		{"argument to status", nil, []string{"status", "n1"}, `unknown command "n1" for "roost status"`},
		{"unknown completion shell", nil, []string{"completion", "nosuchshell"}, `unknown command "nosuchshell" for "roost completion"`},
		{"unknown shards command", nil, []string{"shards", "lst"}, `unknown command "lst" for "roost shards"`},
		{"unknown shards command with flags", nil, []string{"shards", "lst", "--to", "n4"}, `unknown command "lst" for "roost shards"`},
		{"unknown kv command with flags", nil, []string{"kv", "gte", "k", "--binding", "B"}, `unknown command "gte" for "roost kv"`},
		{"unknown flag of a group", nil, []string{"shards", "--bogus"}, "unknown flag: --bogus"},
		{"unknown flag of a shards command", nil, []string{"shards", "transfer-leader", "0", "--to", "n2", "--frm", "n1"}, "unknown flag: --frm"},
		{"unknown flag of a kv command", nil, []string{"kv", "put", "k", "v", "--binding", "B", "--tll", "1h"}, "unknown flag: --tll"},
		{"kv without --binding", nil, []string{"kv", "get", "k"}, "--binding is required"},
		{"kv get without key", nil, []string{"kv", "get", "--binding", "B"}, "missing KEY"},
		{"kv put without value", nil, []string{"kv", "put", "k", "--binding", "B"}, "give the value as VALUE or with --file"},
		{"kv put value twice", nil, []string{"kv", "put", "k", "v", "--file", "f", "--binding", "B"}, "give the value as VALUE or with --file"},
		{"kv put ttl and expiration", nil, []string{"kv", "put", "k", "v", "--ttl", "1h", "--expiration", "9999999999", "--binding", "B"}, "--ttl or --expiration, not both"},
		{"kv put fractional ttl", nil, []string{"kv", "put", "k", "v", "--ttl", "90.5s", "--binding", "B"}, "whole seconds"},
		{"kv put bad metadata", nil, []string{"kv", "put", "k", "v", "--metadata", "{", "--binding", "B"}, `--metadata "{" is not JSON`},
		{"kv put empty metadata", nil, []string{"kv", "put", "k", "v", "--metadata", "", "--binding", "B"}, `--metadata is empty`},
		{"kv list bad limit", nil, []string{"kv", "list", "--limit", "1001", "--binding", "B"}, "--limit 1001: 1 to 1000"},
		{"kv list limit 0", nil, []string{"kv", "list", "--limit", "0", "--binding", "B"}, "--limit 0: 1 to 1000"},
		{"kv put ttl 0", nil, []string{"kv", "put", "k", "v", "--ttl", "0s", "--binding", "B"}, "at least 1m0s"},
		{"kv put short ttl", nil, []string{"kv", "put", "k", "v", "--ttl", "10s", "--binding", "B"}, "--ttl 10s: whole seconds, at least 1m0s"},
		{"kv put expiration 0", nil, []string{"kv", "put", "k", "v", "--expiration", "0", "--binding", "B"}, "--expiration 0: a Unix time"},
		{"kv put ttl over a century", nil, []string{"kv", "put", "k", "v", "--ttl", "2562047h", "--binding", "B"}, "at most 876000h0m0s (a century)"},
		{"kv put expiration after year 9999", nil, []string{"kv", "put", "k", "v", "--expiration", "253402300800", "--binding", "B"}, "at most 253402300799 (the end of year 9999)"},
		{"kv put ttl 0 and expiration", nil, []string{"kv", "put", "k", "v", "--ttl", "0s", "--expiration", "9999999999", "--binding", "B"}, "not both"},
	}
	srv := newFakeAdmin(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{envAdminAddr: srv.addr()}
			for k, v := range tt.env {
				env[k] = v
			}
			code, stdout, stderr := runAdmin(t, env, tt.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if !strings.HasPrefix(stderr, "roost: ") || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "--help' for usage") {
				t.Errorf("stderr = %q; want roost: …%s… and a pointer to --help", stderr, tt.want)
			}
			if stdout != "" {
				t.Errorf("stdout = %q", stdout)
			}
		})
	}
	if got := srv.got(); len(got) != 0 {
		t.Errorf("usage errors sent requests: %+v", got)
	}
}

// fakeOperation is an operation that makes one more move each time it is
// asked about, and ends in state end (with errMsg) after total moves, or
// after failAt moves if end is "failed".
type fakeOperation struct {
	mu          sync.Mutex
	kind, end   string
	node        string // a drain's
	total, done int
	failAt      int
	errMsg      string
	polls       int
	flaky       bool // answer 503 to the first poll
}

func (o *fakeOperation) json() string {
	state := opRunning
	errMsg := ""
	switch {
	case o.end == opFailed && o.done >= o.failAt:
		state, errMsg = opFailed, o.errMsg
	case o.done >= o.total:
		state = opDone
	}
	eta := (o.total - o.done) * 10
	return fmt.Sprintf(`{"operation":{"id":"op-9","kind":%q,"node":%q,"state":%q,"total":%d,"done":%d,"started":"2026-03-01T10:00:00Z","eta_seconds":%d,"error":%q}}`,
		o.kind, o.node, state, o.total, o.done, eta, errMsg)
}

func (o *fakeOperation) routes(start string) map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		start: func(w http.ResponseWriter, r *http.Request) {
			o.mu.Lock()
			defer o.mu.Unlock()
			canned(http.StatusAccepted, o.json())(w, r)
		},
		"GET /v1/operations/op-9": func(w http.ResponseWriter, r *http.Request) {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.polls++
			if o.flaky && o.polls == 1 {
				canned(503, `{"error":"no meta leader"}`)(w, r)
				return
			}
			if o.done < o.total {
				o.done++
			}
			canned(200, o.json())(w, r)
		},
	}
}

func TestRebalanceWaitDone(t *testing.T) {
	fastPolls(t)
	op := &fakeOperation{kind: "rebalance", total: 4, end: opDone, flaky: true}
	srv := newFakeAdmin(t, op.routes("POST /v1/rebalance"))
	code, stdout, stderr := runAdmin(t, nil, "rebalance", "--wait", "--addr", srv.addr(), "--token", "t")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{
		"operation op-9 (rebalance): 0/4 moves done (0%), ETA 40s\n",
		"roost: no meta leader; retrying\n",
		"operation op-9 (rebalance): 1/4 moves done (25%), ETA 30s\n",
		"operation op-9 (rebalance): 3/4 moves done (75%), ETA 10s\n",
		"operation op-9 (rebalance): 4/4 moves done (100%), done\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if want := "Operation op-9 (rebalance) done: 4/4 moves done (100%).\n"; stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
	got := srv.got()
	if got[0].body != `{"dry_run":false,"max_concurrent":4}` {
		t.Errorf("rebalance body = %s", got[0].body)
	}
	for _, r := range got {
		if r.auth != "Bearer t" {
			t.Errorf("%s %s sent Authorization %q", r.method, r.path, r.auth)
		}
	}
}

func TestRebalanceWaitFailed(t *testing.T) {
	fastPolls(t)
	op := &fakeOperation{kind: "rebalance", total: 4, end: opFailed, failAt: 2, errMsg: "shard 3: n4 stopped answering"}
	srv := newFakeAdmin(t, op.routes("POST /v1/rebalance"))
	code, stdout, stderr := runAdmin(t, nil, "rebalance", "--wait", "--addr", srv.addr())
	if code != exitFailure {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitFailure, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if want := "roost: operation op-9 (rebalance) failed after 2/4 moves done (50%): shard 3: n4 stopped answering"; lines[len(lines)-1] != want {
		t.Errorf("last line of stderr = %q, want %q", lines[len(lines)-1], want)
	}
	if !strings.Contains(stderr, "2/4 moves done (50%), failed\n") {
		t.Errorf("progress does not show the failure:\n%s", stderr)
	}
	if stdout != "" {
		t.Errorf("stdout = %q", stdout)
	}
}

// An operation lost with its meta leader (forgotten by the new one, or
// failed saying so) is started again by --wait, which then follows the new
// one to its end.
func TestRebalanceWaitRestartsAfterMetaLeaderChange(t *testing.T) {
	fastPolls(t)
	op := func(id, state string, done int, errMsg string) string {
		return fmt.Sprintf(`{"operation":{"id":%q,"kind":"rebalance","state":%q,"total":4,"done":%d,"started":"2026-12-02T00:00:00Z","eta_seconds":null,"error":%q}}`, id, state, done, errMsg)
	}
	var mu sync.Mutex
	posts := 0
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{
		"POST /v1/rebalance": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			posts++
			n := posts
			mu.Unlock()
			canned(http.StatusAccepted, op(fmt.Sprintf("op-%d", n), "running", 0, ""))(w, r)
		},
		"GET /v1/operations/op-1": canned(http.StatusBadRequest, `{"error":"unknown operation \"op-1\": the meta leader (n2) has no record of it"}`),
		"GET /v1/operations/op-2": canned(http.StatusOK, op("op-2", "failed", 1, "this node (n2) lost the meta leadership (now n3); start the operation again")),
		"GET /v1/operations/op-3": canned(http.StatusOK, op("op-3", "done", 4, "")),
	})
	code, stdout, stderr := runAdmin(t, nil, "rebalance", "--wait", "--addr", srv.addr())
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if posts != 3 {
		t.Fatalf("%d POSTs, want 3", posts)
	}
	for _, want := range []string{
		"roost: operation op-1 (rebalance) ended with the meta leadership (the new meta leader has no record of it); starting it again on the new meta leader\n",
		"roost: operation op-2 (rebalance) ended with the meta leadership (this node (n2) lost the meta leadership (now n3); start the operation again); starting it again on the new meta leader\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if want := "Operation op-3 (rebalance) done: 4/4 moves done (100%).\n"; stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
}

// An operation the new meta leader carries on (same ID, running again
// after its old leader reported it lost) is followed, not started again.
func TestRebalanceWaitFollowsACarriedOnOperation(t *testing.T) {
	fastPolls(t)
	op := func(state string, done int, errMsg string) string {
		return fmt.Sprintf(`{"operation":{"id":"op-1","kind":"rebalance","state":%q,"total":4,"done":%d,"started":"2026-12-02T00:00:00Z","eta_seconds":null,"error":%q}}`, state, done, errMsg)
	}
	var mu sync.Mutex
	posts, gets := 0, 0
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{
		"POST /v1/rebalance": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			posts++
			mu.Unlock()
			canned(http.StatusAccepted, op("running", 0, ""))(w, r)
		},
		"GET /v1/operations/op-1": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			gets++
			n := gets
			mu.Unlock()
			switch n {
			case 1:
				canned(http.StatusOK, op("failed", 1, "this node (n2) lost the meta leadership (now n3)"))(w, r)
			case 2:
				canned(http.StatusOK, op("running", 1, ""))(w, r)
			default:
				canned(http.StatusOK, op("done", 4, ""))(w, r)
			}
		},
	})
	code, stdout, stderr := runAdmin(t, nil, "rebalance", "--wait", "--addr", srv.addr())
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if posts != 1 {
		t.Fatalf("%d POSTs, want 1: the carried-on operation must be followed", posts)
	}
	if want := "roost: operation op-1 (rebalance) ended with the meta leadership (this node (n2) lost the meta leadership (now n3)); the new meta leader carries it on\n"; !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
	if want := "Operation op-1 (rebalance) done: 4/4 moves done (100%).\n"; stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
}

// A --wait whose node stops answering (the meta leader that died, say)
// follows the operation through another node of the cluster: the new meta
// leader carries it on, and any node answers for it.
func TestRebalanceWaitSurvivesTheNodeItAsked(t *testing.T) {
	fastPolls(t)
	op := func(state string, done int) string {
		return fmt.Sprintf(`{"operation":{"id":"op-1","kind":"rebalance","state":%q,"total":4,"done":%d,"started":"2026-12-02T00:00:00Z","eta_seconds":null,"error":""}}`, state, done)
	}
	other := newFakeAdmin(t, map[string]http.HandlerFunc{
		"GET /v1/operations/op-1": canned(http.StatusOK, op("done", 4)),
	})
	// A node gossip sees dead is asked last: it may take --timeout to fail.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	var mu sync.Mutex
	polls := 0
	var asked *fakeAdmin
	asked = newFakeAdmin(t, map[string]http.HandlerFunc{
		"POST /v1/rebalance": canned(http.StatusAccepted, op("running", 0)),
		"GET /v1/members": func(w http.ResponseWriter, r *http.Request) {
			canned(http.StatusOK, fmt.Sprintf(`{"members":[{"id":"n0","state":"active","alive":false,"admin":%q},{"id":"n1","state":"active","alive":true,"admin":%q},{"id":"n2","state":"active","alive":true,"admin":%q}]}`,
				dead, asked.addr(), other.addr()))(w, r)
		},
		"GET /v1/operations/op-1": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			polls++
			n := polls
			mu.Unlock()
			if n > 1 {
				panic(http.ErrAbortHandler) // the node died: no answer
			}
			canned(http.StatusOK, op("running", 1))(w, r)
		},
	})
	code, stdout, stderr := runAdmin(t, nil, "rebalance", "--wait", "--addr", asked.addr())
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if want := "does not answer; asking " + other.URL + " instead\n"; !strings.Contains(stderr, want) || strings.Contains(stderr, "asking http://"+dead) {
		t.Errorf("stderr lacks %q, or names the dead node %s:\n%s", want, dead, stderr)
	}
	if want := "Operation op-1 (rebalance) done: 4/4 moves done (100%).\n"; stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
}

func TestDrainWaitJSON(t *testing.T) {
	fastPolls(t)
	op := &fakeOperation{kind: "drain", total: 2, end: opDone}
	srv := newFakeAdmin(t, op.routes("POST /v1/nodes/n3/drain"))
	code, stdout, stderr := runAdmin(t, nil, "drain", "n3", "--wait", "--max-concurrent", "1", "-o", "json", "--addr", srv.addr())
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	var out struct {
		Operation apiOperation `json:"operation"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil || out.Operation.State != opDone || out.Operation.Done != 2 {
		t.Errorf("stdout is not the finished operation (%v):\n%s", err, stdout)
	}
	if got := srv.got(); got[0].body != `{"max_concurrent":1}` {
		t.Errorf("drain body = %s", got[0].body)
	}
}

// A drain whose start is answered "may have been recorded" (the meta
// leadership moved while it was) is followed by --wait under the ID the
// answer names: the new meta leader carries it on. Without --wait the
// message says how to follow it. Before, the command failed saying
// "retry", and the drain ran all the same.
func TestDrainWaitFollowsADrainThatMayHaveStarted(t *testing.T) {
	const maybe = `{"error":"the meta leader lost its leadership while recording drain op-9 (it moved, or the leader lost touch with a quorum of the meta voters: see roost status): it may have been recorded, and then the next meta leader carries it on; 'roost operation op-9 --wait' follows it (if the cluster does not know it, it was not recorded: start it again)","operation":"op-9"}`
	srv, _ := drainWaitFollows(t, canned(503, maybe), 2,
		"it may have been recorded, and then the next meta leader carries it on; 'roost operation op-9 --wait' follows it (if the cluster does not know it, it was not recorded: start it again); following it\n")
	code, _, stderr := runAdmin(t, nil, "drain", "n3", "--addr", srv.addr())
	if code != exitFailure || !strings.Contains(stderr, "'roost operation op-9 --wait' follows it") {
		t.Errorf("drain n3 without --wait: exit %d, stderr:\n%s", code, stderr)
	}
}

// drainWaitFollows runs 'drain n3 --wait' against a fake admin API whose
// drain call answers start, and whose operation op-9 (a drain of n3 of
// total moves) runs to its end; it checks that the command said note on
// stderr and reported the drain done, and returns the fake and its drain.
func drainWaitFollows(t *testing.T, start http.HandlerFunc, total int, note string) (*fakeAdmin, *fakeOperation) {
	t.Helper()
	fastPolls(t)
	op := &fakeOperation{kind: "drain", node: "n3", total: total, end: opDone}
	routes := op.routes("GET /v1/status")
	routes["POST /v1/nodes/n3/drain"] = start
	routes["POST /v1/nodes/n2/drain"] = start
	srv := newFakeAdmin(t, routes)
	code, stdout, stderr := runAdmin(t, nil, "drain", "n3", "--wait", "--addr", srv.addr())
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, note) {
		t.Errorf("stderr does not say %q:\n%s", note, stderr)
	}
	if want := fmt.Sprintf("Operation op-9 (drain of n3) done: %d/%d moves done (100%%).\n", total, total); stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
	return srv, op
}

// A drain --wait run again while its drain runs (the first --wait was
// interrupted) follows the running drain; another operation running is
// still a refusal.
func TestDrainWaitFollowsTheSameRunningDrain(t *testing.T) {
	srv, op := drainWaitFollows(t, canned(409, `{"error":"operation op-9 (drain, 0 of 3 moves done) is running; one operation runs at a time"}`), 3,
		"roost: operation op-9 (drain of n3) is already running; following it\n")

	op.mu.Lock()
	op.done = 0
	op.mu.Unlock()
	code, _, stderr := runAdmin(t, nil, "drain", "n2", "--wait", "--addr", srv.addr())
	if code != exitFailure || !strings.Contains(stderr, "is running; one operation runs at a time") {
		t.Errorf("drain n2 --wait while a drain of n3 runs: exit %d, stderr:\n%s", code, stderr)
	}
	code, _, stderr = runAdmin(t, nil, "drain", "n3", "--addr", srv.addr())
	if code != exitFailure || !strings.Contains(stderr, "is running") {
		t.Errorf("drain n3 without --wait while it runs: exit %d, stderr:\n%s", code, stderr)
	}
}

func TestOperationCommand(t *testing.T) {
	fastPolls(t)
	op := &fakeOperation{kind: "rebalance", total: 2, end: opDone}
	routes := op.routes("GET /v1/status")
	srv := newFakeAdmin(t, routes)
	// Without an ID: the running one, on one line.
	code, stdout, stderr := runAdmin(t, nil, "operation", "--addr", srv.addr())
	if code != exitOK || !strings.HasPrefix(stdout, "rebalance op-9: running, 1/2 moves done (50%), ETA 10s") {
		t.Fatalf("operation: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// By ID, waiting for it to end.
	code, stdout, stderr = runAdmin(t, nil, "operation", "op-9", "--wait", "--addr", srv.addr())
	if code != exitOK || stdout != "Operation op-9 (rebalance) done: 2/2 moves done (100%).\n" || !strings.Contains(stderr, "2/2 moves done (100%), done") {
		t.Fatalf("operation op-9 --wait: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	// A failed one exits 1 with its error.
	failed := &fakeOperation{kind: "drain", node: "n3", total: 2, end: opFailed, failAt: 1, errMsg: "shard 1: no quorum"}
	srv = newFakeAdmin(t, failed.routes("GET /v1/status"))
	code, _, stderr = runAdmin(t, nil, "operation", "op-9", "--wait", "--addr", srv.addr())
	if code != exitFailure || !strings.Contains(stderr, "roost: operation op-9 (drain of n3) failed after 1/2 moves done (50%): shard 1: no quorum") {
		t.Fatalf("failed operation --wait: exit %d, stderr:\n%s", code, stderr)
	}
	// Nothing running, from a node that lists no operations (an older one).
	srv = newFakeAdmin(t, map[string]http.HandlerFunc{"GET /v1/status": canned(200, `{"node_id":"n1","operation":null}`), "GET /v1/operations": http.NotFound})
	code, stdout, _ = runAdmin(t, nil, "operation", "--addr", srv.addr())
	if code != exitOK || stdout != "No rebalance, drain or heal is running.\n" {
		t.Fatalf("operation with none running: exit %d, stdout %q", code, stdout)
	}
	code, stdout, _ = runAdmin(t, nil, "operation", "-o", "json", "--addr", srv.addr())
	if code != exitOK || strings.Join(strings.Fields(stdout), "") != `{"operation":null,"recent":[]}` {
		t.Fatalf("operation -o json with none running: exit %d, stdout %q", code, stdout)
	}
	// A node that cannot list them says why: roost dev runs no cluster.
	srv = newFakeAdmin(t, map[string]http.HandlerFunc{
		"GET /v1/status":     canned(200, `{"node_id":"dev","operation":null}`),
		"GET /v1/operations": canned(409, `{"error":"roost dev runs no cluster"}`),
	})
	if code, stdout, stderr := runAdmin(t, nil, "operation", "--addr", srv.addr()); code != exitFailure || stdout != "" || !strings.Contains(stderr, "roost dev runs no cluster") {
		t.Fatalf("operation against roost dev: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// Nothing running: the last ones that ended, newest first.
	srv = newFakeAdmin(t, map[string]http.HandlerFunc{
		"GET /v1/status": canned(200, `{"node_id":"n1","operation":null}`),
		"GET /v1/operations": canned(200, `{"operations":[
			{"id":"drain-2","kind":"drain","node":"n4","state":"done","total":11,"done":11,"started":"2026-12-04T09:11:46Z","eta_seconds":0,"error":"","waiting":[]},
			{"id":"rebalance-1","kind":"rebalance","state":"failed","total":4,"done":1,"started":"2026-12-04T09:01:00Z","eta_seconds":0,"error":"shard 3: no quorum","waiting":[]}]}`),
	})
	code, stdout, _ = runAdmin(t, nil, "operation", "--addr", srv.addr())
	want := "No rebalance, drain or heal is running.\nRecent ones, newest first:\n" +
		"  drain drain-2: done, 11/11 moves done (100%), started 2026-12-04T09:11:46Z\n" +
		"  rebalance rebalance-1: failed, 1/4 moves done (25%), started 2026-12-04T09:01:00Z: shard 3: no quorum\n"
	if code != exitOK || stdout != want {
		t.Fatalf("operation with recent ones: exit %d, stdout\n%s\nwant\n%s", code, stdout, want)
	}
	code, stdout, _ = runAdmin(t, nil, "operation", "-o", "json", "--addr", srv.addr())
	var out struct {
		Operation *apiOperation  `json:"operation"`
		Recent    []apiOperation `json:"recent"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); code != exitOK || err != nil || out.Operation != nil || len(out.Recent) != 2 || out.Recent[0].Node != "n4" {
		t.Fatalf("operation -o json with recent ones: exit %d, %v, stdout %q", code, err, stdout)
	}
	// Two IDs are a usage error.
	if code, _, stderr := runAdmin(t, nil, "operation", "a", "b", "--addr", srv.addr()); code != exitUsage || !strings.Contains(stderr, "one ID expected") {
		t.Fatalf("two IDs: exit %d, stderr %q", code, stderr)
	}
}

func TestOperationWithoutWait(t *testing.T) {
	op := &fakeOperation{kind: "drain", total: 6, end: opDone}
	srv := newFakeAdmin(t, op.routes("POST /v1/nodes/n3/drain"))
	code, stdout, stderr := runAdmin(t, nil, "drain", "n3", "--addr", srv.addr())
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	want := "Started operation op-9 (drain): 0/6 moves done (0%).\nIt runs in the cluster: 'roost operation op-9 --wait' follows it.\n"
	if stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
	if got := srv.got(); len(got) != 1 {
		t.Errorf("requests = %+v; want only the POST", got)
	}

}

// An operation ID that cannot be one is a usage error, and no call is
// made (before, "" asked for GET /v1/operations/ and failed with exit 1).
func TestOperationRefusesABadID(t *testing.T) {
	srv := newFakeAdmin(t, nil)
	for _, id := range []string{"", "a b", "x/y", strings.Repeat("x", 129)} {
		code, _, stderr := runAdmin(t, nil, "operation", id, "--addr", srv.addr())
		if code != exitUsage || !strings.Contains(stderr, "ID must be an operation id") {
			t.Errorf("operation %q: exit %d, stderr:\n%s", id, code, stderr)
		}
	}
	if got := srv.got(); len(got) != 0 {
		t.Errorf("requests = %+v; want none", got)
	}
}

func TestShardsMoveWait(t *testing.T) {
	fastPolls(t)
	// The shard's states as the leader converges on the new map.
	shard := func(voters, nonvoters, lag string) string {
		return `{"shards":[{"id":7,"version":43,"replicas":["n2","n3","n4"],"leader":"n2","voters":` + voters +
			`,"nonvoters":` + nonvoters + `,"applied_index":10,"replica_lag":` + lag + `}]}`
	}
	states := []string{
		shard(`["n1","n2","n3"]`, `[]`, `{}`),
		shard(`["n1","n2","n3"]`, `["n4"]`, `{"n4":500}`),
		shard(`["n1","n2","n3","n4"]`, `[]`, `{"n4":0}`),
		shard(`["n2","n3","n4"]`, `[]`, `{"n4":0}`),
	}
	var mu sync.Mutex
	polls := 0
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{
		"POST /v1/shards/7/move": canned(202, `{"shard":7,"from":"n1","to":"n4","version":43}`),
		"GET /v1/shards": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			canned(200, states[min(polls, len(states)-1)])(w, r)
			polls++
		},
	})
	code, stdout, stderr := runAdmin(t, nil, "shards", "move", "7", "--to", "n4", "--from", "n1", "--wait", "--addr", srv.addr())
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	wantErr := "shard 7: waiting for leader n2 to add n4\n" +
		"shard 7: n4 is catching up as a non-voter, 500 entries behind\n" +
		"shard 7: n4 is a voter; removing n1\n"
	if stderr != wantErr {
		t.Errorf("stderr\n%s\nwant\n%s", stderr, wantErr)
	}
	wantOut := "shard 7: moving a replica from n1 to n4 (shard version 43)\nshard 7: moved; its voters are the map's replicas\n"
	if stdout != wantOut {
		t.Errorf("stdout\n%s\nwant\n%s", stdout, wantOut)
	}
	if got := srv.got(); got[0].body != `{"to":"n4","from":"n1"}` {
		t.Errorf("move body = %s", got[0].body)
	}
}

func TestShardsMoveWaitOverridden(t *testing.T) {
	fastPolls(t)
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{
		"POST /v1/shards/7/move": canned(202, `{"shard":7,"from":"n1","to":"n4","version":43}`),
		"GET /v1/shards": canned(200, `{"shards":[{"id":7,"version":44,"replicas":["n1","n2","n3"],"leader":"n2",
			"voters":["n1","n2","n3"],"nonvoters":[],"applied_index":10,"replica_lag":{}}]}`),
	})
	code, _, stderr := runAdmin(t, nil, "shards", "move", "7", "--to", "n4", "--wait", "--addr", srv.addr())
	if want := "roost: shard 7's placement changed again (shard version 44) and no longer has a replica on n4\n"; code != exitFailure || stderr != want {
		t.Errorf("exit %d, stderr %q; want 1, %q", code, stderr, want)
	}
}

func TestShardsMoveAndTransferLeader(t *testing.T) {
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{
		"POST /v1/shards/12/move":           canned(202, `{"shard":12,"from":"n3","to":"n5","version":50}`),
		"POST /v1/shards/7/transfer-leader": canned(200, `{"shard":7,"leader":"n2"}`),
		"POST /v1/nodes/n3/remove":          canned(200, `{"id":"n3","state":"removed"}`),
	})
	tests := []struct {
		args       []string
		stdout     string
		body       string
		path       string
		wantStdout func(string) bool
	}{
		{args: []string{"shards", "move", "12", "--to", "n5"}, path: "/v1/shards/12/move", body: `{"to":"n5"}`,
			stdout: "shard 12: moving a replica from n3 to n5 (shard version 50)\nThe shard's leader converges now: 'roost shards list' shows it, or pass --wait next time.\n"},
		{args: []string{"shards", "move", "12", "--to", "n5", "-o", "json"}, path: "/v1/shards/12/move", body: `{"to":"n5"}`,
			stdout: "{\n  \"from\": \"n3\",\n  \"shard\": 12,\n  \"to\": \"n5\",\n  \"version\": 50\n}\n"},
		{args: []string{"shards", "transfer-leader", "7", "--to", "n2"}, path: "/v1/shards/7/transfer-leader", body: `{"to":"n2"}`,
			stdout: "shard 7: leader is now n2\n"},
		{args: []string{"remove", "n3"}, path: "/v1/nodes/n3/remove", body: "",
			stdout: "node n3: removed\n"},
		{args: []string{"remove", "n3", "-o", "json"}, path: "/v1/nodes/n3/remove", body: "",
			stdout: "{\n  \"id\": \"n3\",\n  \"state\": \"removed\"\n}\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			before := len(srv.got())
			code, stdout, stderr := runAdmin(t, nil, append(tt.args, "--addr", srv.addr())...)
			if code != exitOK || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			if stdout != tt.stdout {
				t.Errorf("stdout\n%q\nwant\n%q", stdout, tt.stdout)
			}
			got := srv.got()[before:]
			if len(got) != 1 || got[0].method != "POST" || got[0].path != tt.path || got[0].body != tt.body {
				t.Errorf("requests = %+v; want POST %s %s", got, tt.path, tt.body)
			}
		})
	}
}

func TestAdminHelp(t *testing.T) {
	common := []string{"--addr", "ROOST_ADDR", `default "127.0.0.1:8789"`, "--token", "ROOST_ADMIN_TOKEN", "-o, --output", `default "table"`, "--timeout", "Example"}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"status", "--help"}, common},
		{[]string{"members", "--help"}, common},
		{[]string{"shards", "list", "--help"}, append([]string{"marked with a *"}, common...)},
		{[]string{"shards", "move", "--help"}, append([]string{"--to", "--from", "--wait", "move SHARD --to NODE"}, common...)},
		{[]string{"shards", "transfer-leader", "--help"}, append([]string{"--to", "transfer-leader SHARD --to NODE"}, common...)},
		{[]string{"rebalance", "--help"}, append([]string{"--dry-run", "--max-concurrent", "(default 4)", "--wait", "exits 0 once"}, common...)},
		{[]string{"drain", "--help"}, append([]string{"drain NODE", "--max-concurrent", "--wait", "roost remove"}, common...)},
		{[]string{"remove", "--help"}, append([]string{"remove NODE", "drain it first"}, common...)},
		{[]string{"operation", "--help"}, append([]string{"operation [ID]", "--wait", "exits 0 once"}, common...)},
		{[]string{"shards"}, []string{"list", "move", "transfer-leader"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runAdmin(t, nil, tt.args...)
			if code != exitOK {
				t.Fatalf("exit %d; stderr %s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("help lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

func TestOperationStall(t *testing.T) {
	op := func(state, waiting string) apiOperation {
		var o apiOperation
		if err := json.Unmarshal([]byte(`{"id":"op-1","kind":"rebalance","state":"`+state+`","waiting":`+waiting+`}`), &o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	for _, tc := range []struct {
		desc string
		op   apiOperation
		want string
	}{
		{"nothing waited on", op("running", `[]`), ""},
		{"no list (an older server)", op("running", `null`), ""},
		{"a short wait", op("running", `[{"shard":5,"seconds":9,"reason":"it has no leader"}]`), ""},
		{"a long wait", op("running", `[{"shard":5,"seconds":42,"reason":"it has no leader"}]`), ", waiting over 40s on shard 5: it has no leader"},
		{"the longest, listed first", op("running", `[{"shard":7,"seconds":75,"reason":"its group has voters [n1]"},{"shard":2,"seconds":12,"reason":"x"}]`), ", waiting over 1m10s on shard 7: its group has voters [n1]"},
		{"an ended operation", op("failed", `[{"shard":5,"seconds":42,"reason":"it has no leader"}]`), ""},
	} {
		if got := tc.op.stall(); got != tc.want {
			t.Errorf("%s: stall() = %q, want %q", tc.desc, got, tc.want)
		}
	}
}

func TestActivateRequest(t *testing.T) {
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{"POST /v1/nodes/n3/activate": canned(200, `{"id":"n3","state":"active"}`)})
	code, stdout, stderr := runAdmin(t, nil, "activate", "n3", "--addr", srv.URL)
	if code != exitOK || stdout != "node n3: active\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if got := srv.got(); len(got) != 1 || got[0].method != "POST" || got[0].path != "/v1/nodes/n3/activate" {
		t.Errorf("requests = %+v", got)
	}
	if code, _, stderr := runAdmin(t, nil, "activate", "bad id!", "--addr", srv.URL); code != exitUsage || stderr == "" {
		t.Errorf("a malformed node id: exit %d, stderr %q; want a usage error", code, stderr)
	}
}

// moveStage words each stage of a move; a replica_lag of -1 (the replica
// did not answer) is not printed as a count of entries.
func TestMoveStage(t *testing.T) {
	m := apiMove{Shard: 3, From: "n1", To: "n4", Version: 7}
	base := apiShard{ID: 3, Version: 7, Replicas: []string{"n2", "n3", "n4"}, Leader: "n2", Voters: []string{"n1", "n2", "n3"}, NonVoters: []string{"n4"}}
	for _, tt := range []struct {
		name string
		edit func(*apiShard)
		want string
		done bool
	}{
		{"behind", func(s *apiShard) { s.ReplicaLag = map[string]int64{"n4": 12} }, "n4 is catching up as a non-voter, 12 entries behind", false},
		{"silent", func(s *apiShard) { s.ReplicaLag = map[string]int64{"n4": -1} }, "n4 is a non-voter that has not answered yet (its replica may still be starting; if this lasts, see 'roost members': is it down or unreachable?)", false},
		{"old version", func(s *apiShard) { s.Version = 6 }, "waiting for shard version 7 (this node has 6)", false},
		{"removing", func(s *apiShard) { s.Voters, s.NonVoters = []string{"n1", "n2", "n3", "n4"}, nil }, "n4 is a voter; removing n1", false},
		{"done", func(s *apiShard) { s.Voters, s.NonVoters = []string{"n2", "n3", "n4"}, nil }, "", true},
	} {
		s := base
		tt.edit(&s)
		got, done, err := moveStage(s, m)
		if err != nil || got != tt.want || done != tt.done {
			t.Errorf("%s: %q %v %v, want %q %v", tt.name, got, done, err, tt.want, tt.done)
		}
	}
}

// A value over the KV limit is refused by the CLI before it sends a byte
// (a third larger, in base64), with its size and the limit; before, it was
// uploaded whole and the node's 413 quoted the limit as if it were the
// value's size.
func TestKVPutRefusesAnOversizedValueBeforeSending(t *testing.T) {
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{"PUT /v1/kv/B/values/k": canned(200, `{}`)})
	file := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(file, make([]byte, durable.KVMaxValueBytes+1), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runAdmin(t, nil, "kv", "put", "k", "--file", file, "--binding", "B", "--addr", srv.addr())
	if code == exitOK || !strings.Contains(stderr, "over 26214400 bytes, the most a KV value may be") {
		t.Fatalf("kv put of a value over the limit: exit %d, %q", code, stderr)
	}
	if got := srv.got(); len(got) != 0 {
		t.Fatalf("the CLI sent %d request(s) for a value over the limit", len(got))
	}
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runAdmin(t, nil, "kv", "put", "k", "--file", file, "--binding", "B", "--addr", srv.addr()); code != exitOK || stdout != "put k (1 byte)\n" {
		t.Fatalf("kv put of one byte: exit %d, %q %q", code, stdout, stderr)
	}
}

// kv put sends --metadata as given: JSON's HTML escaping would change its
// bytes and count each <, > and & six times against its 1024-byte limit.
func TestKVPutSendsMetadataAsGiven(t *testing.T) {
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{"PUT /v1/kv/B/values/k": canned(200, `{}`)})
	const meta = `{"a":"<b>&"}`
	if code, _, stderr := runAdmin(t, nil, "kv", "put", "k", "v", "--metadata", meta, "--binding", "B", "--addr", srv.addr()); code != exitOK {
		t.Fatalf("kv put: exit %d: %s", code, stderr)
	}
	got := srv.got()
	if len(got) != 1 || !strings.Contains(got[0].body, `"metadata":`+meta) {
		t.Fatalf("sent %+v, want the metadata %s as given", got, meta)
	}
}

// roost shards locate asks GET /v1/objects/{binding} by name, or by ID
// with --id, and prints where the object lives.
func TestShardsLocate(t *testing.T) {
	const answer = `{"binding":"COUNTER","class":"Counter","id":"0a1b","name":"A","shard":7,"replicas":["n1","n2","n3"],"leader":"n2"}`
	var queries []string
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{"GET /v1/objects/COUNTER": func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		canned(200, answer)(w, r)
	}})
	code, stdout, stderr := runAdmin(t, nil, "shards", "locate", "A b", "--binding", "COUNTER", "--addr", srv.addr())
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"object    A\n", "id        0a1b\n", "class     Counter\n", "shard     7\n", "leader    n2\n", "replicas  n1,n2,n3\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("locate output lacks %q:\n%s", want, stdout)
		}
	}
	if code, _, stderr := runAdmin(t, nil, "shards", "locate", "0a1b", "--id", "--binding", "COUNTER", "--addr", srv.addr()); code != exitOK {
		t.Fatalf("locate --id: exit %d: %s", code, stderr)
	}
	if want := []string{"name=A+b", "id=0a1b"}; !slices.Equal(queries, want) {
		t.Errorf("queries %q, want %q", queries, want)
	}
	if code, _, stderr := runAdmin(t, nil, "shards", "locate", "A", "--addr", srv.addr()); code == exitOK || !strings.Contains(stderr, "--binding is required") {
		t.Errorf("locate without --binding: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runAdmin(t, nil, "shards", "locate", "", "--binding", "COUNTER", "--addr", srv.addr()); code != exitUsage || !strings.Contains(stderr, "NAME is empty") {
		t.Errorf("locate of an empty name: exit %d: %s, want a usage error", code, stderr)
	}
	if want := []string{"name=A+b", "id=0a1b"}; !slices.Equal(queries, want) {
		t.Errorf("queries %q after refusals, want %q: a refusal asked the node", queries, want)
	}
}

// kv put and kv delete name the key as kv list does: quoted when it holds
// what is not printable (it was printed raw, escape sequences included).
func TestKVPutAndDeleteQuoteUnprintableKeys(t *testing.T) {
	const key = "\x1b[2Jk\ney"
	srv := newFakeAdmin(t, map[string]http.HandlerFunc{
		"PUT /v1/kv/B/values/" + key:    canned(200, `{}`),
		"DELETE /v1/kv/B/values/" + key: canned(200, `{}`),
	})
	for _, args := range [][]string{{"kv", "put", key, "v"}, {"kv", "delete", key}} {
		code, stdout, stderr := runAdmin(t, nil, append(args, "--binding", "B", "--addr", srv.addr())...)
		if code != exitOK {
			t.Fatalf("%s: exit %d: %s", args[1], code, stderr)
		}
		if strings.ContainsAny(stdout, "\x1b") || !strings.Contains(stdout, strconv.Quote(key)) {
			t.Errorf("%s printed %q; want the key quoted", args[1], stdout)
		}
	}
}

package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
)

// syncBuffer is a bytes.Buffer that a running command and a test can share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runCLI runs the command line with captured output.
func runCLI(t *testing.T, app *durable.App, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = run(context.Background(), args, app, &out, &errOut)
	return code, out.String(), errOut.String()
}

// testApp is a counter app: /increment?name=X counts per name, /var?name=V
// answers the var V.
func testApp() *durable.App {
	counter := func(state *durable.State, env *durable.Env) durable.Object {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v, _, err := durable.GetJSON[int](state.Storage, "n")
			if err != nil {
				durable.WriteError(w, err)
				return
			}
			v++
			if err := durable.PutJSON(state.Storage, "n", v); err != nil {
				durable.WriteError(w, err)
				return
			}
			fmt.Fprint(w, v)
		})
	}
	return &durable.App{
		Name: "test-counter",
		Worker: func(w http.ResponseWriter, r *http.Request, env *durable.Env) {
			if r.URL.Path == "/var" {
				v, _ := env.Var(r.URL.Query().Get("name"))
				fmt.Fprint(w, v)
				return
			}
			ns, err := env.Namespace("COUNTER")
			if err != nil {
				durable.WriteError(w, err)
				return
			}
			resp, err := ns.Get(ns.IDFromName(r.URL.Query().Get("name"))).Fetch(r)
			if err != nil {
				durable.WriteError(w, err)
				return
			}
			defer resp.Body.Close()
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
		},
		Classes:  map[string]durable.Class{"Counter": counter},
		Bindings: []durable.Binding{{Name: "COUNTER", ClassName: "Counter"}},
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate" for "roost"`},
		{"unknown flag", []string{"dev", "--nope"}, "unknown flag: --nope"},
		{"bad flag value", []string{"bench", "-c", "many"}, `invalid argument "many" for "-c, --concurrency"`},
		{"extra argument", []string{"version", "extra"}, `unknown command "extra" for "roost version"`},
		// Every integer flag is read in base 10, as ROOST_* variables are
		// (pflag's own would take 0x10 as 16 and 010 as 8).
		{"hex concurrency", []string{"bench", "-c", "0x10"}, `invalid argument "0x10" for "-c, --concurrency" flag: not a whole number`},
		{"binary names", []string{"bench", "--names", "0b11"}, `invalid argument "0b11" for "--names" flag: not a whole number`},
		{"hex limit", []string{"kv", "list", "--binding", "B", "--limit", "0x10"}, `invalid argument "0x10" for "--limit" flag: not a whole number`},
		{"hex expiration", []string{"kv", "put", "k", "v", "--binding", "B", "--expiration", "0x7fffffff"}, `invalid argument "0x7fffffff" for "--expiration" flag: not a whole number`},
		{"hex days", []string{"certs", "ca", "--days", "0x10"}, `invalid argument "0x10" for "--days" flag: not a whole number`},
		{"hex max-concurrent", []string{"rebalance", "--max-concurrent", "0x2"}, `invalid argument "0x2" for "--max-concurrent" flag: not a whole number`},
		{"bad output format", []string{"bench", "-o", "xml"}, `--output must be "text" or "json", got "xml"`},
		{"bad bench settings", []string{"bench", "--names", "0"}, "--names must be at least 1, got 0"},
		{"node without an id", []string{"node", "--config", ""}, "no node id: give each node its own with --id, ROOST_ID or id in [node] of roost.toml"},
		{"node with an argument", []string{"node", "n1"}, `unknown command "n1" for "roost node"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, testApp(), tt.args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			if !strings.HasPrefix(stderr, "roost: ") || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "--help' for usage") {
				t.Errorf("stderr = %q; want roost: …%s… and a pointer to --help", stderr, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args    []string
		want    []string
		notWant []string
	}{
		{[]string{"--help"}, []string{"dev", "node", "bench", "version", "roost dev",
			"status", "members", "shards", "rebalance", "drain", "remove", "Operate a cluster"}, nil},
		{[]string{"dev", "--help"}, []string{"--data-dir", "--http", "--admin", "--config", "--shards", "--idle-timeout", "ROOST_HTTP", `default "127.0.0.1:8787"`, "Example"}, nil},
		{[]string{"node", "--help"}, []string{
			"--id", "--data-dir", "--http", "--admin", "--grpc", "--gossip", "--advertise", "--join", "--bootstrap-expect",
			"--shards", "--replicas", "--idle-timeout", "--config",
			"ROOST_ID", "ROOST_DATA_DIR", "ROOST_HTTP", "ROOST_ADMIN", "ROOST_GRPC", "ROOST_GOSSIP", "ROOST_ADVERTISE",
			"ROOST_JOIN (comma-separated)", "ROOST_BOOTSTRAP_EXPECT", "ROOST_SHARDS", "ROOST_REPLICAS", "ROOST_IDLE_TIMEOUT",
			"--dead-node-grace", "ROOST_DEAD_NODE_GRACE", "(default 30s)",
			`default "127.0.0.1:8787"`, `default "127.0.0.1:8789"`, `default "127.0.0.1:8790"`, `default "127.0.0.1:7946"`,
			`default ".roost"`, "(default 64)", "/readyz", "Example",
			"roost node --id n1 --data-dir d1 --http 127.0.0.1:8701 --admin 127.0.0.1:8711 --grpc 127.0.0.1:8721 --gossip 127.0.0.1:8731 --bootstrap-expect 3\n",
			"roost node --id n2 --data-dir d2 --http 127.0.0.1:8702 --admin 127.0.0.1:8712 --grpc 127.0.0.1:8722 --gossip 127.0.0.1:8732 --bootstrap-expect 3 --join 127.0.0.1:8731\n",
			"roost node --id n3 --data-dir d3 --http 127.0.0.1:8703 --admin 127.0.0.1:8713 --grpc 127.0.0.1:8723 --gossip 127.0.0.1:8733 --bootstrap-expect 3 --join 127.0.0.1:8731\n",
		}, nil},
		{[]string{"bench", "--help"}, []string{"--url", "-c, --concurrency", "--names", "-d, --duration", "--path", "--warmup", "--name-prefix", "-o, --output"}, nil},
		{[]string{"bench", "-help"}, []string{"--url"}, nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, testApp(), tt.args...)
			if code != exitOK {
				t.Fatalf("exit code %d; stderr %s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("help lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(stdout, w) {
					t.Errorf("help mentions %q, which is not built:\n%s", w, stdout)
				}
			}
		})
	}
}

func TestNormalizeArgs(t *testing.T) {
	root := newRootCommand(testApp(), &bytes.Buffer{}, &bytes.Buffer{})
	tests := []struct {
		in, want []string
	}{
		{[]string{"bench", "-url", "http://x"}, []string{"bench", "--url", "http://x"}},
		{[]string{"bench", "-url=http://x", "-names=5"}, []string{"bench", "--url=http://x", "--names=5"}},
		{[]string{"bench", "-names", "5", "-duration", "1s", "-warmup", "0s", "-path", "/p", "-name-prefix", "n"},
			[]string{"bench", "--names", "5", "--duration", "1s", "--warmup", "0s", "--path", "/p", "--name-prefix", "n"}},
		// Shorthands stay shorthands.
		{[]string{"bench", "-c", "8", "-d", "1s", "-o", "json", "-c8"}, []string{"bench", "-c", "8", "-d", "1s", "-o", "json", "-c8"}},
		// Already long, unknown, or after "--": untouched.
		{[]string{"bench", "--url", "x", "-bogus", "--", "-url"}, []string{"bench", "--url", "x", "-bogus", "--", "-url"}},
		// Only commands that opt in.
		{[]string{"dev", "-http", "x"}, []string{"dev", "-http", "x"}},
		{[]string{"-url"}, []string{"-url"}},
	}
	for _, tt := range tests {
		if got := normalizeArgs(root, tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("normalizeArgs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

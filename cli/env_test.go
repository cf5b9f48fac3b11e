package cli

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestCheckEnv(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []string // in the error, in order; none: no error
	}{
		{name: "nothing of roost's", environ: []string{"HOME=/root", "PATH=/bin", "ROOSTER=1"}},
		{name: "every setting's variable", environ: []string{"ROOST_ID=n1", "ROOST_DATA_DIR=d", "ROOST_HTTP=:1", "ROOST_ADMIN=:2",
			"ROOST_GRPC=:3", "ROOST_GOSSIP=:4", "ROOST_ADVERTISE=h", "ROOST_JOIN=a:1", "ROOST_BOOTSTRAP_EXPECT=3", "ROOST_SHARDS=8",
			"ROOST_REPLICAS=3", "ROOST_DEAD_NODE_GRACE=1m", "ROOST_TLS_CERT=c", "ROOST_TLS_KEY=k", "ROOST_TLS_CA=ca",
			"ROOST_IDLE_TIMEOUT=1m", "ROOST_GOSSIP_KEY=x"}},
		{name: "the operator commands' variables", environ: []string{"ROOST_ADDR=h:1", "ROOST_ADMIN_TOKEN=t"}},
		{name: "scripts', compose's and tests' variables", environ: []string{"ROOST_BIN=bin/roost", "ROOST_COMPOSE_APP_PORT=1",
			"ROOST_COMPOSE_ADMIN_PORT=2", "ROOST_BENCH_INFLIGHT=4", "ROOST_TEST_LEAK_CHILD=1"}},
		{name: "Kubernetes service links of roost-app", environ: []string{"ROOST_APP_SERVICE_HOST=10.0.0.9",
			"ROOST_APP_SERVICE_PORT=8787", "ROOST_APP_SERVICE_PORT_HTTP=8787", "ROOST_APP_PORT=tcp://10.0.0.9:8787",
			"ROOST_APP_PORT_8787_TCP=tcp://10.0.0.9:8787", "ROOST_APP_PORT_8787_TCP_PROTO=tcp",
			"ROOST_APP_PORT_8787_TCP_PORT=8787", "ROOST_APP_PORT_8787_TCP_ADDR=10.0.0.9"}},
		{name: "Kubernetes service links of a Service named roost", environ: []string{"ROOST_SERVICE_HOST=10.0.0.9",
			"ROOST_PORT=tcp://10.0.0.9:8787", "ROOST_PORT_7946_UDP_ADDR=10.0.0.9"}},
		{name: "misspelt, with the one meant", environ: []string{"ROOST_GOSIP_KEY=x"},
			want: []string{"unknown environment variable: ROOST_GOSIP_KEY (did you mean ROOST_GOSSIP_KEY?)"}},
		{name: "misspelt, empty", environ: []string{"ROOST_HTPP="},
			want: []string{"ROOST_HTPP (did you mean ROOST_HTTP?)"}},
		{name: "nothing close", environ: []string{"ROOST_FROBNICATE=1"},
			want: []string{"unknown environment variable: ROOST_FROBNICATE: "}},
		{name: "a port that is no service link", environ: []string{"ROOST_HTTP_PORT=9000"},
			want: []string{"ROOST_HTTP_PORT"}},
		{name: "several, sorted", environ: []string{"ROOST_REPLICA=3", "ROOST_ID=n1", "ROOST_ADMIN_TOKN=t"},
			want: []string{"ROOST_ADMIN_TOKN (did you mean ROOST_ADMIN_TOKEN?), ROOST_REPLICA (did you mean ROOST_REPLICAS?)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkEnv(tt.environ)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("checkEnv = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, errUnknownEnv) {
				t.Fatalf("checkEnv = %v, want errUnknownEnv", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestCheckEnvAcceptsTheRepository's ROOST_* names: every variable the
// docs, scripts, manifests and code name must be one roost lets through,
// or following them would stop roost from starting.
func TestCheckEnvAcceptsTheRepository(t *testing.T) {
	// A name, with the value or the "_*" (a prefix) that follows it if any.
	name := regexp.MustCompile(`ROOST_[A-Z0-9_]*[A-Z0-9](_\*|=[^\s,)'"]*)?`)
	seen := map[string]string{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && path != ".." {
				return filepath.SkipDir
			}
			return nil
		}
		// This package's tests and env.go name misspelt variables on purpose.
		if filepath.Dir(path) == filepath.Join("..", "cli") && (strings.HasSuffix(path, "_test.go") || d.Name() == "env.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b, 0) >= 0 {
			return nil // a binary (bin/roost names ROOST_TEST_ as a prefix)
		}
		for _, n := range name.FindAllString(string(b), -1) {
			if !strings.HasSuffix(n, "_*") {
				seen[n] = path
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) < 10 {
		t.Fatalf("found only %d ROOST_* names: is the walk wrong?", len(seen))
	}
	for n, path := range seen {
		kv := n
		if !strings.Contains(n, "=") {
			kv += "=x"
		}
		if err := checkEnv([]string{kv}); err != nil {
			t.Errorf("%s names %s, which roost refuses: %v", path, n, err)
		}
	}
}

// TestOperatorCommandRefusesUnknownEnv: a misspelt ROOST_ADDR would send
// the call to the default node, so the operator commands refuse it too.
func TestOperatorCommandRefusesUnknownEnv(t *testing.T) {
	t.Setenv("ROOST_ADRR", "10.0.0.5:8789")
	code, _, stderr := runCLI(t, testApp(), "status", "--addr", "127.0.0.1:1")
	if code != exitUsage {
		t.Errorf("exit code %d, want %d; stderr %q", code, exitUsage, stderr)
	}
	if want := "roost: unknown environment variable: ROOST_ADRR (did you mean ROOST_ADDR?)"; !strings.HasPrefix(stderr, want) {
		t.Errorf("stderr %q does not start with %q", stderr, want)
	}
}

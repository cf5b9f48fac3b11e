package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/node"
)

// inTempDir makes a fresh directory the working directory, with file
// (unless "") as its roost.toml and env set in the process environment, and
// returns the directory.
func inTempDir(t *testing.T, file string, env map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	if file != "" {
		writeFile(t, "roost.toml", file)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const fullFile = `
[node]
data_dir = "file-dir"
http = "127.0.0.1:1001"
admin = "127.0.0.1:1002"
[cluster]
shards = 8
[runtime]
idle_timeout = "5m"
`

func TestDevPrecedence(t *testing.T) {
	def := node.DefaultConfig()
	type settings struct {
		dataDir, http, admin string
		shards               int
		idle                 time.Duration
	}
	defaults := settings{def.DataDir, def.HTTPAddr, def.AdminAddr, def.Shards, def.IdleTimeout}
	fromFile := settings{"file-dir", "127.0.0.1:1001", "127.0.0.1:1002", 8, 5 * time.Minute}
	tests := []struct {
		name   string
		cwd    string // ./roost.toml, "" for none
		other  string // written to other.toml
		sub    string // written to sub/roost.toml
		args   []string
		env    map[string]string
		want   settings
		errHas string
	}{
		{name: "defaults", want: defaults},
		{name: "file in the working directory", cwd: fullFile, want: fromFile},
		{name: "--config names the file", other: fullFile, args: []string{"--config", "other.toml"}, want: fromFile},
		{
			name: "a relative data_dir is relative to the file",
			sub:  fullFile,
			args: []string{"--config", filepath.Join("sub", "roost.toml")},
			want: settings{filepath.Join("sub", "file-dir"), "127.0.0.1:1001", "127.0.0.1:1002", 8, 5 * time.Minute},
		},
		{
			name: "a relative --data-dir is relative to the working directory",
			sub:  fullFile,
			args: []string{"--config", filepath.Join("sub", "roost.toml"), "--data-dir", "mine"},
			want: settings{"mine", "127.0.0.1:1001", "127.0.0.1:1002", 8, 5 * time.Minute},
		},
		{name: `--config "" ignores ./roost.toml`, cwd: fullFile, args: []string{"--config", ""}, want: defaults},
		{
			name: "flags override the file, only those given",
			cwd:  fullFile,
			args: []string{"--http", "127.0.0.1:2001", "--shards", "32"},
			want: settings{"file-dir", "127.0.0.1:2001", "127.0.0.1:1002", 32, 5 * time.Minute},
		},
		{
			// The flag's value equals its default: it was still given, so it wins.
			name: "a flag set to its default still overrides the file",
			cwd:  fullFile,
			args: []string{"--http", def.HTTPAddr, "--idle-timeout", def.IdleTimeout.String()},
			want: settings{"file-dir", def.HTTPAddr, "127.0.0.1:1002", 8, def.IdleTimeout},
		},
		{
			name: "every flag",
			cwd:  fullFile,
			args: []string{"--data-dir", "flag-dir", "--http", "127.0.0.1:2001", "--admin", "127.0.0.1:2002", "--shards", "32", "--idle-timeout", "10s"},
			want: settings{"flag-dir", "127.0.0.1:2001", "127.0.0.1:2002", 32, 10 * time.Second},
		},
		{
			name: "env overrides flags and file",
			cwd:  fullFile,
			args: []string{"--data-dir", "flag-dir", "--http", "127.0.0.1:2001", "--admin", "127.0.0.1:2002", "--shards", "32", "--idle-timeout", "10s"},
			env: map[string]string{
				"ROOST_DATA_DIR": "env-dir", "ROOST_HTTP": "127.0.0.1:3001", "ROOST_ADMIN": "127.0.0.1:3002",
				"ROOST_SHARDS": "64", "ROOST_IDLE_TIMEOUT": "1s",
			},
			want: settings{"env-dir", "127.0.0.1:3001", "127.0.0.1:3002", 64, time.Second},
		},
		{
			name: "env overrides the file alone, empty env is unset",
			cwd:  fullFile,
			env:  map[string]string{"ROOST_HTTP": "127.0.0.1:3001", "ROOST_ADMIN": ""},
			want: settings{"file-dir", "127.0.0.1:3001", "127.0.0.1:1002", 8, 5 * time.Minute},
		},
		{
			name: "spaces around a variable's value are dropped",
			env:  map[string]string{"ROOST_HTTP": " 127.0.0.1:3001", "ROOST_DATA_DIR": "spacey ", "ROOST_SHARDS": "8 "},
			want: settings{"spacey", "127.0.0.1:3001", def.AdminAddr, 8, def.IdleTimeout},
		},
		// A blank variable is unset, so the flag's value is the one to blame.
		{name: "blank variable not named as a source", args: []string{"--shards", "5000"}, env: map[string]string{"ROOST_SHARDS": " "}, errHas: "got 5000 (from --shards)"},
		{name: "storage limit named with its file", cwd: "[storage]\nmax_entry_bytes = 999999999999\n", errHas: "the most one commit carries (from [storage] in roost.toml)"},
		{name: "bad ROOST_SHARDS", env: map[string]string{"ROOST_SHARDS": "lots"}, errHas: `ROOST_SHARDS="lots": not a whole number`},
		{name: "bad ROOST_IDLE_TIMEOUT", env: map[string]string{"ROOST_IDLE_TIMEOUT": "60"}, errHas: `ROOST_IDLE_TIMEOUT="60": not a duration`},
		{name: "env value checked like the rest", env: map[string]string{"ROOST_SHARDS": "0"}, errHas: "shards must be between 1 and 4096, got 0"},
		// As in the file: a signed port is not a port number, though net.Listen takes it.
		{name: "signed port in a flag", args: []string{"--http", "127.0.0.1:+80"}, errHas: `http address "127.0.0.1:+80": the port must be a number`},
		{name: "signed port in a variable", env: map[string]string{"ROOST_ADMIN": "127.0.0.1:-0"}, errHas: `admin address "127.0.0.1:-0": the port must be a number`},
		{name: "bad file", cwd: "[node]\nhttp_addr = \"x:1\"\n", errHas: `roost.toml: unknown key "node.http_addr"`},
		{name: "missing --config file", args: []string{"--config", "nope.toml"}, errHas: "nope.toml: no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			if tt.cwd != "" {
				writeFile(t, "roost.toml", tt.cwd)
			}
			if tt.other != "" {
				writeFile(t, "other.toml", tt.other)
			}
			if tt.sub != "" {
				if err := os.Mkdir("sub", 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join("sub", "roost.toml"), tt.sub)
			}
			env := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			d := newDev(testApp(), io.Discard, io.Discard, env)
			if err := d.cmd.ParseFlags(tt.args); err != nil {
				t.Fatalf("ParseFlags: %v", err)
			}
			cfg, _, err := d.resolve()
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("resolve error = %v; want one containing %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			got := settings{cfg.DataDir, cfg.HTTPAddr, cfg.AdminAddr, cfg.Shards, cfg.IdleTimeout}
			if got != tt.want {
				t.Errorf("resolved %+v\nwant     %+v", got, tt.want)
			}
		})
	}
}

func TestDevFileBindingsVarsLimits(t *testing.T) {
	t.Chdir(t.TempDir())
	writeFile(t, "roost.toml", `
[[durable_objects.bindings]]
name = "OTHER"
class_name = "Counter"
[vars]
GREETING = "hi"
N = 3
[storage]
max_batch_keys = 7
`)
	d := newDev(testApp(), io.Discard, io.Discard, func(string) (string, bool) { return "", false })
	cfg, _, err := d.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if want := []durable.Binding{{Name: "OTHER", ClassName: "Counter"}}; len(cfg.Bindings) != 1 || cfg.Bindings[0] != want[0] {
		t.Errorf("bindings %v, want %v", cfg.Bindings, want)
	}
	if cfg.Vars["GREETING"] != "hi" || cfg.Vars["N"] != "3" {
		t.Errorf("vars %v", cfg.Vars)
	}
	wantLimits := durable.DefaultLimits()
	wantLimits.MaxBatchKeys = 7
	if cfg.Limits != wantLimits {
		t.Errorf("limits %+v, want %+v", cfg.Limits, wantLimits)
	}

	// Without bindings in the file the node falls back to the app's.
	writeFile(t, "roost.toml", "name = \"x\"\n")
	cfg, _, err = d.resolve()
	if err != nil || len(cfg.Bindings) != 0 {
		t.Errorf("bindings %v, err %v; want none (the app's apply)", cfg.Bindings, err)
	}
}

func TestDevNotices(t *testing.T) {
	t.Chdir(t.TempDir())
	writeFile(t, "roost.toml", `
kv_namespaces = [{binding = "CACHE", id = "1"}]
[node]
join = ["a:1"]
[cluster]
replicas = 3
[[migrations]]
tag = "v1"
`)
	noEnv := func(string) (string, bool) { return "", false }
	d := newDev(testApp(), io.Discard, io.Discard, noEnv)
	cfg, file, err := d.resolve()
	if err != nil {
		t.Fatal(err)
	}
	// A cluster node's variables, exported in the shell, are named too
	// (empty ones count as unset, as everywhere).
	env := map[string]string{"ROOST_JOIN": "a:1", "ROOST_REPLICAS": "3", "ROOST_GOSSIP_KEY": "x", "ROOST_ID": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got := strings.Join(devNotices(file, lookup), "\n")
	for _, want := range []string{"[[migrations]]", "ignores node.join, cluster.replicas, ROOST_JOIN, ROOST_REPLICAS, ROOST_GOSSIP_KEY"} {
		if !strings.Contains(got, want) {
			t.Errorf("notices lack %q:\n%s", want, got)
		}
	}
	// KV namespaces are served: no notice, and the node gets the binding.
	if strings.Contains(got, "kv_namespaces") {
		t.Errorf("notices mention the KV namespaces, which are served:\n%s", got)
	}
	if len(cfg.KVNamespaces) != 1 || cfg.KVNamespaces[0] != (durable.KVBinding{Binding: "CACHE", ID: "1"}) {
		t.Errorf("KV namespaces %v, want CACHE → 1", cfg.KVNamespaces)
	}
	if n := devNotices(nil, noEnv); n != nil {
		t.Errorf("notices without a file: %v", n)
	}
}

// TestDevBadConfigExits runs the whole command line: one clear line on
// stderr and exit 1, before anything is started.
func TestDevBadConfigExits(t *testing.T) {
	tests := []struct {
		name string
		file string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown key", "[node]\nhttp_addr = \"x:1\"\n", nil, nil, `roost: roost.toml: unknown key "node.http_addr" (did you mean "node.http"?)`},
		{"syntax error", "[node\n", nil, nil, `roost: roost.toml:1:6: expected '.' or ']' to end table name`},
		{"bad value", "[cluster]\nshards = -1\n", nil, nil, `roost: roost.toml: cluster.shards must be at least 1, got -1`},
		{"class not in the binary", "[[durable_objects.bindings]]\nname = \"X\"\nclass_name = \"Nope\"\n", []string{"--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, nil,
			`roost: dev: invalid node configuration: durable object binding "X": class "Nope" is not registered in this binary`},
		{"bad flag value", "", []string{"--shards", "-4"}, nil, "roost: invalid node configuration: shards must be between 1 and 4096, got -4"},
		{"bad env", "", nil, map[string]string{"ROOST_HTTP": "nowhere"}, `roost: invalid node configuration: http address "nowhere"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := inTempDir(t, tt.file, tt.env)
			args := append([]string{"dev", "--data-dir", filepath.Join(dir, "data")}, tt.args...)
			code, stdout, stderr := runCLI(t, testApp(), args...)
			if code != exitFailure {
				t.Errorf("exit code %d, want %d", code, exitFailure)
			}
			if !strings.HasPrefix(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr = %q; want one line starting %q", stderr, tt.want)
			}
			if stdout != "" {
				t.Errorf("stdout = %q; want nothing", stdout)
			}
		})
	}
}

// A ./roost.toml that is a broken link is not taken for no file: the
// user put it there to be read (QA: roost dev ran on defaults).
func TestDevRefusesABrokenDefaultConfigLink(t *testing.T) {
	dir := inTempDir(t, "", nil)
	if err := os.Symlink("missing.toml", "roost.toml"); err != nil {
		t.Fatal(err)
	}
	// Bounded: taking the link for no file, the node would start and serve.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	code := run(ctx, []string{"dev", "--data-dir", filepath.Join(dir, "data"), "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, testApp(), &stdout, &stderr)
	if code != exitFailure || !strings.Contains(stderr.String(), "roost.toml") || !strings.Contains(stderr.String(), "no such file") {
		t.Fatalf("exit %d, stderr %q; want the broken roost.toml named", code, stderr.String())
	}
}

var bannerApp = regexp.MustCompile(`app\s+(http://\S+)/`)
var bannerAdmin = regexp.MustCompile(`admin\s+(http://\S+)/`)

// TestDevServes starts a real node through the command line, uses it, and
// stops it by cancelling the context as a signal would.
func TestDevServes(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeFile(t, "roost.toml", "name = \"from-file\"\n[vars]\nGREETING = \"hello\"\n[cluster]\nshards = 2\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--data-dir", filepath.Join(dir, "data"), "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"},
			testApp(), &stdout, &stderr)
	}()
	waitFor(t, "the banner", 30*time.Second, func() bool {
		select {
		case code := <-done:
			t.Fatalf("dev exited with %d before serving; stderr:\n%s", code, stderr.String())
		default:
		}
		return strings.Contains(stdout.String(), "Press Ctrl-C")
	})
	banner := stdout.String()
	for _, want := range []string{"serving from-file", "data dir  " + filepath.Join(dir, "data"), "bindings  COUNTER → Counter", "Press Ctrl-C to stop."} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	appURL, adminURL := bannerApp.FindStringSubmatch(banner), bannerAdmin.FindStringSubmatch(banner)
	if appURL == nil || adminURL == nil {
		t.Fatalf("no URLs in banner:\n%s", banner)
	}

	for i, want := range []string{"1", "2"} {
		if got := httpGet(t, appURL[1]+"/increment?name=a"); got != want {
			t.Errorf("increment %d = %q, want %q", i, got, want)
		}
	}
	if got := httpGet(t, appURL[1]+"/var?name=GREETING"); got != "hello" {
		t.Errorf("var from roost.toml = %q, want hello", got)
	}
	httpGet(t, adminURL[1]+"/healthz")

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit code %d after cancel; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop after cancel")
	}
}

func TestDevPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	t.Chdir(dir)
	code, _, stderr := runCLI(t, testApp(), "dev", "--data-dir", filepath.Join(dir, "data"), "--http", ln.Addr().String(), "--admin", "127.0.0.1:0")
	if code != exitFailure {
		t.Errorf("exit code %d, want %d", code, exitFailure)
	}
	last := lastLine(stderr)
	for _, want := range []string{"roost: dev: ", "address already in use", "--http"} {
		if !strings.Contains(last, want) {
			t.Errorf("last stderr line %q lacks %q", last, want)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b.String())
	}
	return b.String()
}

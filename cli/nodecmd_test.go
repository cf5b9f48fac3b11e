package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roostdb/roost/config"
	"github.com/roostdb/roost/node"
)

// resolveNode resolves `roost node args` in a fresh working directory
// holding roost.toml (if file is not "") with env as the environment.
func resolveNode(t *testing.T, file string, args []string, env map[string]string) (node.Config, *config.File, error) {
	t.Helper()
	inTempDir(t, file, nil)
	c := newNode(testApp(), io.Discard, io.Discard, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err := c.cmd.ParseFlags(args); err != nil {
		t.Fatalf("ParseFlags(%q): %v", args, err)
	}
	return c.resolve()
}

// TestNodePrecedence checks every setting from every combination of
// sources: the file loses to a flag, which loses to the environment.
func TestNodePrecedence(t *testing.T) {
	def := node.DefaultClusterConfig("")
	type source struct {
		file string   // the line in the file's table
		args []string // flags
		env  string   // the variable's value
	}
	tests := []struct {
		setting                     string // for the subtest name
		table, envName              string
		get                         func(node.Config) any
		def                         any
		file, flag, env             source
		wantFile, wantFlag, wantEnv any
	}{
		{
			setting: "id", table: "node", envName: "ROOST_ID", get: func(c node.Config) any { return c.NodeID },
			file: source{file: `id = "file-id"`}, flag: source{args: []string{"--id", "flag-id"}}, env: source{env: "env-id"},
			wantFile: "file-id", wantFlag: "flag-id", wantEnv: "env-id",
		},
		{
			setting: "data dir", table: "node", envName: "ROOST_DATA_DIR", get: func(c node.Config) any { return c.DataDir }, def: def.DataDir,
			file: source{file: `data_dir = "file-dir"`}, flag: source{args: []string{"--data-dir", "flag-dir"}}, env: source{env: "env-dir"},
			wantFile: "file-dir", wantFlag: "flag-dir", wantEnv: "env-dir",
		},
		{
			setting: "http", table: "node", envName: "ROOST_HTTP", get: func(c node.Config) any { return c.HTTPAddr }, def: def.HTTPAddr,
			file: source{file: `http = "127.0.0.1:1001"`}, flag: source{args: []string{"--http", "127.0.0.1:2001"}}, env: source{env: "127.0.0.1:3001"},
			wantFile: "127.0.0.1:1001", wantFlag: "127.0.0.1:2001", wantEnv: "127.0.0.1:3001",
		},
		{
			setting: "admin", table: "node", envName: "ROOST_ADMIN", get: func(c node.Config) any { return c.AdminAddr }, def: def.AdminAddr,
			file: source{file: `admin = "127.0.0.1:1002"`}, flag: source{args: []string{"--admin", "127.0.0.1:2002"}}, env: source{env: "127.0.0.1:3002"},
			wantFile: "127.0.0.1:1002", wantFlag: "127.0.0.1:2002", wantEnv: "127.0.0.1:3002",
		},
		{
			setting: "grpc", table: "node", envName: "ROOST_GRPC", get: func(c node.Config) any { return c.GRPCAddr }, def: def.GRPCAddr,
			file: source{file: `grpc = "127.0.0.1:1003"`}, flag: source{args: []string{"--grpc", "127.0.0.1:2003"}}, env: source{env: "127.0.0.1:3003"},
			wantFile: "127.0.0.1:1003", wantFlag: "127.0.0.1:2003", wantEnv: "127.0.0.1:3003",
		},
		{
			setting: "gossip", table: "node", envName: "ROOST_GOSSIP", get: func(c node.Config) any { return c.GossipAddr }, def: def.GossipAddr,
			file: source{file: `gossip = "127.0.0.1:1004"`}, flag: source{args: []string{"--gossip", "127.0.0.1:2004"}}, env: source{env: "127.0.0.1:3004"},
			wantFile: "127.0.0.1:1004", wantFlag: "127.0.0.1:2004", wantEnv: "127.0.0.1:3004",
		},
		{
			setting: "advertise", table: "node", envName: "ROOST_ADVERTISE", get: func(c node.Config) any { return c.Advertise }, def: "",
			file: source{file: `advertise = "10.0.0.1"`}, flag: source{args: []string{"--advertise", "roost-2.internal"}}, env: source{env: "fd00::3"},
			wantFile: "10.0.0.1", wantFlag: "roost-2.internal", wantEnv: "fd00::3",
		},
		{
			setting: "join", table: "node", envName: "ROOST_JOIN", get: func(c node.Config) any { return c.Join }, def: []string(nil),
			file: source{file: `join = ["file-1:7946", "file-2:7946"]`}, flag: source{args: []string{"--join", "flag-1:7946,flag-2:7946", "--join", "flag-3:7946"}}, env: source{env: "env-1:7946,env-2:7946"},
			wantFile: []string{"file-1:7946", "file-2:7946"}, wantFlag: []string{"flag-1:7946", "flag-2:7946", "flag-3:7946"}, wantEnv: []string{"env-1:7946", "env-2:7946"},
		},
		{
			setting: "bootstrap expect", table: "cluster", envName: "ROOST_BOOTSTRAP_EXPECT", get: func(c node.Config) any { return c.BootstrapExpect }, def: def.BootstrapExpect,
			file: source{file: `bootstrap_expect = 5`}, flag: source{args: []string{"--bootstrap-expect", "4"}}, env: source{env: "7"},
			wantFile: 5, wantFlag: 4, wantEnv: 7,
		},
		{
			setting: "shards", table: "cluster", envName: "ROOST_SHARDS", get: func(c node.Config) any { return c.Shards }, def: def.Shards,
			file: source{file: `shards = 8`}, flag: source{args: []string{"--shards", "32"}}, env: source{env: "128"},
			wantFile: 8, wantFlag: 32, wantEnv: 128,
		},
		{
			setting: "replicas", table: "cluster", envName: "ROOST_REPLICAS", get: func(c node.Config) any { return c.Replicas }, def: def.Replicas,
			file: source{file: `replicas = 2`}, flag: source{args: []string{"--replicas", "1"}}, env: source{env: "3"},
			wantFile: 2, wantFlag: 1, wantEnv: 3,
		},
		{
			setting: "idle timeout", table: "runtime", envName: "ROOST_IDLE_TIMEOUT", get: func(c node.Config) any { return c.IdleTimeout }, def: def.IdleTimeout,
			file: source{file: `idle_timeout = "5m"`}, flag: source{args: []string{"--idle-timeout", "10s"}}, env: source{env: "1s"},
			wantFile: 5 * time.Minute, wantFlag: 10 * time.Second, wantEnv: time.Second,
		},
		{
			setting: "dead node grace", table: "cluster", envName: "ROOST_DEAD_NODE_GRACE", get: func(c node.Config) any { return c.DeadNodeGrace }, def: def.DeadNodeGrace,
			file: source{file: `dead_node_grace = "5m"`}, flag: source{args: []string{"--dead-node-grace", "10s"}}, env: source{env: "0s"},
			wantFile: 5 * time.Minute, wantFlag: 10 * time.Second, wantEnv: time.Duration(0),
		},
		{
			// 0 in the file turns healing off, where an unset key means the default.
			setting: "dead node grace off in the file", table: "cluster", envName: "ROOST_DEAD_NODE_GRACE", get: func(c node.Config) any { return c.DeadNodeGrace }, def: def.DeadNodeGrace,
			file: source{file: `dead_node_grace = "0s"`}, flag: source{args: []string{"--dead-node-grace", "10s"}}, env: source{env: "1m"},
			wantFile: time.Duration(0), wantFlag: 10 * time.Second, wantEnv: time.Minute,
		},
	}
	for _, tt := range tests {
		// Every combination of the three sources; the last one present wins.
		for mask := 0; mask < 8; mask++ {
			inFile, inFlag, inEnv := mask&1 != 0, mask&2 != 0, mask&4 != 0
			var names []string
			for i, n := range []string{"file", "flag", "env"} {
				if mask&(1<<i) != 0 {
					names = append(names, n)
				}
			}
			if len(names) == 0 {
				names = []string{"default"}
			}
			t.Run(tt.setting+"/"+strings.Join(names, "<"), func(t *testing.T) {
				want := tt.def
				file := "[" + tt.table + "]\n"
				var args []string
				env := map[string]string{}
				if tt.setting != "id" {
					args = []string{"--id", "n1"} // the one required setting
				}
				if inFile {
					file += tt.file.file + "\n"
					want = tt.wantFile
				}
				if inFlag {
					args = append(args, tt.flag.args...)
					want = tt.wantFlag
				}
				if inEnv {
					env[tt.envName] = tt.env.env
					want = tt.wantEnv
				}
				cfg, _, err := resolveNode(t, file, args, env)
				if tt.setting == "id" && mask == 0 {
					if err == nil || !strings.Contains(err.Error(), "no node id") {
						t.Fatalf("resolve without an id: err = %v, want one saying there is no node id", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("resolve: %v", err)
				}
				if got := tt.get(cfg); !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v, want %#v", tt.setting, got, want)
				}
			})
		}
	}
}

func TestNodeConfigBuiltFromClusterDefaults(t *testing.T) {
	cfg, _, err := resolveNode(t, "", []string{"--id", "n7"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := node.DefaultClusterConfig("n7"); !reflect.DeepEqual(cfg, want) {
		t.Errorf("resolved  %+v\nwant      %+v", cfg, want)
	}
	if !cfg.Cluster() {
		t.Error("the resolved config is not in cluster mode")
	}

	// The id may come from the file or the environment alone.
	for _, src := range []struct {
		file string
		env  map[string]string
	}{
		{file: "[node]\nid = \"from-file\"\n"},
		{env: map[string]string{"ROOST_ID": "from-env"}},
	} {
		cfg, _, err := resolveNode(t, src.file, nil, src.env)
		if err != nil || cfg.NodeID == "" || cfg.Shards != node.DefaultClusterConfig("").Shards {
			t.Errorf("file %q env %v: id %q shards %d err %v", src.file, src.env, cfg.NodeID, cfg.Shards, err)
		}
	}

	// A flag given at its default value still beats the file.
	cfg, _, err = resolveNode(t, "[cluster]\nshards = 8\n[node]\ngrpc = \"127.0.0.1:1\"\n",
		[]string{"--id", "n1", "--shards", "64", "--grpc", "127.0.0.1:8790"}, nil)
	if err != nil || cfg.Shards != 64 || cfg.GRPCAddr != "127.0.0.1:8790" {
		t.Errorf("shards %d grpc %q err %v; want the flags' 64 and 127.0.0.1:8790", cfg.Shards, cfg.GRPCAddr, err)
	}
	// --advertise "" is the listeners' own host, as its usage says: it
	// undoes the file's advertise.
	cfg, _, err = resolveNode(t, "[node]\nadvertise = \"10.0.0.1\"\n", []string{"--id", "n1", "--advertise", ""}, nil)
	if err != nil || cfg.Advertise != "" {
		t.Errorf("--advertise \"\": advertise %q err %v; want none", cfg.Advertise, err)
	}
}

func TestNodeJoinParsing(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		args   []string
		env    string // ROOST_JOIN; "-" for unset
		want   []string
		errHas string
	}{
		{name: "none", env: "-", want: nil},
		{name: "one", env: "a:1", want: []string{"a:1"}},
		{name: "several", env: "a:1,b.example:2,10.0.0.3:7946", want: []string{"a:1", "b.example:2", "10.0.0.3:7946"}},
		{name: "spaces and stray commas", env: " a:1 , b:2 ,", want: []string{"a:1", "b:2"}},
		{name: "commas alone", env: " , ", errHas: `ROOST_JOIN=" , ": no entry in the list`},
		{name: "IPv6", env: "[fd00::1]:7946,[fd00::2]:7946", want: []string{"[fd00::1]:7946", "[fd00::2]:7946"}},
		{name: "empty is unset", file: "[node]\njoin = [\"f:1\"]\n", env: "", want: []string{"f:1"}},
		{name: "blank is unset", file: "[node]\njoin = [\"f:1\"]\n", env: "  ", want: []string{"f:1"}},
		{name: "replaces the file's list", file: "[node]\njoin = [\"f:1\", \"f:2\"]\n", env: "e:1", want: []string{"e:1"}},
		{name: "replaces the flags", args: []string{"--join", "g:1"}, env: "e:1", want: []string{"e:1"}},
		{name: "flag repeated", args: []string{"--join", "a:1", "--join", "b:2"}, env: "-", want: []string{"a:1", "b:2"}},
		{name: "flag with commas and spaces", args: []string{"--join", "a:1, b:2"}, env: "-", want: []string{"a:1", "b:2"}},
		{name: "flag of commas alone", args: []string{"--join", ",,"}, env: "-", errHas: `--join ",,": no entry in the list`},
		{name: `--join "" joins nobody`, file: "[node]\njoin = [\"f:1\"]\n", args: []string{"--join", ""}, env: "-", want: []string{}},
		{name: "no port", env: "a:1,b", errHas: `ROOST_JOIN="a:1,b": "b" is not host:port`},
		{name: "no host", env: ":7946", errHas: `ROOST_JOIN=":7946": ":7946": other nodes connect to this address, so it needs a host`},
		{name: "port 0", env: "a:0", errHas: `ROOST_JOIN="a:0": "a:0": other nodes connect to this address`},
		{name: "port not a number", env: "a:gossip", errHas: `ROOST_JOIN="a:gossip": "a:gossip": port "gossip" is not a number`},
		{name: "bad flag entry", args: []string{"--join", "a:1,nowhere"}, env: "-", errHas: `--join "nowhere": "nowhere" is not host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			if tt.env != "-" {
				env["ROOST_JOIN"] = tt.env
			}
			cfg, _, err := resolveNode(t, tt.file, append([]string{"--id", "n1"}, tt.args...), env)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v; want one containing %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Join, tt.want) {
				t.Errorf("join = %#v, want %#v", cfg.Join, tt.want)
			}
		})
	}
}

// runNodeCLI runs the command line, cancelling it after a while so that a
// configuration wrongly accepted fails the test instead of serving forever.
func runNodeCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	code = run(ctx, args, testApp(), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestNodeBadConfigExits runs the whole command line: bad values give one
// clear line on stderr and exit 1, before anything is started; a missing
// id is a usage error (exit 2).
func TestNodeBadConfigExits(t *testing.T) {
	tests := []struct {
		name string
		file string
		args []string
		env  map[string]string
		code int
		want []string // all in the first line of stderr
	}{
		{name: "bootstrap-expect 0", args: []string{"--bootstrap-expect", "0"}, code: exitFailure,
			want: []string{"roost: invalid node configuration: ", "bootstrap-expect must be at least 1, got 0"}},
		{name: "replicas above bootstrap-expect", args: []string{"--bootstrap-expect", "2", "--replicas", "3"}, code: exitFailure,
			want: []string{"roost: invalid node configuration: ", "replicas (3) cannot exceed bootstrap-expect (2)"}},
		{name: "replicas above bootstrap-expect by env", env: map[string]string{"ROOST_REPLICAS": "5"}, code: exitFailure,
			want: []string{"roost: invalid node configuration: ", "replicas (5) cannot exceed bootstrap-expect (3)"}},
		{name: "bad grpc address", args: []string{"--grpc", "nowhere"}, code: exitFailure,
			want: []string{"roost: invalid node configuration: ", `grpc address "nowhere"`}},
		{name: "bad gossip address by env", env: map[string]string{"ROOST_GOSSIP": "127.0.0.1"}, code: exitFailure,
			want: []string{"roost: invalid node configuration: ", `gossip address "127.0.0.1"`}},
		{name: "bad join address", args: []string{"--join", "seed"}, code: exitFailure,
			want: []string{`roost: --join "seed": "seed" is not host:port`}},
		{name: "bad ROOST_JOIN", env: map[string]string{"ROOST_JOIN": "a:1,b:"}, code: exitFailure,
			want: []string{`roost: ROOST_JOIN="a:1,b:": "b:": port "" is not a number`}},
		{name: "advertise with a port", args: []string{"--advertise", "10.0.0.1:8790"}, code: exitFailure,
			want: []string{`roost: --advertise "10.0.0.1:8790": "10.0.0.1:8790": give the host alone, without a port`}},
		{name: "advertise every interface", env: map[string]string{"ROOST_ADVERTISE": "0.0.0.0"}, code: exitFailure,
			want: []string{`roost: ROOST_ADVERTISE="0.0.0.0": "0.0.0.0" means every interface`}},
		{name: "bad ROOST_BOOTSTRAP_EXPECT", env: map[string]string{"ROOST_BOOTSTRAP_EXPECT": "three"}, code: exitFailure,
			want: []string{`roost: ROOST_BOOTSTRAP_EXPECT="three": not a whole number`}},
		{name: "bad node id", args: []string{"--id", "Node 1"}, code: exitFailure,
			want: []string{"roost: invalid node configuration: ", `node id "Node 1"`}},
		{name: "bad value in the file", file: "[cluster]\nreplicas = 0\n", code: exitFailure,
			want: []string{"roost: roost.toml: cluster.replicas must be at least 1"}},
		{name: "replicas above bootstrap-expect in the file", file: "[cluster]\nbootstrap_expect = 1\n", code: exitFailure,
			want: []string{"roost: invalid node configuration: ", "replicas (3) cannot exceed bootstrap-expect (1)"}},
		{name: "half a TLS configuration", args: []string{"--tls-cert", "n1.crt", "--tls-ca", "ca.crt"}, code: exitFailure,
			want: []string{"roost: invalid node configuration: ", "TLS needs all of tls cert, tls key and tls ca, or none"}},
		{name: "missing TLS files", args: []string{"--tls-cert", "nope.crt", "--tls-key", "nope.key", "--tls-ca", "ca.crt"}, code: exitFailure,
			want: []string{"roost: node: invalid TLS files: tls cert: ", "nope.crt", "no such file"}},
		{name: "bad ROOST_GOSSIP_KEY", env: map[string]string{"ROOST_GOSSIP_KEY": "c2hvcnQ="}, code: exitFailure,
			want: []string{"roost: ROOST_GOSSIP_KEY: the gossip key is 5 bytes; it must be 16, 24 or 32"}},
		{name: "missing id", args: []string{}, code: exitUsage,
			want: []string{"roost: no node id: give each node its own with --id, ROOST_ID or id in [node] of roost.toml"}},
		{name: "empty ROOST_ID is no id", env: map[string]string{"ROOST_ID": ""}, code: exitUsage,
			want: []string{"roost: no node id"}},
		{name: "misspelt variable", env: map[string]string{"ROOST_GOSIP_KEY": "c2hvcnQ="}, code: exitUsage,
			want: []string{"roost: unknown environment variable: ROOST_GOSIP_KEY (did you mean ROOST_GOSSIP_KEY?)"}},
		{name: "unknown variable", env: map[string]string{"ROOST_FROBNICATE": "1"}, code: exitUsage,
			want: []string{"roost: unknown environment variable: ROOST_FROBNICATE: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := inTempDir(t, tt.file, tt.env)
			args := []string{"node", "--data-dir", filepath.Join(dir, "data"),
				"--http", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--gossip", "127.0.0.1:0"}
			if tt.code != exitUsage {
				args = append(args, "--id", "n1")
			}
			code, stdout, stderr := runNodeCLI(t, append(args, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr %q", code, tt.code, stderr)
			}
			first, _, _ := strings.Cut(stderr, "\n")
			for _, w := range tt.want {
				if !strings.Contains(first, w) {
					t.Errorf("stderr's first line %q lacks %q", first, w)
				}
			}
			wantLines := 1
			if tt.code == exitUsage {
				wantLines = 2 // and the pointer to --help
			}
			if n := strings.Count(stderr, "\n"); n != wantLines {
				t.Errorf("stderr has %d lines, want %d: %q", n, wantLines, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q; want nothing", stdout)
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the data dir was created (err %v): the node was started", err)
			}
		})
	}
}

// TestNodeHelpExamples resolves the command lines --help shows, so that
// the examples keep working.
func TestNodeHelpExamples(t *testing.T) {
	c := newNode(testApp(), io.Discard, io.Discard, func(string) (string, bool) { return "", false })
	var lines []string
	for _, l := range strings.Split(c.cmd.Example, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "roost node ") {
			lines = append(lines, l)
		}
	}
	if len(lines) < 4 {
		t.Fatalf("found %d example command lines, want the three nodes and the environment one:\n%s", len(lines), c.cmd.Example)
	}
	ids := map[string]bool{}
	for _, l := range lines {
		t.Run(l, func(t *testing.T) {
			env := map[string]string{}
			if !strings.Contains(l, "--id") { // the environment example
				env = map[string]string{"ROOST_ID": "n2", "ROOST_ADVERTISE": "10.0.0.2", "ROOST_JOIN": "10.0.0.1:7946,10.0.0.3:7946"}
			}
			cfg, _, err := resolveNode(t, "", strings.Fields(l)[2:], env)
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			if ids[cfg.NodeID+"|"+cfg.DataDir] {
				t.Errorf("two examples share id and data dir %s, %s", cfg.NodeID, cfg.DataDir)
			}
			ids[cfg.NodeID+"|"+cfg.DataDir] = true
			if cfg.NodeID != "n1" && len(cfg.Join) == 0 {
				t.Errorf("node %s joins nobody", cfg.NodeID)
			}
		})
	}
}

func TestNodeBanner(t *testing.T) {
	cfg := node.DefaultClusterConfig("n2")
	cfg.DataDir = filepath.Join(t.TempDir(), "d2")
	cfg.GRPCAddr, cfg.GossipAddr = "127.0.0.1:8722", "127.0.0.1:8732"
	cfg.Join = []string{"127.0.0.1:8731", "127.0.0.1:8733"}
	cfg.BootstrapExpect, cfg.Replicas = 5, 3
	var b bytes.Buffer
	writeNodeBanner(&b, cfg, "counter", "127.0.0.1:8702", "127.0.0.1:8712", "COUNTER → Counter", "")
	got := b.String()
	for _, want := range []string{
		"roost node n2: serving counter\n",
		"  app       http://127.0.0.1:8702/\n",
		"  admin     http://127.0.0.1:8712/",
		"  grpc      127.0.0.1:8722\n",
		"  gossip    127.0.0.1:8732\n",
		"  advertise (the listeners' hosts)\n",
		"  join      127.0.0.1:8731, 127.0.0.1:8733\n",
		"  cluster   shards 64; bootstrap-expect 5 and replicas 3 if a new cluster forms\n",
		"  security  grpc plaintext, gossip unencrypted; app and admin listeners plaintext HTTP\n",
		"  data dir  " + cfg.DataDir + "\n",
		"  bindings  COUNTER → Counter\n",
		"Waiting for the cluster to form (a new one forms once 5 nodes have met)",
		"http://127.0.0.1:8712/readyz answers 200 once this node can serve",
		"Press Ctrl-C to stop.\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("banner lacks %q:\n%s", want, got)
		}
	}

	cfg.Advertise, cfg.Join = "10.0.0.2", nil
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile, cfg.GossipKey = "n2.crt", "n2.key", "certs/ca.crt", make([]byte, 32)
	b.Reset()
	writeNodeBanner(&b, cfg, "counter", "127.0.0.1:8702", "127.0.0.1:8712", "(none)", "5f0c1a2b")
	// A restarted node without --join reaches the cluster through its map,
	// not as the node others join (found by QA).
	for _, want := range []string{"  advertise 10.0.0.2\n", "  join      (none: the cluster's nodes are reached through the map in the data dir)\n",
		"Rejoining cluster 5f0c1a2b with the state in the data dir;",
		"  cluster   shards 64 (the cluster's replica count rules)\n",
		"  security  grpc mutual TLS (CA certs/ca.crt), gossip AES-256-GCM; app and admin listeners plaintext HTTP\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}

	cfg.BootstrapExpect = 1
	b.Reset()
	writeNodeBanner(&b, cfg, "counter", "127.0.0.1:8702", "127.0.0.1:8712", "(none)", "")
	for _, want := range []string{"Forming a cluster of this node alone (--bootstrap-expect 1);", "  join      (none: other nodes join this one)\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}
}

func TestNodeNotices(t *testing.T) {
	file := &config.File{
		Notices:      []string{"[[migrations]] (1 entry) ignored"},
		KVNamespaces: []config.KVNamespace{{Binding: "CACHE", ID: "1"}},
	}
	tests := []struct {
		name      string
		grpc      string
		advertise string
		file      *config.File
		want      []string
	}{
		{name: "nothing to say", grpc: "127.0.0.1:8790"},
		{name: "from the file", grpc: "127.0.0.1:8790", file: file,
			want: []string{"[[migrations]] (1 entry) ignored"}},
		{name: "every interface, no advertise", grpc: "0.0.0.0:8790",
			want: []string{`grpc address "0.0.0.0:8790" is every interface, which other nodes cannot dial: set --advertise (ROOST_ADVERTISE) to the host they should use`}},
		{name: "no host, no advertise", grpc: ":8790",
			want: []string{`grpc address ":8790" is every interface`}},
		{name: "IPv6 every interface", grpc: "[::]:8790",
			want: []string{`grpc address "[::]:8790" is every interface`}},
		{name: "every interface, advertised", grpc: "0.0.0.0:8790", advertise: "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := node.DefaultClusterConfig("n1")
			cfg.GRPCAddr, cfg.Advertise = tt.grpc, tt.advertise
			got := nodeNotices(cfg, tt.file)
			if len(got) != len(tt.want) {
				t.Fatalf("notices %q, want %d like %q", got, len(tt.want), tt.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("notice %d = %q, want it to start %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestStartHints(t *testing.T) {
	inUse := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	tests := []struct {
		name  string
		h     hints
		err   error
		wants string
	}{
		{"node, port in use", nodeHints, fmt.Errorf("app listener: %w", inUse), "--grpc and --gossip"},
		{"node, port in use as text only", nodeHints, errors.New("gossip: failed to start TCP listener on \"127.0.0.1\" port 7946: listen tcp 127.0.0.1:7946: bind: address already in use"), "--grpc and --gossip"},
		{"node, data dir of another node", nodeHints, fmt.Errorf("%w: d1 belongs to node \"n1\", not \"n2\"", node.ErrDataDirMismatch), "give every node a data dir of its own"},
		{"node, data dir locked", nodeHints, fmt.Errorf("opening storage: %w", syscall.EWOULDBLOCK), "give every node its own with --data-dir"},
		{"dev, port in use", devHints, inUse, "is another roost dev running?"},
		{"dev, data dir of a cluster node", devHints, fmt.Errorf("%w: d1 belongs to a cluster node; roost dev needs a data dir of its own", node.ErrDataDirMismatch), "give roost dev a data dir of its own with --data-dir"},
		{"node, another id key", nodeHints, fmt.Errorf("%w: joining the cluster through [a:1]: it derives object IDs with another id key", node.ErrIDKeyMismatch), "set [runtime] id_key or ROOST_ID_KEY to the key"},
		{"dev, another id key", devHints, fmt.Errorf("%w: d1 was created with another id key", node.ErrIDKeyMismatch), "set [runtime] id_key or ROOST_ID_KEY to the key"},
		{"no hint", nodeHints, errors.New("disk full"), ""},
		// These say what to do themselves; "give every node a data dir of
		// its own" sent an operator whose store was lost the wrong way.
		{"node, store lost", nodeHints, fmt.Errorf("%w: d1/node.json says node n1 is a member of cluster c, but its store (pebble/) is gone", node.ErrNodeStateLost), ""},
		{"node, storage stalled", nodeHints, fmt.Errorf("storage in d1: %w: every write has waited 10s", node.ErrStorageStalled), "free space on the data dir's disk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.h.of(tt.err)
			if tt.wants == "" && got != "" || !strings.Contains(got, tt.wants) {
				t.Errorf("hint %q, want one containing %q", got, tt.wants)
			}
		})
	}
}

// TestNodeIntFlagsAreDecimal: a number means the same from a flag as from
// its variable (and the file, whose TOML has no leading zeros): pflag's
// own int flags read 010 as octal 8 and accept 0x10, so --shards 010 made
// 8 shards where ROOST_SHARDS=010 makes 10, for a count fixed for good.
func TestNodeIntFlagsAreDecimal(t *testing.T) {
	flagCfg, _, err := resolveNode(t, "", []string{"--id", "n1", "--shards", "010", "--bootstrap-expect", "05", "--replicas", "03"}, nil)
	if err != nil {
		t.Fatalf("resolve with flags: %v", err)
	}
	envCfg, _, err := resolveNode(t, "", []string{"--id", "n1"},
		map[string]string{"ROOST_SHARDS": "010", "ROOST_BOOTSTRAP_EXPECT": "05", "ROOST_REPLICAS": "03"})
	if err != nil {
		t.Fatalf("resolve with variables: %v", err)
	}
	for _, c := range []struct {
		name      string
		flag, env int
		want      int
	}{
		{"shards", flagCfg.Shards, envCfg.Shards, 10},
		{"bootstrap-expect", flagCfg.BootstrapExpect, envCfg.BootstrapExpect, 5},
		{"replicas", flagCfg.Replicas, envCfg.Replicas, 3},
	} {
		if c.flag != c.want || c.env != c.want {
			t.Errorf("%s: flag gives %d, variable %d; want %d from both", c.name, c.flag, c.env, c.want)
		}
	}
	// What the variable refuses, the flag refuses.
	for _, arg := range []string{"0x10", "0b11", "1_0"} {
		c := newNode(testApp(), io.Discard, io.Discard, func(string) (string, bool) { return "", false })
		err := c.cmd.ParseFlags([]string{"--shards", arg})
		if err == nil || !strings.Contains(err.Error(), `invalid argument "`+arg+`" for "--shards" flag`) {
			t.Errorf("--shards %s: ParseFlags error = %v; want one naming the flag", arg, err)
		}
	}
}

// TestInvalidConfigNamesItsSource: a value node.Config.Validate refuses is
// named with where it came from, the variable, the flag or the file; the
// message alone ("replicas must be between 1 and 7, got 9") sent the user
// to a --replicas 2 in sight while an old ROOST_REPLICAS=9 won over it.
func TestInvalidConfigNamesItsSource(t *testing.T) {
	for _, tt := range []struct {
		name, file string
		args       []string
		env        map[string]string
		want       string
	}{
		{name: "variable over a flag", args: []string{"--replicas", "2"}, env: map[string]string{"ROOST_REPLICAS": "9"},
			want: "replicas must be between 1 and 7, got 9 (from ROOST_REPLICAS)"},
		{name: "flag", args: []string{"--shards", "0"}, want: "shards must be between 1 and 4096, got 0 (from --shards)"},
		{name: "file", file: "[cluster]\nshards = 5000\n", want: "shards must be between 1 and 4096, got 5000 (from cluster.shards in roost.toml)"},
		{name: "two settings that clash", args: []string{"--bootstrap-expect", "2"}, env: map[string]string{"ROOST_REPLICAS": "4"},
			want: "replicas (4) cannot exceed bootstrap-expect (2): the first nodes must hold every replica (from --bootstrap-expect, ROOST_REPLICAS)"},
		{name: "one listener's address for two", args: []string{"--http", "127.0.0.1:19001", "--admin", "127.0.0.1:19001"},
			want: "http and admin both listen on 127.0.0.1:19001; give each its own address (from --http, --admin)"},
		{name: "a default in the clash is not named", args: []string{"--bootstrap-expect", "1"},
			want: "replicas (3) cannot exceed bootstrap-expect (1): the first nodes must hold every replica (from --bootstrap-expect)"},
		// Replicas back to its default (3) makes another error, which
		// comes first; it is not a source of the TLS one.
		{name: "a setting whose default makes another error is not named", file: "[cluster]\nreplicas = 1\nbootstrap_expect = 1\n", env: map[string]string{"ROOST_TLS_CERT": "/nonexistent"},
			want: "TLS needs all of tls cert, tls key and tls ca, or none: tls cert set but tls key, tls ca not (from ROOST_TLS_CERT)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := resolveNode(t, tt.file, append([]string{"--id", "n1"}, tt.args...), tt.env)
			if err == nil || !strings.HasSuffix(err.Error(), tt.want) {
				t.Fatalf("resolve error = %v; want one ending %q", err, tt.want)
			}
			if !errors.Is(err, node.ErrInvalidConfig) {
				t.Errorf("error %v does not wrap node.ErrInvalidConfig", err)
			}
		})
	}
	// roost dev's settings too.
	d := newDev(testApp(), io.Discard, io.Discard, func(k string) (string, bool) {
		return map[string]string{"ROOST_IDLE_TIMEOUT": "0s"}[k], k == "ROOST_IDLE_TIMEOUT"
	})
	inTempDir(t, "", nil)
	if _, _, err := d.resolve(); err == nil || !strings.HasSuffix(err.Error(), "idle timeout must be positive, got 0s (from ROOST_IDLE_TIMEOUT)") {
		t.Errorf("dev resolve error = %v; want one naming ROOST_IDLE_TIMEOUT", err)
	}
}

// The id key comes from [runtime] id_key, and ROOST_ID_KEY wins over it;
// there is no flag. A blank or short one stops the command, naming it but
// never showing it.
func TestNodeIDKey(t *testing.T) {
	const file = "[runtime]\nid_key = \"key-from-the-file-0123\"\n"
	for _, tt := range []struct {
		name, file string
		env        map[string]string
		want, err  string
	}{
		{"none", "", nil, "", ""},
		{"from the file", file, nil, "key-from-the-file-0123", ""},
		{"the environment wins", file, map[string]string{idKeyEnv: "key-from-the-environment"}, "key-from-the-environment", ""},
		{"an empty variable is unset", file, map[string]string{idKeyEnv: ""}, "key-from-the-file-0123", ""},
		{"blank", "", map[string]string{idKeyEnv: "   "}, "", "the id key has spaces around it; a secret of spaces, or with them, is a mistake (from ROOST_ID_KEY)"},
		{"short", "", map[string]string{idKeyEnv: "short-key"}, "", "the id key is 9 bytes; a secret needs at least 16 (roost certs gossip-key makes a random one) (from ROOST_ID_KEY)"},
		{"short in the file", "[runtime]\nid_key = \"short-key\"\n", nil, "", "a secret needs at least 16 (roost certs gossip-key makes a random one) (from [runtime] id_key in "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := resolveNode(t, tt.file, []string{"--id", "n1"}, tt.env)
			switch {
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("err = %v, want one saying %q", err, tt.err)
			case tt.err != "" && strings.Contains(err.Error(), tt.env[idKeyEnv]) && strings.TrimSpace(tt.env[idKeyEnv]) != "":
				t.Fatalf("the error shows the key: %v", err)
			case tt.err == "" && (err != nil || cfg.IDKey != tt.want):
				t.Fatalf("IDKey %q, err %v; want %q", cfg.IDKey, err, tt.want)
			}
		})
	}
}

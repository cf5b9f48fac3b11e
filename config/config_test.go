package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/roostdb/roost/durable"
)

func TestParseGood(t *testing.T) {
	counter := []durable.Binding{{Name: "COUNTER", ClassName: "Counter"}}
	tests := []struct {
		name string
		in   string
		want File
	}{
		{
			name: "empty file",
			in:   "",
			want: File{},
		},
		{
			name: "wrangler array of tables",
			in: `
name = "counter"
[[durable_objects.bindings]]
name = "COUNTER"
class_name = "Counter"
`,
			want: File{Name: "counter", Bindings: counter},
		},
		{
			name: "wrangler inline bindings",
			in:   `durable_objects.bindings = [ { name = "COUNTER", class_name = "Counter" } ]`,
			want: File{Bindings: counter},
		},
		{
			name: "durable_objects table with bindings array",
			in: `[durable_objects]
bindings = [
  { name = "COUNTER", class_name = "Counter" },
  { name = "ROOM", class_name = "ChatRoom" },
]`,
			want: File{Bindings: append(append([]durable.Binding(nil), counter...), durable.Binding{Name: "ROOM", ClassName: "ChatRoom"})},
		},
		{
			name: "kv namespaces both forms",
			in: `[[kv_namespaces]]
binding = "CACHE"
id = "abc"
preview_id = "def"
objects = 8
`,
			want: File{KVNamespaces: []KVNamespace{{Binding: "CACHE", ID: "abc", PreviewID: "def", Objects: 8}},
				Notices: []string{"[[kv_namespaces]] CACHE: preview_id ignored: roost has no preview namespaces, so the binding always uses id"}},
		},
		{
			name: "kv namespaces inline",
			in:   `kv_namespaces = [ { binding = "CACHE", id = "abc" } ]`,
			want: File{KVNamespaces: []KVNamespace{{Binding: "CACHE", ID: "abc"}}},
		},
		{
			name: "vars: strings as they are, the rest as JSON text",
			in: `[vars]
GREETING = "hello"
COUNT = 3
RATIO = 0.5
ON = true
TAGS = ["a", 1]
NESTED = { b = 2, a = { c = "x" } }
DAY = 1979-05-27
AT = 1979-05-27T07:32:00Z
`,
			want: File{Vars: map[string]string{
				"GREETING": "hello",
				"COUNT":    "3",
				"RATIO":    "0.5",
				"ON":       "true",
				"TAGS":     `["a",1]`,
				"NESTED":   `{"a":{"c":"x"},"b":2}`,
				"DAY":      `"1979-05-27"`,
				"AT":       `"1979-05-27T07:32:00Z"`,
			}},
		},
		{
			name: "migrations accepted with a notice",
			in: `[[migrations]]
tag = "v1"
new_classes = ["Counter"]
[[migrations]]
tag = "v2"
renamed_classes = [{from = "A", to = "B"}]
`,
			want: File{Notices: []string{"[[migrations]] (2 entries) ignored: roost serves the classes the binary registers, so there is nothing to migrate"}},
		},
		{
			name: "healing off",
			in:   "[cluster]\ndead_node_grace = \"0s\"",
			want: File{Cluster: Cluster{NoHealing: true}},
		},
		{
			name: "every roost table",
			in: `[node]
id = "n1"
data_dir = "/var/lib/roost"
http = ":8787"
admin = "127.0.0.1:8789"
grpc = "0.0.0.0:8790"
gossip = "[::]:7946"
advertise = "10.0.0.1"
join = ["10.0.0.2:7946", "roost-3.internal:7946"]

[cluster]
bootstrap_expect = 3
shards = 64
replicas = 3
dead_node_grace = "2m"
tls_cert = "certs/n1.crt"
tls_key = "certs/n1.key"
tls_ca = "certs/ca.crt"
gossip_key = "AAECAwQFBgcICQoLDA0ODw=="

[storage]
max_key_bytes = 1024
max_entry_bytes = 65536
max_batch_keys = 16

[runtime]
idle_timeout = "90s"
id_key = "a-long-secret-of-the-deployment"
`,
			want: File{
				Node: Node{
					ID: "n1", DataDir: "/var/lib/roost", HTTP: ":8787", Admin: "127.0.0.1:8789",
					GRPC: "0.0.0.0:8790", Gossip: "[::]:7946", Advertise: "10.0.0.1",
					Join: []string{"10.0.0.2:7946", "roost-3.internal:7946"},
				},
				Cluster: Cluster{BootstrapExpect: 3, Shards: 64, Replicas: 3, DeadNodeGrace: 2 * time.Minute,
					TLSCert: "certs/n1.crt", TLSKey: "certs/n1.key", TLSCA: "certs/ca.crt", GossipKey: "AAECAwQFBgcICQoLDA0ODw=="},
				Storage: Storage{MaxKeyBytes: 1024, MaxEntryBytes: 65536, MaxBatchKeys: 16},
				Runtime: Runtime{IdleTimeout: 90 * time.Second, IDKey: "a-long-secret-of-the-deployment"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.Vars != nil && tt.want.Vars == nil {
				tt.want.Vars = map[string]string{}
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", *got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate of a parsed file: %v", err)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // the whole message
	}{
		{"unknown key", "[node]\nhttp_addr = \"x:1\"", `roost.toml: unknown key "node.http_addr" (did you mean "node.http"?)`},
		{"unknown key without a near match", "[node]\nflavour = 1", `roost.toml: unknown key "node.flavour"`},
		{"unknown top-level key", "nmae = \"x\"", `roost.toml: unknown key "nmae" (did you mean "name"?)`},
		{"unknown table names the table only", "[kv]\na = 1\nb = 2", `roost.toml: unknown key "kv" (did you mean "kv_namespaces"?)`},
		{"unknown key in a binding", "[[durable_objects.bindings]]\nname = \"A\"\nclass = \"X\"", `roost.toml: unknown key "durable_objects.bindings.class" (did you mean "durable_objects.bindings.class_name"?)`},
		{"unknown key in an inline binding", `durable_objects.bindings = [{name = "A", class_name = "X", script_name = "w"}]`, `roost.toml: unknown key "durable_objects.bindings.script_name"`},
		{"several unknown keys", "[cluster]\nshard = 1\n[runtime]\nidle = \"1s\"", `roost.toml: unknown keys "cluster.shard" (did you mean "cluster.shards"?), "runtime.idle" (did you mean "runtime.idle_timeout"?)`},
		{"dash for underscore", "[node]\ndata-dir = \"x\"", `roost.toml: unknown key "node.data-dir" (did you mean "node.data_dir"?)`},
		{"key of another case", "[cluster]\nshards = 3\nShards = 5", `roost.toml: unknown key "cluster.Shards" (did you mean "cluster.shards"?)`},
		{"table of another case", "[NODE]\nHTTP = \"127.0.0.1:1\"", `roost.toml: unknown key "NODE" (did you mean "node"?)`},
		{"key of another case in a binding", "[[durable_objects.bindings]]\nName = \"A\"\nclass_name = \"X\"", `roost.toml: unknown key "durable_objects.bindings.Name" (did you mean "durable_objects.bindings.name"?)`},
		{"syntax error has line and column", "name = \"x\"\n[node\n", `roost.toml:2:6: expected '.' or ']' to end table name, but got '\n' instead`},
		{"missing value", "name =\n", `roost.toml:1:7: expected value but found '\n' instead`},
		{"column counts characters", "name = \"é\" =", `roost.toml:1:11: expected a top-level item to end with a newline, comment, or EOF, but got '=' instead`},
		{"duplicate key", "a = 1\na = 2", `roost.toml:2:1: Key 'a' has already been defined.`},
		{"wrong type", "[node]\nhttp = 8787", `roost.toml:2: node.http must be a string, not an integer`},
		{"string for an integer", "[cluster]\nshards = \"16\"", `roost.toml:2: cluster.shards must be an integer, not a string`},
		{"scalar for an array", "[node]\njoin = \"a:1\"", `roost.toml:2: node.join must be an array, not a string`},
		{"scalar for a table", "node = 5", `roost.toml:1: node must be a table, not an integer`},
		{"integer duration", "[runtime]\nidle_timeout = 60", `roost.toml:2: runtime.idle_timeout must be a string, not an integer`},
		{"empty id key", "[runtime]\nid_key = \"\"", `roost.toml: runtime.id_key is empty (leave it out for no key)`},
		{"negative shards", "[cluster]\nshards = -3", `roost.toml: cluster.shards must be at least 1, got -3`},
		{"zero shards", "[cluster]\nshards = 0", `roost.toml: cluster.shards must be at least 1 (leave it out for the default)`},
		{"negative replicas", "[cluster]\nreplicas = -1", `roost.toml: cluster.replicas must be at least 1, got -1`},
		{"negative bootstrap_expect", "[cluster]\nbootstrap_expect = -1", `roost.toml: cluster.bootstrap_expect must be at least 1, got -1`},
		{"zero storage limit", "[storage]\nmax_batch_keys = 0", `roost.toml: storage.max_batch_keys must be at least 1 (leave it out for the default)`},
		{"entry below key", "[storage]\nmax_key_bytes = 100\nmax_entry_bytes = 10", `roost.toml: storage.max_entry_bytes (10) is below storage.max_key_bytes (100): no key could be stored`},
		{"empty binding name", "[[durable_objects.bindings]]\nclass_name = \"Counter\"", `roost.toml: durable_objects.bindings[0] (class "Counter") has no name`},
		{"empty class name", "[[durable_objects.bindings]]\nname = \"COUNTER\"", `roost.toml: durable_objects.bindings[0] ("COUNTER") has no class_name`},
		{"duplicate binding", "durable_objects.bindings = [{name = \"A\", class_name = \"X\"}, {name = \"A\", class_name = \"Y\"}]", `roost.toml: durable_objects.bindings: "A" is bound twice`},
		{"kv without id", "kv_namespaces = [{binding = \"CACHE\"}]", `roost.toml: kv_namespaces[0] ("CACHE") has no id`},
		{"binding not an identifier", "durable_objects.bindings = [{name = \"MY-DO\", class_name = \"X\"}]", `roost.toml: durable_objects.bindings[0]: binding name "MY-DO": use letters, digits, '_' and '$', not starting with a digit ('-' at offset 2)`},
		{"kv binding not an identifier", "kv_namespaces = [{binding = \"..\", id = \"1\"}]", `roost.toml: kv_namespaces[0]: binding name "..": use letters, digits, '_' and '$', not starting with a digit ('.' at offset 0)`},
		{"kv id with a NUL", "kv_namespaces = [{binding = \"C\", id = \"a\\u00001\"}]", `roost.toml: kv_namespaces[0] ("C"): id "a\x001" holds a control character`},
		{"duplicate kv", "kv_namespaces = [{binding = \"C\", id = \"1\"}, {binding = \"C\", id = \"2\"}]", `roost.toml: kv_namespaces: "C" is bound twice`},
		{"kv objects out of range", "kv_namespaces = [{binding = \"C\", id = \"1\", objects = 65}]", `roost.toml: kv_namespaces[0] ("C"): objects = 65 is not between 1 and 64`},
		{"kv objects disagree", "kv_namespaces = [{binding = \"C\", id = \"1\", objects = 4}, {binding = \"D\", id = \"1\"}]", `roost.toml: kv_namespaces[1] ("D"): id "1" is bound with objects = 4 and 1; bindings of one namespace must agree`},
		{"bad duration", "[runtime]\nidle_timeout = \"60\"", `roost.toml: runtime.idle_timeout: "60" is not a duration (write it like "60s" or "5m")`},
		{"zero duration", "[runtime]\nidle_timeout = \"0s\"", `roost.toml: runtime.idle_timeout must be positive (leave it out for the default)`},
		{"negative duration", "[runtime]\nidle_timeout = \"-5s\"", `roost.toml: runtime.idle_timeout must be positive, got -5s`},
		{"bad grace", "[cluster]\ndead_node_grace = \"soon\"", `roost.toml: cluster.dead_node_grace: "soon" is not a duration (write it like "60s" or "5m")`},
		{"negative grace", "[cluster]\ndead_node_grace = \"-1m\"", `roost.toml: cluster.dead_node_grace must be positive, or "0s" for no automatic healing, got -1m0s`},
		{"no port", "[node]\nhttp = \"localhost\"", `roost.toml: node.http: "localhost" is not host:port`},
		{"port not a number", "[node]\nadmin = \"localhost:http\"", `roost.toml: node.admin: "localhost:http": port "http" is not a number from 0 to 65535`},
		{"port too big", "[node]\ngrpc = \":70000\"", `roost.toml: node.grpc: ":70000": port "70000" is not a number from 0 to 65535`},
		{"advertise with a port", "[node]\nadvertise = \"10.0.0.1:8790\"", `roost.toml: node.advertise: "10.0.0.1:8790": give the host alone, without a port (each listener keeps its own port)`},
		{"advertise every interface", "[node]\nadvertise = \"0.0.0.0\"", `roost.toml: node.advertise: "0.0.0.0" means every interface, not an address other nodes can reach`},
		{"advertise not a host", "[node]\nadvertise = \"http://roost-1\"", `roost.toml: node.advertise: "http://roost-1" is not an IP address or a host name`},
		{"join without host", "[node]\njoin = [\":7946\"]", `roost.toml: node.join[0]: ":7946": other nodes connect to this address, so it needs a host and a port other than 0`},
		{"bad join entry", "[node]\njoin = [\"a:1\", \"b\"]", `roost.toml: node.join[1]: "b" is not host:port`},
		{"var with no JSON form", "[vars]\nX = nan", `roost.toml: vars.X: NaN has no JSON form`},
		{"gossip key not base64", "[cluster]\ngossip_key = \"not base64!\"", "roost.toml: cluster.gossip_key: the gossip key is not base64 (make one with `roost certs gossip-key`)"},
		{"gossip key too short", "[cluster]\ngossip_key = \"c2hvcnQ=\"", "roost.toml: cluster.gossip_key: the gossip key is 5 bytes; it must be 16, 24 or 32 (base64 of an AES-128, -192 or -256 key; make one with `roost certs gossip-key`)"},
		{"empty gossip key", "[cluster]\ngossip_key = \"\"", `roost.toml: cluster.gossip_key is empty (leave it out for none)`},
		{"empty tls cert", "[cluster]\ntls_cert = \"\"", `roost.toml: cluster.tls_cert is empty (leave it out for none)`},
		{"empty http address", "[node]\nhttp = \"\"", `roost.toml: node.http is empty (leave it out for the default)`},
		{"empty data dir", "[node]\ndata_dir = \"\"", `roost.toml: node.data_dir is empty (leave it out for the default)`},
		{"zero kv objects", "[[kv_namespaces]]\nbinding = \"A\"\nid = \"a\"\n\n[[kv_namespaces]]\nbinding = \"B\"\nid = \"b\"\nobjects = 0", `roost.toml: kv_namespaces[1].objects must be at least 1 (leave it out for the default)`},
		{"tls key misspelt", "[cluster]\ntls_keys = \"k.pem\"", `roost.toml: unknown key "cluster.tls_keys" (did you mean "cluster.tls_key"?)`},
		{"tls in node table", "[node]\ntls_ca = \"ca.crt\"", `roost.toml: unknown key "node.tls_ca"`},
		{"all problems at once", "[cluster]\nshards = -1\nreplicas = -2", `roost.toml: cluster.shards must be at least 1, got -1; cluster.replicas must be at least 1, got -2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v; want error %q", f, tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestSyntaxErrorKeepsParseError(t *testing.T) {
	_, err := Parse([]byte("a = ="))
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v does not unwrap to toml.ParseError", err)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 1 || ce.Col == 0 {
		t.Errorf("error %#v: want line 1 and a column", ce)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(good, []byte("name = \"x\"\n[cluster]\nshards = 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("[cluster]\nshard = 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	f, err := Load(good)
	if err != nil || f.Name != "x" || f.Cluster.Shards != 4 {
		t.Fatalf("Load(good) = %+v, %v", f, err)
	}
	_, err = Load(bad)
	if want := bad + `: unknown key "cluster.shard"`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load(bad) = %v; want an error starting %q", err, want)
	}
	_, err = Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Load(missing) = %v; want fs.ErrNotExist and not ErrInvalidConfig", err)
	}
}

func TestStorageLimits(t *testing.T) {
	base := durable.DefaultLimits()
	got := Storage{MaxBatchKeys: 16}.Limits(base)
	want := base
	want.MaxBatchKeys = 16
	if got != want {
		t.Errorf("Limits = %+v, want %+v", got, want)
	}
}

func TestValidateZeroFileIsValid(t *testing.T) {
	if err := (&File{}).Validate(); err != nil {
		t.Errorf("empty File: %v", err)
	}
	err := (&File{Cluster: Cluster{Shards: -1}}).Validate()
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "cluster.shards") {
		t.Errorf("Validate = %v; want ErrInvalidConfig naming cluster.shards", err)
	}
}

func TestCheckHost(t *testing.T) {
	tests := []struct {
		host   string
		errHas string // "" for accepted
	}{
		{"10.0.0.1", ""},
		{"fd00::1", ""},
		{"roost-1", ""},
		{"roost-1.svc.cluster.local", ""},
		{"roost-1.svc.cluster.local.", ""},
		{"10.0.0.1:8790", "without a port"},
		{"[fd00::1]:8790", "without a port"},
		{"roost-1:7946", "without a port"},
		{"0.0.0.0", "every interface"},
		{"::", "every interface"},
		{"", "not an IP address or a host name"},
		{"http://roost-1", "not an IP address or a host name"},
		{"-roost", "not an IP address or a host name"},
		{"roost_roost_1", ""},
		{"roost 1", "not an IP address or a host name"},
		{"a..b", "not an IP address or a host name"},
		{strings.Repeat("a", 64), "not an IP address or a host name"},
	}
	for _, tt := range tests {
		err := CheckHost(tt.host)
		switch {
		case tt.errHas == "" && err != nil:
			t.Errorf("CheckHost(%q) = %v, want nil", tt.host, err)
		case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
			t.Errorf("CheckHost(%q) = %v, want an error containing %q", tt.host, err, tt.errHas)
		}
	}
}

func TestAdminToken(t *testing.T) {
	f, err := Parse([]byte("[admin]\ntoken = \"s3cret\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Admin.Token != "s3cret" {
		t.Fatalf("admin token %q", f.Admin.Token)
	}
	if _, err := Parse([]byte("[admin]\ntokn = \"x\"\n")); err == nil || !strings.Contains(err.Error(), `admin.tokn`) {
		t.Fatalf("misspelt key: %v", err)
	}
	if _, err := Parse([]byte("[admin]\ntoken = \"\"\n")); err == nil || !strings.Contains(err.Error(), "admin.token is empty") {
		t.Fatalf("empty token: %v", err)
	}
}

func TestParseGossipKey(t *testing.T) {
	for _, tt := range []struct {
		in     string
		n      int    // key length when valid
		errHas string // else
	}{
		{in: "AAECAwQFBgcICQoLDA0ODw==", n: 16},
		{in: "  AAECAwQFBgcICQoLDA0ODxAREhMUFRYX\n", n: 24},
		{in: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", n: 32},
		{in: "", errHas: "0 bytes"},
		{in: "AAECAwQFBgcICQoLDA0O", errHas: "15 bytes"},
		{in: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", errHas: "33 bytes"},
		{in: "AAECAwQFBgcICQoLDA0ODw", errHas: "not base64"}, // unpadded
		{in: "AAECAwQFBgcICQoLDA0ODw==x", errHas: "not base64"},
	} {
		key, err := ParseGossipKey(tt.in)
		switch {
		case tt.errHas == "" && (err != nil || len(key) != tt.n):
			t.Errorf("ParseGossipKey(%q) = %d bytes, %v; want %d bytes", tt.in, len(key), err, tt.n)
		case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
			t.Errorf("ParseGossipKey(%q) = %v, want an error containing %q", tt.in, err, tt.errHas)
		}
	}
}

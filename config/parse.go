package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/roostdb/roost/durable"
)

// rawFile mirrors the TOML layout. It is separate from File so that File can
// use Go types (durable.Binding, time.Duration) while this one uses what the
// decoder can check: durations stay strings, so `idle_timeout = 60` is a type
// error rather than 60 nanoseconds.
type rawFile struct {
	Name           string           `toml:"name"`
	DurableObjects rawDO            `toml:"durable_objects"`
	KVNamespaces   []rawKV          `toml:"kv_namespaces"`
	Vars           map[string]any   `toml:"vars"`
	Migrations     []map[string]any `toml:"migrations"`
	Node           rawNode          `toml:"node"`
	Cluster        rawCluster       `toml:"cluster"`
	Storage        rawStorage       `toml:"storage"`
	Runtime        rawRuntime       `toml:"runtime"`
	Admin          rawAdmin         `toml:"admin"`
}

type rawDO struct {
	Bindings []rawBinding `toml:"bindings"`
}

type rawBinding struct {
	Name      string `toml:"name"`
	ClassName string `toml:"class_name"`
}

type rawKV struct {
	Binding   string `toml:"binding"`
	ID        string `toml:"id"`
	PreviewID string `toml:"preview_id"`
	Objects   *int   `toml:"objects"` // nil: left out; IsDefined cannot tell array elements apart
}

type rawNode struct {
	ID        string   `toml:"id"`
	DataDir   string   `toml:"data_dir"`
	HTTP      string   `toml:"http"`
	Admin     string   `toml:"admin"`
	GRPC      string   `toml:"grpc"`
	Gossip    string   `toml:"gossip"`
	Advertise string   `toml:"advertise"`
	Join      []string `toml:"join"`
}

type rawCluster struct {
	BootstrapExpect int    `toml:"bootstrap_expect"`
	Shards          int    `toml:"shards"`
	Replicas        int    `toml:"replicas"`
	DeadNodeGrace   string `toml:"dead_node_grace"`
	TLSCert         string `toml:"tls_cert"`
	TLSKey          string `toml:"tls_key"`
	TLSCA           string `toml:"tls_ca"`
	GossipKey       string `toml:"gossip_key"`
}

type rawStorage struct {
	MaxKeyBytes   int `toml:"max_key_bytes"`
	MaxEntryBytes int `toml:"max_entry_bytes"`
	MaxBatchKeys  int `toml:"max_batch_keys"`
}

type rawRuntime struct {
	IdleTimeout string `toml:"idle_timeout"`
	IDKey       string `toml:"id_key"`
}

type rawAdmin struct {
	Token string `toml:"token"`
}

// freeForm are the top-level keys whose contents are not checked key by
// key: [vars] holds whatever the app wants, [[migrations]] is ignored.
var freeForm = map[string]bool{"vars": true, "migrations": true}

func parse(name string, data []byte) (*File, error) {
	var raw rawFile
	md, err := toml.NewDecoder(strings.NewReader(string(data))).Decode(&raw)
	if err != nil {
		return nil, decodeError(name, data, err)
	}
	// The decoder matches a key to a field regardless of case when no
	// field has its exact name (and takes one of Shards and shards at
	// random): keys of another case are unknown keys too.
	if unknown := append(unknownKeys(md.Undecoded()), wrongCaseKeys(md.Keys())...); len(unknown) > 0 {
		return nil, &Error{File: name, Msg: unknownKeysMsg(unknown)}
	}
	f, problems := convert(&raw, md)
	problems = append(problems, f.problems()...)
	if len(problems) > 0 {
		return nil, &Error{File: name, Msg: strings.Join(problems, "; ")}
	}
	return f, nil
}

// convert turns the decoded layout into a File, reporting the values that
// only the raw form can judge (explicit zeros, duration syntax, vars that
// have no JSON form).
func convert(raw *rawFile, md toml.MetaData) (*File, []string) {
	var problems []string
	f := &File{
		Name: raw.Name,
		Node: Node{
			ID: raw.Node.ID, DataDir: raw.Node.DataDir, HTTP: raw.Node.HTTP, Admin: raw.Node.Admin,
			GRPC: raw.Node.GRPC, Gossip: raw.Node.Gossip, Advertise: raw.Node.Advertise, Join: raw.Node.Join,
		},
	}
	for _, b := range raw.DurableObjects.Bindings {
		f.Bindings = append(f.Bindings, durable.Binding{Name: b.Name, ClassName: b.ClassName})
	}
	// emptySet reports keys of section written out as "": they would
	// silently mean the default (or, for TLS and gossip keys, none).
	emptySet := func(section, leaveOut string, keys ...[2]string) {
		for _, kv := range keys {
			if kv[1] == "" && md.IsDefined(section, kv[0]) {
				problems = append(problems, fmt.Sprintf("%s.%s is empty (leave it out for %s)", section, kv[0], leaveOut))
			}
		}
	}
	for i, kv := range raw.KVNamespaces {
		ns := KVNamespace{Binding: kv.Binding, ID: kv.ID, PreviewID: kv.PreviewID}
		if kv.Objects != nil {
			if ns.Objects = *kv.Objects; ns.Objects == 0 {
				problems = append(problems, fmt.Sprintf("kv_namespaces[%d].objects must be at least 1 (leave it out for the default)", i))
			}
		}
		f.KVNamespaces = append(f.KVNamespaces, ns)
	}
	// advertise = "" is a setting of its own: the listeners' own host.
	emptySet("node", "the default", [2]string{"id", raw.Node.ID}, [2]string{"data_dir", raw.Node.DataDir}, [2]string{"http", raw.Node.HTTP},
		[2]string{"admin", raw.Node.Admin}, [2]string{"grpc", raw.Node.GRPC}, [2]string{"gossip", raw.Node.Gossip})

	// A key written as 0 is a mistake, not a request for the default: say so
	// rather than silently using 16 shards when the file says 0.
	positive := func(v int, key ...string) int {
		if v == 0 && md.IsDefined(key...) {
			problems = append(problems, fmt.Sprintf("%s must be at least 1 (leave it out for the default)", toml.Key(key)))
		}
		return v
	}
	f.Cluster = Cluster{
		BootstrapExpect: positive(raw.Cluster.BootstrapExpect, "cluster", "bootstrap_expect"),
		Shards:          positive(raw.Cluster.Shards, "cluster", "shards"),
		Replicas:        positive(raw.Cluster.Replicas, "cluster", "replicas"),
		TLSCert:         raw.Cluster.TLSCert,
		TLSKey:          raw.Cluster.TLSKey,
		TLSCA:           raw.Cluster.TLSCA,
		GossipKey:       raw.Cluster.GossipKey,
	}
	emptySet("cluster", "none", [2]string{"tls_cert", raw.Cluster.TLSCert}, [2]string{"tls_key", raw.Cluster.TLSKey},
		[2]string{"tls_ca", raw.Cluster.TLSCA}, [2]string{"gossip_key", raw.Cluster.GossipKey})
	f.Storage = Storage{
		MaxKeyBytes:   positive(raw.Storage.MaxKeyBytes, "storage", "max_key_bytes"),
		MaxEntryBytes: positive(raw.Storage.MaxEntryBytes, "storage", "max_entry_bytes"),
		MaxBatchKeys:  positive(raw.Storage.MaxBatchKeys, "storage", "max_batch_keys"),
	}
	f.Admin.Token = raw.Admin.Token
	emptySet("admin", "no token", [2]string{"token", raw.Admin.Token}) // "" would leave the API open
	// zeroOK: 0 is a setting of its own (the caller tells it from unset).
	duration := func(s string, zeroOK bool, key ...string) time.Duration {
		if !md.IsDefined(key...) {
			return 0
		}
		d, err := time.ParseDuration(s)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %q is not a duration (write it like \"60s\" or \"5m\")", toml.Key(key), s))
		case d == 0 && !zeroOK:
			problems = append(problems, fmt.Sprintf("%s must be positive (leave it out for the default)", toml.Key(key)))
		}
		return d // a negative one is reported by problems()
	}
	f.Runtime.IdleTimeout = duration(raw.Runtime.IdleTimeout, false, "runtime", "idle_timeout")
	f.Runtime.IDKey = raw.Runtime.IDKey
	emptySet("runtime", "no key", [2]string{"id_key", raw.Runtime.IDKey})
	f.Cluster.DeadNodeGrace = duration(raw.Cluster.DeadNodeGrace, true, "cluster", "dead_node_grace")
	f.Cluster.NoHealing = md.IsDefined("cluster", "dead_node_grace") && f.Cluster.DeadNodeGrace == 0

	if raw.Vars != nil {
		f.Vars = make(map[string]string, len(raw.Vars))
		for _, k := range sortedKeys(raw.Vars) {
			v, err := varText(raw.Vars[k])
			if err != nil {
				problems = append(problems, fmt.Sprintf("vars.%s: %v", toml.Key{k}, err))
				continue
			}
			f.Vars[k] = v
		}
	}
	for _, kv := range raw.KVNamespaces {
		if kv.PreviewID != "" {
			f.Notices = append(f.Notices, fmt.Sprintf(
				"[[kv_namespaces]] %s: preview_id ignored: roost has no preview namespaces, so the binding always uses id", kv.Binding))
		}
	}
	if n := len(raw.Migrations); n > 0 {
		f.Notices = append(f.Notices, fmt.Sprintf(
			"[[migrations]] (%d entries) ignored: roost serves the classes the binary registers, so there is nothing to migrate", n))
	}
	return f, problems
}

// varText gives a var's string form: strings as they are, everything else
// as JSON text, which is what a Worker would get from JSON.stringify.
func varText(v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	j, err := jsonable(v)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(j)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// jsonable replaces what JSON cannot say: datetimes become strings in their
// TOML form (a local date stays "1979-05-27", not a UTC midnight), and
// nan/inf are refused rather than written as invalid JSON.
func jsonable(v any) (any, error) {
	switch v := v.(type) {
	case time.Time:
		switch v.Location().String() {
		case "date-local":
			return v.Format("2006-01-02"), nil
		case "time-local":
			return v.Format("15:04:05.999999999"), nil
		case "datetime-local":
			return v.Format("2006-01-02T15:04:05.999999999"), nil
		}
		return v.Format(time.RFC3339Nano), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%v has no JSON form", v)
		}
		return v, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			out[i] = j
		}
		return out, nil
	case []map[string]any:
		out := make([]any, len(v))
		for i, e := range v {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			out[i] = j
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			out[k] = j
		}
		return out, nil
	}
	return v, nil
}

// unknownKeys keeps the undecoded keys worth reporting: not those inside
// free-form tables, and not the children of a key that is itself unknown
// (an unknown [foo] table reports "foo", not every key in it).
func unknownKeys(undecoded []toml.Key) []toml.Key {
	seen := make(map[string]bool)
	var out []toml.Key
	for _, k := range undecoded {
		if len(k) == 0 || freeForm[k[0]] {
			continue
		}
		parentUnknown := false
		for i := 1; i < len(k); i++ {
			if seen[k[:i].String()] {
				parentUnknown = true
				break
			}
		}
		seen[k.String()] = true
		if !parentUnknown {
			out = append(out, k)
		}
	}
	return out
}

// wrongCaseKeys returns the keys (or tables) that the decoder took for a
// known key written in another case, each once, outermost only.
func wrongCaseKeys(keys []toml.Key) []toml.Key {
	known := knownKeys()
	seen := make(map[string]bool)
	var out []toml.Key
	for _, k := range keys {
		if len(k) == 0 || freeForm[k[0]] {
			continue
		}
		for i := range k {
			names, ok := known[k[:i].String()]
			if !ok || slices.Contains(names, k[i]) {
				continue
			}
			// Not roost's name: the decoder took it for one of another
			// case, or left it undecoded (unknownKeys reports those).
			if slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, k[i]) }) && !seen[k[:i+1].String()] {
				seen[k[:i+1].String()] = true
				out = append(out, k[:i+1])
			}
			break
		}
	}
	return out
}

func unknownKeysMsg(keys []toml.Key) string {
	known := knownKeys()
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = strconv.Quote(k.String())
		if s := suggest(k, known); s != "" {
			parts[i] += fmt.Sprintf(" (did you mean %q?)", s)
		}
	}
	if len(keys) == 1 {
		return "unknown key " + parts[0]
	}
	return "unknown keys " + strings.Join(parts, ", ")
}

// knownKeys lists every key roost accepts, by table path, read from
// rawFile's tags so that it cannot drift from what the decoder accepts.
func knownKeys() map[string][]string {
	out := make(map[string][]string)
	var walk func(path string, t reflect.Type)
	walk = func(path string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := f.Tag.Get("toml")
			out[path] = append(out[path], name)
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(strings.TrimPrefix(path+"."+name, "."), ft)
			}
		}
	}
	walk("", reflect.TypeFor[rawFile]())
	return out
}

// suggest names the known key in k's table that k was probably meant to be.
func suggest(k toml.Key, known map[string][]string) string {
	table, last := k[:len(k)-1].String(), k[len(k)-1]
	best, bestDist := "", 3 // further than 2 edits is a guess, not a typo
	for _, cand := range known[table] {
		d := EditDistance(last, cand)
		// http_addr for http, data-dir for data_dir: a prefix or a
		// separator swap is as telling as a typo.
		prefix := min(len(last), len(cand)) >= 2 && (strings.HasPrefix(last, cand) || strings.HasPrefix(cand, last))
		if prefix || strings.ReplaceAll(last, "-", "_") == cand {
			d = min(d, 1)
		}
		if strings.EqualFold(last, cand) {
			d = 0
		}
		if d < bestDist {
			best, bestDist = cand, d
		}
	}
	if best == "" {
		return ""
	}
	if table == "" {
		return best
	}
	return table + "." + best
}

// EditDistance is the Levenshtein distance between a and b, in bytes (the
// names it compares, settings' keys and variables, are ASCII): how the
// known name a misspelt one was meant to be is found.
func EditDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// typeErr matches the decoder's type errors, which are plain strings.
var typeErr = regexp.MustCompile(`^toml: line (\d+) \(last key "(.*)"\): (.*)$`)

var (
	incompatible = regexp.MustCompile(`^incompatible types: TOML value has type (.+); destination has type (.+)$`)
	mismatch     = regexp.MustCompile(`^type mismatch for .*: expected (\w+) but found (.+)$`)
)

// decodeError turns the decoder's error into an *Error with a position and
// a message in the file's terms rather than Go's.
func decodeError(name string, data []byte, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		line, col := position(data, pe.Position)
		return &Error{File: name, Line: line, Col: col, Msg: pe.Message, err: err}
	}
	msg := strings.TrimPrefix(err.Error(), "toml: ")
	if m := typeErr.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		key, what := m[2], m[3]
		if t := incompatible.FindStringSubmatch(what); t != nil {
			what = fmt.Sprintf("must be %s, not %s", goTypeName(t[2]), goTypeName(t[1]))
		} else if t := mismatch.FindStringSubmatch(what); t != nil {
			what = fmt.Sprintf("must be %s, not %s", goTypeName(t[1]), goTypeName(t[2]))
		}
		return &Error{File: name, Line: line, Msg: fmt.Sprintf("%s %s", key, what), err: err}
	}
	return &Error{File: name, Msg: msg, err: err}
}

// position gives the line and column (in characters) of the error's byte
// offset. The decoder's own Line/Col are off by one line when the offending
// byte is a newline ("[node\n" is reported on the line after), so they are
// only the fallback.
func position(data []byte, p toml.Position) (line, col int) {
	if p.Start < 0 || p.Start > len(data) {
		return p.Line, p.Col
	}
	before := data[:p.Start]
	lineStart := bytes.LastIndexByte(before, '\n') + 1
	return bytes.Count(before, []byte{'\n'}) + 1, utf8.RuneCount(before[lineStart:]) + 1
}

// goTypeName names a Go type from a decoder message as a TOML user would.
func goTypeName(t string) string {
	switch {
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "time.Time":
		return "a datetime"
	case t == "slice" || strings.HasPrefix(t, "[]"):
		return "an array"
	case t == "map" || t == "struct" || t == "table" || strings.HasPrefix(t, "map["):
		return "a table"
	}
	return t
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

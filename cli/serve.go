package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/roostdb/roost/config"
	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/node"
)

// This file is what `roost dev` and `roost node` share: settings read from
// defaults < roost.toml < flags the user gave < ROOST_* variables, and
// running a node until a signal stops it.

// shutdownGrace bounds how long Ctrl-C waits for in-flight requests and
// pending commits before the node is closed anyway.
const shutdownGrace = 15 * time.Second

// defaultConfigFile is read from the working directory when --config is
// not given, as wrangler reads wrangler.toml.
const defaultConfigFile = "roost.toml"

// setting is one node.Config field that roost.toml, a flag and a ROOST_*
// variable can set, each overriding the one before.
type setting struct {
	key   string // in roost.toml, for messages: "node.http"
	flag  string // the flag's name, without "--"
	env   string // the environment variable
	usage string // the flag's help; the variable is appended
	// field points at the setting in c: a *string, *int, *time.Duration
	// or *[]string. fromFile returns the file's value, of the pointed-to
	// type; its zero value means the file does not set it.
	field    func(c *node.Config) any
	fromFile func(f *config.File) any
	// zeroInFile, if set, reports that the file sets the setting to its
	// zero value, which then means something (dead_node_grace = "0s").
	zeroInFile func(f *config.File) bool
	// check, if set, vets each value from a flag or variable (each element
	// of a list) that node.Config.Validate would let through; the file's
	// values were checked by package config.
	check func(string) error
}

// Settings both commands read.
var (
	dataDirSetting = setting{
		key: "node.data_dir", flag: "data-dir", env: "ROOST_DATA_DIR", usage: "directory for the node's data",
		field:    func(c *node.Config) any { return &c.DataDir },
		fromFile: func(f *config.File) any { return f.Node.DataDir },
	}
	httpSetting = setting{
		key: "node.http", flag: "http", env: "ROOST_HTTP", usage: "host:port of the app listener",
		field:    func(c *node.Config) any { return &c.HTTPAddr },
		fromFile: func(f *config.File) any { return f.Node.HTTP },
	}
	adminSetting = setting{
		key: "node.admin", flag: "admin", env: "ROOST_ADMIN", usage: "host:port of the admin listener",
		field:    func(c *node.Config) any { return &c.AdminAddr },
		fromFile: func(f *config.File) any { return f.Node.Admin },
	}
	shardsSetting = setting{
		key: "cluster.shards", flag: "shards", env: "ROOST_SHARDS", usage: "number of shards; fixed once the data dir exists",
		field:    func(c *node.Config) any { return &c.Shards },
		fromFile: func(f *config.File) any { return f.Cluster.Shards },
	}
	idleTimeoutSetting = setting{
		key: "runtime.idle_timeout", flag: "idle-timeout", env: "ROOST_IDLE_TIMEOUT", usage: "evict an object from memory after this long without requests",
		field:    func(c *node.Config) any { return &c.IdleTimeout },
		fromFile: func(f *config.File) any { return f.Runtime.IdleTimeout },
	}
)

// withUsage is s with other help text, for a command where it means more.
func (s setting) withUsage(usage string) setting {
	s.usage = usage
	return s
}

// server is what a command that runs a node has: its settings, their flags,
// and where it reads the file and the environment.
type server struct {
	name           string // the command: "dev", "node"
	app            *durable.App
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	settings       []setting

	configPath string
	filePath   string      // the file loadFile read, "" for none
	flagged    node.Config // where the flags write; only those given are used
	cmd        *cobra.Command
}

// newServer registers --config and a flag for each setting on cmd, with
// defaults from def.
func newServer(name string, cmd *cobra.Command, def node.Config, settings []setting,
	app *durable.App, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) *server {
	s := &server{name: name, app: app, stdout: stdout, stderr: stderr, lookupEnv: lookupEnv,
		settings: settings, flagged: def, cmd: cmd}
	f := cmd.Flags()
	f.StringVar(&s.configPath, "config", "", `path to roost.toml (default "./roost.toml" if it exists; "" for none)`)
	for _, st := range settings {
		usage := st.usage + " (" + st.env + ")"
		switch p := st.field(&s.flagged).(type) {
		case *string:
			f.StringVar(p, st.flag, *p, usage)
		case *int:
			decimalIntVar(f, p, st.flag, *p, usage)
		case *time.Duration:
			f.DurationVar(p, st.flag, *p, usage)
		case *[]string:
			f.StringSliceVar(p, st.flag, *p, usage)
		default:
			panic(fmt.Sprintf("cli: setting %s has a field of type %T", st.flag, p))
		}
	}
	return s
}

// runE is a command's RunE: resolve the settings, then serve with them.
func runE(resolve func() (node.Config, *config.File, error), run func(context.Context, node.Config, *config.File) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cfg, file, err := resolve()
		if err != nil {
			return err
		}
		return run(cmd.Context(), cfg, file)
	}
}

// resolveWith builds the node configuration: base(file) < roost.toml < flags
// the user gave < ROOST_* environment variables, then validates it. base
// gives the defaults; it may read settings itself with apply. extra, if
// any, then sets what the settings table cannot (secrets with no flag).
func (s *server) resolveWith(base func(file *config.File) (node.Config, error), extra ...func(*node.Config, *config.File) error) (node.Config, *config.File, error) {
	file, err := s.loadFile()
	if err != nil {
		return node.Config{}, nil, err
	}
	cfg, err := base(file)
	if err != nil {
		return cfg, nil, err
	}
	if file != nil {
		cfg.Limits = file.Storage.Limits(cfg.Limits)
		if len(file.Bindings) > 0 {
			cfg.Bindings = file.Bindings
		}
		if len(file.Vars) > 0 {
			cfg.Vars = file.Vars
		}
		for _, kv := range file.KVNamespaces {
			cfg.KVNamespaces = append(cfg.KVNamespaces, durable.KVBinding{Binding: kv.Binding, ID: kv.ID, Objects: kv.Objects})
		}
		cfg.AdminToken = file.Admin.Token
		cfg.IDKey = file.Runtime.IDKey
	}
	// The admin token and the id key have no flag: a flag would show in
	// process listings.
	if tok, _ := s.lookupEnv("ROOST_ADMIN_TOKEN"); tok != "" {
		cfg.AdminToken = tok
	}
	if key, _ := s.lookupEnv(idKeyEnv); key != "" {
		cfg.IDKey = key
	}
	def := cfg
	if err := s.apply(&cfg, file, s.settings...); err != nil {
		return cfg, nil, err
	}
	for _, set := range extra {
		if err := set(&cfg, file); err != nil {
			return cfg, nil, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, nil, s.withSources(err, cfg, def, file)
	}
	return cfg, file, nil
}

// withSources adds to err, cfg.Validate's, where the settings it is about
// came from, so that the value to fix is found without guessing (a
// variable wins over the flag in sight). A setting is one of them if
// putting its default (def's) back clears the error, or changes it while
// the error names the setting: Validate reports its first problem only,
// and a default put back may make another one that comes first (replicas
// back to 3 over a bootstrap-expect of 1), which says nothing of err.
func (s *server) withSources(err error, cfg, def node.Config, file *config.File) error {
	var from []string
	for _, st := range s.settings {
		src := s.sourceOf(st, file)
		trial := cfg
		v, d := reflect.ValueOf(st.field(&trial)).Elem(), reflect.ValueOf(st.field(&def)).Elem()
		if src == "" || reflect.DeepEqual(v.Interface(), d.Interface()) {
			continue
		}
		v.Set(d)
		terr := trial.Validate()
		if terr == nil || terr.Error() != err.Error() && errorNames(err, st) {
			from = append(from, src)
		}
	}
	// The secrets have no flag, so they are not settings: one is a source
	// if clearing it changes the error.
	for _, sec := range []struct {
		field    func(*node.Config) *string
		env, key string
	}{
		{func(c *node.Config) *string { return &c.AdminToken }, "ROOST_ADMIN_TOKEN", "[admin] token"},
		{func(c *node.Config) *string { return &c.IDKey }, idKeyEnv, "[runtime] id_key"},
	} {
		trial := cfg
		if *sec.field(&trial) == "" {
			continue
		}
		*sec.field(&trial) = ""
		if terr := trial.Validate(); terr != nil && terr.Error() == err.Error() {
			continue
		}
		if v, _ := s.lookupEnv(sec.env); v != "" {
			from = append(from, sec.env)
		} else {
			from = append(from, sec.key+" in "+s.filePath)
		}
	}
	// The storage limits have no flag or variable: the defaults are valid,
	// so an error about them is the file's.
	if file != nil && strings.Contains(err.Error(), "storage limits") {
		from = append(from, "[storage] in "+s.filePath)
	}
	if len(from) == 0 {
		return err
	}
	return fmt.Errorf("%w (from %s)", err, strings.Join(from, ", "))
}

// errorNames reports whether err's message names st, by its flag's words
// ("bootstrap-expect", "tls cert") or its key's last part ("replicas").
func errorNames(err error, st setting) bool {
	msg := strings.ToLower(err.Error())
	_, last, _ := strings.Cut(st.key, ".")
	for _, name := range []string{st.flag, strings.ReplaceAll(st.flag, "-", " "), strings.ReplaceAll(last, "_", " ")} {
		if name != "" && strings.Contains(msg, name) {
			return true
		}
	}
	return false
}

// sourceOf names where apply took st's value from: its variable, its flag
// or the file; "" for the default.
func (s *server) sourceOf(st setting, file *config.File) string {
	if raw, ok := s.lookupEnv(st.env); ok && strings.TrimSpace(raw) != "" { // as apply
		return st.env
	}
	if s.cmd.Flags().Changed(st.flag) {
		return "--" + st.flag
	}
	if st.inFile(file) {
		return st.key + " in " + s.filePath
	}
	return ""
}

// apply sets each of settings in cfg from the file (nil for none), then
// from its flag if the user gave it (a default must not undo the file),
// then from its variable.
func (s *server) apply(cfg *node.Config, file *config.File, settings ...setting) error {
	flags := s.cmd.Flags()
	for _, st := range settings {
		dst := reflect.ValueOf(st.field(cfg)).Elem()
		if st.inFile(file) {
			dst.Set(reflect.ValueOf(st.fromFile(file)))
		}
		if flags.Changed(st.flag) {
			v := reflect.ValueOf(st.field(&s.flagged)).Elem()
			if list, ok := v.Interface().([]string); ok {
				raw := strings.Join(list, ",")
				split := splitList(raw)
				if len(split) == 0 && strings.TrimSpace(raw) != "" {
					// As for the variable: "," names nothing, a typo.
					return fmt.Errorf("--%s %q: no entry in the list (give --%s \"\" for none)", st.flag, raw, st.flag)
				}
				v = reflect.ValueOf(split)
			}
			if err := st.checkValue(v.Interface(), func(x string) string { return fmt.Sprintf("--%s %q", st.flag, x) }); err != nil {
				return err
			}
			dst.Set(v)
		}
		// An empty or blank variable counts as unset, so that `ROOST_HTTP=
		// roost dev` does not mean "listen on nothing", nor `ROOST_JOIN=" "`
		// "join no one" over the file's list. Spaces around a value are
		// a quoting slip, not part of it (a data dir whose name ends in a
		// space, an address that fails only at listen).
		if raw, ok := s.lookupEnv(st.env); ok && strings.TrimSpace(raw) != "" {
			if _, list := dst.Interface().([]string); !list { // a list's entries are trimmed
				raw = strings.TrimSpace(raw)
			}
			v, err := parseEnv(st, dst.Interface(), raw)
			if err != nil {
				return err
			}
			if err := st.checkValue(v, func(string) string { return fmt.Sprintf("%s=%q", st.env, raw) }); err != nil {
				return err
			}
			dst.Set(reflect.ValueOf(v))
		}
	}
	return nil
}

// inFile reports whether file (nil for none) sets st.
func (st setting) inFile(file *config.File) bool {
	if file == nil {
		return false
	}
	if st.zeroInFile != nil && st.zeroInFile(file) {
		return true
	}
	v := reflect.ValueOf(st.fromFile(file))
	return !v.IsZero() && !(v.Kind() == reflect.Slice && v.Len() == 0)
}

// checkValue runs st.check on v, or on each element of a list; where names
// the value's source in the error.
func (st setting) checkValue(v any, where func(string) string) error {
	if st.check == nil {
		return nil
	}
	vals, ok := v.([]string)
	if !ok {
		vals = []string{fmt.Sprint(v)}
	}
	for _, x := range vals {
		if err := st.check(x); err != nil {
			return fmt.Errorf("%s: %v", where(x), err)
		}
	}
	return nil
}

// parseEnv reads raw as a value of like's type.
func parseEnv(st setting, like any, raw string) (any, error) {
	switch like.(type) {
	case string:
		return raw, nil
	case int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: not a whole number", st.env, raw)
		}
		return n, nil
	case time.Duration:
		t, err := time.ParseDuration(raw)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: not a duration (write it like 60s or 5m)", st.env, raw)
		}
		return t, nil
	case []string:
		list := splitList(raw)
		if len(list) == 0 && strings.TrimSpace(raw) != "" {
			// "," names nothing: a typo, not a way to unset the list.
			return nil, fmt.Errorf("%s=%q: no entry in the list (leave it empty or unset for none)", st.env, raw)
		}
		return list, nil
	}
	panic(fmt.Sprintf("cli: setting %s has a field of type %T", st.flag, like))
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty entries: "a:1, b:2," is [a:1 b:2].
func splitList(s string) []string {
	out := []string{}
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// loadFile reads --config, or ./roost.toml when --config was not given and
// that file exists. It returns nil when there is no file to read.
func (s *server) loadFile() (*config.File, error) {
	path := s.configPath
	if !s.cmd.Flags().Changed("config") {
		// Lstat: a roost.toml that is a broken link is a file the user
		// meant to be read, and its error is said.
		if _, err := os.Lstat(defaultConfigFile); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		path = defaultConfigFile
	}
	if path == "" {
		return nil, nil // --config "" : run without a file even if one is here
	}
	f, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	s.filePath = path
	// As in wrangler, a path in the file is relative to the file, so that
	// --config deploy/roost.toml means the same wherever it is run from
	// (the data dir and the TLS files alike).
	for _, p := range []*string{&f.Node.DataDir, &f.Cluster.TLSCert, &f.Cluster.TLSKey, &f.Cluster.TLSCA} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	return f, nil
}

// fileNotices lists what the file says that no command acts on yet.
func fileNotices(f *config.File) []string {
	if f == nil {
		return nil
	}
	return append([]string(nil), f.Notices...)
}

// appName is the name the banner shows: the file's, else the app's.
func (s *server) appName(file *config.File) string {
	if file != nil && file.Name != "" {
		return file.Name
	}
	if s.app.Name != "" {
		return s.app.Name
	}
	return "app"
}

// bindingList is the bindings the node serves, as the banner shows them.
func (s *server) bindingList(cfg node.Config) string {
	bindings := cfg.Bindings
	if len(bindings) == 0 {
		bindings = s.app.Bindings
	}
	bs := make([]string, len(bindings))
	for i, b := range bindings {
		bs[i] = b.Name + " → " + b.ClassName
	}
	kvs := cfg.KVNamespaces
	if len(kvs) == 0 {
		kvs = s.app.KVNamespaces
	}
	for _, kv := range kvs {
		bs = append(bs, kv.Binding+" → KV "+kv.ID)
	}
	sort.Strings(bs)
	if len(bs) == 0 {
		return "(none)"
	}
	return strings.Join(bs, ", ")
}

// hints are the likely fixes for the start failures people actually hit.
// idKeyHint is the fix for an id key that does not match, for dev and
// node alike.
const idKeyHint = "set [runtime] id_key or " + idKeyEnv + " to the key the data dir was created with, the same on every node of a cluster"

type hints struct {
	addrInUse, dataDir, dirLocked string
}

func (h hints) of(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use"):
		// Some listeners (gossip) report the error as text only.
		return " (" + h.addrInUse + ")"
	case errors.Is(err, node.ErrIDKeyMismatch):
		return " (" + idKeyHint + ")"
	case errors.Is(err, node.ErrNodeStateLost): // says what to do itself
		return ""
	case errors.Is(err, node.ErrDataDirMismatch):
		return " (" + h.dataDir + ")"
	case errors.Is(err, syscall.EWOULDBLOCK): // the data dir's lock is held
		return " (" + h.dirLocked + ")"
	case errors.Is(err, node.ErrStorageStalled):
		return " (free space on the data dir's disk if it is full, then start the node again: it catches up from its data dir)"
	}
	return ""
}

// serve starts a node with cfg, prints notices and then (once the listeners
// are bound) the banner, and serves until ctx ends or SIGINT/SIGTERM
// arrives. It uses Start and Close rather than node.Run so that the banner
// shows the addresses actually bound, and only once they are.
func (s *server) serve(ctx context.Context, cfg node.Config, notices []string, h hints, banner func(*node.Node)) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	for _, n := range notices {
		fmt.Fprintf(s.stderr, "roost: notice: %s\n", n)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(s.stderr, nil))
	n, err := node.New(cfg, s.app)
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	if err := n.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: that is what was asked for
		}
		return fmt.Errorf("%s: %w%s", s.name, err, h.of(err))
	}
	banner(n)

	var failure error
	select {
	case <-ctx.Done():
		// From here a second signal gets Go's default action (exit at
		// once) instead of waiting out the grace period.
		stop()
		fmt.Fprintln(s.stderr, "roost: stopping (interrupt or terminate it again to stop at once)")
	case failure = <-n.Failed():
		stop()
	}
	if errors.Is(failure, node.ErrStorageStalled) {
		// Closing would wait on the stalled store (raft's loops are blocked
		// in its writes) while this node still held its shards; exiting
		// lets the others elect leaders at once. What was acknowledged is
		// in the synced Raft log.
		return fmt.Errorf("%s: %w; exiting without closing the store%s", s.name, failure, h.of(failure))
	}
	cctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err = n.Close(cctx)
	if failure != nil {
		return fmt.Errorf("%s: %w%s", s.name, failure, h.of(failure))
	}
	if err != nil {
		return fmt.Errorf("%s: closing: %w", s.name, err)
	}
	return nil
}

// absDir is dir made absolute, so that "where is my data" has one answer.
func absDir(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}

// urlHost is addr as a URL host a browser can open: a wildcard listener
// (0.0.0.0, ::) is reachable on loopback.
func urlHost(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// writeBanner prints title, then one aligned row per label and value, then
// the footer lines.
func writeBanner(w io.Writer, title string, rows [][2]string, footer ...string) {
	fmt.Fprintln(w, title)
	for _, r := range rows {
		fmt.Fprintf(w, "  %-9s %s\n", r[0], r[1])
	}
	for _, l := range footer {
		fmt.Fprintln(w, l)
	}
}

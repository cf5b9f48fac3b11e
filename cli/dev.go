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
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/roostdb/roost/config"
	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/node"
)

// devShutdownGrace bounds how long Ctrl-C waits for in-flight requests and
// pending commits before the node is closed anyway.
const devShutdownGrace = 15 * time.Second

// Environment variables `roost dev` reads; they override flags and file.
const (
	envDataDir     = "ROOST_DATA_DIR"
	envHTTP        = "ROOST_HTTP"
	envAdmin       = "ROOST_ADMIN"
	envShards      = "ROOST_SHARDS"
	envIdleTimeout = "ROOST_IDLE_TIMEOUT"
)

// defaultConfigFile is read from the working directory when --config is
// not given, as wrangler reads wrangler.toml.
const defaultConfigFile = "roost.toml"

// devCommand holds `roost dev`'s flags and what it needs to run.
type devCommand struct {
	app            *durable.App
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)

	configPath  string
	dataDir     string
	http        string
	admin       string
	shards      int
	idleTimeout time.Duration

	cmd *cobra.Command
}

func newDevCommand(app *durable.App, stdout, stderr io.Writer) *cobra.Command {
	return newDev(app, stdout, stderr, os.LookupEnv).cmd
}

// newDev builds the command with its environment supplied, so tests can
// check precedence without touching the process environment.
func newDev(app *durable.App, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) *devCommand {
	d := &devCommand{app: app, stdout: stdout, stderr: stderr, lookupEnv: lookupEnv}
	def := node.DefaultConfig()
	d.cmd = &cobra.Command{
		Use:   "dev",
		Short: "Run a single roost node on this machine for development",
		Long: `Run one roost node that serves the app on this machine.

Every shard is a single-voter Raft group on one Pebble database in the data
directory, through the same code a cluster uses, so objects and their
storage behave as they will in production and survive restarts.

Settings are read, each overriding the one before, from: the defaults shown
below, roost.toml ([node] data_dir/http/admin, [cluster] shards, [runtime]
idle_timeout, [storage], [vars], [[durable_objects.bindings]]), the flags you
give, and the environment variables ROOST_DATA_DIR, ROOST_HTTP, ROOST_ADMIN,
ROOST_SHARDS and ROOST_IDLE_TIMEOUT (empty ones are ignored).

A relative data_dir in roost.toml is relative to the file; a relative
--data-dir or ROOST_DATA_DIR is relative to the working directory.

Bindings come from roost.toml when it declares any, otherwise from the app
compiled into this binary. The shard count is fixed when the data directory
is first used.

The app listener serves only the Worker. The admin listener serves /healthz,
/readyz, /metrics and /debug/pprof/. Ctrl-C (or SIGTERM) stops the node after
in-flight requests finish; a second Ctrl-C stops it at once.`,
		Example: `  # serve on the default ports, reading ./roost.toml if it exists
  roost dev

  # a throwaway data directory on other ports
  roost dev --data-dir /tmp/roost --http 127.0.0.1:9000 --admin 127.0.0.1:9001

  # the environment wins over flags and file
  ROOST_HTTP=0.0.0.0:8787 roost dev --config deploy/roost.toml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, file, err := d.resolve()
			if err != nil {
				return err
			}
			return d.run(cmd.Context(), cfg, file)
		},
	}
	f := d.cmd.Flags()
	f.StringVar(&d.configPath, "config", "", `path to roost.toml (default "./roost.toml" if it exists; "" for none)`)
	f.StringVar(&d.dataDir, "data-dir", def.DataDir, "directory for the node's data ("+envDataDir+")")
	f.StringVar(&d.http, "http", def.HTTPAddr, "host:port of the app listener ("+envHTTP+")")
	f.StringVar(&d.admin, "admin", def.AdminAddr, "host:port of the admin listener ("+envAdmin+")")
	f.IntVar(&d.shards, "shards", def.Shards, "number of shards; fixed once the data dir exists ("+envShards+")")
	f.DurationVar(&d.idleTimeout, "idle-timeout", def.IdleTimeout, "evict an object from memory after this long without requests ("+envIdleTimeout+")")
	return d
}

// resolve builds the node configuration: defaults < roost.toml < flags the
// user gave < ROOST_* environment variables.
func (d *devCommand) resolve() (node.Config, *config.File, error) {
	cfg := node.DefaultConfig()
	file, err := d.loadFile(d.cmd.Flags())
	if err != nil {
		return cfg, nil, err
	}
	if file != nil {
		applyFile(&cfg, file)
	}

	// Only flags actually given override: a default must not undo the file.
	flags := d.cmd.Flags()
	if flags.Changed("data-dir") {
		cfg.DataDir = d.dataDir
	}
	if flags.Changed("http") {
		cfg.HTTPAddr = d.http
	}
	if flags.Changed("admin") {
		cfg.AdminAddr = d.admin
	}
	if flags.Changed("shards") {
		cfg.Shards = d.shards
	}
	if flags.Changed("idle-timeout") {
		cfg.IdleTimeout = d.idleTimeout
	}

	if err := applyEnv(&cfg, d.lookupEnv); err != nil {
		return cfg, nil, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, nil, err
	}
	return cfg, file, nil
}

// loadFile reads --config, or ./roost.toml when --config was not given and
// that file exists. It returns nil when there is no file to read.
func (d *devCommand) loadFile(flags *pflag.FlagSet) (*config.File, error) {
	path := d.configPath
	if !flags.Changed("config") {
		if _, err := os.Stat(defaultConfigFile); errors.Is(err, fs.ErrNotExist) {
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
	// As in wrangler, a path in the file is relative to the file, so that
	// --config deploy/roost.toml means the same wherever it is run from.
	if f.Node.DataDir != "" && !filepath.IsAbs(f.Node.DataDir) {
		f.Node.DataDir = filepath.Join(filepath.Dir(path), f.Node.DataDir)
	}
	return f, nil
}

// applyFile copies the settings `roost dev` uses from the file into cfg.
func applyFile(cfg *node.Config, f *config.File) {
	if f.Node.DataDir != "" {
		cfg.DataDir = f.Node.DataDir
	}
	if f.Node.HTTP != "" {
		cfg.HTTPAddr = f.Node.HTTP
	}
	if f.Node.Admin != "" {
		cfg.AdminAddr = f.Node.Admin
	}
	if f.Cluster.Shards != 0 {
		cfg.Shards = f.Cluster.Shards
	}
	if f.Runtime.IdleTimeout != 0 {
		cfg.IdleTimeout = f.Runtime.IdleTimeout
	}
	cfg.Limits = f.Storage.Limits(cfg.Limits)
	if len(f.Bindings) > 0 {
		cfg.Bindings = f.Bindings
	}
	if len(f.Vars) > 0 {
		cfg.Vars = f.Vars
	}
}

// applyEnv applies ROOST_* variables. An empty variable counts as unset, so
// `ROOST_HTTP= roost dev` does not mean "listen on nothing".
func applyEnv(cfg *node.Config, lookup func(string) (string, bool)) error {
	get := func(name string) (string, bool) {
		v, ok := lookup(name)
		return v, ok && v != ""
	}
	if v, ok := get(envDataDir); ok {
		cfg.DataDir = v
	}
	if v, ok := get(envHTTP); ok {
		cfg.HTTPAddr = v
	}
	if v, ok := get(envAdmin); ok {
		cfg.AdminAddr = v
	}
	if v, ok := get(envShards); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%s=%q: not a whole number", envShards, v)
		}
		cfg.Shards = n
	}
	if v, ok := get(envIdleTimeout); ok {
		t, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s=%q: not a duration (write it like 60s or 5m)", envIdleTimeout, v)
		}
		cfg.IdleTimeout = t
	}
	return nil
}

// notices lists what the file says that `roost dev` does not act on, so a
// setting never seems to be ignored silently.
func devNotices(f *config.File) []string {
	if f == nil {
		return nil
	}
	out := append([]string(nil), f.Notices...)
	var ignored []string
	for _, s := range []struct {
		key string
		set bool
	}{
		{"node.id", f.Node.ID != ""},
		{"node.grpc", f.Node.GRPC != ""},
		{"node.gossip", f.Node.Gossip != ""},
		{"node.advertise", f.Node.Advertise != ""},
		{"node.join", len(f.Node.Join) > 0},
		{"cluster.bootstrap_expect", f.Cluster.BootstrapExpect != 0},
		{"cluster.replicas", f.Cluster.Replicas != 0},
	} {
		if s.set {
			ignored = append(ignored, s.key)
		}
	}
	if len(ignored) > 0 {
		out = append(out, "roost dev runs one node on its own, so it ignores "+strings.Join(ignored, ", "))
	}
	if len(f.KVNamespaces) > 0 {
		names := make([]string, len(f.KVNamespaces))
		for i, kv := range f.KVNamespaces {
			names[i] = kv.Binding
		}
		out = append(out, "kv_namespaces ("+strings.Join(names, ", ")+") are not served by this version of roost dev")
	}
	return out
}

// run starts the node, prints where it serves, and waits for a signal.
// It uses Start and Close rather than node.Run so that the banner shows
// the addresses actually bound, and only once they are.
func (d *devCommand) run(ctx context.Context, cfg node.Config, file *config.File) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	for _, n := range devNotices(file) {
		fmt.Fprintf(d.stderr, "roost: notice: %s\n", n)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(d.stderr, nil))
	n, err := node.New(cfg, d.app)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if err := n.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: that is what was asked for
		}
		return fmt.Errorf("dev: %w%s", err, startHint(err))
	}

	bindings := cfg.Bindings
	if len(bindings) == 0 {
		bindings = d.app.Bindings
	}
	name := d.app.Name
	if file != nil && file.Name != "" {
		name = file.Name
	}
	dataDir := cfg.DataDir
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs // so that "where is my data" has one answer
	}
	writeBanner(d.stdout, name, urlHost(n.HTTPAddr()), urlHost(n.AdminAddr()), dataDir, bindings)

	<-ctx.Done()
	// From here a second signal gets Go's default action (exit at once)
	// instead of waiting out the grace period.
	stop()
	fmt.Fprintln(d.stderr, "roost: stopping (Ctrl-C again to stop at once)")
	cctx, cancel := context.WithTimeout(context.Background(), devShutdownGrace)
	defer cancel()
	if err := n.Close(cctx); err != nil {
		return fmt.Errorf("dev: closing: %w", err)
	}
	return nil
}

// startHint suggests the likely fix for the failures people actually hit.
func startHint(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return " (is another roost dev running? choose other addresses with --http and --admin)"
	case errors.Is(err, node.ErrDataDirMismatch):
		return " (use the shard count the data dir was created with, or another --data-dir)"
	case errors.Is(err, syscall.EWOULDBLOCK): // the data dir's lock is held
		return " (is another roost using this data dir? choose another with --data-dir)"
	}
	return ""
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

func writeBanner(w io.Writer, name, http, admin, dataDir string, bindings []durable.Binding) {
	if name == "" {
		name = "app"
	}
	bs := make([]string, len(bindings))
	for i, b := range bindings {
		bs[i] = b.Name + " → " + b.ClassName
	}
	sort.Strings(bs)
	if len(bs) == 0 {
		bs = []string{"(none)"}
	}
	fmt.Fprintf(w, "roost dev: serving %s\n", name)
	fmt.Fprintf(w, "  app       http://%s/\n", http)
	fmt.Fprintf(w, "  admin     http://%s/  (/healthz /readyz /metrics /debug/pprof/)\n", admin)
	fmt.Fprintf(w, "  data dir  %s\n", dataDir)
	fmt.Fprintf(w, "  bindings  %s\n", strings.Join(bs, ", "))
	fmt.Fprintln(w, "Press Ctrl-C to stop.")
}

package cli

import (
	"context"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/roostdb/roost/config"
	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/node"
)

// devCommand is `roost dev`: a server with its own help and banner.
type devCommand struct {
	*server
}

// newDev builds the command with its environment supplied, so tests can
// check precedence without touching the process environment.
func newDev(app *durable.App, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) *devCommand {
	d := &devCommand{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a single roost node on this machine for development",
		Long: `Run one roost node that serves the app on this machine.

Every shard is a single-voter Raft group on one Pebble database in the data
directory, through the same code a cluster uses, so objects and their
storage behave as they will in production and survive restarts.

Settings are read, each overriding the one before, from: the defaults shown
below, roost.toml ([node] data_dir/http/admin, [cluster] shards, [runtime]
idle_timeout/id_key, [storage], [admin] token, [vars],
[[durable_objects.bindings]], [[kv_namespaces]]), the flags you give, and the
environment variables ROOST_DATA_DIR, ROOST_HTTP, ROOST_ADMIN, ROOST_SHARDS,
ROOST_IDLE_TIMEOUT, ROOST_ADMIN_TOKEN and ROOST_ID_KEY (empty ones are
ignored, and so are blank ones but a blank ROOST_ADMIN_TOKEN or ROOST_ID_KEY,
which stops the command: a secret of spaces is a mistake, not a wish for
none; spaces around any other value are dropped).

The id key ([runtime] id_key or ROOST_ID_KEY, at least 16 bytes; no flag, so
that it stays out of process listings) is a secret from which object IDs are
derived: with it, IDFromString refuses IDs made outside the node, as
Cloudflare's does; without it anyone who knows a class's name can make IDs
of it. It is fixed once the data directory has been used: with another key
every name and ID would reach other objects, so the node refuses to start.

A cluster node's settings, in the file or its variables (ROOST_JOIN,
ROOST_GOSSIP_KEY, ...), are ignored with a notice. A ROOST_* variable no
command reads stops it with an error naming the variable (see 'roost node
--help').

A relative data_dir in roost.toml is relative to the file; a relative
--data-dir or ROOST_DATA_DIR is relative to the working directory.

Bindings come from roost.toml when it declares any, otherwise from the app
compiled into this binary. The shard count is fixed when the data directory
is first used.

The app listener serves only the Worker. The admin listener serves /healthz,
/readyz, /metrics, /debug/pprof/, /v1/status, the KV calls (/v1/kv/..., which
'roost kv' uses), an object's location (/v1/objects/..., 'roost shards
locate') and the dashboard at /ui/; the rest of the admin API needs a
cluster and answers 409. Ctrl-C (or SIGTERM) stops the node after
in-flight requests finish; a second Ctrl-C stops it at once.`,
		Example: `  # serve on the default ports, reading ./roost.toml if it exists
  roost dev

  # a throwaway data directory on other ports
  roost dev --data-dir /tmp/roost --http 127.0.0.1:9000 --admin 127.0.0.1:9001

  # your own config file; the environment wins over flags and file
  ROOST_HTTP=0.0.0.0:8787 roost dev --config staging.toml`,
		Args: noArgs,
		RunE: runE(d.resolve, d.run),
	}
	d.server = newServer("dev", cmd, node.DefaultConfig(), devSettings, app, stdout, stderr, lookupEnv)
	return d
}

// devSettings are the settings `roost dev` reads; the cluster's are left
// to `roost node`.
var devSettings = []setting{dataDirSetting, httpSetting, adminSetting, shardsSetting, idleTimeoutSetting}

// resolve builds the node configuration: defaults < roost.toml < flags the
// user gave < ROOST_* environment variables.
func (d *devCommand) resolve() (node.Config, *config.File, error) {
	return d.resolveWith(func(*config.File) (node.Config, error) { return node.DefaultConfig(), nil })
}

// devNotices lists what the file and the environment (lookupEnv) say that
// `roost dev` does not act on, so a setting never seems to be ignored
// silently.
func devNotices(f *config.File, lookupEnv func(string) (string, bool)) []string {
	out := fileNotices(f)
	var ignored []string
	for _, st := range clusterSettings {
		if st.inFile(f) {
			ignored = append(ignored, st.key)
		}
	}
	if f != nil && f.Cluster.GossipKey != "" {
		ignored = append(ignored, "cluster.gossip_key")
	}
	// The cluster's variables too (dev has no flags for them): ROOST_JOIN
	// exported for a node, say, is not a setting of this one.
	for _, env := range append(settingEnvs(clusterSettings), gossipKeyEnv) {
		if v, ok := lookupEnv(env); ok && v != "" {
			ignored = append(ignored, env)
		}
	}
	if len(ignored) > 0 {
		out = append(out, "roost dev runs one node on its own, so it ignores "+strings.Join(ignored, ", "))
	}
	return out
}

// settingEnvs are the variables of settings.
func settingEnvs(settings []setting) []string {
	out := make([]string, len(settings))
	for i, st := range settings {
		out[i] = st.env
	}
	return out
}

// devHints are the likely fixes for the ways `roost dev` fails to start.
var devHints = hints{
	addrInUse: "is another roost dev running? choose other addresses with --http and --admin",
	dataDir:   "give roost dev a data dir of its own with --data-dir",
	dirLocked: "is another roost using this data dir? choose another with --data-dir",
}

// run serves until a signal, with dev's notices and banner.
func (d *devCommand) run(ctx context.Context, cfg node.Config, file *config.File) error {
	return d.serve(ctx, cfg, devNotices(file, d.lookupEnv), devHints, func(n *node.Node) {
		writeBanner(d.stdout, "roost dev: serving "+d.appName(file), [][2]string{
			{"app", "http://" + urlHost(n.HTTPAddr()) + "/"},
			{"admin", "http://" + urlHost(n.AdminAddr()) + "/  (/ui/ dashboard, /healthz /readyz /metrics /debug/pprof/)"},
			{"data dir", absDir(cfg.DataDir)},
			{"bindings", d.bindingList(cfg)},
		}, "Press Ctrl-C to stop.")
	})
}

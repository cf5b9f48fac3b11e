package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/roostdb/roost/config"
	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/node"
)

// Settings only a cluster node reads, in the order `roost dev` names them
// when it ignores them.
var (
	idSetting = setting{
		key: "node.id", flag: "id", env: "ROOST_ID", usage: "this node's id, unique in the cluster and never changed (required)",
		field:    func(c *node.Config) any { return &c.NodeID },
		fromFile: func(f *config.File) any { return f.Node.ID },
	}
	clusterSettings = []setting{
		idSetting,
		{
			key: "node.grpc", flag: "grpc", env: "ROOST_GRPC", usage: "host:port of the node-to-node listener (Raft, forwarding)",
			field:    func(c *node.Config) any { return &c.GRPCAddr },
			fromFile: func(f *config.File) any { return f.Node.GRPC },
		},
		{
			key: "node.gossip", flag: "gossip", env: "ROOST_GOSSIP", usage: "host:port of the membership listener, TCP and UDP",
			field:    func(c *node.Config) any { return &c.GossipAddr },
			fromFile: func(f *config.File) any { return f.Node.Gossip },
		},
		{
			key: "node.advertise", flag: "advertise", env: "ROOST_ADVERTISE", usage: `host (no port) other nodes reach this one at; "" means the listeners' own host`,
			field:    func(c *node.Config) any { return &c.Advertise },
			fromFile: func(f *config.File) any { return f.Node.Advertise },
			check: func(host string) error {
				if host == "" {
					return nil // the listeners' own host, as the usage says
				}
				return config.CheckHost(host)
			},
		},
		{
			key: "node.join", flag: "join", env: "ROOST_JOIN", usage: "gossip host:port of a node to join; repeat the flag or separate with commas",
			field:    func(c *node.Config) any { return &c.Join },
			fromFile: func(f *config.File) any { return f.Node.Join },
			check:    func(addr string) error { return config.CheckHostPort(addr, true) },
		},
		{
			key: "cluster.bootstrap_expect", flag: "bootstrap-expect", env: "ROOST_BOOTSTRAP_EXPECT", usage: "how many nodes must meet before a new cluster forms",
			field:    func(c *node.Config) any { return &c.BootstrapExpect },
			fromFile: func(f *config.File) any { return f.Cluster.BootstrapExpect },
		},
		{
			key: "cluster.replicas", flag: "replicas", env: "ROOST_REPLICAS", usage: "how many nodes hold each shard (1 to 7); at most --bootstrap-expect",
			field:    func(c *node.Config) any { return &c.Replicas },
			fromFile: func(f *config.File) any { return f.Cluster.Replicas },
		},
		{
			key: "cluster.dead_node_grace", flag: "dead-node-grace", env: "ROOST_DEAD_NODE_GRACE", usage: "re-create the replicas of a node dead this long on other nodes; 0 never does",
			field:      func(c *node.Config) any { return &c.DeadNodeGrace },
			fromFile:   func(f *config.File) any { return f.Cluster.DeadNodeGrace },
			zeroInFile: func(f *config.File) bool { return f.Cluster.NoHealing },
		},
		{
			key: "cluster.tls_cert", flag: "tls-cert", env: "ROOST_TLS_CERT", usage: "PEM certificate of this node for mutual TLS between nodes (with --tls-key and --tls-ca)",
			field:    func(c *node.Config) any { return &c.TLSCertFile },
			fromFile: func(f *config.File) any { return f.Cluster.TLSCert },
		},
		{
			key: "cluster.tls_key", flag: "tls-key", env: "ROOST_TLS_KEY", usage: "PEM private key of --tls-cert",
			field:    func(c *node.Config) any { return &c.TLSKeyFile },
			fromFile: func(f *config.File) any { return f.Cluster.TLSKey },
		},
		{
			key: "cluster.tls_ca", flag: "tls-ca", env: "ROOST_TLS_CA", usage: "PEM certificate of the CA that signed every node's certificate",
			field:    func(c *node.Config) any { return &c.TLSCAFile },
			fromFile: func(f *config.File) any { return f.Cluster.TLSCA },
		},
	}
)

// gossipKeyEnv sets the gossip encryption key. The key has no flag, as the
// admin token has none: a flag would show in process listings.
const gossipKeyEnv = "ROOST_GOSSIP_KEY"

// idKeyEnv names the variable of the secret object IDs are derived with
// ([runtime] id_key), read by roost dev and roost node alike.
const idKeyEnv = "ROOST_ID_KEY"

// nodeSettings are all that `roost node` reads.
var nodeSettings = append([]setting{
	dataDirSetting.withUsage("directory for this node's data; every node needs its own"),
	httpSetting,
	adminSetting,
	shardsSetting.withUsage("number of shards in the cluster, 1 to 4096; fixed when the cluster first forms (fewer: less CPU per write over many objects; more: finer placement; docs/operations.md)"),
	idleTimeoutSetting,
}, clusterSettings...)

// nodeCommand is `roost node`: one node of a cluster.
type nodeCommand struct {
	*server
}

// newNode builds the command with its environment supplied, so tests can
// check precedence without touching the process environment.
func newNode(app *durable.App, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) *nodeCommand {
	c := &nodeCommand{}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run one node of a roost cluster",
		Long: `Run one node of a roost cluster.

Start a node on every machine (or several on one machine, each with its own
--id, --data-dir and ports). Nodes find each other through gossip: give each
the gossip address of another node with --join; the first node may join
nobody. Once --bootstrap-expect nodes have met, they form the cluster and
place the shards, each held by --replicas nodes. A node that restarts or
joins later takes its place in the cluster that exists; one that restarts
finds the others again even if its --join does not answer (every node keeps
reaching out to the nodes of the cluster it does not see).

The node prints where it serves as soon as its listeners are bound, which is
before the cluster has formed: GET /readyz on the admin listener answers 503
with the reason until this node can serve, then 200.

Every node needs an --id that is unique in the cluster (1 to 64 of a-z, 0-9,
'-', '_' and '.', not '.' or '..'); a data dir belongs to the node id that
first used it.
--shards is fixed when the cluster first forms, and --replicas may not exceed
--bootstrap-expect. The nodes that form a cluster need the same --shards,
--bootstrap-expect and --replicas: while one of the first nodes says
otherwise, none of them forms it (each waits, and /readyz says why). A node
joining a cluster that exists takes its replica count from the cluster; its
own --bootstrap-expect and --replicas are not used.

The listeners' hosts are what other nodes are told to dial. When that is not
an address they can reach (listening on 0.0.0.0, or in a container), give
--advertise: the host or IP to dial instead; the ports stay the listeners'.

Settings are read, each overriding the one before, from: the defaults shown
below, roost.toml ([node] id/data_dir/http/admin/grpc/gossip/advertise/join,
[cluster] bootstrap_expect/shards/replicas/dead_node_grace/tls_cert/tls_key/
tls_ca/gossip_key, [runtime] idle_timeout/id_key, [storage], [admin] token,
[vars], [[durable_objects.bindings]], [[kv_namespaces]]), the flags you give,
and the environment variables ROOST_ID, ROOST_DATA_DIR, ROOST_HTTP,
ROOST_ADMIN, ROOST_GRPC, ROOST_GOSSIP, ROOST_ADVERTISE,
ROOST_JOIN (comma-separated), ROOST_BOOTSTRAP_EXPECT, ROOST_SHARDS,
ROOST_REPLICAS, ROOST_DEAD_NODE_GRACE, ROOST_TLS_CERT, ROOST_TLS_KEY,
ROOST_TLS_CA, ROOST_GOSSIP_KEY, ROOST_IDLE_TIMEOUT, ROOST_ADMIN_TOKEN and
ROOST_ID_KEY (empty ones are ignored, and so are blank ones but a blank
ROOST_ADMIN_TOKEN, ROOST_GOSSIP_KEY or ROOST_ID_KEY, which stops the command:
a secret of spaces is a mistake, not a wish for none; spaces around any other
value are dropped). A relative data_dir, tls_cert, tls_key or tls_ca in
roost.toml is relative to the file; a relative path in a flag or variable is
relative to the working directory.

Any other ROOST_* variable stops this command, 'roost dev' and the operator
commands with an error that names it (and the variable it probably
misspells), rather than being ignored. Let through are ROOST_ADDR (the
operator commands'), ROOST_BIN, ROOST_COMPOSE_APP_PORT,
ROOST_COMPOSE_ADMIN_PORT and ROOST_BENCH_INFLIGHT (the repository's scripts,
docker-compose.yml and benchmarks), ROOST_TEST_*, and the service links
Kubernetes sets for a Service named roost-... (ROOST_APP_SERVICE_HOST,
ROOST_APP_PORT=tcp://..., ...).

Security between nodes (docs/security.md): give all of --tls-cert,
--tls-key and --tls-ca (PEM files; 'roost certs' makes a development CA and
node certificates) and the grpc listener and every connection this node
makes to another use mutual TLS: each side must show a certificate signed by
the CA, and a node's certificate must name the host the others dial it at
(--advertise, else the grpc listener's host) as a DNS name or IP SAN.
Without them node-to-node gRPC is plaintext. Set [cluster] gossip_key or
ROOST_GOSSIP_KEY (base64 of 16, 24 or 32 bytes; 'roost certs gossip-key'
makes one) and gossip is encrypted and authenticated with AES-GCM; a node
with another key, or none, cannot join. The key has no flag, so that it
stays out of process listings. The app and admin listeners stay plaintext
HTTP either way: put a TLS proxy in front of them.

Object IDs: set [runtime] id_key or ROOST_ID_KEY (a secret of at least 16
bytes, the same on every node; no flag) and object IDs are derived from it
with the class's name, so IDFromString refuses IDs made outside the cluster,
as Cloudflare's does; without it anyone who knows a class's name can make
IDs of it. It is fixed once the data directory has been used (with another
key every name and ID would reach other objects, so the node refuses to start),
and a node with another key cannot join.

The app listener serves only the Worker, for objects on any node. The admin
listener serves the /ui/ dashboard, /healthz, /readyz, /metrics and
/debug/pprof/, and the JSON admin API under /v1/ (docs/admin-api.md), which
needs a bearer token when ROOST_ADMIN_TOKEN or [admin] token is set (no flag,
so the token stays out of process listings). The grpc listener carries Raft
and forwarded requests between nodes; the gossip listener (TCP and UDP)
carries membership. Ctrl-C (or SIGTERM) stops the node after in-flight
requests finish; a second Ctrl-C stops it at once.`,
		Example: `  # three nodes on one machine, each in its own terminal
  roost node --id n1 --data-dir d1 --http 127.0.0.1:8701 --admin 127.0.0.1:8711 --grpc 127.0.0.1:8721 --gossip 127.0.0.1:8731 --bootstrap-expect 3
  roost node --id n2 --data-dir d2 --http 127.0.0.1:8702 --admin 127.0.0.1:8712 --grpc 127.0.0.1:8722 --gossip 127.0.0.1:8732 --bootstrap-expect 3 --join 127.0.0.1:8731
  roost node --id n3 --data-dir d3 --http 127.0.0.1:8703 --admin 127.0.0.1:8713 --grpc 127.0.0.1:8723 --gossip 127.0.0.1:8733 --bootstrap-expect 3 --join 127.0.0.1:8731
  curl http://127.0.0.1:8711/readyz    # 200 once n1 can serve

  # n1 of three like those, with mutual TLS and encrypted gossip (make the files with 'roost certs')
  export ROOST_GOSSIP_KEY=$(cat certs/gossip.key)
  roost node --id n1 --data-dir s1 --http 127.0.0.1:8701 --admin 127.0.0.1:8711 --grpc 127.0.0.1:8721 --gossip 127.0.0.1:8731 --bootstrap-expect 3 --tls-cert certs/n1.crt --tls-key certs/n1.key --tls-ca certs/ca.crt

  # one node per machine, listening everywhere, configured by the environment
  ROOST_ID=n2 ROOST_ADVERTISE=10.0.0.2 ROOST_JOIN=10.0.0.1:7946,10.0.0.3:7946 \
    roost node --http 0.0.0.0:8787 --admin 0.0.0.0:8789 --grpc 0.0.0.0:8790 --gossip 0.0.0.0:7946`,
		Args: noArgs,
		RunE: runE(c.resolve, c.run),
	}
	c.server = newServer("node", cmd, node.DefaultClusterConfig(""), nodeSettings, app, stdout, stderr, lookupEnv)
	return c
}

// resolve builds the node configuration from node.DefaultClusterConfig of
// the id: defaults < roost.toml < flags the user gave < ROOST_* variables.
func (c *nodeCommand) resolve() (node.Config, *config.File, error) {
	return c.resolveWith(func(file *config.File) (node.Config, error) {
		var id node.Config
		if err := c.apply(&id, file, idSetting); err != nil {
			return id, err
		}
		if id.NodeID == "" {
			return id, &usageError{cmd: c.cmd, err: errors.New("no node id: give each node its own with --id, ROOST_ID or id in [node] of roost.toml")}
		}
		return node.DefaultClusterConfig(id.NodeID), nil
	}, c.resolveGossipKey)
}

// resolveGossipKey sets cfg.GossipKey from [cluster] gossip_key, then from
// ROOST_GOSSIP_KEY. Errors name the source, never the key.
func (c *nodeCommand) resolveGossipKey(cfg *node.Config, file *config.File) error {
	raw, src := "", ""
	if file != nil && file.Cluster.GossipKey != "" {
		raw, src = file.Cluster.GossipKey, "cluster.gossip_key"
	}
	if v, ok := c.lookupEnv(gossipKeyEnv); ok && v != "" {
		raw, src = v, gossipKeyEnv
	}
	if raw == "" {
		return nil
	}
	key, err := config.ParseGossipKey(raw)
	if err != nil {
		return fmt.Errorf("%s: %v", src, err)
	}
	cfg.GossipKey = key
	return nil
}

// nodeNotices lists what the file says that `roost node` does not act on,
// and settings that will not let other nodes reach this one.
func nodeNotices(cfg node.Config, f *config.File) []string {
	out := fileNotices(f)
	if cfg.Advertise == "" {
		host, _, err := net.SplitHostPort(cfg.GRPCAddr)
		if ip := net.ParseIP(host); err == nil && (host == "" || ip != nil && ip.IsUnspecified()) {
			out = append(out, fmt.Sprintf("grpc address %q is every interface, which other nodes cannot dial: set --advertise (ROOST_ADVERTISE) to the host they should use", cfg.GRPCAddr))
		}
	}
	return out
}

// nodeHints are the likely fixes for the ways `roost node` fails to start.
var nodeHints = hints{
	addrInUse: "is another roost running? choose other addresses with --http, --admin, --grpc and --gossip",
	dataDir:   "give every node a data dir of its own with --data-dir, and keep the shard count it was created with",
	dirLocked: "is another roost using this data dir? give every node its own with --data-dir",
}

// run serves until a signal, with the node's notices and banner.
func (c *nodeCommand) run(ctx context.Context, cfg node.Config, file *config.File) error {
	return c.serve(ctx, cfg, nodeNotices(cfg, file), nodeHints, func(n *node.Node) {
		writeNodeBanner(c.stdout, cfg, c.appName(file), urlHost(n.HTTPAddr()), urlHost(n.AdminAddr()), c.bindingList(cfg), n.RejoinsCluster())
	})
}

// writeNodeBanner says who the node is, where it listens, whom it joins
// and that the cluster may not have formed yet.
// rejoins is the cluster the node's data dir belongs to ("" if none yet).
func writeNodeBanner(w io.Writer, cfg node.Config, name, app, admin, bindings, rejoins string) {
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = "(the listeners' hosts)"
	}
	join := strings.Join(cfg.Join, ", ")
	switch {
	case join == "" && rejoins != "":
		join = "(none: the cluster's nodes are reached through the map in the data dir)"
	case join == "":
		join = "(none: other nodes join this one)"
	}
	waiting := fmt.Sprintf("Waiting for the cluster to form (a new one forms once %d nodes have met);", cfg.BootstrapExpect)
	if cfg.BootstrapExpect == 1 {
		waiting = "Forming a cluster of this node alone (--bootstrap-expect 1);"
	}
	// Bootstrap-expect and the replica count are only read when a new
	// cluster forms: a node joining one takes the cluster's.
	cluster := fmt.Sprintf("shards %d; bootstrap-expect %d and replicas %d if a new cluster forms", cfg.Shards, cfg.BootstrapExpect, cfg.Replicas)
	if rejoins != "" {
		waiting = fmt.Sprintf("Rejoining cluster %s with the state in the data dir;", rejoins)
		cluster = fmt.Sprintf("shards %d (the cluster's replica count rules)", cfg.Shards)
	}
	writeBanner(w, fmt.Sprintf("roost node %s: serving %s", cfg.NodeID, name), [][2]string{
		{"app", "http://" + app + "/"},
		{"admin", "http://" + admin + "/  (/ui/ dashboard, /healthz /readyz /metrics /debug/pprof/)"},
		{"grpc", cfg.GRPCAddr},
		{"gossip", cfg.GossipAddr},
		{"advertise", advertise},
		{"join", join},
		{"cluster", cluster},
		{"security", securityLine(cfg)},
		{"data dir", absDir(cfg.DataDir)},
		{"bindings", bindings},
	},
		waiting,
		"http://"+admin+"/readyz answers 200 once this node can serve.",
		"Press Ctrl-C to stop.")
}

// securityLine says in the banner what protects node-to-node traffic, so
// that a node running plaintext by mistake is seen at once.
func securityLine(cfg node.Config) string {
	grpc := "grpc plaintext"
	if cfg.TLS() {
		grpc = "grpc mutual TLS (CA " + cfg.TLSCAFile + ")"
	}
	gossip := "gossip unencrypted"
	if len(cfg.GossipKey) > 0 {
		gossip = fmt.Sprintf("gossip AES-%d-GCM", len(cfg.GossipKey)*8)
	}
	return grpc + ", " + gossip + "; app and admin listeners plaintext HTTP"
}

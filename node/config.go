package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/placement"
)

// Config is everything one node needs. Build it with DefaultConfig and
// change what you need; New calls Validate.
type Config struct {
	// DataDir holds the node's Pebble database and Raft snapshots.
	DataDir string
	// HTTPAddr is the app listener (the Worker): user traffic only.
	HTTPAddr string
	// AdminAddr serves /healthz, /readyz, /metrics and /debug/pprof.
	AdminAddr string
	// Shards is the number of shards (Raft groups) object IDs hash into.
	// It is fixed when the data dir is first used.
	Shards int
	// IdleTimeout is how long an instance may go without events before it
	// is evicted from memory.
	IdleTimeout time.Duration
	// MaxInflightPerShard bounds the Raft entries a shard has proposed and
	// not yet seen committed; turns that become ready meanwhile are grouped
	// into the next entry. Fewer in flight means bigger entries: 1 measured
	// best on one node and on a three-node cluster (docs/benchmarks.md).
	MaxInflightPerShard int
	// MaxQueuedPerObject bounds the requests waiting for one object's input
	// gate; past it the object answers 503 (overloaded).
	MaxQueuedPerObject int
	// BodyStallTimeout bounds how long a request body on the app or admin
	// listener may go without a byte arriving; past it, reading the body
	// fails. On the app listener, a body's first MiB is read before its
	// object's turn, the rest during it, so a client that stalls there
	// holds up every request to the object: for this long at most. It
	// bounds too how long one write of an answer may wait for the client
	// to take it; past it, the connection is dropped.
	BodyStallTimeout time.Duration
	// Limits bounds storage keys, values and multi-key calls.
	Limits durable.Limits
	// Bindings maps binding names to classes. Empty means the app's defaults.
	Bindings []durable.Binding
	// KVNamespaces are the KV namespaces the Worker and objects reach with
	// Env.KV ([[kv_namespaces]]).
	KVNamespaces []durable.KVBinding
	// Vars are the [vars] the Worker and objects read with Env.Var.
	Vars map[string]string
	// Logger receives the node's logs; nil means slog.Default().
	Logger *slog.Logger
	// AdminToken, when set, is the bearer token every /v1/ call of the
	// admin API must carry (Authorization: Bearer <token>); /healthz,
	// /readyz, /metrics and /debug/pprof stay open. Empty means no auth.
	// Every node of a cluster needs the same token: calls are forwarded
	// between nodes with the caller's Authorization header.
	AdminToken string
	// IDKey, when set, is a secret from which (with each class's name)
	// the namespaces derive and check their object IDs
	// (durable.DeriveNamespaceKey's uniqueKey): without it an ID of a
	// class can be made by anyone who knows the class's name, with it only
	// by the cluster, so IDFromString refuses IDs it did not make (as
	// Cloudflare's does). Every node of a cluster needs the same key, and
	// it is fixed once data exists: with another, every name and ID
	// reaches other objects (a node refuses a data dir or a peer whose key
	// differs, by fingerprint). Empty means none; at least 16 bytes.
	IDKey string

	// Cluster settings (roost node). An empty NodeID means dev mode: every
	// shard is a single-voter group on this node and the rest is unused.

	// NodeID names this node in the cluster; it never changes.
	NodeID string
	// GRPCAddr is the node-to-node listener: Raft of every group and forwarding.
	GRPCAddr string
	// GossipAddr is the memberlist listener (TCP and UDP).
	GossipAddr string
	// Advertise is the host other nodes use to reach this one (for
	// containers); the ports are those of the listeners. Empty means the
	// listeners' own host.
	Advertise string
	// Join lists gossip addresses (host:port) of nodes to join.
	Join []string
	// BootstrapExpect is how many nodes form the cluster's first
	// configuration: the first that many to meet bootstrap the meta group.
	BootstrapExpect int
	// Replicas is how many nodes hold each shard.
	Replicas int
	// DeadNodeGrace is how long a node may be dead in gossip before the
	// meta leader re-creates its replicas on other nodes (docs/operations.md,
	// "Automatic healing"). 0 turns automatic healing off.
	DeadNodeGrace time.Duration

	// TLSCertFile, TLSKeyFile and TLSCAFile are PEM files: this node's
	// certificate and key, and the CA that signed every node's. Set all
	// three and the gRPC listener and every gRPC call to another node use
	// mutual TLS (docs/security.md); set none and they are plaintext.
	// The certificate must name the host other nodes dial this node at.
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// GossipKey, when set (16, 24 or 32 bytes: AES-128, -192 or -256),
	// encrypts and authenticates all gossip with AES-GCM; every node needs
	// the same key, and a node with another key (or none) cannot join.
	GossipKey []byte
}

// TLS reports whether node-to-node gRPC uses mutual TLS.
func (c Config) TLS() bool { return c.TLSCertFile != "" }

// Cluster reports whether the node runs as part of a cluster.
func (c Config) Cluster() bool { return c.NodeID != "" }

// DefaultConfig returns the settings of `roost dev`.
func DefaultConfig() Config {
	return Config{
		DataDir:             ".roost",
		HTTPAddr:            "127.0.0.1:8787",
		AdminAddr:           "127.0.0.1:8789",
		Shards:              16,
		IdleTimeout:         60 * time.Second,
		MaxInflightPerShard: 1,
		MaxQueuedPerObject:  10000,
		BodyStallTimeout:    30 * time.Second,
		Limits:              durable.DefaultLimits(),
		GRPCAddr:            "127.0.0.1:8790",
		GossipAddr:          "127.0.0.1:7946",
		BootstrapExpect:     3,
		Replicas:            3,
		DeadNodeGrace:       30 * time.Second,
	}
}

// DefaultClusterConfig returns the settings of `roost node`: DefaultConfig
// with 64 shards and the given node ID.
func DefaultClusterConfig(nodeID string) Config {
	c := DefaultConfig()
	c.NodeID = nodeID
	c.Shards = 64
	return c
}

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid node configuration")

// TokenBadChar finds the first character of token that is not printable
// ASCII, space or tab: a control character no HTTP header can carry, or
// one beyond ASCII, which a browser cannot send in a header (the
// dashboard's fetch refuses it) and other clients send in encodings that
// differ. It returns the character and its byte index, or -1.
func TokenBadChar(token string) (rune, int) {
	for i, r := range token {
		if r < 0x20 && r != '\t' || r >= 0x7f {
			return r, i
		}
	}
	return 0, -1
}

// TokenBadCharWhy says why TokenBadChar's find cannot be in a token.
func TokenBadCharWhy(r rune) string {
	if r < 0x20 || r == 0x7f {
		return "a control character, which no Authorization header can carry"
	}
	return "a character beyond ASCII, which a browser cannot send in a header; use printable ASCII"
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.DataDir == "" {
		return bad("data dir is empty")
	}
	if strings.TrimSpace(c.DataDir) != c.DataDir {
		return bad("data dir %q has spaces around it: a quoting slip, most likely", c.DataDir)
	}
	type listener struct{ name, addr string }
	listeners := []listener{{"http", c.HTTPAddr}, {"admin", c.AdminAddr}}
	if c.Cluster() {
		listeners = append(listeners, listener{"grpc", c.GRPCAddr}, listener{"gossip", c.GossipAddr})
	}
	// Checked before anything is written to the data dir, so that a typo
	// in an address does not leave the dir claimed by a node that never ran.
	taken := map[string]string{}
	for _, l := range listeners {
		name, addr := l.name, l.addr
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return bad("%s address %q: %v", name, addr, err)
		}
		// Digits only, as roost.toml's are checked: Atoi (and net.Listen)
		// would take "+80" and "-0".
		if p, err := strconv.ParseUint(port, 10, 16); err != nil {
			return bad("%s address %q: the port must be a number from 0 to 65535", name, addr)
		} else if p == 0 {
			continue // any free port: never the same as another
		}
		if other, ok := taken[addr]; ok {
			return bad("%s and %s both listen on %s; give each its own address", other, name, addr)
		}
		taken[addr] = name
	}
	if strings.TrimSpace(c.AdminToken) != c.AdminToken {
		return bad("the admin token has spaces around it; clients' tokens are trimmed, so it could never match")
	}
	if r, i := TokenBadChar(c.AdminToken); i >= 0 {
		// No call could ever be let in.
		return bad("the admin token holds %q at byte %d: %s", r, i, TokenBadCharWhy(r))
	}
	if strings.TrimSpace(c.IDKey) != c.IDKey {
		return bad("the id key has spaces around it; a secret of spaces, or with them, is a mistake")
	}
	if c.IDKey != "" && len(c.IDKey) < minIDKeyLen {
		return bad("the id key is %d bytes; a secret needs at least %d (roost certs gossip-key makes a random one)", len(c.IDKey), minIDKeyLen)
	}
	if c.Shards < 1 || c.Shards > 4096 {
		return bad("shards must be between 1 and 4096, got %d", c.Shards)
	}
	if c.IdleTimeout <= 0 {
		return bad("idle timeout must be positive, got %s", c.IdleTimeout)
	}
	if c.MaxInflightPerShard < 1 {
		return bad("max inflight per shard must be at least 1, got %d", c.MaxInflightPerShard)
	}
	if c.BodyStallTimeout <= 0 {
		return bad("body stall timeout must be positive, got %s", c.BodyStallTimeout)
	}
	if c.MaxQueuedPerObject < 1 {
		return bad("max queued per object must be at least 1, got %d", c.MaxQueuedPerObject)
	}
	if err := c.Limits.Validate(); err != nil {
		return bad("%v", err)
	}
	if c.Limits.MaxEntryBytes > maxStorageEntryBytes {
		return bad("storage limits: max entry bytes %d is over %d, the most one commit carries", c.Limits.MaxEntryBytes, maxStorageEntryBytes)
	}
	seenKV := make(map[string]bool, len(c.KVNamespaces))
	for _, kv := range c.KVNamespaces {
		switch {
		case kv.Binding == "" || kv.ID == "":
			return bad("a KV namespace needs a binding and an id, got %q and %q", kv.Binding, kv.ID)
		case durable.CheckBindingName(kv.Binding) != nil:
			return bad("KV %v", durable.CheckBindingName(kv.Binding))
		case strings.ContainsFunc(kv.ID, unicode.IsControl):
			return bad("KV binding %q: id %q holds a control character", kv.Binding, kv.ID)
		case seenKV[kv.Binding]:
			return bad("KV binding %q is declared twice", kv.Binding)
		case slices.ContainsFunc(c.Bindings, func(b durable.Binding) bool { return b.Name == kv.Binding }):
			return bad("%q is both a Durable Object binding and a KV binding; give each its own name", kv.Binding)
		case kv.Objects < 0 || kv.Objects > durable.KVMaxObjects:
			return bad("KV binding %q: %d objects, not between 1 and %d", kv.Binding, kv.Objects, durable.KVMaxObjects)
		}
		seenKV[kv.Binding] = true
	}
	if !c.Cluster() {
		return nil
	}
	// "." and ".." are valid in the map, but an admin call's path naming
	// them would be cleaned to another path by HTTP clients and servers.
	if placement.NodeID(c.NodeID).Validate() != nil || c.NodeID == "." || c.NodeID == ".." {
		return bad("node id %q: use 1 to 64 of a-z, 0-9, '-', '_' and '.', other than '.' and '..'", c.NodeID)
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return bad("join address %q: %v", j, err)
		}
	}
	if c.BootstrapExpect < 1 {
		return bad("bootstrap-expect must be at least 1, got %d", c.BootstrapExpect)
	}
	if c.Replicas < 1 || c.Replicas > 7 {
		return bad("replicas must be between 1 and 7, got %d", c.Replicas)
	}
	if c.DeadNodeGrace < 0 {
		return bad("dead node grace must be positive, or 0 for no automatic healing, got %s", c.DeadNodeGrace)
	}
	if c.Replicas > c.BootstrapExpect {
		return bad("replicas (%d) cannot exceed bootstrap-expect (%d): the first nodes must hold every replica", c.Replicas, c.BootstrapExpect)
	}
	var set, unset []string
	for _, f := range []struct{ name, v string }{{"tls cert", c.TLSCertFile}, {"tls key", c.TLSKeyFile}, {"tls ca", c.TLSCAFile}} {
		if f.v != "" {
			set = append(set, f.name)
		} else {
			unset = append(unset, f.name)
		}
	}
	if len(set) > 0 && len(unset) > 0 {
		// Half a TLS configuration must not quietly mean plaintext.
		return bad("TLS needs all of tls cert, tls key and tls ca, or none: %s set but %s not", strings.Join(set, ", "), strings.Join(unset, ", "))
	}
	switch len(c.GossipKey) {
	case 0, 16, 24, 32:
	default:
		return bad("gossip key is %d bytes; it must be 16, 24 or 32 (AES-128, -192 or -256)", len(c.GossipKey))
	}
	return nil
}

// minIDKeyLen is the shortest Config.IDKey taken.
const minIDKeyLen = 16

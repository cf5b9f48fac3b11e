package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/roostdb/roost/durable"
)

// ErrInvalidConfig is wrapped by every error about a file's contents:
// syntax, unknown keys, wrong types and values that cannot work.
var ErrInvalidConfig = errors.New("invalid configuration")

// DefaultName is the name errors use for a file given to Parse, which has no
// path of its own.
const DefaultName = "roost.toml"

// File is a parsed roost.toml. A zero value means the key was not set, so
// the consumer's default applies; Parse rejects explicit zeros where zero
// cannot work (shards = 0, idle_timeout = "0s").
type File struct {
	// Name is the app's name (wrangler's top-level name).
	Name string
	// Bindings are the [[durable_objects.bindings]]; empty means the app's
	// built-in bindings.
	Bindings []durable.Binding
	// KVNamespaces are the [[kv_namespaces]], kept for when KV is served.
	KVNamespaces []KVNamespace
	// Vars are the [vars]; values that are not strings in the file hold
	// their JSON text (count = 3 gives "3", tags = ["a"] gives `["a"]`).
	Vars map[string]string
	// Node is [node]: this node's identity and addresses.
	Node Node
	// Cluster is [cluster]: settings fixed when the cluster is formed.
	Cluster Cluster
	// Storage is [storage]: limits on what one storage call may carry.
	Storage Storage
	// Runtime is [runtime]: how objects are run.
	Runtime Runtime
	// Admin is [admin]: access to the admin API.
	Admin Admin
	// Notices are things in the file that were accepted but do nothing,
	// for the caller to show to the user.
	Notices []string
}

// KVNamespace is one [[kv_namespaces]] entry.
type KVNamespace struct {
	Binding   string
	ID        string
	PreviewID string
	// Objects is how many objects keep the namespace's keys (objects =
	// 1–64; 0, unset, is 1): more spread its load over more shards. It
	// cannot change once the namespace holds keys (docs/kv.md).
	Objects int
}

// Node is the [node] table.
type Node struct {
	ID        string
	DataDir   string
	HTTP      string   // app listener, host:port
	Admin     string   // admin listener, host:port
	GRPC      string   // node-to-node listener, host:port
	Gossip    string   // memberlist listener, host:port
	Advertise string   // the host (IP or DNS name, no port) peers reach this node at
	Join      []string // host:port of nodes to join through
}

// Cluster is the [cluster] table.
type Cluster struct {
	BootstrapExpect int
	Shards          int
	Replicas        int
	// DeadNodeGrace: how long a node may be dead before its replicas are
	// re-created elsewhere (positive; 0 means the file does not set it).
	DeadNodeGrace time.Duration
	// NoHealing: the file says dead_node_grace = "0s", which turns
	// automatic healing off (DeadNodeGrace stays 0).
	NoHealing bool
	// TLSCert, TLSKey and TLSCA are PEM file paths for mutual TLS between
	// nodes, relative to the working directory as written here (the CLI
	// makes them relative to the file, as it does data_dir). All three or
	// none is checked where the other sources are merged.
	TLSCert, TLSKey, TLSCA string
	// GossipKey is the base64 text of the gossip encryption key, checked
	// with ParseGossipKey.
	GossipKey string
}

// Storage is the [storage] table.
type Storage struct {
	MaxKeyBytes   int
	MaxEntryBytes int
	MaxBatchKeys  int
}

// Limits returns base with the limits the file sets replacing base's.
func (s Storage) Limits(base durable.Limits) durable.Limits {
	if s.MaxKeyBytes != 0 {
		base.MaxKeyBytes = s.MaxKeyBytes
	}
	if s.MaxEntryBytes != 0 {
		base.MaxEntryBytes = s.MaxEntryBytes
	}
	if s.MaxBatchKeys != 0 {
		base.MaxBatchKeys = s.MaxBatchKeys
	}
	return base
}

// Admin is the [admin] table.
type Admin struct {
	// Token, when set, is the bearer token every /v1/ admin call needs
	// (ROOST_ADMIN_TOKEN overrides it; there is no flag, so that it does
	// not show in process listings).
	Token string
}

// Runtime is the [runtime] table.
type Runtime struct {
	IdleTimeout time.Duration
	// IDKey is the secret object IDs are derived with (node.Config.IDKey);
	// "" for none.
	IDKey string
}

// Parse reads a roost.toml from data. Errors name the file "roost.toml";
// use Load to have them name a path.
func Parse(data []byte) (*File, error) {
	return parse(DefaultName, data)
}

// Load reads and parses the file at path. A file that cannot be read gives
// the os error (errors.Is(err, fs.ErrNotExist) works); a file with bad
// contents gives an error wrapping ErrInvalidConfig that names path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return parse(path, data)
}

// Error is a problem with a file's contents. It wraps ErrInvalidConfig and,
// for TOML syntax errors, the toml.ParseError.
type Error struct {
	File string
	Line int // 0 when the problem has no single position (unknown keys, validation)
	Col  int // 0 when only the line is known
	Msg  string
	err  error
}

func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Col > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	default:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
}

// Unwrap lets errors.Is find ErrInvalidConfig and errors.As the cause.
func (e *Error) Unwrap() []error {
	if e.err != nil {
		return []error{ErrInvalidConfig, e.err}
	}
	return []error{ErrInvalidConfig}
}

// ParseGossipKey decodes a gossip key: standard base64 (as `roost certs
// gossip-key` prints it) of 16, 24 or 32 bytes, for AES-128, -192 or -256.
// Surrounding spaces and newlines are ignored, so a key file may end in one.
func ParseGossipKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New("the gossip key is not base64 (make one with `roost certs gossip-key`)")
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("the gossip key is %d bytes; it must be 16, 24 or 32 (base64 of an AES-128, -192 or -256 key; make one with `roost certs gossip-key`)", len(key))
}

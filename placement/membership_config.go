package placement

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultGossipPort is memberlist's port (TCP and UDP).
const DefaultGossipPort = 7946

// NodeMeta is what a node gossips about itself besides its name and gossip
// address: where its other listeners are. It travels in memberlist's node
// meta, at most 512 bytes encoded.
type NodeMeta struct {
	GRPCAddr  string `json:"g,omitempty"`
	HTTPAddr  string `json:"h,omitempty"`
	AdminAddr string `json:"a,omitempty"`
	// DataID names the node's data dir (Node.DataID).
	DataID string `json:"d,omitempty"`
	// ClusterID is the cluster the node's data dir belongs to, "" while
	// it has none (a new node before it sees the map).
	ClusterID string `json:"c,omitempty"`
	// Shards is the node's shard count (0: not said, an older node).
	Shards int `json:"s,omitempty"`
	// IDKey is the fingerprint of the key the node derives object IDs
	// with (durable.KeyFingerprint; "": not said, an older node).
	IDKey string `json:"k,omitempty"`
	// BootstrapExpect and Replicas are the node's settings for a cluster
	// it forms (0: not said, an older node). The founders of a cluster
	// must agree on them (node's first-start rules wait until they do);
	// once a cluster exists, its map's replica count rules and
	// bootstrap-expect is read no more.
	BootstrapExpect int `json:"b,omitempty"`
	Replicas        int `json:"r,omitempty"`
}

// Compatible reports, with the reason, whether a node gossiping peer can
// be in one cluster with the node gossiping m: the same cluster ID, the
// same shard count and the same id key, where both say. A node routing by
// another shard count would put objects in other shards than its peers do
// (two live instances of one object); one of another cluster would mix
// the two clusters' Raft logs; one with another id key would make and
// accept other IDs, so a name would reach two objects. (Bootstrap-expect
// and the replica count do not keep nodes apart: a node joining a cluster
// that exists uses neither.)
func (m NodeMeta) Compatible(peer NodeMeta) (bool, string) {
	switch {
	case m.ClusterID != "" && peer.ClusterID != "" && m.ClusterID != peer.ClusterID:
		return false, fmt.Sprintf("it belongs to cluster %s, this node to cluster %s", peer.ClusterID, m.ClusterID)
	case m.Shards != 0 && peer.Shards != 0 && m.Shards != peer.Shards:
		return false, fmt.Sprintf("it has %d shards, this node %d (the count is fixed when a cluster forms)", peer.Shards, m.Shards)
	case m.otherIDKey(peer):
		return false, fmt.Sprintf("it derives object IDs with another id key (fingerprint %s, this node's %s; every node of a cluster needs the same)", peer.IDKey, m.IDKey)
	}
	return true, ""
}

// otherIDKey reports whether m and peer both say their id key and the
// two differ.
func (m NodeMeta) otherIDKey(peer NodeMeta) bool {
	return m.IDKey != "" && peer.IDKey != "" && m.IDKey != peer.IDKey
}

// Validate checks that every address set is host:port.
func (m NodeMeta) Validate() error {
	for _, a := range []struct{ name, v string }{{"grpc", m.GRPCAddr}, {"http", m.HTTPAddr}, {"admin", m.AdminAddr}} {
		if a.v == "" {
			continue
		}
		if err := validateHostPort(a.v); err != nil {
			return fmt.Errorf("%s address %q: %v", a.name, a.v, err)
		}
	}
	if len(m.DataID) > maxDataIDLen {
		return fmt.Errorf("data dir ID is %d bytes, more than %d", len(m.DataID), maxDataIDLen)
	}
	if len(m.ClusterID) > maxDataIDLen {
		return fmt.Errorf("cluster ID is %d bytes, more than %d", len(m.ClusterID), maxDataIDLen)
	}
	if len(m.IDKey) > maxDataIDLen {
		return fmt.Errorf("id key fingerprint is %d bytes, more than %d", len(m.IDKey), maxDataIDLen)
	}
	if m.Shards < 0 {
		return fmt.Errorf("shard count %d is negative", m.Shards)
	}
	if m.BootstrapExpect < 0 || m.Replicas < 0 {
		return fmt.Errorf("bootstrap-expect %d or replica count %d is negative", m.BootstrapExpect, m.Replicas)
	}
	return nil
}

func (m NodeMeta) encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node meta is %d bytes encoded, more than memberlist's %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// decodeNodeMeta decodes a peer's meta. Unknown fields are allowed (a newer
// node may gossip more); the addresses must be well formed.
func decodeNodeMeta(b []byte) (NodeMeta, error) {
	var m NodeMeta
	if len(b) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return NodeMeta{}, fmt.Errorf("node meta: %v", err)
	}
	if err := m.Validate(); err != nil {
		return NodeMeta{}, fmt.Errorf("node meta: %v", err)
	}
	return m, nil
}

// MembershipConfig configures a node's gossip membership.
type MembershipConfig struct {
	NodeID NodeID // the memberlist name; must be unique in the cluster

	BindAddr string // IP to listen on (TCP and UDP); "" = 0.0.0.0
	BindPort int    // 0 picks a free port (tests)
	// AdvertiseAddr is the address others reach this node at: an IP or a
	// host name (resolved at Start). "" = memberlist's choice (the bind
	// IP, or a private IP when bound to 0.0.0.0).
	AdvertiseAddr string
	AdvertisePort int // 0 = the bound port

	// SecretKey, if set (16, 24 or 32 bytes: AES-128/192/256), encrypts
	// and authenticates all gossip; every node needs the same key.
	SecretKey []byte

	Meta   NodeMeta
	Logger *slog.Logger // nil = slog.Default()

	// Timing; zero values keep memberlist's LAN defaults (probe every 1 s,
	// gossip every 200 ms, push/pull every 30 s). WithFastTiming sets
	// loopback-test values.
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	TCPTimeout       time.Duration
	SuspicionMult    int
	// GossipToTheDeadTime is how long dead nodes are still gossiped to
	// (and kept by memberlist); zero keeps memberlist's 30 s.
	GossipToTheDeadTime time.Duration
	// DeadNodeReclaimTime is how long after a node is declared dead another
	// process may take its name at a new address (a restarted container
	// with a new IP). Default 30 s.
	DeadNodeReclaimTime time.Duration

	// EventBuffer is the capacity of the Events channel (default 256).
	// When it is full, events are dropped (and counted): they are hints.
	EventBuffer int

	// MaxStreams bounds the gossip TCP connections handled at once (push
	// and pull syncs, joins); one over it is closed unread. Each holds a
	// file descriptor for up to memberlist's TCP timeout (10 s), so without
	// a bound, connections held open on the gossip port could take every
	// descriptor the node's storage needs. Default 128: a sync each way
	// with a few dozen peers at once.
	MaxStreams int

	// Cut, when set (by fault-injecting tests), says whether gossip to the
	// member at a gossip address (host:port) is lost now: its packets are
	// dropped and its connections refused, as across a partition. Both
	// ends of a cut must say so; only what a node sends is checked.
	Cut func(peer string) bool
}

// DefaultMembershipConfig returns the configuration for node id with
// memberlist's LAN defaults, listening on 0.0.0.0:7946.
func DefaultMembershipConfig(id NodeID) MembershipConfig {
	return MembershipConfig{
		NodeID:              id,
		BindAddr:            "0.0.0.0",
		BindPort:            DefaultGossipPort,
		DeadNodeReclaimTime: 30 * time.Second,
		EventBuffer:         256,
	}
}

// WithFastTiming returns c with the fast timing used in loopback tests:
// failures are detected within about a second.
func (c MembershipConfig) WithFastTiming() MembershipConfig {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.PushPullInterval = time.Second
	c.TCPTimeout = time.Second
	c.SuspicionMult = 2
	c.GossipToTheDeadTime = 2 * time.Second
	c.DeadNodeReclaimTime = time.Second
	return c
}

// Validate checks the configuration.
func (c MembershipConfig) Validate() error {
	if err := c.NodeID.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return fmt.Errorf("%w: bind port %d", ErrInvalidConfig, c.BindPort)
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		return fmt.Errorf("%w: advertise port %d", ErrInvalidConfig, c.AdvertisePort)
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("%w: gossip secret key is %d bytes; it must be 16, 24 or 32", ErrInvalidConfig, len(c.SecretKey))
	}
	if err := c.Meta.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if _, err := c.Meta.encode(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"probe interval", c.ProbeInterval}, {"probe timeout", c.ProbeTimeout},
		{"gossip interval", c.GossipInterval}, {"push/pull interval", c.PushPullInterval},
		{"tcp timeout", c.TCPTimeout}, {"gossip-to-the-dead time", c.GossipToTheDeadTime},
		{"dead node reclaim time", c.DeadNodeReclaimTime},
	} {
		if d.v < 0 {
			return fmt.Errorf("%w: %s %v is negative", ErrInvalidConfig, d.name, d.v)
		}
	}
	if c.SuspicionMult < 0 || c.EventBuffer < 0 {
		return fmt.Errorf("%w: negative suspicion multiplier or event buffer", ErrInvalidConfig)
	}
	return nil
}

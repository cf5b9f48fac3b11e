package placement

import (
	"fmt"
	"net"
	"strconv"
)

// MaxNodeIDLen is the longest node ID.
const MaxNodeIDLen = 64

// NodeID names a node. It is its gossip name, its Raft server ID in every
// group, and its key in the cluster map: 1–64 characters of [a-z0-9-_.].
type NodeID string

// ParseNodeID checks s and returns it as a NodeID.
func ParseNodeID(s string) (NodeID, error) {
	if err := NodeID(s).Validate(); err != nil {
		return "", err
	}
	return NodeID(s), nil
}

// Validate reports whether id is well formed.
func (id NodeID) Validate() error {
	if len(id) == 0 || len(id) > MaxNodeIDLen {
		return fmt.Errorf("%w: %q must be 1 to %d characters long", ErrInvalidNodeID, string(id), MaxNodeIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: %q has %q at offset %d (allowed: a-z 0-9 - _ .)", ErrInvalidNodeID, string(id), c, i)
		}
	}
	return nil
}

// String returns the ID as a string.
func (id NodeID) String() string { return string(id) }

// MarshalText implements encoding.TextMarshaler.
func (id NodeID) MarshalText() ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	return []byte(id), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; it rejects malformed
// IDs, so every decoded map and command holds only valid ones.
func (id *NodeID) UnmarshalText(b []byte) error {
	v, err := ParseNodeID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// NodeState is a node's place in the cluster's life cycle. The zero value
// is not a state.
type NodeState uint8

const (
	// NodeActive nodes receive replicas.
	NodeActive NodeState = iota + 1
	// NodeDraining nodes keep the replicas they have until the planner has
	// moved them away, and receive no new ones.
	NodeDraining
	// NodeRemoved nodes hold no replicas and never come back under the same ID.
	NodeRemoved
)

var nodeStateNames = [...]string{NodeActive: "active", NodeDraining: "draining", NodeRemoved: "removed"}

// ParseNodeState parses "active", "draining" or "removed".
func ParseNodeState(s string) (NodeState, error) {
	for st := NodeActive; st <= NodeRemoved; st++ {
		if nodeStateNames[st] == s {
			return st, nil
		}
	}
	return 0, fmt.Errorf("%w: %q (want active, draining or removed)", ErrInvalidNodeState, s)
}

// Valid reports whether s is one of the three states.
func (s NodeState) Valid() bool { return s >= NodeActive && s <= NodeRemoved }

// String returns the state's name.
func (s NodeState) String() string {
	if s.Valid() {
		return nodeStateNames[s]
	}
	return "NodeState(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText implements encoding.TextMarshaler.
func (s NodeState) MarshalText() ([]byte, error) {
	if !s.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrInvalidNodeState, uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *NodeState) UnmarshalText(b []byte) error {
	v, err := ParseNodeState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Node is a member of the cluster map: its ID, the addresses other nodes
// and operators use to reach it, and its state.
type Node struct {
	ID         NodeID    `json:"id"`
	GRPCAddr   string    `json:"grpc_addr"`             // node-to-node: Raft transport, forwarding (required)
	HTTPAddr   string    `json:"http_addr,omitempty"`   // app listener
	AdminAddr  string    `json:"admin_addr,omitempty"`  // admin listener
	GossipAddr string    `json:"gossip_addr,omitempty"` // memberlist
	State      NodeState `json:"state,omitempty"`
	// DataID names the data dir the node was registered with (random,
	// made with the dir). Once recorded it never changes: a node back
	// under its ID with another data dir has lost the Raft state its
	// replicas voted with, and is refused (ErrDataDirReplaced).
	DataID string `json:"data_id,omitempty"`
}

// validateAddrs checks the node's ID and addresses (not its state).
func (n Node) validateAddrs() error {
	if err := n.ID.Validate(); err != nil {
		return err
	}
	if n.GRPCAddr == "" {
		return fmt.Errorf("%w: node %s has no grpc address", ErrInvalidNode, n.ID)
	}
	if len(n.DataID) > maxDataIDLen {
		return fmt.Errorf("%w: node %s data dir ID is %d bytes, more than %d", ErrInvalidNode, n.ID, len(n.DataID), maxDataIDLen)
	}
	for _, a := range []struct{ name, v string }{
		{"grpc", n.GRPCAddr}, {"http", n.HTTPAddr}, {"admin", n.AdminAddr}, {"gossip", n.GossipAddr},
	} {
		if a.v == "" {
			continue
		}
		if err := validateHostPort(a.v); err != nil {
			return fmt.Errorf("%w: node %s %s address %q: %v", ErrInvalidNode, n.ID, a.name, a.v, err)
		}
	}
	return nil
}

// Validate checks the node's ID, addresses and state.
func (n Node) Validate() error {
	if err := n.validateAddrs(); err != nil {
		return err
	}
	if !n.State.Valid() {
		return fmt.Errorf("%w: node %s has state %s", ErrInvalidNodeState, n.ID, n.State)
	}
	return nil
}

// maxAddrLen bounds an address string (a DNS name is at most 253 bytes).
const maxAddrLen = 300

// maxDataIDLen bounds a node's data dir ID (roost makes 16 hex digits).
const maxDataIDLen = 64

func validateHostPort(s string) error {
	if len(s) > maxAddrLen {
		return fmt.Errorf("longer than %d bytes", maxAddrLen)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("no host")
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return fmt.Errorf("port %q is not 1-65535", port)
	}
	return nil
}

// ShardID numbers a shard: 0 ≤ id < Map.Shards. It is also the shard's
// partition in the consistent-hash ring (xxhash(objectID) % shards).
type ShardID uint32

// InitialShardVersion is the version of every shard in the first map. A
// replica whose shard is still at this version bootstraps the shard's Raft
// group with the shard's replicas; a later replica starts empty and waits
// for the leader to contact it.
const InitialShardVersion uint64 = 1

// Shard is one shard's replica set. Version increases by one with every
// change of the replica set; changes are compare-and-set on it.
type Shard struct {
	ID       ShardID  `json:"id"`
	Replicas []NodeID `json:"replicas"`
	Version  uint64   `json:"version"`
}

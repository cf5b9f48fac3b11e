package placement

import (
	"errors"
	"fmt"
	"slices"
)

// Limits on the shape of a cluster map. They keep a malformed command from
// allocating without bound; real clusters are far inside them.
const (
	MaxShards   = 1 << 16
	MaxReplicas = 9
	MaxNodes    = 1 << 12
)

// Map is the authoritative cluster map held by the meta group: the nodes
// and, per shard, its replica set. The zero Map is "not bootstrapped".
type Map struct {
	ClusterID string          `json:"cluster_id"`
	Shards    int             `json:"shards"`   // fixed at bootstrap
	Replicas  int             `json:"replicas"` // replication factor, fixed at bootstrap
	Nodes     map[NodeID]Node `json:"nodes"`
	ShardMap  []Shard         `json:"shard_map"` // ShardMap[i].ID == i
	Version   uint64          `json:"version"`   // +1 per applied change
}

// Bootstrapped reports whether m is a cluster's map (and not the zero Map).
func (m Map) Bootstrapped() bool { return m.ClusterID != "" }

// Clone returns a deep copy of m.
func (m Map) Clone() Map {
	c := m
	if m.Nodes != nil {
		c.Nodes = make(map[NodeID]Node, len(m.Nodes))
		for id, n := range m.Nodes {
			c.Nodes[id] = n
		}
	}
	if m.ShardMap != nil {
		c.ShardMap = make([]Shard, len(m.ShardMap))
		for i, s := range m.ShardMap {
			s.Replicas = slices.Clone(s.Replicas)
			c.ShardMap[i] = s
		}
	}
	return c
}

// ReplicasOf returns a copy of shard id's replicas (nil for an unknown shard).
func (m Map) ReplicasOf(id ShardID) []NodeID {
	if int64(id) >= int64(len(m.ShardMap)) {
		return nil
	}
	return slices.Clone(m.ShardMap[id].Replicas)
}

// ShardsOf returns, in order, the shards that have node id as a replica.
func (m Map) ShardsOf(id NodeID) []ShardID {
	var out []ShardID
	for _, s := range m.ShardMap {
		if slices.Contains(s.Replicas, id) {
			out = append(out, s.ID)
		}
	}
	return out
}

// NodesIn returns the IDs of the nodes in state st, sorted.
func (m Map) NodesIn(st NodeState) []NodeID {
	var out []NodeID
	for id, n := range m.Nodes {
		if n.State == st {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// Validate checks the map's invariants: a cluster ID; 1 ≤ Shards ≤
// MaxShards and 1 ≤ Replicas ≤ MaxReplicas; every node valid and keyed by
// its ID; exactly Shards shards, numbered in order; and every shard with at
// least one replica, no replica twice, and every replica a known node that
// has not been removed.
func (m Map) Validate() error {
	if m.ClusterID == "" {
		return fmt.Errorf("%w: no cluster id", ErrInvalidMap)
	}
	if len(m.ClusterID) > 128 {
		return fmt.Errorf("%w: cluster id longer than 128 bytes", ErrInvalidMap)
	}
	if m.Shards < 1 || m.Shards > MaxShards {
		return fmt.Errorf("%w: shards = %d, want 1 to %d", ErrInvalidMap, m.Shards, MaxShards)
	}
	if m.Replicas < 1 || m.Replicas > MaxReplicas {
		return fmt.Errorf("%w: replicas = %d, want 1 to %d", ErrInvalidMap, m.Replicas, MaxReplicas)
	}
	if len(m.Nodes) == 0 || len(m.Nodes) > MaxNodes {
		return fmt.Errorf("%w: %d nodes, want 1 to %d", ErrInvalidMap, len(m.Nodes), MaxNodes)
	}
	for id, n := range m.Nodes {
		if n.ID != id {
			return fmt.Errorf("%w: node %q is listed under %q", ErrInvalidMap, n.ID, id)
		}
		if err := n.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidMap, err)
		}
	}
	if len(m.ShardMap) != m.Shards {
		return fmt.Errorf("%w: %d shards in the shard map, want %d", ErrInvalidMap, len(m.ShardMap), m.Shards)
	}
	for i, s := range m.ShardMap {
		if int(s.ID) != i {
			return fmt.Errorf("%w: shard map entry %d has id %d", ErrInvalidMap, i, s.ID)
		}
		if err := m.validReplicas(s.ID, s.Replicas); err != nil {
			if errors.Is(err, ErrInvalidMap) {
				return err
			}
			return fmt.Errorf("%w: %w", ErrInvalidMap, err)
		}
	}
	return nil
}

// validReplicas checks one replica set against the nodes of m.
func (m Map) validReplicas(sid ShardID, reps []NodeID) error {
	if len(reps) == 0 {
		return fmt.Errorf("%w: shard %d has no replicas", ErrInvalidMap, sid)
	}
	if len(reps) > MaxReplicas+1 {
		return fmt.Errorf("%w: shard %d has %d replicas, at most %d allowed", ErrInvalidMap, sid, len(reps), MaxReplicas+1)
	}
	for j, id := range reps {
		n, ok := m.Nodes[id]
		if !ok {
			return fmt.Errorf("%w: shard %d replica %q", ErrUnknownNode, sid, id)
		}
		if n.State == NodeRemoved {
			return fmt.Errorf("%w: shard %d replica %s", ErrNodeRemoved, sid, id)
		}
		if slices.Contains(reps[:j], id) {
			return fmt.Errorf("%w: shard %d lists replica %s twice", ErrInvalidMap, sid, id)
		}
	}
	return nil
}

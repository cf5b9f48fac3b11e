// Package placement decides where shards live: gossip membership, the
// cluster map the meta group holds, and the consistent-hash planner that
// says which nodes should hold each shard (DESIGN.md §6).
//
// # Pieces
//
//   - types.go, map.go: NodeID, NodeState, Node, Shard and the cluster Map
//     with its invariants (Map.Validate).
//   - command.go, fsm.go: the meta group's state machine. FSM is a plain
//     raft.FSM over an in-memory Map; node runs it on raftstore like any
//     group (placement and raftstore never import each other). Changes are
//     Commands — Bootstrap, UpsertNode, SetNodeState, SetShardReplicas —
//     encoded as a format byte and strict JSON (the meta group is
//     low-rate, so legibility wins).
//   - safety.go: SafeChange, the one rule for changing a replica set.
//   - planner.go: Desired replicas per shard from buraksezer/consistent
//     over the active nodes, and Plan, the moves from the current map
//     toward it.
//   - membership*.go: hashicorp/memberlist gossip, with node meta (the
//     node's gRPC, HTTP and admin addresses) and duplicate-ID detection.
//
// # Authority
//
// The map in the meta group is the only authority on which nodes exist,
// their state and each shard's replicas. Gossip events are hints: they
// tell the meta leader (the controller) whom to register or to consider
// dead, and the controller acts through commands.
//
// # Invariants the FSM keeps
//
//   - Bootstrap applies once; every other command needs it.
//   - Every shard has at least one replica, none twice, all on known nodes
//     that are not removed. A node is removed only when it holds no
//     replicas, and a removed ID is never registered again.
//   - SetShardReplicas is compare-and-set on the shard's version, gives
//     new replicas only to active nodes, and each change is a SafeChange:
//     at most one replica added and one removed, and the replicas kept
//     meet every majority of the old set, so no committed entry can be
//     lost ("add, then remove"; a lone replica is moved as {A} → {A,B} →
//     {B}).
//   - Rejected or undecodable commands change nothing and return an error
//     value; Apply never panics, so all replicas stay identical.
//
// # Shards and the ring
//
// Object → shard is xxhash(objectID) % shards (node's shardOf), which is
// consistent's partition of a key. The planner uses one partition per
// shard, so shard s's desired replicas are GetClosestNForPartition(s,
// replicas) over the active nodes; the first is the partition's owner
// under bounded load (1.25 × average), the shard's preferred leader.
// Adding or removing one of N nodes changes about 1/N of the replica
// slots.
package placement

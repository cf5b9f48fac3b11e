package placement

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (test
// with errors.Is) and add the detail: which node, which shard, which version.
var (
	// ErrInvalidNodeID: a node ID is not 1–64 characters of [a-z0-9-_.].
	ErrInvalidNodeID = errors.New("placement: invalid node id")
	// ErrInvalidNodeState: a node state is not active, draining or removed.
	ErrInvalidNodeState = errors.New("placement: invalid node state")
	// ErrInvalidNode: a node's addresses are malformed or missing.
	ErrInvalidNode = errors.New("placement: invalid node")
	// ErrInvalidMap: a cluster map breaks one of Map.Validate's rules.
	ErrInvalidMap = errors.New("placement: invalid cluster map")
	// ErrUnknownNode: a command names a node the map does not have.
	ErrUnknownNode = errors.New("placement: unknown node")
	// ErrNodeRemoved: a command would use, change or re-register a node
	// that has been removed. A removed ID is never reused.
	ErrNodeRemoved = errors.New("placement: node has been removed")
	// ErrDataDirReplaced: a node came back under an ID the map has with
	// another data dir (Node.DataID): its Raft state is gone.
	ErrDataDirReplaced = errors.New("placement: node's data dir was replaced")
	// ErrNodeNotActive: a command would give a new replica to a node that
	// is draining.
	ErrNodeNotActive = errors.New("placement: node is not active")
	// ErrUnknownShard: a shard ID is out of range.
	ErrUnknownShard = errors.New("placement: unknown shard")
	// ErrStaleVersion: a compare-and-set found another version than the
	// caller expected; re-read the map and plan again.
	ErrStaleVersion = errors.New("placement: stale version")
	// ErrNotBootstrapped: the meta group has no cluster map yet.
	ErrNotBootstrapped = errors.New("placement: cluster not bootstrapped")
	// ErrAlreadyBootstrapped: a second Bootstrap command.
	ErrAlreadyBootstrapped = errors.New("placement: cluster already bootstrapped")
	// ErrUnsafe: the change could lose committed data or leave a node that
	// still holds replicas out of the map (see SafeChange).
	ErrUnsafe = errors.New("placement: unsafe change")
	// ErrOperationRunning: the meta group already records another
	// operation; one runs at a time.
	ErrOperationRunning = errors.New("placement: another operation is running")
	// ErrBadCommand: a meta command or snapshot could not be decoded.
	ErrBadCommand = errors.New("placement: malformed meta command")
	// ErrInvalidConfig: a MembershipConfig fails Validate.
	ErrInvalidConfig = errors.New("placement: invalid membership config")
	// ErrDuplicateNodeID: another live gossip member uses this node's ID.
	ErrDuplicateNodeID = errors.New("placement: duplicate node id")
	// ErrOtherCluster: a gossip peer belongs to another cluster, or to one
	// with another shard count (NodeMeta.Compatible).
	ErrOtherCluster = errors.New("placement: member of another cluster")
	// ErrOtherIDKey: a gossip peer derives object IDs with another id key
	// (NodeMeta.IDKey); an error wrapping it wraps ErrOtherCluster too.
	ErrOtherIDKey = errors.New("placement: member with another id key")
	// ErrShutdown: the Membership has been shut down.
	ErrShutdown = errors.New("placement: membership shut down")
)

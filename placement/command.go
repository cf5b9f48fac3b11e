package placement

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// commandFormat is the first byte of every encoded command. A node that
// meets a format it does not know rejects the command (the entry is still
// applied, as a rejection, so every replica stays in step).
const commandFormat byte = 1

// MaxCommandSize bounds an encoded command (a Bootstrap of MaxShards
// shards is the largest legitimate one).
const MaxCommandSize = 8 << 20

// Command is one change to the cluster map: exactly one field is set. It is
// what node proposes to the meta group (EncodeCommand) and what the FSM
// applies (DecodeCommand).
type Command struct {
	Bootstrap        *BootstrapCmd        `json:"bootstrap,omitempty"`
	UpsertNode       *UpsertNodeCmd       `json:"upsert_node,omitempty"`
	SetNodeState     *SetNodeStateCmd     `json:"set_node_state,omitempty"`
	SetShardReplicas *SetShardReplicasCmd `json:"set_shard_replicas,omitempty"`
	BeginOperation   *BeginOperationCmd   `json:"begin_operation,omitempty"`
	EndOperation     *EndOperationCmd     `json:"end_operation,omitempty"`
}

// BootstrapCmd writes the first map (see InitialMap): cluster ID, shard
// count, replication factor, nodes and initial shard map. It applies only
// once. Map.Version is ignored: the bootstrapped map has version 1, and
// every shard InitialShardVersion.
type BootstrapCmd struct {
	Map Map `json:"map"`
}

// UpsertNodeCmd registers a node or updates its addresses. A new node
// joins in Node.State (zero means active; removed is refused); for a known
// node Node.State is ignored — states change only by SetNodeState. A
// removed node cannot be registered again.
type UpsertNodeCmd struct {
	Node Node `json:"node"`
}

// SetNodeStateCmd moves a node to another state. Removed is final, and
// only a node that holds no replicas can be removed.
type SetNodeStateCmd struct {
	ID    NodeID    `json:"id"`
	State NodeState `json:"state"`
}

// SetShardReplicasCmd replaces a shard's replica set if the shard is still
// at ExpectedVersion, the new set is a SafeChange of the current one, every
// replica is a known node that is not removed, and a replica it adds is
// active.
type SetShardReplicasCmd struct {
	Shard           ShardID  `json:"shard"`
	Replicas        []NodeID `json:"replicas"`
	ExpectedVersion uint64   `json:"expected_version"`
}

// BeginOperationCmd records an operation under way. It is refused
// (ErrOperationRunning) while another is recorded, and changes nothing when
// the same one is. A drain's node must be in the map. The map's version
// does not change.
type BeginOperationCmd struct {
	Operation Operation `json:"operation"`
}

// EndOperationCmd clears the recorded operation if its ID is ID, keeping
// how it ended as the FSM's LastEnded, and changes nothing otherwise (it
// ended before, or another is recorded).
type EndOperationCmd struct {
	ID string `json:"id"`
	OperationOutcome
}

// name returns the name of the command's operation, or an error unless
// exactly one is set.
func (c Command) name() (string, error) {
	var names []string
	if c.Bootstrap != nil {
		names = append(names, "bootstrap")
	}
	if c.UpsertNode != nil {
		names = append(names, "upsert_node")
	}
	if c.SetNodeState != nil {
		names = append(names, "set_node_state")
	}
	if c.SetShardReplicas != nil {
		names = append(names, "set_shard_replicas")
	}
	if c.BeginOperation != nil {
		names = append(names, "begin_operation")
	}
	if c.EndOperation != nil {
		names = append(names, "end_operation")
	}
	switch len(names) {
	case 1:
		return names[0], nil
	case 0:
		return "", fmt.Errorf("%w: no operation", ErrBadCommand)
	default:
		return "", fmt.Errorf("%w: %d operations %v in one command", ErrBadCommand, len(names), names)
	}
}

// String names the command's operation.
func (c Command) String() string {
	n, err := c.name()
	if err != nil {
		return "invalid"
	}
	return n
}

// EncodeCommand encodes c: a format byte, then JSON (the meta group sees a
// few commands per minute, so legibility beats compactness).
func EncodeCommand(c Command) ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteByte(commandFormat)
	if err := json.NewEncoder(&buf).Encode(c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrBadCommand, len(b), MaxCommandSize)
	}
	return b, nil
}

// DecodeCommand decodes an EncodeCommand result strictly: a known format,
// one JSON object with only known fields and nothing after it, exactly one
// operation, and well-formed node IDs and states. Checks that need the map
// are the FSM's.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) == 0 {
		return Command{}, fmt.Errorf("%w: empty", ErrBadCommand)
	}
	if len(b) > MaxCommandSize {
		return Command{}, fmt.Errorf("%w: %d bytes, more than %d", ErrBadCommand, len(b), MaxCommandSize)
	}
	if b[0] != commandFormat {
		return Command{}, fmt.Errorf("%w: unknown format %d (this node understands %d)", ErrBadCommand, b[0], commandFormat)
	}
	var c Command
	if err := decodeStrict(b[1:], &c); err != nil {
		return Command{}, err
	}
	if err := c.check(); err != nil {
		return Command{}, err
	}
	return c, nil
}

// check verifies what can be verified without the map: exactly one
// operation, well-formed node IDs and states, bounded sizes. A command
// passes check exactly when it can be encoded.
func (c Command) check() error {
	if _, err := c.name(); err != nil {
		return err
	}
	switch {
	case c.Bootstrap != nil:
		for key, n := range c.Bootstrap.Map.Nodes {
			if err := n.ID.Validate(); err != nil {
				return fmt.Errorf("%w: bootstrap node %q: %w", ErrBadCommand, key, err)
			}
		}
	case c.UpsertNode != nil:
		if err := c.UpsertNode.Node.ID.Validate(); err != nil {
			return fmt.Errorf("%w: upsert_node: %w", ErrBadCommand, err)
		}
	case c.SetNodeState != nil:
		if err := c.SetNodeState.ID.Validate(); err != nil {
			return fmt.Errorf("%w: set_node_state: %w", ErrBadCommand, err)
		}
		if !c.SetNodeState.State.Valid() {
			return fmt.Errorf("%w: set_node_state: %w: %s", ErrBadCommand, ErrInvalidNodeState, c.SetNodeState.State)
		}
	case c.SetShardReplicas != nil:
		if n := len(c.SetShardReplicas.Replicas); n > MaxReplicas+1 {
			return fmt.Errorf("%w: set_shard_replicas: %d replicas, at most %d", ErrBadCommand, n, MaxReplicas+1)
		}
	case c.BeginOperation != nil:
		if err := c.BeginOperation.Operation.validate(); err != nil {
			return fmt.Errorf("begin_operation: %w", err)
		}
	case c.EndOperation != nil:
		if id := c.EndOperation.ID; id == "" || len(id) > MaxOperationIDLen {
			return fmt.Errorf("%w: end_operation: id must be 1 to %d characters long", ErrBadCommand, MaxOperationIDLen)
		}
		if err := c.EndOperation.validate(); err != nil {
			return fmt.Errorf("end_operation: %w", err)
		}
	}
	return nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields and
// nothing but white space after it.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the JSON value", ErrBadCommand)
	}
	return nil
}

// ApplyResponse interprets what the FSM's Apply returned (raft's
// ApplyFuture.Response()): the map's new version, or why the command was
// rejected.
func ApplyResponse(resp any) (uint64, error) {
	switch r := resp.(type) {
	case uint64:
		return r, nil
	case error:
		return 0, r
	default:
		return 0, fmt.Errorf("placement: unexpected apply response %T", resp)
	}
}

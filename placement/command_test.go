package placement

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func sampleCommands() []Command {
	return []Command{
		{Bootstrap: &BootstrapCmd{Map: InitialMap("c1", testNodes(3), 4, 3)}},
		{UpsertNode: &UpsertNodeCmd{Node: Node{ID: "n04", GRPCAddr: "10.0.0.4:8790", HTTPAddr: "10.0.0.4:8787", AdminAddr: "10.0.0.4:8789", GossipAddr: "10.0.0.4:7946"}}},
		{UpsertNode: &UpsertNodeCmd{Node: Node{ID: "n05", GRPCAddr: "h:1", State: NodeDraining}}},
		{SetNodeState: &SetNodeStateCmd{ID: "n02", State: NodeDraining}},
		{SetNodeState: &SetNodeStateCmd{ID: "n04", State: NodeRemoved}},
		{SetShardReplicas: &SetShardReplicasCmd{Shard: 3, Replicas: ids("n01", "n02", "n04"), ExpectedVersion: 1}},
		{SetShardReplicas: &SetShardReplicasCmd{Shard: 0, Replicas: ids("n01", "n02", "n03", "n04"), ExpectedVersion: 1}},
		{BeginOperation: &BeginOperationCmd{Operation: Operation{ID: "rebalance-20261203t071500-1", Kind: OperationRebalance, MaxConcurrent: 4, Started: time.Date(2026, 12, 3, 7, 15, 0, 0, time.UTC)}}},
		{BeginOperation: &BeginOperationCmd{Operation: Operation{ID: "drain-1", Kind: OperationDrain, Node: "n02", MaxConcurrent: 1, Started: time.Date(2026, 12, 3, 7, 15, 0, 5, time.UTC)}}},
		{EndOperation: &EndOperationCmd{ID: "drain-1", OperationOutcome: OperationOutcome{State: OperationFailed, Done: 3, Total: 9, Error: "shard 4: timed out", Finished: time.Date(2026, 12, 3, 7, 16, 0, 0, time.UTC)}}},
		{EndOperation: &EndOperationCmd{ID: "rebalance-2", OperationOutcome: OperationOutcome{State: OperationDone, Done: 12}}},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range sampleCommands() {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if b[0] != commandFormat {
			t.Fatalf("%s: format byte %d", c, b[0])
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("%s: decode %q: %v", c, b, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%s: round trip\n got %+v\nwant %+v", c, got, c)
		}
	}
}

func TestDecodeCommandStrict(t *testing.T) {
	for name, in := range map[string]string{
		"empty":               "",
		"format only":         "\x01",
		"unknown format":      "\x02{\"set_node_state\":{\"id\":\"a\",\"state\":\"active\"}}",
		"no operation":        "\x01{}",
		"null":                "\x01null",
		"null operation":      "\x01{\"upsert_node\":null}",
		"two operations":      "\x01{\"set_node_state\":{\"id\":\"a\",\"state\":\"active\"},\"upsert_node\":{\"node\":{\"id\":\"a\",\"grpc_addr\":\"a:1\"}}}",
		"unknown op":          "\x01{\"delete_cluster\":{}}",
		"unknown field":       "\x01{\"set_node_state\":{\"id\":\"a\",\"state\":\"active\",\"force\":true}}",
		"trailing data":       "\x01{\"set_node_state\":{\"id\":\"a\",\"state\":\"active\"}} {}",
		"trailing garbage":    "\x01{\"set_node_state\":{\"id\":\"a\",\"state\":\"active\"}}x",
		"bad node id":         "\x01{\"set_node_state\":{\"id\":\"A B\",\"state\":\"active\"}}",
		"empty node id":       "\x01{\"set_node_state\":{\"id\":\"\",\"state\":\"active\"}}",
		"bad state":           "\x01{\"set_node_state\":{\"id\":\"a\",\"state\":\"zombie\"}}",
		"numeric state":       "\x01{\"set_node_state\":{\"id\":\"a\",\"state\":1}}",
		"missing state":       "\x01{\"set_node_state\":{\"id\":\"a\"}}",
		"negative shard":      "\x01{\"set_shard_replicas\":{\"shard\":-1,\"replicas\":[\"a\"],\"expected_version\":1}}",
		"huge shard":          "\x01{\"set_shard_replicas\":{\"shard\":4294967296,\"replicas\":[\"a\"],\"expected_version\":1}}",
		"bad replica":         "\x01{\"set_shard_replicas\":{\"shard\":0,\"replicas\":[\"a\",\"\"],\"expected_version\":1}}",
		"too many replicas":   "\x01{\"set_shard_replicas\":{\"shard\":0,\"replicas\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\"],\"expected_version\":1}}",
		"not an object":       "\x01[1,2]",
		"truncated":           "\x01{\"set_node_state\":{\"id\":\"a\"",
		"operation kind":      "\x01{\"begin_operation\":{\"operation\":{\"id\":\"x\",\"kind\":\"heal\",\"max_concurrent\":1}}}",
		"rebalance of node":   "\x01{\"begin_operation\":{\"operation\":{\"id\":\"x\",\"kind\":\"rebalance\",\"node\":\"a\",\"max_concurrent\":1}}}",
		"drain of nothing":    "\x01{\"begin_operation\":{\"operation\":{\"id\":\"x\",\"kind\":\"drain\",\"max_concurrent\":1}}}",
		"drain of bad node":   "\x01{\"begin_operation\":{\"operation\":{\"id\":\"x\",\"kind\":\"drain\",\"node\":\"A\",\"max_concurrent\":1}}}",
		"no concurrency":      "\x01{\"begin_operation\":{\"operation\":{\"id\":\"x\",\"kind\":\"rebalance\",\"max_concurrent\":0}}}",
		"no operation id":     "\x01{\"begin_operation\":{\"operation\":{\"id\":\"\",\"kind\":\"rebalance\",\"max_concurrent\":1}}}",
		"id with a slash":     "\x01{\"begin_operation\":{\"operation\":{\"id\":\"a/b\",\"kind\":\"rebalance\",\"max_concurrent\":1}}}",
		"id with a space":     "\x01{\"begin_operation\":{\"operation\":{\"id\":\"a b\",\"kind\":\"rebalance\",\"max_concurrent\":1}}}",
		"bad start time":      "\x01{\"begin_operation\":{\"operation\":{\"id\":\"x\",\"kind\":\"rebalance\",\"max_concurrent\":1,\"started\":\"noon\"}}}",
		"end without id":      "\x01{\"end_operation\":{\"id\":\"\",\"state\":\"done\"}}",
		"end without state":   "\x01{\"end_operation\":{\"id\":\"x\"}}",
		"end in a bad state":  "\x01{\"end_operation\":{\"id\":\"x\",\"state\":\"running\"}}",
		"end with negative":   "\x01{\"end_operation\":{\"id\":\"x\",\"state\":\"done\",\"done\":-1}}",
		"end done past total": "\x01{\"end_operation\":{\"id\":\"x\",\"state\":\"failed\",\"done\":3,\"total\":2}}",
	} {
		if c, err := DecodeCommand([]byte(in)); err == nil {
			t.Errorf("%s: decoded %q as %+v", name, in, c)
		}
	}
	if _, err := DecodeCommand(make([]byte, MaxCommandSize+1)); !errors.Is(err, ErrBadCommand) {
		t.Errorf("oversized command: %v", err)
	}
}

func TestEncodeCommandRefusesBadCommands(t *testing.T) {
	for name, c := range map[string]Command{
		"none": {},
		"two": {
			SetNodeState: &SetNodeStateCmd{ID: "a", State: NodeActive},
			UpsertNode:   &UpsertNodeCmd{Node: Node{ID: "a", GRPCAddr: "a:1"}},
		},
		"bad id":    {SetNodeState: &SetNodeStateCmd{ID: "A", State: NodeActive}},
		"bad state": {SetNodeState: &SetNodeStateCmd{ID: "a", State: 7}},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: EncodeCommand = %v", name, err)
		}
	}
}

// FuzzDecodeCommand: no input panics the decoder or the FSM; whatever
// decodes re-encodes to something that decodes to the same command; and
// applying it to a live FSM leaves a valid map (or changes nothing).
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x01{\"set_shard_replicas\":{\"shard\":0,\"replicas\":[\"n01\"],\"expected_version\":1}}"))
	f.Add([]byte("\x01{\"bootstrap\":{\"map\":{\"cluster_id\":\"x\",\"shards\":1,\"replicas\":1,\"nodes\":{\"a\":{\"id\":\"a\",\"grpc_addr\":\"a:1\"}},\"shard_map\":[{\"id\":0,\"replicas\":[\"a\"],\"version\":0}]}}}"))
	f.Add([]byte("\x01{}"))
	f.Add([]byte{0xff})
	base := InitialMap("c1", testNodes(3), 4, 3)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) && !errors.Is(err, ErrInvalidNodeID) && !errors.Is(err, ErrInvalidNodeState) {
				t.Fatalf("DecodeCommand error %v wraps no sentinel", err)
			}
		} else {
			b, err := EncodeCommand(c)
			if err != nil {
				t.Fatalf("decoded %+v does not re-encode: %v", c, err)
			}
			c2, err := DecodeCommand(b)
			if err != nil {
				t.Fatalf("re-encoded %q does not decode: %v", b, err)
			}
			if !reflect.DeepEqual(c, c2) {
				t.Fatalf("round trip differs:\n%+v\n%+v", c, c2)
			}
		}
		// Apply to an empty and to a bootstrapped FSM: never a panic,
		// always a valid map or no change.
		for _, fsm := range []*FSM{NewFSM(), func() *FSM {
			g := NewFSM()
			if _, err := g.ApplyCommand(Command{Bootstrap: &BootstrapCmd{Map: base}}); err != nil {
				t.Fatal(err)
			}
			return g
		}()} {
			before := fsm.Map()
			resp := fsm.Apply(&raft.Log{Type: raft.LogCommand, Data: data})
			after := fsm.Map()
			if _, err := ApplyResponse(resp); err != nil {
				if !reflect.DeepEqual(before, after) {
					t.Fatalf("rejected command changed the map: %v", err)
				}
				continue
			}
			if err := after.Validate(); err != nil {
				t.Fatalf("applied command left an invalid map: %v", err)
			}
		}
	})
}

func TestEncodedCommandIsCompactJSON(t *testing.T) {
	b, err := EncodeCommand(Command{SetNodeState: &SetNodeStateCmd{ID: "n1", State: NodeDraining}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "\x01{\"set_node_state\":{\"id\":\"n1\",\"state\":\"draining\"}}"; !bytes.Equal(b, []byte(want)) {
		t.Fatalf("encoding = %q, want %q", b, want)
	}
}

package placement

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseNodeID(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"a", true},
		{"node-1", true},
		{"n_2.east", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"Node1", false},
		{"node 1", false},
		{"node/1", false},
		{"nöde", false},
		{"a\x00", false},
	} {
		id, err := ParseNodeID(tc.in)
		if tc.ok != (err == nil) {
			t.Errorf("ParseNodeID(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err != nil && !errors.Is(err, ErrInvalidNodeID) {
			t.Errorf("ParseNodeID(%q) error %v does not wrap ErrInvalidNodeID", tc.in, err)
		}
		if err == nil && id.String() != tc.in {
			t.Errorf("ParseNodeID(%q).String() = %q", tc.in, id)
		}
	}
}

func TestNodeState(t *testing.T) {
	for _, st := range []NodeState{NodeActive, NodeDraining, NodeRemoved} {
		got, err := ParseNodeState(st.String())
		if err != nil || got != st {
			t.Errorf("ParseNodeState(%q) = %v, %v", st, got, err)
		}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var back NodeState
		if err := json.Unmarshal(b, &back); err != nil || back != st {
			t.Errorf("JSON round trip of %v: %v %v", st, back, err)
		}
	}
	for _, bad := range []string{"", "Active", "dead", "0"} {
		if _, err := ParseNodeState(bad); !errors.Is(err, ErrInvalidNodeState) {
			t.Errorf("ParseNodeState(%q) = %v, want ErrInvalidNodeState", bad, err)
		}
	}
	if NodeState(0).Valid() || NodeState(4).Valid() {
		t.Error("0 and 4 must not be valid states")
	}
	if _, err := json.Marshal(NodeState(9)); err == nil {
		t.Error("marshalling an invalid state must fail")
	}
}

// testNodes returns active nodes n1..nk with loopback addresses.
func testNodes(k int) []Node {
	var out []Node
	for i := 1; i <= k; i++ {
		id := NodeID(fmt.Sprintf("n%02d", i))
		out = append(out, Node{ID: id, GRPCAddr: fmt.Sprintf("127.0.0.1:%d", 9000+i), State: NodeActive})
	}
	return out
}

func validMap(t *testing.T) Map {
	t.Helper()
	m := InitialMap("c1", testNodes(3), 8, 3)
	if err := m.Validate(); err != nil {
		t.Fatalf("InitialMap is invalid: %v", err)
	}
	return m
}

func TestMapValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(m *Map)
		want   error
	}{
		{"ok", func(m *Map) {}, nil},
		{"no cluster id", func(m *Map) { m.ClusterID = "" }, ErrInvalidMap},
		{"zero shards", func(m *Map) { m.Shards = 0 }, ErrInvalidMap},
		{"too many replicas", func(m *Map) { m.Replicas = MaxReplicas + 1 }, ErrInvalidMap},
		{"shard count mismatch", func(m *Map) { m.ShardMap = m.ShardMap[:7] }, ErrInvalidMap},
		{"shard ids out of order", func(m *Map) { m.ShardMap[0], m.ShardMap[1] = m.ShardMap[1], m.ShardMap[0] }, ErrInvalidMap},
		{"no replicas", func(m *Map) { m.ShardMap[3].Replicas = nil }, ErrInvalidMap},
		{"duplicate replica", func(m *Map) { m.ShardMap[3].Replicas = []NodeID{"n01", "n01"} }, ErrInvalidMap},
		{"unknown replica", func(m *Map) { m.ShardMap[3].Replicas[0] = "zz" }, ErrUnknownNode},
		{"removed replica", func(m *Map) {
			n := m.Nodes["n02"]
			n.State = NodeRemoved
			m.Nodes["n02"] = n
		}, ErrNodeRemoved},
		{"node under wrong key", func(m *Map) { m.Nodes["n09"] = m.Nodes["n01"] }, ErrInvalidMap},
		{"node without grpc", func(m *Map) {
			n := m.Nodes["n01"]
			n.GRPCAddr = ""
			m.Nodes["n01"] = n
		}, ErrInvalidNode},
		{"node bad address", func(m *Map) {
			n := m.Nodes["n01"]
			n.HTTPAddr = "no-port"
			m.Nodes["n01"] = n
		}, ErrInvalidNode},
		{"node bad state", func(m *Map) {
			n := m.Nodes["n01"]
			n.State = 0
			m.Nodes["n01"] = n
		}, ErrInvalidNodeState},
		{"no nodes", func(m *Map) { m.Nodes = nil }, ErrInvalidMap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := validMap(t)
			tc.mutate(&m)
			err := m.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalidMap) {
				t.Fatalf("Validate = %v, want %v (and ErrInvalidMap)", err, tc.want)
			}
		})
	}
}

func TestMapCloneIsDeep(t *testing.T) {
	m := validMap(t)
	c := m.Clone()
	c.ShardMap[0].Replicas[0] = "zz"
	c.Nodes["n01"] = Node{ID: "n01", GRPCAddr: "x:1", State: NodeDraining}
	c.ShardMap[1].Version = 99
	if m.ShardMap[0].Replicas[0] == "zz" || m.Nodes["n01"].State != NodeActive || m.ShardMap[1].Version == 99 {
		t.Fatal("Clone shares state with the original")
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestReplicasOfShardsOf(t *testing.T) {
	m := validMap(t)
	m.ShardMap[2].Replicas = []NodeID{"n01", "n02"}
	if got := m.ReplicasOf(2); !slices.Equal(got, []NodeID{"n01", "n02"}) {
		t.Fatalf("ReplicasOf(2) = %v", got)
	}
	got := m.ReplicasOf(2)
	got[0] = "zz"
	if m.ShardMap[2].Replicas[0] != "n01" {
		t.Fatal("ReplicasOf returned the map's own slice")
	}
	if m.ReplicasOf(8) != nil || m.ReplicasOf(1<<31) != nil {
		t.Fatal("ReplicasOf an unknown shard must be nil")
	}
	s3 := m.ShardsOf("n03")
	if len(s3) != 7 || slices.Contains(s3, 2) {
		t.Fatalf("ShardsOf(n03) = %v, want every shard but 2", s3)
	}
	if len(m.ShardsOf("n01")) != 8 || m.ShardsOf("zz") != nil {
		t.Fatal("ShardsOf wrong")
	}
}

func TestNodeIDInJSONIsValidated(t *testing.T) {
	var m Map
	err := json.Unmarshal([]byte(`{"nodes":{"BAD ID":{"id":"x","grpc_addr":"a:1","state":"active"}}}`), &m)
	if err == nil {
		t.Fatal("a malformed map key decoded")
	}
	var s Shard
	if err := json.Unmarshal([]byte(`{"replicas":["ok","Not/ok"]}`), &s); err == nil {
		t.Fatal("a malformed replica id decoded")
	}
}

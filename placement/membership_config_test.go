package placement

import (
	"strings"
	"testing"
)

// TestNodeMetaCompatible: two nodes are kept apart by a different cluster,
// shard count or id key, each only where both say theirs (an older node
// says none).
func TestNodeMetaCompatible(t *testing.T) {
	base := NodeMeta{ClusterID: "c1", Shards: 64, IDKey: "00112233aabbccdd"}
	for _, tt := range []struct {
		name string
		peer NodeMeta
		why  string // "" when compatible
	}{
		{"the same", base, ""},
		{"says nothing", NodeMeta{}, ""},
		{"another cluster", NodeMeta{ClusterID: "c2"}, "belongs to cluster c2"},
		{"another shard count", NodeMeta{Shards: 16}, "has 16 shards, this node 64"},
		{"another id key", NodeMeta{ClusterID: "c1", Shards: 64, IDKey: "ffeeddccbbaa9988"}, "derives object IDs with another id key (fingerprint ffeeddccbbaa9988, this node's 00112233aabbccdd"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := base.Compatible(tt.peer)
			if ok != (tt.why == "") || !strings.Contains(why, tt.why) {
				t.Fatalf("Compatible = %v %q, want %v %q", ok, why, tt.why == "", tt.why)
			}
		})
	}
}

// TestNodeMetaCompatibleWhileForming: nodes that form a cluster (neither
// has one yet) must agree on bootstrap-expect and the replica count; once
// either belongs to a cluster those settings no longer keep them apart.
func TestNodeMetaCompatibleWhileForming(t *testing.T) {
	forming := NodeMeta{Shards: 64, BootstrapExpect: 3, Replicas: 3}
	formed := forming
	formed.ClusterID = "c1"
	for _, tt := range []struct {
		name       string
		self, peer NodeMeta
		why        string // "" when compatible
	}{
		{"the same", forming, forming, ""},
		{"another bootstrap-expect", forming, NodeMeta{Shards: 64, BootstrapExpect: 2, Replicas: 3}, "started with bootstrap-expect 2, this node with 3"},
		{"another replica count", forming, NodeMeta{Shards: 64, BootstrapExpect: 3, Replicas: 2}, "started with replicas 2, this node with 3"},
		{"an older peer says neither", forming, NodeMeta{Shards: 64}, ""},
		{"the peer belongs to a cluster", forming, NodeMeta{ClusterID: "c1", Shards: 64, BootstrapExpect: 5, Replicas: 5}, ""},
		{"this node belongs to a cluster", formed, NodeMeta{Shards: 64, BootstrapExpect: 5, Replicas: 5}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := tt.self.Compatible(tt.peer)
			if ok != (tt.why == "") || !strings.Contains(why, tt.why) {
				t.Fatalf("Compatible = %v %q, want %v %q", ok, why, tt.why == "", tt.why)
			}
		})
	}
}

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
		// A node joining a cluster uses neither; the founders' agreement
		// is the first-start rules' to wait for (node/firststart.go).
		{"other formation settings", NodeMeta{ClusterID: "c1", Shards: 64, BootstrapExpect: 5, Replicas: 5}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := base.Compatible(tt.peer)
			if ok != (tt.why == "") || !strings.Contains(why, tt.why) {
				t.Fatalf("Compatible = %v %q, want %v %q", ok, why, tt.why == "", tt.why)
			}
		})
	}
}

// Package adminapi decodes the admin API's JSON (docs/admin-api.md) for the
// tools and tests under internal/ that read it: internal/cmd/rebalance over
// HTTP, internal/dockertest through `roost members -o json`, which prints
// the API's answer as it is. node encodes the API and cli has types of its
// own (its import rule keeps it off internal/); a node test checks that
// these types decode exactly what node encodes.
package adminapi

import (
	"encoding/json"
	"fmt"
)

// Member is one node in the answer to GET /v1/members.
type Member struct {
	ID       string `json:"id"`
	State    string `json:"state"` // active, draining or removed
	Alive    bool   `json:"alive"` // as gossip sees it
	GRPC     string `json:"grpc"`
	HTTP     string `json:"http"`
	Admin    string `json:"admin"`
	Gossip   string `json:"gossip"`
	Replicas int    `json:"replicas"`
	Leaders  int    `json:"leaders"`
}

// DecodeMembers decodes the answer to GET /v1/members.
func DecodeMembers(b []byte) ([]Member, error) {
	var resp struct {
		Members []Member `json:"members"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("decoding the members of the admin API: %w", err)
	}
	return resp.Members, nil
}

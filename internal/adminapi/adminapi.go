// Package adminapi decodes the admin API's JSON (docs/admin-api.md) for the
// tools and tests under internal/ that read it: internal/cmd/rebalance over
// HTTP, internal/dockertest through `roost members -o json`, which prints
// the API's answer as it is. The types are node's, which encodes the API
// (cli has types of its own: its import rule keeps it off internal/).
package adminapi

import (
	"encoding/json"
	"fmt"

	"github.com/roostdb/roost/node"
)

// Member is one node in the answer to GET /v1/members: the type node
// encodes it from.
type Member = node.Member

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

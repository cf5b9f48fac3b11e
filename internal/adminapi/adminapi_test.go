package adminapi

import (
	"testing"
)

func TestDecodeMembers(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    []Member
		wantErr bool
	}{
		{"one member", `{"members":[{"id":"n1","state":"draining","alive":true,"grpc":"g:1","http":"h:2","admin":"a:3","gossip":"s:4","replicas":5,"leaders":6}]}`,
			[]Member{{ID: "n1", State: "draining", Alive: true, GRPC: "g:1", HTTP: "h:2", Admin: "a:3", Gossip: "s:4", Replicas: 5, Leaders: 6}}, false},
		{"none", `{"members":[]}`, []Member{}, false},
		{"not JSON", `members: n1`, nil, true},
		{"a field of another type", `{"members":[{"id":"n1","replicas":"five"}]}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeMembers([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d members, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("member %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

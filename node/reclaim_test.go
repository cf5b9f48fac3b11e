package node

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/proto"
	"github.com/roostdb/roost/raftstore"
)

// TestLeftConfirmed: a node deletes its data of a group only on an answer
// that vouches for a committed configuration without it.
func TestLeftConfirmed(t *testing.T) {
	committed := func(voters, nonvoters []string) *proto.ForwardGroupStatusResponse {
		return &proto.ForwardGroupStatusResponse{Running: true, State: "Leader", ConfigCommitted: true, Voters: voters, Nonvoters: nonvoters}
	}
	follower := &proto.ForwardGroupStatusResponse{Running: true, State: "Follower", Voters: []string{"b", "c", "d"}}
	down := errors.New("unreachable")
	type answer struct {
		st  *proto.ForwardGroupStatusResponse
		err error
	}
	tests := []struct {
		name    string
		answers map[placement.NodeID]answer // replicas not listed do not run the group
		want    bool
	}{
		{"leader vouches, self gone", map[placement.NodeID]answer{"b": {st: follower}, "c": {st: committed([]string{"b", "c", "d"}, nil)}}, true},
		{"self still a voter", map[placement.NodeID]answer{"c": {st: committed([]string{"a", "b", "c", "d"}, nil)}}, false},
		{"self a non-voter", map[placement.NodeID]answer{"c": {st: committed([]string{"b", "c", "d"}, []string{"a"})}}, false},
		{"without self, but not vouched for", map[placement.NodeID]answer{"b": {st: follower}, "c": {st: follower}, "d": {st: follower}}, false},
		{"vouched for, with an error", map[placement.NodeID]answer{"c": {st: committed([]string{"b", "c", "d"}, nil), err: down}}, false},
		{"one unreachable, the next vouches", map[placement.NodeID]answer{"b": {err: down}, "d": {st: committed([]string{"b", "c", "d"}, nil)}}, true},
		{"nobody answers", map[placement.NodeID]answer{"b": {err: down}, "c": {err: down}, "d": {err: down}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []placement.NodeID
			ask := func(id placement.NodeID) (*proto.ForwardGroupStatusResponse, error) {
				asked = append(asked, id)
				a, ok := tt.answers[id]
				if !ok {
					return &proto.ForwardGroupStatusResponse{}, nil
				}
				return a.st, a.err
			}
			if got := leftConfirmed("a", []placement.NodeID{"b", "c", "d"}, ask); got != tt.want {
				t.Fatalf("leftConfirmed = %v, want %v (asked %v)", got, tt.want, asked)
			}
			if slices.Contains(asked, "a") {
				t.Fatalf("asked itself: %v", asked)
			}
		})
	}
}

// TestConfigCommitted checks the barrier behind ConfirmConfig on a real
// group: a leader vouches for its configuration in its own term only, and
// not for one it cannot commit.
func TestConfigCommitted(t *testing.T) {
	store, err := raftstore.Open(t.TempDir(), raftstore.Options{Logger: hclogTo(quietLogger, hclog.Error)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	_, trans := raft.NewInmemTransport("n1")
	g, err := store.StartGroup(raftstore.GroupConfig{ID: 1, LocalID: "n1", Transport: trans,
		Bootstrap: []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: "n1"}}, Tune: devRaftTuning})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown()
	r := g.Raft()
	for deadline := time.Now().Add(10 * time.Second); r.State() != raft.Leader; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	term := r.CurrentTerm()
	if !configCommitted(r, term) {
		t.Fatal("a single voter's leader does not vouch for its configuration")
	}
	if configCommitted(r, term-1) {
		t.Fatal("a leader vouches for a configuration read in another term")
	}
	// A second voter that does not exist: the configuration naming it
	// cannot commit, and nor can a barrier behind it.
	r.AddVoter("n2", "n2", 0, 0)
	for deadline := time.Now().Add(10 * time.Second); len(r.GetConfiguration().Configuration().Servers) != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the new voter never showed in the configuration")
		}
	}
	if configCommitted(r, term) {
		t.Fatal("a leader vouches for a configuration it cannot commit")
	}
}

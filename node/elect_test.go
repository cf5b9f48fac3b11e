package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/raftstore"
)

// fakeElected is a replica of group 7, with voters n1–n3 at addresses
// a1–a3 unless the case says otherwise, as the elector sees it.
type fakeElected struct {
	state  raft.RaftState
	leader raft.ServerAddress
	alive  bool
	voters []raft.Server
	// answers: what each other voter says of its leader; an error when absent.
	answers map[raft.ServerAddress]bool
	// hangs: voters whose check answers only when it is given up.
	hangs   map[raft.ServerAddress]bool
	forced  int
	checked *atomic.Int32 // CheckLeader calls, when set
	// removalPending: the latest configuration, voters, leaves this node
	// out, and it has not seen that configuration commit.
	removalPending bool
}

func (f *fakeElected) ID() raftstore.GroupID                  { return 7 }
func (f *fakeElected) State() raft.RaftState                  { return f.state }
func (f *fakeElected) Voters() ([]raft.Server, error)         { return f.voters, nil }
func (f *fakeElected) LiveLeader() (raft.ServerAddress, bool) { return f.leader, f.alive }
func (f *fakeElected) RemovalPending() bool                   { return f.removalPending }
func (f *fakeElected) CheckLeader(ctx context.Context, target raft.ServerAddress) (raft.ServerAddress, bool, error) {
	if f.checked != nil {
		f.checked.Add(1)
	}
	if f.hangs[target] {
		<-ctx.Done()
		return "", false, ctx.Err()
	}
	alive, ok := f.answers[target]
	if !ok {
		return "", false, errors.New("unreachable")
	}
	return "a1", alive, nil
}
func (f *fakeElected) ForceElection(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.forced++
	return nil
}

var _ electedGroup = (*fakeElected)(nil)

func threeVoters() []raft.Server {
	return []raft.Server{
		{Suffrage: raft.Voter, ID: "n1", Address: "a1"},
		{Suffrage: raft.Voter, ID: "n2", Address: "a2"},
		{Suffrage: raft.Voter, ID: "n3", Address: "a3"},
	}
}

// withoutFirst is a configuration of n1, second and n4: the other of n2
// and n3 (first) removed.
func withoutFirst(second placement.NodeID) []raft.Server {
	addr := map[placement.NodeID]raft.ServerAddress{"n2": "a2", "n3": "a3"}
	return []raft.Server{
		{Suffrage: raft.Voter, ID: "n1", Address: "a1"},
		{Suffrage: raft.Voter, ID: raft.ServerID(second), Address: addr[second]},
		{Suffrage: raft.Voter, ID: "n4", Address: "a4"},
	}
}

// n1DeadN4Alive is gossip's view with n1 dead and n2–n4 alive.
func n1DeadN4Alive(first, second placement.NodeID) func() map[placement.NodeID]bool {
	return func() map[placement.NodeID]bool {
		return map[placement.NodeID]bool{first: true, second: true, "n4": true}
	}
}

// selfRanked returns the node of n2, n3 that group 7's election order puts
// first, and the other: with n1 (the leader) lost, the first forces at
// once and the other a rankDelay later.
func selfRanked() (first, second placement.NodeID) {
	if electionOrder(7, "n2") < electionOrder(7, "n3") {
		return "n2", "n3"
	}
	return "n3", "n2"
}

func TestElectorForcesOnlyWithAQuorumWithoutLeader(t *testing.T) {
	first, second := selfRanked()
	addr := map[placement.NodeID]raft.ServerAddress{"n1": "a1", "n2": "a2", "n3": "a3"}
	allAlive := func() map[placement.NodeID]bool { return map[placement.NodeID]bool{"n1": true, "n2": true, "n3": true} }
	n1Dead := func() map[placement.NodeID]bool { return map[placement.NodeID]bool{"n2": true, "n3": true} }
	cases := []struct {
		name    string
		self    placement.NodeID
		group   fakeElected
		alive   func() map[placement.NodeID]bool
		elapsed time.Duration // since the group was first seen without a live leader
		want    int
	}{
		{"the other follower lost the leader too", first,
			fakeElected{state: raft.Follower, leader: "a1", answers: map[raft.ServerAddress]bool{addr[second]: false}}, allAlive, noLeaderGrace, 1},
		{"the other follower still hears the leader", first,
			fakeElected{state: raft.Follower, leader: "a1", answers: map[raft.ServerAddress]bool{addr[second]: true}}, allAlive, noLeaderGrace, 0},
		{"the other follower does not answer", first,
			fakeElected{state: raft.Follower, leader: "a1", answers: map[raft.ServerAddress]bool{}}, allAlive, noLeaderGrace, 0},
		{"the lost leader's node hangs: the quorum is enough", first,
			fakeElected{state: raft.Follower, leader: "a1", answers: map[raft.ServerAddress]bool{addr[second]: false}, hangs: map[raft.ServerAddress]bool{"a1": true}}, allAlive, noLeaderGrace, 1},
		{"within the grace", first,
			fakeElected{state: raft.Follower, leader: "a1", answers: map[raft.ServerAddress]bool{addr[second]: false}}, allAlive, noLeaderGrace / 2, 0},
		{"second in rank waits", second,
			fakeElected{state: raft.Follower, leader: "a1", answers: map[raft.ServerAddress]bool{addr[first]: false}}, allAlive, noLeaderGrace, 0},
		{"second in rank steps in", second,
			fakeElected{state: raft.Follower, leader: "a1", answers: map[raft.ServerAddress]bool{addr[first]: false}}, allAlive, noLeaderGrace + rankDelay, 1},
		{"second in rank first when the first is dead in gossip", second,
			fakeElected{state: raft.Follower, leader: "a1", answers: map[raft.ServerAddress]bool{addr[first]: false}},
			func() map[placement.NodeID]bool { return map[placement.NodeID]bool{"n1": true, second: true} }, noLeaderGrace, 1},
		{"the leader is alive", first,
			fakeElected{state: raft.Follower, leader: "a1", alive: true, answers: map[raft.ServerAddress]bool{addr[second]: false}}, allAlive, noLeaderGrace, 0},
		// A campaign that has gone on for campaignGrace cannot succeed
		// (a split vote): it is started afresh, by the ranks' rule.
		{"a campaign within its grace", first,
			fakeElected{state: raft.Candidate, answers: map[raft.ServerAddress]bool{addr[second]: false}}, n1Dead, campaignGrace - electCheck, 0},
		{"a campaign past its grace", first,
			fakeElected{state: raft.Candidate, answers: map[raft.ServerAddress]bool{addr[second]: false}}, n1Dead, campaignGrace, 1},
		{"a campaign second in rank waits", second,
			fakeElected{state: raft.Candidate, answers: map[raft.ServerAddress]bool{addr[first]: false}}, n1Dead, campaignGrace, 0},
		{"a campaign second in rank steps in", second,
			fakeElected{state: raft.Candidate, answers: map[raft.ServerAddress]bool{addr[first]: false}}, n1Dead, campaignGrace + rankDelay, 1},
		{"a campaign against a leader the others hear", first,
			fakeElected{state: raft.Candidate, answers: map[raft.ServerAddress]bool{addr[second]: true}}, n1Dead, campaignGrace, 0},
		{"a leader does not force", first,
			fakeElected{state: raft.Leader, answers: map[raft.ServerAddress]bool{addr[second]: false}}, allAlive, noLeaderGrace, 0},
		// The leader appended first's removal, then died: first holds it,
		// the others cannot elect one of them without it, and first can be
		// elected by them in the new configuration, {n1, second, n4}.
		{"a replica holding its own removal forces", first,
			fakeElected{state: raft.Follower, leader: "a1", removalPending: true, voters: withoutFirst(second),
				answers: map[raft.ServerAddress]bool{addr[second]: false, "a4": false}}, n1DeadN4Alive(first, second), noLeaderGrace + 2*rankDelay, 1},
		{"a replica holding its own removal, one other answering", first,
			fakeElected{state: raft.Follower, leader: "a1", removalPending: true, voters: withoutFirst(second),
				answers: map[raft.ServerAddress]bool{addr[second]: false}}, n1DeadN4Alive(first, second), noLeaderGrace + 2*rankDelay, 0},
		{"a replica holding its own removal, the others hear the leader", first,
			fakeElected{state: raft.Follower, leader: "a1", removalPending: true, voters: withoutFirst(second),
				answers: map[raft.ServerAddress]bool{addr[second]: true, "a4": true}}, allAlive, noLeaderGrace + 2*rankDelay, 0},
		{"a removed replica whose removal committed", first,
			fakeElected{state: raft.Follower, leader: "a1", voters: withoutFirst(second),
				answers: map[raft.ServerAddress]bool{addr[second]: false, "a4": false}}, n1DeadN4Alive(first, second), noLeaderGrace + 2*rankDelay, 0},
		{"a non-voter does not force", first,
			fakeElected{state: raft.Follower, leader: "a1", voters: []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: "a1"}, {Suffrage: raft.Voter, ID: raft.ServerID(second), Address: addr[second]}},
				answers: map[raft.ServerAddress]bool{addr[second]: false}}, allAlive, noLeaderGrace, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := tc.group
			if g.voters == nil {
				g.voters = threeVoters()
			}
			var mu sync.Mutex
			var logged []string
			e := newElector(tc.self, func() []electedGroup { return []electedGroup{&g} }, tc.alive, func(msg string, args ...any) {
				mu.Lock()
				defer mu.Unlock()
				logged = append(logged, fmt.Sprint(append([]any{msg}, args...)...))
			})
			start := time.Now()
			e.check(context.Background(), start)
			e.check(context.Background(), start.Add(tc.elapsed))
			if g.forced != tc.want {
				t.Fatalf("forced %d elections, want %d", g.forced, tc.want)
			}
			// A check logs the elections it forced in one line.
			if len(logged) != tc.want || tc.want == 1 && !strings.Contains(logged[0], "forced elections") {
				t.Fatalf("logged %q for %d forced elections", logged, tc.want)
			}
		})
	}
}

// A group that keeps having no live leader is forced again, but not more
// often than forceEvery.
func TestElectorRetriesNoFasterThanForceEvery(t *testing.T) {
	first, second := selfRanked()
	addr := map[placement.NodeID]raft.ServerAddress{"n2": "a2", "n3": "a3"}
	g := &fakeElected{state: raft.Follower, leader: "a1", voters: threeVoters(), answers: map[raft.ServerAddress]bool{addr[second]: false}}
	e := newElector(first, func() []electedGroup { return []electedGroup{g} },
		func() map[placement.NodeID]bool { return map[placement.NodeID]bool{"n1": true, "n2": true, "n3": true} }, func(string, ...any) {})
	start := time.Now()
	for d := time.Duration(0); d <= 5*time.Second; d += electCheck {
		e.check(context.Background(), start.Add(d))
	}
	// Forced at the grace, then every forceEvery: at 0.2 s, 2.2 s and 4.2 s.
	if g.forced != 3 {
		t.Fatalf("forced %d elections in 5 s, want 3", g.forced)
	}
}

// A replica that knows no leader at all (it just restarted) asks the other
// voters whom they follow as soon as the grace is over, whatever its rank:
// the leader heartbeats it when asked. It forces nothing before its turn,
// and asks again no sooner than forceEvery.
func TestElectorAsksForAnUnknownLeader(t *testing.T) {
	// The voter group 7's election order puts last: its turn to force
	// comes 2 × rankDelay after the grace.
	last := placement.NodeID("n1")
	for _, id := range []placement.NodeID{"n2", "n3"} {
		if electionOrder(7, id) > electionOrder(7, last) {
			last = id
		}
	}
	g := &fakeElected{state: raft.Follower, voters: threeVoters(), answers: map[raft.ServerAddress]bool{"a1": true}, checked: new(atomic.Int32)}
	allAlive := func() map[placement.NodeID]bool { return map[placement.NodeID]bool{"n1": true, "n2": true, "n3": true} }
	e := newElector(last, func() []electedGroup { return []electedGroup{g} }, allAlive, func(string, ...any) {})
	start := time.Now()
	e.check(context.Background(), start)
	if n := g.checked.Load(); n != 0 {
		t.Fatalf("asked %d voters within the grace", n)
	}
	e.check(context.Background(), start.Add(noLeaderGrace))
	if n := g.checked.Load(); n != 2 {
		t.Fatalf("asked %d voters after the grace, want both others", n)
	}
	e.check(context.Background(), start.Add(noLeaderGrace+rankDelay))
	if n := g.checked.Load(); n != 2 {
		t.Fatalf("asked again within forceEvery: %d checks", n)
	}
	if g.forced != 0 {
		t.Fatalf("forced %d elections out of turn", g.forced)
	}

	// A replica that names a leader, not alive to it, only forces in its turn.
	named := &fakeElected{state: raft.Follower, leader: "a1", voters: threeVoters(), answers: map[raft.ServerAddress]bool{"a1": true}, checked: new(atomic.Int32)}
	_, second := selfRanked()
	e = newElector(second, func() []electedGroup { return []electedGroup{named} }, allAlive, func(string, ...any) {})
	e.check(context.Background(), start)
	e.check(context.Background(), start.Add(noLeaderGrace))
	if n := named.checked.Load(); n != 0 {
		t.Fatalf("a replica that names its leader asked %d voters out of turn", n)
	}
}
